package aibottest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/coder/websocket"
)

// ErrNoConnection is returned by pushes when no client is subscribed.
var ErrNoConnection = errors.New("aibottest: no subscribed connection")

// Conv names a conversation: a single chat with User, or a group chat Chat (with User the
// sender).
type Conv struct {
	User string
	Chat string // group chat id; "" for a single chat
}

// key is how replies and aibot_send_msg name the conversation.
func (c Conv) key() string {
	if c.Chat != "" {
		return c.Chat
	}
	return c.User
}

// Pushed is a callback the server pushed.
type Pushed struct {
	ReqID string
	MsgID string
}

// Push sends an aibot_msg_callback or aibot_event_callback with body verbatim to the newest
// connection. reqID "" means a fresh one. The server reads msgid, chattype, chatid,
// from.userid, msgtype and event.eventtype from body to track what the req_id may answer;
// a message makes its conversation eligible for aibot_send_msg.
func (s *Server) Push(cmd, reqID string, body json.RawMessage) (Pushed, error) {
	s.init()
	var b struct {
		MsgID    string `json:"msgid"`
		ChatID   string `json:"chatid"`
		ChatType string `json:"chattype"`
		From     struct {
			UserID string `json:"userid"`
		} `json:"from"`
		MsgType string `json:"msgtype"`
		Event   struct {
			EventType string `json:"eventtype"`
		} `json:"event"`
	}
	if err := json.Unmarshal(body, &b); err != nil {
		return Pushed{}, fmt.Errorf("aibottest: push body: %w", err)
	}
	if reqID == "" {
		reqID = "REQ_" + randHex(8)
	}
	conv := Conv{User: b.From.UserID, Chat: b.ChatID}
	kind := "msg"
	if cmd == "aibot_event_callback" {
		kind = b.Event.EventType
		if kind != "enter_chat" && kind != "template_card_event" {
			kind = "event"
		}
	}
	s.mu.Lock()
	c := s.newest()
	if c != nil {
		s.reqs[reqID] = &callback{kind: kind, chat: conv.key(), at: time.Now()}
		if kind == "msg" {
			s.chats[conv.key()] = true
		}
	}
	s.mu.Unlock()
	if c == nil {
		return Pushed{}, ErrNoConnection
	}
	if err := c.waitReady(); err != nil {
		return Pushed{}, err
	}
	err := c.write(context.Background(), inFrame{Cmd: cmd, Headers: headers{reqID}, Body: body})
	return Pushed{ReqID: reqID, MsgID: b.MsgID}, err
}

// PushRaw writes data as one text frame to the newest connection, unparsed: for control
// characters, duplicates and malformed frames.
func (s *Server) PushRaw(data []byte) error {
	s.init()
	s.mu.Lock()
	c := s.newest()
	s.mu.Unlock()
	if c == nil {
		return ErrNoConnection
	}
	if err := c.waitReady(); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return c.ws.Write(ctx, websocket.MessageText, data)
}

func (s *Server) newMsgID() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.seq++
	return fmt.Sprintf("MSG%d_%s", s.seq, randHex(6))
}

// msgBody builds a callback body in the platform's field order.
func (s *Server) msgBody(conv Conv, msgtype string, payload any) json.RawMessage {
	type from struct {
		UserID string `json:"userid"`
	}
	body := struct {
		MsgID    string `json:"msgid"`
		AIBotID  string `json:"aibotid"`
		ChatID   string `json:"chatid,omitempty"`
		ChatType string `json:"chattype"`
		From     from   `json:"from"`
		MsgType  string `json:"msgtype"`
	}{s.newMsgID(), s.botID(), conv.Chat, "single", from{conv.User}, msgtype}
	if conv.Chat != "" {
		body.ChatType = "group"
	}
	b, _ := json.Marshal(body)
	p, _ := json.Marshal(map[string]any{msgtype: payload})
	return append(append(b[:len(b)-1], ','), p[1:]...)
}

// PushText pushes a text message from conv.
func (s *Server) PushText(conv Conv, content string) (Pushed, error) {
	return s.Push("aibot_msg_callback", "", s.msgBody(conv, "text", map[string]string{"content": content}))
}

// PushMessage pushes a message of msgtype with payload (the type's object) from conv.
func (s *Server) PushMessage(conv Conv, msgtype string, payload any) (Pushed, error) {
	return s.Push("aibot_msg_callback", "", s.msgBody(conv, msgtype, payload))
}

// PushEvent pushes an aibot_event_callback of eventtype with payload (the event's object,
// nil for none) from conv.
func (s *Server) PushEvent(conv Conv, eventtype string, payload any) (Pushed, error) {
	ev := map[string]any{"eventtype": eventtype}
	if payload != nil {
		ev[eventtype] = payload
	}
	body := s.msgBody(conv, "event", nil)
	var m map[string]any
	json.Unmarshal(body, &m)
	m["event"] = ev
	m["create_time"] = time.Now().Unix()
	b, _ := json.Marshal(m)
	return s.Push("aibot_event_callback", "", b)
}

// Kick sends disconnected_event to the newest connection and closes it, as a subscribe from
// elsewhere would.
func (s *Server) Kick() error {
	s.init()
	s.mu.Lock()
	c := s.newest()
	if c != nil {
		c.kicked = true
	}
	s.mu.Unlock()
	if c == nil {
		return ErrNoConnection
	}
	s.kick(c)
	return nil
}

// Drop cuts every connection without a close frame (the client sees 1006).
func (s *Server) Drop() {
	s.init()
	s.mu.Lock()
	cs := append([]*conn(nil), s.conns...)
	s.mu.Unlock()
	for _, c := range cs {
		c.ws.CloseNow()
	}
}

// DelayAcks delays the ack of every later reply and send by d (0: no delay).
func (s *Server) DelayAcks(d time.Duration) { s.init(); s.mu.Lock(); s.ackDelay = d; s.mu.Unlock() }

// DropAcks makes the server apply later frames of cmd ("*": every reply and send) but
// never ack them; "" acks everything again.
func (s *Server) DropAcks(cmd string) { s.init(); s.mu.Lock(); s.dropAcks = cmd; s.mu.Unlock() }

// IgnorePings stops acking pings (on true), as a half-dead connection would.
func (s *Server) IgnorePings(on bool) { s.init(); s.mu.Lock(); s.noPingAck = on; s.mu.Unlock() }

// ExpireStreams makes every stream that exists now answer 846608 to its next frame.
func (s *Server) ExpireStreams() {
	s.init()
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, b := range s.streams {
		b.expired = true
	}
}

// FailSubscribes answers the next len(codes) subscribes with these errcodes (45009 for a
// subscribe flood, 853000 for bad credentials).
func (s *Server) FailSubscribes(codes ...int) {
	s.init()
	s.mu.Lock()
	s.failSub = append(s.failSub, codes...)
	s.mu.Unlock()
}

// Connections returns how many authenticated connections are open.
func (s *Server) Connections() int { s.init(); s.mu.Lock(); defer s.mu.Unlock(); return len(s.conns) }

// Subscribes returns how many aibot_subscribe frames the server has read.
func (s *Server) Subscribes() int { s.init(); s.mu.Lock(); defer s.mu.Unlock(); return s.subscribes }

// Frames returns every client frame read so far, in order.
func (s *Server) Frames() []Frame {
	s.init()
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Frame(nil), s.frames...)
}

// Refused returns the client frames the server answered with a non-zero errcode (or not at
// all, for frames before subscribe and non-JSON frames).
func (s *Server) Refused() []Frame {
	s.init()
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Frame(nil), s.refused...)
}

// Bubbles returns every stream, in creation order, with its frames.
func (s *Server) Bubbles() []Bubble {
	s.init()
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Bubble
	for _, it := range s.shown {
		if it.bubble != nil {
			b := *it.bubble
			b.Frames = append([]StreamFrame(nil), b.Frames...)
			out = append(out, b)
		}
	}
	return out
}

// Sent returns every non-stream message accepted, in order.
func (s *Server) Sent() []Sent {
	s.init()
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Sent(nil), s.sent...)
}

// Shown returns the texts the user sees in conversation chat (a userid or a group chatid),
// in the order they appeared: each stream bubble's latest content and each markdown or text
// message (template cards and media show as "").
func (s *Server) Shown(chat string) []string {
	s.init()
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, it := range s.shown {
		if it.chat != chat {
			continue
		}
		if it.bubble != nil {
			out = append(out, it.bubble.Content)
		} else {
			out = append(out, it.text)
		}
	}
	return out
}

// newest returns the newest connection not kicked; s.mu is held.
func (s *Server) newest() *conn {
	for i := len(s.conns) - 1; i >= 0; i-- {
		if !s.conns[i].kicked {
			return s.conns[i]
		}
	}
	return nil
}

// RefuseConnections makes the next n WebSocket handshakes fail with HTTP 503, as an
// unreachable endpoint would.
func (s *Server) RefuseConnections(n int) { s.init(); s.mu.Lock(); s.refuse += n; s.mu.Unlock() }

// Handshakes returns when each WebSocket handshake (refused or not) arrived.
func (s *Server) Handshakes() []time.Time {
	s.init()
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]time.Time(nil), s.handshakes...)
}

// MaxConnections returns the most authenticated connections that were open at once (a
// kicked connection counts until it is closed).
func (s *Server) MaxConnections() int { s.init(); s.mu.Lock(); defer s.mu.Unlock(); return s.maxConns }

// waitReady waits until c's subscribe ack is written.
func (c *conn) waitReady() error {
	select {
	case <-c.ready:
		return nil
	case <-time.After(10 * time.Second):
		return errors.New("aibottest: the connection's subscribe ack was never written")
	}
}
