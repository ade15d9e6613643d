package teams

import (
	"context"
	"encoding/json"
	"strings"
	"time"

	"github.com/seed-a64d9e1f/chatwire/adapter"
)

// Activity is a Bot Framework activity with the fields Teams uses (spec §2). Unknown fields
// are kept in the event's Raw.
type Activity struct {
	Type             string          `json:"type"`
	ID               string          `json:"id,omitempty"`
	Timestamp        string          `json:"timestamp,omitempty"`
	ServiceURL       string          `json:"serviceUrl,omitempty"`
	ChannelID        string          `json:"channelId,omitempty"`
	From             *Account        `json:"from,omitempty"`
	Recipient        *Account        `json:"recipient,omitempty"`
	Conversation     *Conversation   `json:"conversation,omitempty"`
	TextFormat       string          `json:"textFormat,omitempty"`
	Text             string          `json:"text,omitempty"`
	Attachments      []Attachment    `json:"attachments,omitempty"`
	Entities         []Entity        `json:"entities,omitempty"`
	ChannelData      json.RawMessage `json:"channelData,omitempty"`
	ReplyToID        string          `json:"replyToId,omitempty"`
	Name             string          `json:"name,omitempty"`
	Value            json.RawMessage `json:"value,omitempty"`
	Action           string          `json:"action,omitempty"`
	MembersAdded     []Account       `json:"membersAdded,omitempty"`
	MembersRemoved   []Account       `json:"membersRemoved,omitempty"`
	ReactionsAdded   []Reaction      `json:"reactionsAdded,omitempty"`
	ReactionsRemoved []Reaction      `json:"reactionsRemoved,omitempty"`
}

// Account is a user or bot.
type Account struct {
	ID          string `json:"id"`
	Name        string `json:"name,omitempty"`
	AADObjectID string `json:"aadObjectId,omitempty"`
}

// Conversation is an activity's conversation.
type Conversation struct {
	ID               string `json:"id"`
	ConversationType string `json:"conversationType,omitempty"`
	TenantID         string `json:"tenantId,omitempty"`
	IsGroup          bool   `json:"isGroup,omitempty"`
	Name             string `json:"name,omitempty"`
}

// Attachment is an activity attachment.
type Attachment struct {
	ContentType string          `json:"contentType"`
	ContentURL  string          `json:"contentUrl,omitempty"`
	Content     json.RawMessage `json:"content,omitempty"`
	Name        string          `json:"name,omitempty"`
}

// Entity is an activity entity; mentions use Mentioned and Text.
type Entity struct {
	Type      string   `json:"type"`
	Mentioned *Account `json:"mentioned,omitempty"`
	Text      string   `json:"text,omitempty"`
}

// Reaction is a messageReaction entry ("like", "heart", …).
type Reaction struct {
	Type string `json:"type"`
}

type channelData struct {
	Tenant    struct{ ID string } `json:"tenant"`
	EventType string              `json:"eventType"`
}

func (a *Activity) channelData() channelData {
	var cd channelData
	json.Unmarshal(a.ChannelData, &cd)
	return cd
}

func (a *Activity) tenant() string {
	if a.Conversation != nil && a.Conversation.TenantID != "" {
		return a.Conversation.TenantID
	}
	return a.channelData().Tenant.ID
}

// baseConversation strips a channel thread's ";messageid=…" (the only parsing of ids the spec
// allows, §2.1).
func baseConversation(id string) string {
	if i := strings.Index(id, ";messageid="); i >= 0 {
		return id[:i]
	}
	return id
}

// EventID returns the id of the event for activity activityID in conversation conv:
// "teams:<conversation>|<activity id>". It is also what [Adapter.Send] takes as ReplyTo and
// what receipts carry, so a bot never parses Teams ids.
func EventID(conv, activityID string) string { return "teams:" + conv + "|" + activityID }

// ParseID splits an id made by [EventID] (extra "|…" parts are ignored).
func ParseID(id string) (conv, activityID string, ok bool) {
	rest, ok := strings.CutPrefix(id, "teams:")
	if !ok {
		return "", "", false
	}
	parts := strings.Split(rest, "|")
	if len(parts) < 2 || parts[0] == "" || parts[1] == "" {
		return "", "", false
	}
	return parts[0], parts[1], true
}

func chatType(convType string) string {
	switch convType {
	case "groupChat":
		return adapter.ChatGroup
	case "channel":
		return adapter.ChatChannel
	}
	return adapter.ChatDirect
}

// hasBot reports whether accounts include the bot.
func (a *Adapter) hasBot(accounts []Account) bool {
	for _, m := range accounts {
		if m.ID == a.botID() {
			return true
		}
	}
	return false
}

// remember stores or forgets the conversation reference an activity implies (spec §2.3,
// §3.3): every validated activity refreshes its conversation's serviceUrl; the bot's removal
// forgets it.
func (a *Adapter) remember(ctx context.Context, act *Activity) {
	conv := baseConversation(act.Conversation.ID)
	removed := (act.Type == "installationUpdate" && strings.HasPrefix(act.Action, "remove")) ||
		(act.Type == "conversationUpdate" && a.hasBot(act.MembersRemoved))
	if removed {
		a.forget(ctx, conv)
		return
	}
	ref := Reference{ConversationID: conv, ConversationType: act.Conversation.ConversationType, ServiceURL: act.ServiceURL,
		TenantID: act.tenant(), BotID: a.botID(), Updated: time.Now()}
	if ref.ConversationType == "" {
		ref.ConversationType = "personal"
	}
	var users []Account
	if act.From != nil && strings.HasPrefix(act.From.ID, "29:") {
		users = append(users, *act.From)
	}
	for _, m := range act.MembersAdded {
		if strings.HasPrefix(m.ID, "29:") && (act.From == nil || m.ID != act.From.ID) {
			users = append(users, m)
		}
	}
	if ref.ConversationType == "personal" && len(users) > 0 {
		ref.UserID = users[0].ID
	}
	if err := a.refs.PutConversation(ctx, ref); err != nil {
		a.log.Warn("teams: storing a conversation reference failed", "platform", Platform, "conversation", clip(conv, 80), "error", err)
	}
	for _, u := range users {
		ur, _, _ := a.refs.User(ctx, u.ID)
		ur.ID, ur.TenantID, ur.ServiceURL = u.ID, ref.TenantID, ref.ServiceURL
		if u.AADObjectID != "" {
			ur.AADObjectID = u.AADObjectID
		}
		if u.Name != "" {
			ur.Name = u.Name
		}
		if ref.ConversationType == "personal" {
			ur.Conversation = conv
		}
		if err := a.refs.PutUser(ctx, ur); err != nil {
			a.log.Warn("teams: storing a user reference failed", "platform", Platform, "error", err)
		}
	}
}

// forget drops a conversation reference (and a personal chat's link from its user).
func (a *Adapter) forget(ctx context.Context, conv string) {
	ref, ok, _ := a.refs.Conversation(ctx, conv)
	if err := a.refs.DeleteConversation(ctx, conv); err != nil {
		a.log.Warn("teams: forgetting a conversation reference failed", "platform", Platform, "error", err)
	}
	if ok && ref.UserID != "" {
		if u, found, _ := a.refs.User(ctx, ref.UserID); found && u.Conversation == conv {
			u.Conversation = ""
			a.refs.PutUser(ctx, u)
		}
	}
}

// toEvent turns a validated activity into an event; nil for activities that carry nothing
// for the bot (user typing, the bot's own edits).
func (a *Adapter) toEvent(act *Activity, raw []byte) *adapter.Event {
	ev := &adapter.Event{ID: EventID(act.Conversation.ID, act.ID), Bot: a.opts.Bot, Platform: Platform,
		Kind: adapter.EventNotice, Chat: adapter.Chat{ID: baseConversation(act.Conversation.ID), Type: chatType(act.Conversation.ConversationType)},
		Raw: json.RawMessage(raw), Text: act.Type}
	if act.From != nil {
		ev.Sender = adapter.Sender{ID: act.From.ID, Name: act.From.Name}
		if act.From.AADObjectID != "" {
			ev.Sender.ID = act.From.AADObjectID
		}
	}
	if t, err := time.Parse(time.RFC3339Nano, act.Timestamp); err == nil {
		ev.Time = t.UTC()
	} else {
		ev.Time = time.Now().UTC()
	}
	switch act.Type {
	case "message":
		if len(act.Value) > 0 && strings.TrimSpace(act.Text) == "" {
			ev.Text = "submit" // Action.Submit from a card arrives as a message with value (spec §2.4)
			return ev
		}
		ev.Kind = adapter.EventMessage
		ev.Text = a.stripBotMention(act)
		ev.Attachments = attachments(act.Attachments)
	case "typing":
		return nil
	case "messageUpdate", "messageDelete":
		if act.From != nil && act.From.ID == a.botID() {
			return nil // our own edit echoed back (spec §2.5)
		}
		// The id is the edited message's: keep the event id distinct from the message's.
		ev.ID += "|" + act.Type + "@" + act.Timestamp
		if act.Type == "messageUpdate" {
			ev.Text = "messageUpdate"
		}
	case "invoke":
		ev.Text = act.Name
	case "installationUpdate":
		ev.Text = "installationUpdate"
	}
	return ev
}

// stripBotMention removes the bot's own <at>…</at> mention from the text (spec §2.2) and
// trims what is left.
func (a *Adapter) stripBotMention(act *Activity) string {
	text := act.Text
	for _, e := range act.Entities {
		if e.Type == "mention" && e.Mentioned != nil && e.Mentioned.ID == a.botID() && e.Text != "" {
			text = strings.ReplaceAll(text, e.Text, "")
		}
	}
	return strings.TrimSpace(text)
}

// attachments maps files and images; the HTML copy of the text and cards are left in Raw.
func attachments(in []Attachment) []adapter.Attachment {
	var out []adapter.Attachment
	for _, at := range in {
		switch {
		case at.ContentType == "text/html", strings.HasPrefix(at.ContentType, "application/vnd.microsoft.card."):
			continue
		case at.ContentType == "application/vnd.microsoft.teams.file.download.info":
			var c struct {
				DownloadURL string `json:"downloadUrl"`
				UniqueID    string `json:"uniqueId"`
				FileType    string `json:"fileType"`
			}
			json.Unmarshal(at.Content, &c)
			out = append(out, adapter.Attachment{Type: adapter.AttachFile, Name: at.Name, ID: c.UniqueID, URL: c.DownloadURL,
				Description: c.FileType, ContentType: at.ContentType})
		default:
			typ := adapter.Attachment{ContentType: at.ContentType}.AttachType()
			out = append(out, adapter.Attachment{Type: typ, Name: at.Name, ContentType: at.ContentType, URL: at.ContentURL})
		}
	}
	return out
}
