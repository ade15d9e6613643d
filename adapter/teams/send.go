package teams

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"html"
	"net/http"
	"strings"
	"unicode/utf16"

	"github.com/seed-a64d9e1f/chatwire/adapter"
)

// target is where a send goes: a stored (or fallback) reference and, for replies, the
// conversation id as addressed (a channel thread keeps its ";messageid=") and the activity
// answered.
type target struct {
	ref     Reference
	conv    string // the conversation id to address
	replyTo string
}

// resolve finds the conversation a message goes to, opening a 1:1 chat with a user when
// needed (spec §3.3).
func (a *Adapter) resolve(ctx context.Context, msg adapter.Message) (target, error) {
	kind, err := msg.To.Kind()
	if err != nil {
		// A reply needs no target: the event id names its conversation.
		conv, _, ok := ParseID(msg.ReplyTo)
		if !ok || !isEmpty(msg.To) {
			return target{}, err
		}
		kind, msg.To = adapter.TargetChat, adapter.Target{Chat: conv}
	}
	var t target
	switch kind {
	case adapter.TargetChat:
		t.ref, err = a.conversation(ctx, baseConversation(msg.To.Chat))
		t.conv = msg.To.Chat
	case adapter.TargetChannel:
		t.ref, err = a.conversation(ctx, msg.To.Channel.Channel)
		t.conv = msg.To.Channel.Channel
	case adapter.TargetUser:
		t.ref, err = a.personal(ctx, msg.To.User)
		t.conv = t.ref.ConversationID
	default:
		return target{}, &adapter.Error{Kind: adapter.KindInvalidRecipient, Platform: Platform,
			Message: fmt.Sprintf("cannot send to %s: use chat (a conversation id), channel or user", msg.To)}
	}
	if err != nil {
		return target{}, err
	}
	if msg.ReplyTo != "" {
		conv, id, ok := ParseID(msg.ReplyTo)
		switch {
		case ok && baseConversation(conv) != t.ref.ConversationID:
			return target{}, adapter.Errorf(adapter.KindInvalidRequest, "teams: reply_to %q is from another conversation than %s", clip(msg.ReplyTo, 120), msg.To)
		case ok:
			t.conv, t.replyTo = conv, id
		default:
			t.replyTo = msg.ReplyTo // a bare activity id of this conversation
		}
		if t.ref.ConversationType == "channel" && !strings.Contains(t.conv, ";messageid=") {
			t.conv = t.ref.ConversationID + ";messageid=" + t.replyTo // a reply to a thread's root
		}
	}
	return t, nil
}

func (a *Adapter) conversation(ctx context.Context, id string) (Reference, error) {
	ref, ok, err := a.refs.Conversation(ctx, id)
	if err != nil {
		return Reference{}, adapter.Errorf(adapter.KindUnavailable, "teams: reading the reference of %s: %w", clip(id, 80), err)
	}
	if ok {
		return ref, nil
	}
	if a.opts.DefaultServiceURL != "" {
		return Reference{ConversationID: id, ServiceURL: a.opts.DefaultServiceURL, TenantID: a.opts.TenantID, BotID: a.botID()}, nil
	}
	return Reference{}, &adapter.Error{Kind: adapter.KindNotFound, Platform: Platform, Code: "NoConversationReference",
		Message: fmt.Sprintf("no conversation reference for %s: the bot learns a conversation when it is installed there or gets a message from it", clip(id, 80))}
}

// personal returns the 1:1 conversation with user (a "29:" id or an Entra object id),
// creating it with POST v3/conversations if the bot knows the user but not the chat.
func (a *Adapter) personal(ctx context.Context, user string) (Reference, error) {
	u, ok, err := a.refs.User(ctx, user)
	if err != nil {
		return Reference{}, adapter.Errorf(adapter.KindUnavailable, "teams: reading the reference of user %s: %w", clip(user, 80), err)
	}
	if ok && u.Conversation != "" {
		if ref, found, _ := a.refs.Conversation(ctx, u.Conversation); found {
			return ref, nil
		}
	}
	if !ok {
		if !strings.HasPrefix(user, "29:") || a.opts.DefaultServiceURL == "" || a.opts.TenantID == "" {
			return Reference{}, &adapter.Error{Kind: adapter.KindInvalidRecipient, Platform: Platform, Code: "UnknownUser",
				Message: fmt.Sprintf("user %s is unknown to the bot: proactive messages reach users who installed the bot (the installation tells the bot their ids); Teams takes no e-mail or UPN", clip(user, 80))}
		}
		u = UserRef{ID: user, TenantID: a.opts.TenantID, ServiceURL: a.opts.DefaultServiceURL}
	}
	return a.createPersonal(ctx, u)
}

// createPersonal opens (or finds: the call is idempotent per user) the 1:1 chat with u.
func (a *Adapter) createPersonal(ctx context.Context, u UserRef) (Reference, error) {
	body := map[string]any{"isGroup": false, "bot": map[string]string{"id": a.botID()},
		"members": []map[string]string{{"id": u.ID}}, "tenantId": u.TenantID,
		"channelData": map[string]any{"tenant": map[string]string{"id": u.TenantID}}}
	var out struct {
		ID string `json:"id"`
	}
	if err := a.conn.do(ctx, http.MethodPost, u.ServiceURL, "v3/conversations", body, &out); err != nil {
		var api *APIError
		if errors.As(err, &api) && api.StatusCode == http.StatusForbidden {
			return Reference{}, &adapter.Error{Kind: adapter.KindInvalidRecipient, Platform: Platform, Code: api.Code, Err: err,
				Message: fmt.Sprintf("cannot open a 1:1 chat with user %s: %s (the user must install the bot first)", clip(u.ID, 80), api.Message)}
		}
		return Reference{}, toAdapterError(err, "open a 1:1 chat with user %s", clip(u.ID, 80))
	}
	if out.ID == "" {
		return Reference{}, adapter.Errorf(adapter.KindUnavailable, "teams: creating a 1:1 chat returned no conversation id")
	}
	ref := Reference{ConversationID: out.ID, ConversationType: "personal", ServiceURL: u.ServiceURL, TenantID: u.TenantID, BotID: a.botID(), UserID: u.ID}
	a.refs.PutConversation(ctx, ref)
	u.Conversation = out.ID
	a.refs.PutUser(ctx, u)
	return ref, nil
}

// outActivity is an activity the bot sends.
type outActivity struct {
	Type         string        `json:"type"`
	Text         string        `json:"text,omitempty"`
	TextFormat   string        `json:"textFormat,omitempty"`
	Attachments  []Attachment  `json:"attachments,omitempty"`
	Entities     []Entity      `json:"entities,omitempty"`
	From         *Account      `json:"from,omitempty"`
	Conversation *Conversation `json:"conversation,omitempty"`
	ReplyToID    string        `json:"replyToId,omitempty"`
}

// build turns msg into the activities to send: the text (with mentions), then a card, then
// each image, as Teams splits text and attachments into separate messages anyway (spec §3.2).
func (a *Adapter) build(msg adapter.Message) ([]outActivity, error) {
	var acts []outActivity
	text, format := msg.Text, "plain"
	switch {
	case msg.HTML != "":
		text, format = msg.HTML, "xml"
	case msg.Markdown != "":
		text, format = msg.Markdown, "markdown"
	}
	if n := countSet(msg.Text != "", msg.HTML != "", msg.Markdown != ""); n > 1 {
		return nil, adapter.Errorf(adapter.KindInvalidRequest, "teams: set only one of text, markdown and html")
	}
	var entities []Entity
	for _, m := range msg.Mentions {
		name := m.Name
		if name == "" {
			name = m.ID
		}
		at := "<at>" + html.EscapeString(name) + "</at>"
		if !strings.Contains(text, at) {
			// The mention text must appear in the message or Teams ignores it (spec §2.2).
			text = strings.TrimSpace(at + " " + text)
		}
		entities = append(entities, Entity{Type: "mention", Mentioned: &Account{ID: m.ID, Name: name}, Text: at})
	}
	if text != "" {
		acts = append(acts, outActivity{Type: "message", Text: text, TextFormat: format, Entities: entities})
	}
	if len(msg.Card) > 0 {
		card, err := adaptiveCard(msg.Card)
		if err != nil {
			return nil, err
		}
		acts = append(acts, outActivity{Type: "message", Attachments: []Attachment{card}})
	}
	for _, at := range msg.Attachments {
		att, err := imageAttachment(at)
		if err != nil {
			return nil, err
		}
		acts = append(acts, outActivity{Type: "message", Attachments: []Attachment{att}})
	}
	if len(acts) == 0 {
		return nil, adapter.Errorf(adapter.KindInvalidRequest, "teams: empty message: set text, markdown, html, a card or attachments")
	}
	for i := range acts {
		if n := messageBytes(acts[i]); n > a.opts.MaxMessageBytes {
			return nil, &adapter.Error{Kind: adapter.KindTooLarge, Platform: Platform, Code: "MessageSizeTooBig",
				Message: fmt.Sprintf("message is %d bytes as UTF-16; Teams takes at most %d (spec: 100 KB, 80 KB to be safe): split it", n, a.opts.MaxMessageBytes)}
		}
	}
	return acts, nil
}

func countSet(bs ...bool) int {
	n := 0
	for _, b := range bs {
		if b {
			n++
		}
	}
	return n
}

// adaptiveCard accepts {"type":"AdaptiveCard",…}, {"type":"adaptive",…} or
// {"type":"adaptive","adaptive":{…}}.
func adaptiveCard(raw json.RawMessage) (Attachment, error) {
	var v map[string]any
	if err := json.Unmarshal(raw, &v); err != nil {
		return Attachment{}, adapter.Errorf(adapter.KindInvalidRequest, "teams: card is not a JSON object: %v", err)
	}
	t, _ := v["type"].(string)
	if !strings.EqualFold(t, "adaptive") && !strings.EqualFold(t, "AdaptiveCard") {
		return Attachment{}, adapter.Errorf(adapter.KindInvalidRequest, "teams: card type %q: Teams bots send Adaptive Cards (type AdaptiveCard)", t)
	}
	if inner, ok := v["adaptive"].(map[string]any); ok {
		v = inner
	}
	v["type"] = "AdaptiveCard"
	if _, ok := v["version"]; !ok {
		v["version"] = "1.5" // Action.Execute needs 1.5 (spec §2.4)
	}
	b, _ := json.Marshal(v)
	return Attachment{ContentType: "application/vnd.microsoft.card.adaptive", Content: b}, nil
}

// imageAttachment sends an image inline (base64, ≤ 1 MB, spec §2.2) or by URL. Other files
// need the file consent flow, which the adapter does not do yet.
func imageAttachment(at adapter.Attachment) (Attachment, error) {
	if at.AttachType() != adapter.AttachImage {
		return Attachment{}, &adapter.Error{Kind: adapter.KindInvalidRequest, Platform: Platform, Code: "FileNotSupported",
			Message: fmt.Sprintf("attachment %q: Teams bots send files through the file consent card flow, which chatwire does not do yet: send images, or a link", at.Name)}
	}
	ct := at.ContentType
	if ct == "" {
		ct = "image/png"
	}
	if at.URL != "" && at.Data == nil && at.Body == nil {
		return Attachment{ContentType: ct, ContentURL: at.URL, Name: at.Name}, nil
	}
	r, size, err := at.Open()
	if err != nil {
		return Attachment{}, err
	}
	if size > 1<<20 {
		return Attachment{}, adapter.Errorf(adapter.KindTooLarge, "teams: image %q is %d bytes; Teams takes at most 1 MB", at.Name, size)
	}
	data := make([]byte, size)
	if _, err := fullRead(r, data); err != nil {
		return Attachment{}, adapter.Errorf(adapter.KindInvalidRequest, "teams: reading image %q: %v", at.Name, err)
	}
	return Attachment{ContentType: ct, Name: at.Name, ContentURL: "data:" + ct + ";base64," + base64.StdEncoding.EncodeToString(data)}, nil
}

func fullRead(r interface{ Read([]byte) (int, error) }, b []byte) (int, error) {
	n := 0
	for n < len(b) {
		m, err := r.Read(b[n:])
		n += m
		if err != nil {
			if n == len(b) {
				return n, nil
			}
			return n, err
		}
	}
	return n, nil
}

// messageBytes is the size Teams counts: UTF-16 bytes of text and attachments, base64 images
// excluded (spec §3.5).
func messageBytes(act outActivity) int {
	n := len(utf16.Encode([]rune(act.Text))) * 2
	for _, at := range act.Attachments {
		if strings.HasPrefix(at.ContentURL, "data:") {
			continue
		}
		b, _ := json.Marshal(at)
		n += len(utf16.Encode([]rune(string(b)))) * 2
	}
	return n
}

// Send delivers msg to a conversation (To.Chat: a conversation id as in events), a channel
// (To.Channel.Channel) or a user's 1:1 chat (To.User: a "29:" id or Entra object id of a user
// who installed the bot). ReplyTo (an event id) posts into that message's thread; with
// ReplyTo, To may be left empty. Receipt ids
// are event-style ids that [Adapter.Recall] and [Adapter.Edit] take.
func (a *Adapter) Send(ctx context.Context, msg adapter.Message) (adapter.Receipt, error) {
	if a.isClosed() {
		return adapter.Receipt{}, adapter.Errorf(adapter.KindUnavailable, "teams: adapter closed")
	}
	acts, err := a.build(msg)
	if err != nil {
		return adapter.Receipt{}, err
	}
	t, err := a.resolve(ctx, msg)
	if err != nil {
		return adapter.Receipt{}, err
	}
	var rc adapter.Receipt
	for _, act := range acts {
		id, err := a.post(ctx, t, act)
		if err != nil {
			return rc, err
		}
		rc.IDs = append(rc.IDs, EventID(t.conv, id))
	}
	rc.ID = rc.IDs[0]
	if len(rc.IDs) == 1 {
		rc.IDs = nil
	}
	return rc, nil
}

func (a *Adapter) post(ctx context.Context, t target, act outActivity) (string, error) {
	act.From = &Account{ID: a.botID()}
	act.Conversation = &Conversation{ID: t.conv}
	path := convPath(t.conv) + "/activities"
	if t.replyTo != "" {
		act.ReplyToID = t.replyTo
		path += "/" + pathEscape(t.replyTo)
	}
	var out struct {
		ID string `json:"id"`
	}
	if err := a.conn.do(ctx, http.MethodPost, t.ref.ServiceURL, path, act, &out); err != nil {
		return "", a.writeFailed(ctx, t.ref, err, "send to %s", clip(t.conv, 80))
	}
	return out.ID, nil
}

// writeFailed converts a connector error, forgetting the reference on errors that stay
// until the bot is installed again (403 roster/blocked, 404 conversation; spec §6.3).
func (a *Adapter) writeFailed(ctx context.Context, ref Reference, err error, format string, args ...any) error {
	var api *APIError
	if errors.As(err, &api) && api.forgetReference() {
		a.forget(ctx, ref.ConversationID)
		a.log.Warn("teams: conversation reference forgotten", "platform", Platform, "conversation", clip(ref.ConversationID, 80), "code", api.Code)
	}
	return toAdapterError(err, format, args...)
}

func pathEscape(s string) string { return strings.TrimPrefix(convPath(s), "v3/conversations/") }

// Typing shows the typing indicator in a conversation (clients show it about 3 s).
func (a *Adapter) Typing(ctx context.Context, chat string) error {
	t, err := a.resolve(ctx, adapter.Message{To: adapter.Target{Chat: chat}})
	if err != nil {
		return err
	}
	err = a.conn.do(ctx, http.MethodPost, t.ref.ServiceURL, convPath(t.conv)+"/activities",
		outActivity{Type: "typing", From: &Account{ID: a.botID()}}, nil)
	if err != nil {
		return a.writeFailed(ctx, t.ref, err, "typing in %s", clip(chat, 80))
	}
	return nil
}

// Recall deletes a message the bot sent, given its receipt id.
func (a *Adapter) Recall(ctx context.Context, id string) error {
	conv, act, ok := ParseID(id)
	if !ok {
		return adapter.Errorf(adapter.KindInvalidRequest, "teams: %q is not a teams message id", clip(id, 120))
	}
	ref, err := a.conversation(ctx, baseConversation(conv))
	if err != nil {
		return err
	}
	if err := a.conn.do(ctx, http.MethodDelete, ref.ServiceURL, convPath(conv)+"/activities/"+pathEscape(act), nil, nil); err != nil {
		return a.writeFailed(ctx, ref, err, "delete message %s", act)
	}
	return nil
}

// Edit replaces a message the bot sent (given its receipt id) with msg's text or card;
// msg.To is ignored.
func (a *Adapter) Edit(ctx context.Context, id string, msg adapter.Message) error {
	conv, actID, ok := ParseID(id)
	if !ok {
		return adapter.Errorf(adapter.KindInvalidRequest, "teams: %q is not a teams message id", clip(id, 120))
	}
	acts, err := a.build(msg)
	if err != nil {
		return err
	}
	if len(acts) != 1 {
		return adapter.Errorf(adapter.KindInvalidRequest, "teams: an edit replaces one message: set text or a card, not both")
	}
	ref, err := a.conversation(ctx, baseConversation(conv))
	if err != nil {
		return err
	}
	act := acts[0]
	act.From, act.Conversation = &Account{ID: a.botID()}, &Conversation{ID: conv}
	if err := a.conn.do(ctx, http.MethodPut, ref.ServiceURL, convPath(conv)+"/activities/"+pathEscape(actID), act, nil); err != nil {
		return a.writeFailed(ctx, ref, err, "update message %s", actID)
	}
	return nil
}

func isEmpty(t adapter.Target) bool {
	return t.User == "" && len(t.Users) == 0 && t.Party == "" && t.Tag == "" && !t.All && t.Chat == "" &&
		t.Channel == nil && t.Email == "" && len(t.Emails) == 0
}
