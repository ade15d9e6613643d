package aibot

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/seed-a64d9e1f/chatwire/adapter"
)

type streamFrame struct {
	ID       string `json:"id"`
	Finish   bool   `json:"finish"`
	Content  string `json:"content"`
	Feedback *struct {
		ID string `json:"id"`
	} `json:"feedback,omitempty"`
}

type streamMsg struct {
	MsgType string      `json:"msgtype"`
	Stream  streamFrame `json:"stream"`
}

type markdownMsg struct {
	ChatID   string `json:"chatid,omitempty"`
	ChatType int    `json:"chat_type,omitempty"`
	MsgType  string `json:"msgtype"`
	Markdown struct {
		Content string `json:"content"`
	} `json:"markdown"`
}

type cardMsg struct {
	ChatID       string          `json:"chatid,omitempty"`
	ChatType     int             `json:"chat_type,omitempty"`
	MsgType      string          `json:"msgtype,omitempty"`
	ResponseType string          `json:"response_type,omitempty"`
	TemplateCard json.RawMessage `json:"template_card"`
}

type textMsg struct {
	MsgType string  `json:"msgtype"`
	Text    textObj `json:"text"`
}

// templateCard extracts a template card from msg.Card: {"type":"template_card",
// "template_card":{...}} or the card's fields beside "type".
func templateCard(card json.RawMessage) (json.RawMessage, error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(card, &m); err != nil {
		return nil, adapter.Errorf(adapter.KindInvalidRequest, "wecom_aibot: card is not a JSON object: %v", err)
	}
	var typ string
	json.Unmarshal(m["type"], &typ)
	if typ != "template_card" {
		return nil, adapter.Errorf(adapter.KindInvalidRequest, "wecom_aibot: card type %q: the AI bot sends only template_card", typ)
	}
	if tc, ok := m["template_card"]; ok {
		return tc, nil
	}
	delete(m, "type")
	return json.Marshal(m)
}

// splitText cuts s into pieces of at most max bytes at rune boundaries, preferring a
// newline in the second half of each piece; the pieces concatenate to s.
func splitText(s string, max int) []string {
	var out []string
	for len(s) > max {
		cut := max
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		if i := strings.LastIndexByte(s[:cut], '\n'); i >= cut/2 {
			cut = i + 1
		}
		out = append(out, s[:cut])
		s = s[cut:]
	}
	if s != "" {
		out = append(out, s)
	}
	return out
}

// Send delivers msg. With ReplyTo, it answers that event the way its req_id allows: a
// message with a stream bubble (Text), markdown or a template card; enter_chat with a
// welcome (within 5 s); a card event with a card update (within 5 s). Anything else, a
// req_id that is consumed, late or whose earlier frame timed out, and messages to To (User
// for a single chat, Chat for a group) go out by aibot_send_msg as markdown. Text over
// 20,480 bytes goes out as several messages.
func (b *Bot) Send(ctx context.Context, msg adapter.Message) (adapter.Receipt, error) {
	if b.ctx.Err() != nil {
		return adapter.Receipt{}, errClosed
	}
	if msg.HTML != "" {
		return adapter.Receipt{}, adapter.Errorf(adapter.KindInvalidRequest, "wecom_aibot: HTML is not supported: send text, markdown, a template card or attachments")
	}
	n := 0
	for _, set := range []bool{msg.Text != "", msg.Markdown != "", len(msg.Card) > 0} {
		if set {
			n++
		}
	}
	if n > 1 || n == 0 && len(msg.Attachments) == 0 {
		return adapter.Receipt{}, adapter.Errorf(adapter.KindInvalidRequest, "wecom_aibot: set exactly one of text, markdown and card, or attachments only")
	}
	if len(msg.Attachments) > 0 {
		if b.webhook {
			return adapter.Receipt{}, adapter.Errorf(adapter.KindInvalidRequest, "wecom_aibot: attachments need the long connection")
		}
		if n > 0 {
			// Text first, then each attachment as its own message.
			first := msg
			first.Attachments = nil
			r, err := b.Send(ctx, first)
			if err != nil {
				return r, err
			}
			rest := msg
			rest.Text, rest.Markdown, rest.Card = "", "", nil
			r2, err := b.Send(ctx, rest)
			r.IDs = append(append([]string{}, orIDs(r)...), r2.IDs...)
			return r, err
		}
		var c *call
		if msg.ReplyTo != "" {
			if c = b.lookup(ctx, msg.ReplyTo); c == nil {
				return adapter.Receipt{}, adapter.Errorf(adapter.KindNotFound, "wecom_aibot: reply_to %q: no such callback (callbacks are kept 24 h)", msg.ReplyTo)
			}
		}
		chat, group, err := b.target(msg, c)
		if err != nil {
			return adapter.Receipt{}, err
		}
		return b.sendAttachments(ctx, c, chat, group, msg.Attachments)
	}
	var card json.RawMessage
	if len(msg.Card) > 0 {
		var err error
		if card, err = templateCard(msg.Card); err != nil {
			return adapter.Receipt{}, err
		}
	}
	text := msg.Text + msg.Markdown
	if b.webhook {
		return b.webhookSend(ctx, msg, text, card)
	}
	var c *call
	if msg.ReplyTo != "" {
		if c = b.lookup(ctx, msg.ReplyTo); c == nil {
			return adapter.Receipt{}, adapter.Errorf(adapter.KindNotFound, "wecom_aibot: reply_to %q: no such callback (callbacks are kept 24 h)", msg.ReplyTo)
		}
		r, done, err := b.respond(ctx, c, msg, text, card)
		if done {
			return r, err
		}
	}
	chat, group, err := b.target(msg, c)
	if err != nil {
		return adapter.Receipt{}, err
	}
	if card != nil {
		id := newReqID("aibot_send_msg")
		_, err := b.call(ctx, "aibot_send_msg", id, cardMsg{ChatID: chat, ChatType: chatType(group), MsgType: "template_card", TemplateCard: card})
		return adapter.Receipt{ID: id}, asAdapterError(err, "wecom_aibot: send to "+chat)
	}
	return b.sendMarkdown(ctx, chat, group, text, false)
}

func chatType(group bool) int {
	if group {
		return 2
	}
	return 1
}

// target returns where aibot_send_msg goes: the callback's conversation, or msg.To.
func (b *Bot) target(msg adapter.Message, c *call) (string, bool, error) {
	if c != nil {
		return c.chat, c.group, nil
	}
	k, err := msg.To.Kind()
	if err != nil {
		return "", false, err
	}
	switch k {
	case adapter.TargetUser:
		return msg.To.User, false, nil
	case adapter.TargetChat:
		return msg.To.Chat, true, nil
	}
	return "", false, adapter.Errorf(adapter.KindInvalidRecipient, "wecom_aibot: target %s: the AI bot sends to one user or one group chat", msg.To)
}

// usable reports whether c's req_id may still take a reply of its kind.
func (c *call) usable() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.consumed || c.tainted {
		return false
	}
	switch c.kind {
	case kindMsg:
		return time.Since(c.at) < callTTL
	case kindEnterChat, kindCardEvent:
		return time.Since(c.at) < eventWin-eventSafe
	}
	return false
}

// respond answers c on its req_id if the rules allow; done is false when the caller should
// fall back to aibot_send_msg.
func (b *Bot) respond(ctx context.Context, c *call, msg adapter.Message, text string, card json.RawMessage) (adapter.Receipt, bool, error) {
	if !c.usable() {
		return adapter.Receipt{}, false, nil
	}
	var cmd string
	var body any
	switch {
	case c.kind == kindMsg && card != nil:
		cmd, body = "aibot_respond_msg", cardMsg{MsgType: "template_card", TemplateCard: card}
	case c.kind == kindMsg && msg.Markdown != "" && len(text) <= MaxBubbleBytes:
		m := markdownMsg{MsgType: "markdown"}
		m.Markdown.Content = text
		cmd, body = "aibot_respond_msg", m
	case c.kind == kindMsg:
		// Text (or long markdown) goes out as finished stream bubbles: one per 20,480 bytes.
		var r adapter.Receipt
		for _, part := range splitText(text, MaxBubbleBytes) {
			id := newStreamID()
			_, err := b.call(ctx, "aibot_respond_msg", c.reqID, streamMsg{MsgType: "stream", Stream: streamFrame{ID: id, Finish: true, Content: part}})
			if err != nil {
				if len(r.IDs) == 0 && b.fallbackable(c, err) {
					return adapter.Receipt{}, false, nil
				}
				return r, true, asAdapterError(err, "wecom_aibot: reply to "+c.eventID)
			}
			r.IDs = append(r.IDs, id)
		}
		r.ID = r.IDs[0]
		return r, true, nil
	case c.kind == kindEnterChat && card != nil:
		cmd, body = "aibot_respond_welcome_msg", cardMsg{MsgType: "template_card", TemplateCard: card}
	case c.kind == kindEnterChat && len(text) <= MaxBubbleBytes:
		cmd, body = "aibot_respond_welcome_msg", textMsg{MsgType: "text", Text: textObj{text}}
	case c.kind == kindCardEvent && card != nil:
		cmd, body = "aibot_respond_update_msg", cardMsg{ResponseType: "update_template_card", TemplateCard: card}
	default:
		return adapter.Receipt{}, false, nil
	}
	_, err := b.call(ctx, cmd, c.reqID, body)
	if err == nil {
		if card != nil || c.kind != kindMsg {
			c.mu.Lock()
			c.consumed = true
			c.mu.Unlock()
		}
		return adapter.Receipt{ID: c.reqID}, true, nil
	}
	if b.fallbackable(c, err) {
		return adapter.Receipt{}, false, nil
	}
	return adapter.Receipt{}, true, asAdapterError(err, "wecom_aibot: reply to "+c.eventID)
}

// fallbackable reports whether a failed reply on c's req_id should go out by
// aibot_send_msg instead, and marks c accordingly.
func (b *Bot) fallbackable(c *call, err error) bool {
	var ae *APIError
	var te *ackTimeoutError
	switch {
	case errors.As(err, &te):
		c.mu.Lock()
		c.tainted = true
		c.mu.Unlock()
		return false // unknown outcome: do not send twice
	case errors.As(err, &ae) && (ae.Code == CodeInvalidReqID || ae.Code == CodeResponded || ae.Code == CodeExpired):
		c.mu.Lock()
		c.consumed = true
		c.mu.Unlock()
		return true
	}
	return false
}

// sendMarkdown sends text to chat by aibot_send_msg, in pieces of at most 20,480 bytes.
// With patient, a 846607 is waited out once (60 s) and retried.
func (b *Bot) sendMarkdown(ctx context.Context, chat string, group bool, text string, patient bool) (adapter.Receipt, error) {
	var r adapter.Receipt
	for _, part := range splitText(text, MaxBubbleBytes) {
		m := markdownMsg{ChatID: chat, ChatType: chatType(group), MsgType: "markdown"}
		m.Markdown.Content = part
		for try := 0; ; try++ {
			id := newReqID("aibot_send_msg")
			_, err := b.call(ctx, "aibot_send_msg", id, m)
			var ae *APIError
			if err != nil && patient && try == 0 && errors.As(err, &ae) && ae.Code == CodeRateLimited && sleep(ctx, RateLimitWait) {
				continue
			}
			if err != nil {
				return r, asAdapterError(err, "wecom_aibot: send to "+chat)
			}
			r.IDs = append(r.IDs, id)
			break
		}
	}
	if len(r.IDs) > 0 {
		r.ID = r.IDs[0]
	}
	return r, nil
}

func newStreamID() string { return "stream_" + strings.TrimPrefix(newReqID(""), "_") }

// orIDs returns r.IDs, or [r.ID] when the receipt names only one message.
func orIDs(r adapter.Receipt) []string {
	if len(r.IDs) > 0 || r.ID == "" {
		return r.IDs
	}
	return []string{r.ID}
}
