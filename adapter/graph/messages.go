package graph

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"html"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// ChatBody is a chatMessage body.
type ChatBody struct {
	ContentType string `json:"contentType"` // "text" or "html"
	Content     string `json:"content"`
}

// ChatMention is a mention in a chatMessage; its ID matches an <at id="N"> tag in the body.
type ChatMention struct {
	ID          int    `json:"id"`
	MentionText string `json:"mentionText"`
	Mentioned   struct {
		User struct {
			ID               string `json:"id"`
			DisplayName      string `json:"displayName"`
			UserIdentityType string `json:"userIdentityType"`
		} `json:"user"`
	} `json:"mentioned"`
}

// ChatAttachment is a chatMessage attachment: a file reference or an adaptive card.
type ChatAttachment struct {
	ID          string `json:"id"`
	ContentType string `json:"contentType"` // "reference", "application/vnd.microsoft.card.adaptive"
	ContentURL  string `json:"contentUrl,omitempty"`
	Content     string `json:"content,omitempty"`
	Name        string `json:"name,omitempty"`
}

// NewChatMessage is the body of a chatMessage POST.
type NewChatMessage struct {
	Body        ChatBody         `json:"body"`
	Mentions    []ChatMention    `json:"mentions,omitempty"`
	Attachments []ChatAttachment `json:"attachments,omitempty"`
}

// ChatMessage is a Teams message as Graph returns it (the fields the adapter uses).
type ChatMessage struct {
	ID              string    `json:"id"`
	ReplyToID       string    `json:"replyToId"`
	MessageType     string    `json:"messageType"`
	CreatedDateTime time.Time `json:"createdDateTime"`
	ChatID          string    `json:"chatId"`
	ChannelIdentity *struct {
		TeamID    string `json:"teamId"`
		ChannelID string `json:"channelId"`
	} `json:"channelIdentity"`
	From *struct {
		User *struct {
			ID          string `json:"id"`
			DisplayName string `json:"displayName"`
		} `json:"user"`
		Application *struct {
			ID          string `json:"id"`
			DisplayName string `json:"displayName"`
		} `json:"application"`
	} `json:"from"`
	Body        ChatBody `json:"body"`
	Attachments []struct {
		ID          string `json:"id"`
		ContentType string `json:"contentType"`
		ContentURL  string `json:"contentUrl"`
		Name        string `json:"name"`
	} `json:"attachments"`
}

// AddMention appends a mention of user (shown as name) to m, with the next id.
func (m *NewChatMessage) AddMention(userID, name string) int {
	var mn ChatMention
	mn.ID = len(m.Mentions)
	mn.MentionText = name
	mn.Mentioned.User.ID = userID
	mn.Mentioned.User.DisplayName = name
	mn.Mentioned.User.UserIdentityType = "aadUser"
	m.Mentions = append(m.Mentions, mn)
	return mn.ID
}

func pathID(s string) string { return url.PathEscape(s) }

// PostChatMessage posts m into a 1:1 or group chat and returns the created message.
// Teams posting needs a delegated token (spec §4).
func (c *Client) PostChatMessage(ctx context.Context, chatID string, m *NewChatMessage) (*ChatMessage, error) {
	var out ChatMessage
	err := c.Do(ctx, http.MethodPost, "/chats/"+pathID(chatID)+"/messages", m, &out)
	return &out, err
}

// PostChannelMessage posts m into a channel, as a reply to replyTo if it is not empty.
func (c *Client) PostChannelMessage(ctx context.Context, team, channel, replyTo string, m *NewChatMessage) (*ChatMessage, error) {
	p := "/teams/" + pathID(team) + "/channels/" + pathID(channel) + "/messages"
	if replyTo != "" {
		p += "/" + pathID(replyTo) + "/replies"
	}
	var out ChatMessage
	err := c.Do(ctx, http.MethodPost, p, m, &out)
	return &out, err
}

// OneOnOneChat returns the id of the 1:1 chat between users a and b, creating it if needed
// (Graph returns the existing chat).
func (c *Client) OneOnOneChat(ctx context.Context, a, b string) (string, error) {
	member := func(u string) map[string]any {
		return map[string]any{"@odata.type": "#microsoft.graph.aadUserConversationMember", "roles": []string{"owner"},
			"user@odata.bind": "https://graph.microsoft.com/v1.0/users('" + u + "')"}
	}
	body := map[string]any{"chatType": "oneOnOne", "members": []any{member(a), member(b)}}
	var out struct {
		ID string `json:"id"`
	}
	if err := c.Do(ctx, http.MethodPost, "/chats", body, &out); err != nil {
		return "", err
	}
	return out.ID, nil
}

// User is the part of a Graph user the adapter uses.
type User struct {
	ID                string `json:"id"`
	DisplayName       string `json:"displayName"`
	Mail              string `json:"mail"`
	UserPrincipalName string `json:"userPrincipalName"`
}

// GetUser returns a user: "me" for the signed-in user, else an id or user principal name.
func (c *Client) GetUser(ctx context.Context, user string) (*User, error) {
	p := "/me"
	if user != "me" && user != "" {
		p = "/users/" + pathID(user)
	}
	var u User
	return &u, c.Do(ctx, http.MethodGet, p, nil, &u)
}

// ---- mail ----

// Recipient is a mail recipient.
type Recipient struct {
	EmailAddress struct {
		Address string `json:"address"`
		Name    string `json:"name,omitempty"`
	} `json:"emailAddress"`
}

// MailAttachment is an inline file attachment (at most 3 MB in all per message).
type MailAttachment struct {
	ODataType    string `json:"@odata.type"`
	Name         string `json:"name"`
	ContentType  string `json:"contentType,omitempty"`
	ContentBytes []byte `json:"contentBytes"`
}

// Mail is an Outlook message to send.
type Mail struct {
	Subject      string           `json:"subject"`
	Body         ChatBody         `json:"body"` // contentType "Text" or "HTML"
	ToRecipients []Recipient      `json:"toRecipients"`
	Attachments  []MailAttachment `json:"attachments,omitempty"`
}

// LargeAttachment is a mail attachment sent through an upload session.
type LargeAttachment struct {
	Name, ContentType string
	Data              []byte
}

// MaxInlineMailAttachments is the total size of attachments sent inline with sendMail; above
// it, the message goes through a draft and attachment upload sessions.
const MaxInlineMailAttachments = 3 << 20

// SendMail sends m from mailbox ("me" or a user id/UPN). large attachments (over 3 MB) are
// uploaded through attachment upload sessions on a draft, which is then sent.
func (c *Client) SendMail(ctx context.Context, mailbox string, m *Mail, large []LargeAttachment, progress Progress) error {
	prefix := "/me"
	if mailbox != "me" && mailbox != "" {
		prefix = "/users/" + pathID(mailbox)
	}
	if len(large) == 0 {
		return c.Do(ctx, http.MethodPost, prefix+"/sendMail", map[string]any{"message": m, "saveToSentItems": true}, nil)
	}
	var draft struct {
		ID string `json:"id"`
	}
	if err := c.Do(ctx, http.MethodPost, prefix+"/messages", m, &draft); err != nil {
		return err
	}
	for _, a := range large {
		body := map[string]any{"AttachmentItem": map[string]any{"attachmentType": "file", "name": a.Name,
			"size": len(a.Data), "contentType": a.ContentType}}
		var st sessionStatus
		if err := c.Do(ctx, http.MethodPost, prefix+"/messages/"+pathID(draft.ID)+"/attachments/createUploadSession", body, &st); err != nil {
			return err
		}
		if st.UploadURL == "" {
			return fmt.Errorf("graph: attachment upload session for %s has no uploadUrl", a.Name)
		}
		// Outlook takes fragments up to 4 MB; no 320 KiB rule, but aligned sizes are fine.
		err := c.putSession(ctx, st.UploadURL, bytes.NewReader(a.Data), int64(len(a.Data)),
			UploadOptions{FragmentSize: 12 * FragmentUnit, Progress: progress}, outlookSession, nil, nil)
		if err != nil {
			return err
		}
	}
	return c.Do(ctx, http.MethodPost, prefix+"/messages/"+pathID(draft.ID)+"/send", nil, nil)
}

// MailMessage is an Outlook message as Graph returns it (the fields the adapter uses).
type MailMessage struct {
	ID               string    `json:"id"`
	Subject          string    `json:"subject"`
	ReceivedDateTime time.Time `json:"receivedDateTime"`
	ConversationID   string    `json:"conversationId"`
	IsDraft          bool      `json:"isDraft"`
	Body             ChatBody  `json:"body"`
	From             *struct {
		EmailAddress struct {
			Address string `json:"address"`
			Name    string `json:"name"`
		} `json:"emailAddress"`
	} `json:"from"`
	Removed *struct{} `json:"@removed"`
}

// textOf returns plain text for an html or text body.
func textOf(b ChatBody) string {
	if !strings.EqualFold(b.ContentType, "html") {
		return b.Content
	}
	return html.UnescapeString(stripTags(b.Content))
}

// mentionHTML returns text as HTML with mentions prepended as <at> tags.
func mentionHTML(content string, isHTML bool, m *NewChatMessage, names []string) string {
	if !isHTML {
		content = strings.ReplaceAll(html.EscapeString(content), "\n", "<br>")
	}
	var pre strings.Builder
	for i, n := range names {
		if strings.Contains(content, `<at id="`+strconv.Itoa(i)+`">`) {
			continue
		}
		fmt.Fprintf(&pre, `<at id="%d">%s</at> `, i, html.EscapeString(n))
	}
	return pre.String() + content
}

// cardAttachment turns an adaptive card message into a chatMessage attachment.
func cardAttachment(card json.RawMessage) (ChatAttachment, error) {
	var v map[string]any
	if err := json.Unmarshal(card, &v); err != nil {
		return ChatAttachment{}, fmt.Errorf("card is not a JSON object: %w", err)
	}
	if t, _ := v["type"].(string); !strings.EqualFold(t, "adaptive") && !strings.EqualFold(t, "AdaptiveCard") {
		return ChatAttachment{}, fmt.Errorf("card type %q: Graph takes only adaptive cards", t)
	}
	content := card
	if inner, ok := v["adaptive"]; ok {
		content, _ = json.Marshal(inner)
	} else {
		v["type"] = "AdaptiveCard"
		content, _ = json.Marshal(v)
	}
	return ChatAttachment{ID: randomToken()[:16], ContentType: "application/vnd.microsoft.card.adaptive", Content: string(content)}, nil
}
