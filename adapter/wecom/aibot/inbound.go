package aibot

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/seed-a64d9e1f/chatwire/adapter"
)

// callbackBody is the body of aibot_msg_callback and aibot_event_callback (and of webhook
// callbacks), as far as the adapter reads it.
type callbackBody struct {
	MsgID      string `json:"msgid"`
	CreateTime int64  `json:"create_time"`
	AIBotID    string `json:"aibotid"`
	ChatID     string `json:"chatid"`
	ChatType   string `json:"chattype"`
	From       struct {
		UserID string `json:"userid"`
	} `json:"from"`
	ResponseURL string               `json:"response_url"`
	MsgType     string               `json:"msgtype"`
	Text        *textObj             `json:"text"`
	Voice       *textObj             `json:"voice"`
	Image       *mediaObj            `json:"image"`
	File        *mediaObj            `json:"file"`
	Video       *mediaObj            `json:"video"`
	Mixed       *mixedObj            `json:"mixed"`
	Quote       *quoteObj            `json:"quote"`
	Stream      *struct{ ID string } `json:"stream"`
	Event       *struct {
		EventType string `json:"eventtype"`
	} `json:"event"`
}

type textObj struct {
	Content string `json:"content"`
}

type mediaObj struct {
	URL    string `json:"url"`
	AESKey string `json:"aeskey"`
}

type mixedObj struct {
	MsgItem []struct {
		MsgType string    `json:"msgtype"`
		Text    *textObj  `json:"text"`
		Image   *mediaObj `json:"image"`
	} `json:"msg_item"`
}

type quoteObj struct {
	MsgType string    `json:"msgtype"`
	Text    *textObj  `json:"text"`
	Voice   *textObj  `json:"voice"`
	Image   *mediaObj `json:"image"`
	File    *mediaObj `json:"file"`
	Video   *mediaObj `json:"video"`
	Mixed   *mixedObj `json:"mixed"`
}

// Kinds of callback records.
const (
	kindMsg       = "msg"
	kindEnterChat = "enter_chat"
	kindCardEvent = "template_card_event"
	kindEvent     = "event"
)

// A call is a callback the bot may answer: its req_id and what the req_id allows.
type call struct {
	eventID     string
	reqID       string // long connection; "" in webhook mode
	kind        string
	chat        string // userid (single) or chatid (group): where aibot_send_msg goes
	group       bool
	at          time.Time
	responseURL string
	mu          sync.Mutex // protects consumed, tainted, responseUsed
	consumed    bool       // a template card answered it
	tainted     bool       // a frame on it timed out: later acks could be misattributed
	urlUsed     bool
}

// callbacks remembers calls for 24 h, at most maxCalls of them.
type callbacks struct {
	mu    sync.Mutex // protects m and order
	m     map[string]*call
	order []string
}

const (
	maxCalls  = 100000
	callTTL   = 24 * time.Hour
	eventWin  = 5 * time.Second        // welcome / card update window
	eventSafe = 500 * time.Millisecond // margin kept inside it
)

func (cs *callbacks) init() { cs.m = map[string]*call{} }

// add records c unless its event id is known; it reports whether c is new.
func (cs *callbacks) add(c *call) bool {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	if _, ok := cs.m[c.eventID]; ok {
		return false
	}
	for len(cs.order) > 0 && (len(cs.order) >= maxCalls || time.Since(cs.m[cs.order[0]].at) > callTTL) {
		delete(cs.m, cs.order[0])
		cs.order = cs.order[1:]
	}
	cs.m[c.eventID] = c
	cs.order = append(cs.order, c.eventID)
	return true
}

func (cs *callbacks) get(id string) *call {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	return cs.m[id]
}

// eventID is an event's stable id: the platform name and the msgid.
func eventID(msgid string) string { return adapter.PlatformWeComAIBot + ":" + msgid }

// newCall builds the call record of a callback body.
func newCall(body *callbackBody, reqID string) *call {
	c := &call{eventID: eventID(body.MsgID), reqID: reqID, kind: kindMsg, chat: body.From.UserID,
		at: time.Now(), responseURL: body.ResponseURL}
	if body.ChatType == "group" && body.ChatID != "" {
		c.chat, c.group = body.ChatID, true
	}
	if body.MsgType == "event" {
		c.kind = kindEvent
		if body.Event != nil && (body.Event.EventType == kindEnterChat || body.Event.EventType == kindCardEvent) {
			c.kind = body.Event.EventType
		}
	}
	return c
}

// inbound is a callback waiting to become an event.
type inbound struct {
	body callbackBody
	raw  json.RawMessage
	key  string // webhook: the EncodingAESKey media are encrypted with; "" for per-URL keys
}

// inbox is an unbounded FIFO of inbound callbacks: the read loop never blocks on emit.
type inbox struct {
	mu     sync.Mutex // protects items and closed
	items  []inbound
	closed bool
	notify chan struct{}
}

func newInbox() *inbox { return &inbox{notify: make(chan struct{}, 1)} }

func (in *inbox) put(it inbound) {
	in.mu.Lock()
	in.items = append(in.items, it)
	in.mu.Unlock()
	select {
	case in.notify <- struct{}{}:
	default:
	}
}

func (in *inbox) close() {
	in.mu.Lock()
	in.closed = true
	in.mu.Unlock()
	select {
	case in.notify <- struct{}{}:
	default:
	}
}

// next returns the oldest item, waiting for one; ok is false once the inbox is closed and
// empty, or ctx is done.
func (in *inbox) next(ctx context.Context) (inbound, bool) {
	for {
		in.mu.Lock()
		if len(in.items) > 0 {
			it := in.items[0]
			in.items = in.items[1:]
			in.mu.Unlock()
			return it, true
		}
		closed := in.closed
		in.mu.Unlock()
		if closed {
			return inbound{}, false
		}
		select {
		case <-in.notify:
		case <-ctx.Done():
			return inbound{}, false
		}
	}
}

// callback handles one pushed callback; it reports whether it was disconnected_event.
func (b *Bot) callback(ctx context.Context, f inFrame, in *inbox) (kicked bool) {
	var body callbackBody
	if err := json.Unmarshal(f.Body, &body); err != nil || body.MsgType == "" {
		b.log.WarnContext(ctx, "wecom_aibot: dropping a callback without a readable body or msgtype", "cmd", f.Cmd)
		return false
	}
	if body.Event != nil && body.Event.EventType == "disconnected_event" {
		b.log.WarnContext(ctx, "wecom_aibot: disconnected_event: another connection subscribed for this bot")
		return true
	}
	if body.MsgID == "" {
		b.log.WarnContext(ctx, "wecom_aibot: dropping a callback without msgid", "msgtype", body.MsgType)
		return false
	}
	c := newCall(&body, f.Headers.ReqID)
	if !b.calls.add(c) {
		b.log.DebugContext(ctx, "wecom_aibot: duplicate msgid dropped", "msgid", body.MsgID)
		return false
	}
	b.storeCall(c)
	in.put(inbound{body: body, raw: f.Body})
	return false
}

// emitLoop turns inbound callbacks into events (downloading media) and emits them in
// order, retrying a failed emit until it succeeds or ctx ends.
func (b *Bot) emitLoop(ctx context.Context, in *inbox, emit func(context.Context, []adapter.Event) error) {
	for {
		it, ok := in.next(ctx)
		if !ok {
			return
		}
		ev := b.event(ctx, it)
		for wait := 100 * time.Millisecond; ; wait = min(2*wait, 5*time.Second) {
			err := emit(ctx, []adapter.Event{ev})
			if err == nil {
				break
			}
			b.log.WarnContext(ctx, "wecom_aibot: emit failed; offering the event again", "id", ev.ID, "err", err, "wait", wait)
			if !sleep(ctx, wait) {
				return
			}
		}
	}
}

// event converts a callback into an adapter.Event, downloading and decrypting its media.
func (b *Bot) event(ctx context.Context, it inbound) adapter.Event {
	body := &it.body
	ev := adapter.Event{
		ID: eventID(body.MsgID), Bot: b.opts.Name, Platform: adapter.PlatformWeComAIBot, Kind: adapter.EventMessage,
		Chat:   adapter.Chat{ID: body.From.UserID, Type: adapter.ChatDirect},
		Sender: adapter.Sender{ID: body.From.UserID},
		Time:   time.Now().UTC().Truncate(time.Second),
		Raw:    it.raw,
	}
	if body.CreateTime > 0 {
		ev.Time = time.Unix(body.CreateTime, 0).UTC()
	}
	if body.ChatType == "group" {
		ev.Chat = adapter.Chat{ID: body.ChatID, Type: adapter.ChatGroup}
	}
	media := func(typ string, m *mediaObj) {
		if m == nil || m.URL == "" {
			return
		}
		a := adapter.Attachment{Type: typ, URL: m.URL}
		key := m.AESKey
		if key == "" {
			key = it.key
		}
		data, name, err := b.download(ctx, m.URL, key)
		if err != nil {
			b.log.WarnContext(ctx, "wecom_aibot: media download failed; the event keeps its URL", "id", ev.ID, "err", err)
		} else {
			a.Data, a.Size, a.Name = data, int64(len(data)), name
			a.ContentType = http.DetectContentType(data)
		}
		ev.Attachments = append(ev.Attachments, a)
	}
	texts := func(m *mixedObj) string {
		var parts []string
		for _, item := range m.MsgItem {
			switch {
			case item.MsgType == "text" && item.Text != nil:
				parts = append(parts, item.Text.Content)
			case item.MsgType == "image":
				media(adapter.AttachImage, item.Image)
			}
		}
		return strings.Join(parts, "\n")
	}
	switch body.MsgType {
	case "text":
		if body.Text != nil {
			ev.Text = body.Text.Content
		}
	case "voice":
		if body.Voice != nil {
			ev.Text = body.Voice.Content // transcribed by WeCom
		}
	case "image":
		media(adapter.AttachImage, body.Image)
	case "file":
		media(adapter.AttachFile, body.File)
	case "video":
		media(adapter.AttachVideo, body.Video)
	case "mixed":
		if body.Mixed != nil {
			ev.Text = texts(body.Mixed)
		}
	case "event":
		ev.Kind = adapter.EventNotice
		if body.Event != nil {
			ev.Text = body.Event.EventType
		}
	}
	if q := body.Quote; q != nil {
		// The quoted message's media come after the message's own; its text stays in Raw.
		switch q.MsgType {
		case "image":
			media(adapter.AttachImage, q.Image)
		case "file":
			media(adapter.AttachFile, q.File)
		case "video":
			media(adapter.AttachVideo, q.Video)
		case "mixed":
			if q.Mixed != nil {
				texts(q.Mixed)
			}
		}
	}
	return ev
}

// download fetches and decrypts one media URL; name comes from Content-Disposition.
func (b *Bot) download(ctx context.Context, rawURL, aeskey string) ([]byte, string, error) {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, rawURL, nil)
	if err != nil {
		return nil, "", err
	}
	resp, err := b.http.Do(req)
	if err != nil {
		return nil, "", fmt.Errorf("wecom_aibot: media download: %w", stripURL(err))
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, "", fmt.Errorf("wecom_aibot: media download: HTTP %d", resp.StatusCode)
	}
	limit := orDurInt(b.opts.MaxMediaBytes, 20<<20)
	enc, err := io.ReadAll(io.LimitReader(resp.Body, limit+33))
	if err != nil {
		return nil, "", fmt.Errorf("wecom_aibot: media download: %w", err)
	}
	if int64(len(enc)) > limit+32 {
		return nil, "", fmt.Errorf("wecom_aibot: media over %d bytes", limit)
	}
	data, err := DecryptMedia(aeskey, enc)
	if err != nil {
		return nil, "", err
	}
	return data, filename(resp.Header.Get("Content-Disposition")), nil
}

// stripURL drops the URL from a *url.Error: media URLs carry access codes.
func stripURL(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// filename reads the filename of a Content-Disposition header, which WeCom percent-encodes
// with "+" for a space.
func filename(cd string) string {
	if cd == "" {
		return ""
	}
	name := ""
	if _, params, err := mime.ParseMediaType(cd); err == nil {
		name = params["filename"]
	} else if i := strings.Index(cd, "filename="); i >= 0 {
		name = strings.Trim(strings.SplitN(cd[i+len("filename="):], ";", 2)[0], `" `)
	}
	if dec, err := url.QueryUnescape(name); err == nil {
		name = dec
	}
	return name
}

// ErrMediaDecrypt means a media file does not decrypt with its aeskey.
var ErrMediaDecrypt = errors.New("wecom_aibot: media does not decrypt")

// DecryptMedia decrypts a media file: AES-256-CBC, key = base64 of the 43-character aeskey
// (with or without its "=" padding), IV = key[:16]; padding is removed leniently (last
// byte n in 1..32 and the n bytes equal), since some files are padded to 16-byte blocks.
func DecryptMedia(aeskey string, enc []byte) ([]byte, error) {
	key, err := base64.RawStdEncoding.DecodeString(strings.TrimRight(aeskey, "="))
	if err != nil || len(key) != 32 {
		return nil, fmt.Errorf("%w: aeskey is not base64 of 32 bytes", ErrMediaDecrypt)
	}
	if len(enc) == 0 || len(enc)%aes.BlockSize != 0 {
		return nil, fmt.Errorf("%w: %d bytes is not a whole number of blocks", ErrMediaDecrypt, len(enc))
	}
	block, _ := aes.NewCipher(key)
	out := make([]byte, len(enc))
	cipher.NewCBCDecrypter(block, key[:16]).CryptBlocks(out, enc)
	n := int(out[len(out)-1])
	if n >= 1 && n <= 32 && n <= len(out) && bytes.Count(out[len(out)-n:], out[len(out)-1:]) == n {
		out = out[:len(out)-n]
	}
	return out, nil
}
