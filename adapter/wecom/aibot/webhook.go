package aibot

import (
	"bytes"
	"context"
	"encoding/json"

	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/seed-a64d9e1f/chatwire/adapter"
	"github.com/seed-a64d9e1f/chatwire/adapter/wecom"
)

// hookState is the webhook mode's memory: passive replies by msgid (for redeliveries) and
// the streams WeCom polls.
type hookState struct {
	mu      sync.Mutex           // protects all below
	replies map[string]hookReply // by msgid
	order   []string
	streams map[string]*hookStream // by stream id
	byEvent map[string]*hookStream // by event id
	created []*hookStream          // streams in creation order, for sweep
}

const maxHookReplies = 10000

func (h *hookState) init() {
	h.replies = map[string]hookReply{}
	h.streams = map[string]*hookStream{}
	h.byEvent = map[string]*hookStream{}
}

// sweep forgets, oldest first, the streams WeCom no longer polls (closed, or an hour old),
// and the oldest beyond maxHookReplies even if open (a late reply to one goes to its
// response_url). It stops at the first stream it keeps, so each call costs what it forgets;
// a stream closed behind a younger open one waits for its turn. h.mu is held.
func (h *hookState) sweep(now time.Time) {
	for len(h.created) > 0 {
		hs := h.created[0]
		hs.mu.Lock()
		old := hs.closed || now.Sub(hs.created) > time.Hour
		hs.mu.Unlock()
		if !old && len(h.created) <= maxHookReplies {
			return
		}
		delete(h.streams, hs.id)
		if h.byEvent[hs.call.eventID] == hs {
			delete(h.byEvent, hs.call.eventID)
		}
		h.created[0] = nil
		h.created = h.created[1:]
	}
}

// hookReply is what a message got: its passive reply (plaintext) and its event.
type hookReply struct {
	reply []byte
	event adapter.Event
}

// hookStream is a stream WeCom polls for a message callback.
type hookStream struct {
	id      string
	call    *call
	created time.Time
	mu      sync.Mutex // protects below
	text    string     // the whole reply so far
	final   bool       // the bot finished its reply
	closed  bool       // a finish:true snapshot was served; WeCom stops polling
	served  int        // bytes of text the last served snapshot showed
	taken   bool       // a Send or OpenStream answered it
	done    chan struct{}
}

// webhookError is a refused callback: the response to give and the error to log.
func webhookError(status int, kind adapter.Kind, msg string, err error) (*adapter.WebhookResponse, []adapter.Event, error) {
	return &adapter.WebhookResponse{Status: status, Body: []byte(http.StatusText(status) + "\n")}, nil,
		&adapter.Error{Kind: kind, Platform: adapter.PlatformWeComAIBot, Message: msg, Err: err}
}

// HandleWebhook serves the webhook mode: URL verification (GET) and encrypted callbacks
// (POST). The signature is checked before anything is decrypted, POSTs outside ReplayWindow
// are refused, and a msgid seen before gets its first answer and its event again (same id:
// the host drops the duplicate, or queues it if the first delivery failed before it could).
// A message is answered with an empty stream that WeCom then polls: each poll gets the
// bot's reply as it stands (finish:true once [Bot.Send] or a [adapter.Stream] completed it,
// or for an unknown stream id).
func (b *Bot) HandleWebhook(ctx context.Context, req *adapter.WebhookRequest) (*adapter.WebhookResponse, []adapter.Event, error) {
	if !b.webhook {
		return webhookError(http.StatusNotFound, adapter.KindNotFound, "bot uses the long connection, not a webhook", nil)
	}
	q := req.Query
	sig := q.Get("msg_signature")
	if sig == "" {
		sig = q.Get("msgsignature")
	}
	if sig == "" {
		sig = q.Get("signature")
	}
	ts, nonce := q.Get("timestamp"), q.Get("nonce")
	switch req.Method {
	case http.MethodGet:
		echo := q.Get("echostr")
		if echo == "" || ts == "" || nonce == "" {
			return webhookError(http.StatusBadRequest, adapter.KindInvalidRequest, "URL verification without msg_signature, timestamp, nonce and echostr", nil)
		}
		if !b.crypto.Verify(sig, ts, nonce, echo) {
			return webhookError(http.StatusUnauthorized, adapter.KindUnauthorized, "URL verification: signature mismatch", wecom.ErrSignature)
		}
		plain, err := b.crypto.Decrypt(echo)
		if err != nil {
			return webhookError(http.StatusBadRequest, adapter.KindInvalidRequest, "URL verification: echostr does not decrypt", err)
		}
		return &adapter.WebhookResponse{Status: http.StatusOK, Header: http.Header{"Content-Type": {"text/plain; charset=utf-8"}}, Body: plain}, nil, nil
	case http.MethodPost:
	default:
		return webhookError(http.StatusMethodNotAllowed, adapter.KindInvalidRequest, "method "+req.Method+" not allowed", nil)
	}
	var env struct {
		Encrypt  string `json:"encrypt"`
		Encrypt2 string `json:"Encrypt"`
	}
	if err := json.Unmarshal(req.Body, &env); err != nil {
		return webhookError(http.StatusBadRequest, adapter.KindInvalidRequest, "callback body is not JSON", err)
	}
	enc := env.Encrypt
	if enc == "" {
		enc = env.Encrypt2
	}
	if enc == "" || ts == "" || nonce == "" {
		return webhookError(http.StatusBadRequest, adapter.KindInvalidRequest, "callback without encrypt, msg_signature, timestamp or nonce", nil)
	}
	if !b.crypto.Verify(sig, ts, nonce, enc) {
		return webhookError(http.StatusUnauthorized, adapter.KindUnauthorized, "callback signature mismatch", wecom.ErrSignature)
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	window := orDur(b.opts.ReplayWindow, 5*time.Minute)
	if err != nil || time.Since(time.Unix(sec, 0)).Abs() > window {
		return webhookError(http.StatusUnauthorized, adapter.KindUnauthorized, fmt.Sprintf("callback timestamp %q outside the %s replay window", ts, window), nil)
	}
	plain, err := b.crypto.Decrypt(enc)
	if err != nil {
		return webhookError(http.StatusBadRequest, adapter.KindInvalidRequest, "callback does not decrypt", err)
	}
	var body callbackBody
	if err := json.Unmarshal(plain, &body); err != nil || body.MsgType == "" {
		return webhookError(http.StatusBadRequest, adapter.KindInvalidRequest, "decrypted callback is not a JSON object with msgtype", err)
	}
	if b.opts.BotID != "" && body.AIBotID != "" && body.AIBotID != b.opts.BotID {
		b.log.WarnContext(ctx, "wecom_aibot: callback for another aibotid", "aibotid", body.AIBotID)
	}
	// Stream refreshes come before msgid dedup: whether they reuse the msgid is unknown.
	if body.MsgType == "stream" {
		id := ""
		if body.Stream != nil {
			id = body.Stream.ID
		}
		if b.opts.Redis != nil {
			content, finish, _ := b.rRefresh(ctx, id)
			out, _ := json.Marshal(streamMsg{MsgType: "stream", Stream: streamFrame{ID: id, Finish: finish, Content: content}})
			return b.passive(nonce, out), nil, nil
		}
		return b.passive(nonce, b.refresh(id)), nil, nil
	}
	if body.MsgID == "" {
		return webhookError(http.StatusBadRequest, adapter.KindInvalidRequest, "callback without msgid", nil)
	}
	b.hooks.mu.Lock()
	prev, seen := b.hooks.replies[body.MsgID]
	b.hooks.mu.Unlock()
	if seen {
		// A redelivery: the same answer, and the event again (the host drops it by id if it
		// queued it; if it could not, this delivery is its second chance).
		return b.passive(nonce, prev.reply), []adapter.Event{prev.event}, nil
	}
	c := newCall(&body, "")
	var reply []byte
	switch c.kind {
	case kindMsg:
		hs := &hookStream{id: newStreamID(), call: c, created: time.Now(), done: make(chan struct{})}
		b.hooks.mu.Lock()
		b.hooks.streams[hs.id] = hs
		b.hooks.byEvent[c.eventID] = hs
		b.hooks.created = append(b.hooks.created, hs)
		b.hooks.sweep(hs.created)
		b.hooks.mu.Unlock()
		if b.opts.Redis != nil {
			if err := b.rCreate(ctx, hs.id, c.eventID, hs.created); err != nil {
				// Answer 503: WeCom retries, and nothing was promised yet.
				return webhookError(http.StatusServiceUnavailable, adapter.KindUnavailable, "recording the stream in Redis", err)
			}
		}
		reply, _ = json.Marshal(streamMsg{MsgType: "stream", Stream: streamFrame{ID: hs.id}})
	case kindEnterChat:
		if b.opts.Welcome != "" {
			reply, _ = json.Marshal(textMsg{MsgType: "text", Text: textObj{b.opts.Welcome}})
		}
	}
	b.calls.add(c)
	b.storeCall(c)
	ev := b.event(ctx, inbound{body: body, raw: plain, key: b.opts.EncodingAESKey})
	b.hooks.mu.Lock()
	b.hooks.replies[body.MsgID] = hookReply{reply, ev}
	b.hooks.order = append(b.hooks.order, body.MsgID)
	if len(b.hooks.order) > maxHookReplies {
		delete(b.hooks.replies, b.hooks.order[0])
		b.hooks.order = b.hooks.order[1:]
	}
	b.hooks.mu.Unlock()
	return b.passive(nonce, reply), []adapter.Event{ev}, nil
}

// passive encrypts a passive reply (nil: an empty 200).
func (b *Bot) passive(nonce string, plain []byte) *adapter.WebhookResponse {
	if plain == nil {
		return &adapter.WebhookResponse{Status: http.StatusOK}
	}
	enc, err := b.crypto.Encrypt(plain)
	if err != nil {
		return &adapter.WebhookResponse{Status: http.StatusOK}
	}
	ts := strconv.FormatInt(time.Now().Unix(), 10)
	body, _ := json.Marshal(map[string]string{"encrypt": enc, "msgsignature": b.crypto.Signature(ts, nonce, enc), "timestamp": ts, "nonce": nonce})
	return &adapter.WebhookResponse{Status: http.StatusOK, Header: http.Header{"Content-Type": {"application/json"}}, Body: body}
}

// refresh answers a stream-refresh poll with the stream's current snapshot.
func (b *Bot) refresh(id string) []byte {
	b.hooks.mu.Lock()
	hs := b.hooks.streams[id]
	b.hooks.mu.Unlock()
	if hs == nil {
		out, _ := json.Marshal(streamMsg{MsgType: "stream", Stream: streamFrame{ID: id, Finish: true}})
		return out
	}
	wait := orDur(b.opts.StreamWait, 5*time.Minute+30*time.Second)
	hs.mu.Lock()
	content := hs.text
	if len(content) > MaxBubbleBytes {
		content = content[:cutAt(content, MaxBubbleBytes)]
	}
	finish := hs.final || hs.closed || time.Since(hs.created) >= wait
	hs.served = len(content)
	if finish && !hs.closed {
		hs.closed = true
		close(hs.done)
	}
	hs.mu.Unlock()
	out, _ := json.Marshal(streamMsg{MsgType: "stream", Stream: streamFrame{ID: hs.id, Finish: finish, Content: content}})
	return out
}

// cutAt returns the largest rune boundary ≤ max in s.
func cutAt(s string, max int) int {
	for max > 0 && max < len(s) && s[max]&0xC0 == 0x80 {
		max--
	}
	return max
}

// webhookSend answers a webhook callback: a message's text fills its polled stream; a card,
// or text the stream could not carry, goes to response_url (once).
func (b *Bot) webhookSend(ctx context.Context, msg adapter.Message, text string, card json.RawMessage) (adapter.Receipt, error) {
	if msg.ReplyTo == "" {
		return adapter.Receipt{}, adapter.Errorf(adapter.KindInvalidRequest, "wecom_aibot: webhook mode can only reply (reply_to): proactive sends need the long connection")
	}
	c := b.lookup(ctx, msg.ReplyTo)
	if c == nil {
		return adapter.Receipt{}, adapter.Errorf(adapter.KindNotFound, "wecom_aibot: reply_to %q: no such callback", msg.ReplyTo)
	}
	if b.opts.Redis != nil && c.kind == kindMsg && card == nil {
		w, err := b.remoteStream(ctx, c)
		if err != nil {
			return adapter.Receipt{}, err
		}
		if err := w.Append(ctx, text); err != nil {
			return adapter.Receipt{}, err
		}
		return w.Finish(ctx)
	}
	b.hooks.mu.Lock()
	hs := b.hooks.byEvent[msg.ReplyTo]
	b.hooks.mu.Unlock()
	if card == nil && hs != nil {
		w, err := b.takeStream(hs)
		if err != nil {
			return adapter.Receipt{}, err
		}
		w.Append(ctx, text)
		return w.Finish(ctx)
	}
	if card != nil {
		if hs != nil {
			hs.mu.Lock()
			hs.final, hs.taken = true, true // the placeholder bubble closes empty
			hs.mu.Unlock()
		}
		return b.postResponseURL(ctx, c, cardMsg{MsgType: "template_card", TemplateCard: card})
	}
	if len(text) > MaxBubbleBytes {
		return adapter.Receipt{}, adapter.Errorf(adapter.KindTooLarge, "wecom_aibot: a reply by response_url holds at most %d bytes", MaxBubbleBytes)
	}
	m := markdownMsg{MsgType: "markdown"}
	m.Markdown.Content = text
	return b.postResponseURL(ctx, c, m)
}

// postResponseURL posts body to c's response_url, which works once.
func (b *Bot) postResponseURL(ctx context.Context, c *call, body any) (adapter.Receipt, error) {
	c.mu.Lock()
	used := c.urlUsed
	c.urlUsed = true
	c.mu.Unlock()
	if c.responseURL == "" || used {
		return adapter.Receipt{}, adapter.Errorf(adapter.KindInvalidRequest, "wecom_aibot: %s has no unused response_url left to answer by", c.eventID)
	}
	data, _ := json.Marshal(body)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.responseURL, bytes.NewReader(data))
	if err != nil {
		return adapter.Receipt{}, adapter.Errorf(adapter.KindInvalidRequest, "wecom_aibot: response_url: %v", err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := b.http.Do(req)
	if err != nil {
		return adapter.Receipt{}, &adapter.Error{Kind: adapter.KindUnavailable, Platform: adapter.PlatformWeComAIBot, Message: "posting to response_url", Err: stripURL(err)}
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode != http.StatusOK {
		return adapter.Receipt{}, &adapter.Error{Kind: adapter.KindUnavailable, Platform: adapter.PlatformWeComAIBot, Message: fmt.Sprintf("response_url answered HTTP %d", resp.StatusCode)}
	}
	var r struct {
		Errcode int    `json:"errcode"`
		Errmsg  string `json:"errmsg"`
	}
	if json.Unmarshal(raw, &r) == nil && r.Errcode != 0 {
		return adapter.Receipt{}, asAdapterError(&APIError{Code: r.Errcode, Msg: r.Errmsg, Cmd: "response_url"}, "wecom_aibot: response_url")
	}
	return adapter.Receipt{ID: c.eventID}, nil
}

// webhookStream opens a stream that fills a message's polled stream.
func (b *Bot) webhookStream(ctx context.Context, msg adapter.Message) (adapter.Stream, error) {
	if msg.ReplyTo == "" {
		return nil, adapter.Errorf(adapter.KindInvalidRequest, "wecom_aibot: webhook mode can only reply (reply_to)")
	}
	if b.opts.Redis != nil {
		c := b.lookup(ctx, msg.ReplyTo)
		if c == nil {
			return nil, adapter.Errorf(adapter.KindNotFound, "wecom_aibot: reply_to %q: no such callback", msg.ReplyTo)
		}
		return b.remoteStream(ctx, c)
	}
	b.hooks.mu.Lock()
	hs := b.hooks.byEvent[msg.ReplyTo]
	b.hooks.mu.Unlock()
	if hs == nil {
		return nil, adapter.Errorf(adapter.KindNotFound, "wecom_aibot: reply_to %q: no message callback with a stream", msg.ReplyTo)
	}
	return b.takeStream(hs)
}

func (b *Bot) takeStream(hs *hookStream) (*hookWriter, error) {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	if hs.taken || hs.closed {
		return nil, adapter.Errorf(adapter.KindInvalidRequest, "wecom_aibot: %s was already answered", hs.call.eventID)
	}
	hs.taken = true
	return &hookWriter{b: b, hs: hs, max: orInt(b.opts.MaxReplyBytes, 1<<20)}, nil
}

// hookWriter is the Stream of a webhook reply.
type hookWriter struct {
	b   *Bot
	hs  *hookStream
	max int
}

func (w *hookWriter) Append(ctx context.Context, delta string) error {
	hs := w.hs
	hs.mu.Lock()
	defer hs.mu.Unlock()
	switch {
	case hs.final:
		return adapter.Errorf(adapter.KindInvalidRequest, "wecom_aibot: stream is closed")
	case hs.closed:
		// WeCom stopped polling; the rest goes to response_url at Finish.
	case len(hs.text)+len(delta) > w.max:
		return adapter.Errorf(adapter.KindTooLarge, "wecom_aibot: streamed reply over %d bytes", w.max)
	}
	hs.text += delta
	return nil
}

// Finish marks the reply complete and waits until a poll has served it; text the polls
// could not carry (over 20,480 bytes, or after WeCom stopped polling) goes to response_url.
func (w *hookWriter) Finish(ctx context.Context) (adapter.Receipt, error) {
	hs := w.hs
	hs.mu.Lock()
	if hs.final {
		hs.mu.Unlock()
		return adapter.Receipt{}, adapter.Errorf(adapter.KindInvalidRequest, "wecom_aibot: stream is closed")
	}
	hs.final = true
	empty := hs.text == ""
	hs.mu.Unlock()
	if empty {
		return adapter.Receipt{}, adapter.Errorf(adapter.KindInvalidRequest, "wecom_aibot: stream finished without any text")
	}
	wait := orDur(w.b.opts.StreamWait, 5*time.Minute+30*time.Second)
	deadline := time.NewTimer(time.Until(hs.created.Add(wait + 10*time.Second)))
	defer deadline.Stop()
	select {
	case <-hs.done:
	case <-deadline.C: // no poll came: send it all by response_url
	case <-ctx.Done():
		return adapter.Receipt{}, ctx.Err()
	}
	hs.mu.Lock()
	rest := hs.text[hs.served:]
	hs.mu.Unlock()
	r := adapter.Receipt{ID: hs.id, IDs: []string{hs.id}}
	if rest == "" {
		return r, nil
	}
	if len(rest) > MaxBubbleBytes {
		return r, adapter.Errorf(adapter.KindTooLarge, "wecom_aibot: %d bytes left after the stream; response_url takes one message of at most %d", len(rest), MaxBubbleBytes)
	}
	m := markdownMsg{MsgType: "markdown"}
	m.Markdown.Content = rest
	if _, err := w.b.postResponseURL(ctx, hs.call, m); err != nil {
		return r, err
	}
	r.IDs = append(r.IDs, "response_url")
	return r, nil
}

func (w *hookWriter) Abort(ctx context.Context, reason string) error {
	hs := w.hs
	hs.mu.Lock()
	hs.final = true
	hs.mu.Unlock()
	return nil
}

// remoteStream claims c's stream in Redis for one writer.
func (b *Bot) remoteStream(ctx context.Context, c *call) (*remoteWriter, error) {
	id, created, err := b.rTake(ctx, c.eventID)
	if err != nil {
		return nil, err
	}
	return &remoteWriter{b: b, id: id, call: c, created: created, max: orInt(b.opts.MaxReplyBytes, 1<<20)}, nil
}
