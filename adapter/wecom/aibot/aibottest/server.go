// Package aibottest is an emulator of WeCom's 智能机器人 (AI Bot) long connection, written from
// specs/wecom-aibot.md §7: an [http.Handler] that serves the WebSocket (on any other path),
// encrypted media downloads (/media/) and response_url (/cgi-bin/aibot/response); [Webhook]
// plays WeCom's side of the webhook mode. Serve it with httptest. The zero [Server] is ready:
// bot "BOT1" with secret "S1" (vector A's), the platform's limits and durations.
package aibottest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"
)

// Platform limits and codes the emulator applies.
const (
	MaxStreamBytes   = 20480 // stream content and markdown, UTF-8 bytes
	MaxMsgItems      = 10
	MaxFeedbackID    = 256
	CodeBadSecret    = 853000
	CodeFreq         = 45009
	CodeInvalidReqID = 846605
	CodeResponded    = 846606
	CodeRateLimited  = 846607
	CodeExpired      = 846608
	CodeInvalidChat  = 93006 // aibot_send_msg to a conversation that never messaged the bot ([U] code)
	CodeBadParam     = 40058 // a frame the emulator refuses (over a limit, malformed)
)

// Server emulates one AI bot's long connection. Set its exported fields before serving;
// use its methods (safe for concurrent use) to push callbacks, turn knobs and inspect what
// clients sent.
type Server struct {
	BotID  string // "" means "BOT1"
	Secret string // "" means "S1"

	// PingTimeout closes a connection that sent no ping for this long. Zero means 90 s.
	PingTimeout time.Duration
	// KickCloseDelay is how long an old connection stays open after its disconnected_event,
	// when a new one subscribes. Zero closes it at once.
	KickCloseDelay time.Duration
	// StreamTTL is how long a stream accepts updates, counted from its first frame (or from
	// its last frame with StreamTTLSinceLastUpdate). Zero means 6 minutes.
	StreamTTL                time.Duration
	StreamTTLSinceLastUpdate bool
	// EventReplyWindow is how long an enter_chat or template_card_event req_id accepts its
	// reply. Zero means 5 s. MsgReplyWindow is the same for message req_ids; zero means 24 h.
	EventReplyWindow time.Duration
	MsgReplyWindow   time.Duration
	// PerMinute and PerHour limit replies and sends per conversation (846607). Zero means 30
	// and 1000; negative means no limit. StreamFramesCount makes every stream frame count,
	// not only a stream's first.
	PerMinute, PerHour int
	StreamFramesCount  bool
	// MediaTTL is how long a media URL serves. Zero means 5 minutes.
	MediaTTL time.Duration
	// ReadLimit is the largest frame read. Zero means 4 MiB.
	ReadLimit int64
	// ResponseHost is the host:port response_url links point to (the httptest listener's).
	ResponseHost string
	// OnFrame, if set, is called with every client frame after it is handled (for
	// benchmarks and tests that wait for a frame). It must not block for long.
	OnFrame func(Frame)

	once sync.Once
	mu   sync.Mutex // protects everything below
	seq  int
	// conns are the authenticated connections, oldest first; the last is the one that gets
	// pushes.
	conns       []*conn
	maxConns    int // most authenticated connections open at once
	subscribes  int
	failSub     []int // errcodes for the next subscribes
	ackDelay    time.Duration
	dropAcks    string // cmd whose acks are dropped
	noPingAck   bool
	reqs        map[string]*callback
	streams     map[streamKey]*Bubble
	shown       []shownItem
	sent        []Sent
	frames      []Frame
	refused     []Frame
	chats       map[string]bool // conversations that messaged the bot
	rate        map[string][]time.Time
	media       map[string]*mediaFile
	closed      bool
	codes       map[string]*responseCode
	uploads     map[string]*upload
	mediaIDs    map[string]*Media
	uploadTimes []time.Time
	refuse      int         // WebSocket handshakes still to refuse
	handshakes  []time.Time // every WebSocket handshake attempt
	// responsePosts counts POSTs to response_url endpoints.
	responsePosts int
}

type streamKey struct{ reqID, id string }

// A callback is a pushed req_id and what it may answer.
type callback struct {
	kind      string // "msg", "enter_chat", "template_card_event", "event"
	chat      string
	at        time.Time
	responded bool // a template card (or welcome/update) consumed it
}

type shownItem struct {
	seq    int
	chat   string
	bubble *Bubble
	text   string
	kind   string
}

// A Frame is one client frame the server read, in arrival order.
type Frame struct {
	Cmd     string
	ReqID   string
	Body    json.RawMessage
	Raw     []byte
	At      time.Time
	Errcode int    // what the server answered (-1: not answered)
	Reason  string // why it was refused, if it was
}

// A Bubble is one stream as the user sees it.
type Bubble struct {
	ReqID, StreamID, Chat string
	Content               string // the latest accepted content
	Finished              bool
	Frames                []StreamFrame // every accepted frame
	first, last           time.Time
	expired               bool
}

// A StreamFrame is one accepted update of a [Bubble].
type StreamFrame struct {
	Content string
	Finish  bool
	At      time.Time
}

// Sent is a non-stream message the server accepted: a proactive aibot_send_msg, a markdown
// or template card reply, a welcome or a card update.
type Sent struct {
	Cmd, ReqID, Chat, MsgType string
	Content                   string // markdown or text content, if any
	Body                      json.RawMessage
	At                        time.Time
}

func (s *Server) init() {
	s.once.Do(func() {
		s.reqs = map[string]*callback{}
		s.streams = map[streamKey]*Bubble{}
		s.chats = map[string]bool{}
		s.rate = map[string][]time.Time{}
		s.media = map[string]*mediaFile{}
	})
}

func or[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}

func (s *Server) botID() string  { return or(s.BotID, "BOT1") }
func (s *Server) secret() string { return or(s.Secret, "S1") }

// ServeHTTP serves media under /media/ and the long connection everywhere else.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.init()
	if strings.HasPrefix(r.URL.Path, "/media/") {
		s.serveMedia(w, r)
		return
	}
	if r.URL.Path == "/cgi-bin/aibot/response" {
		s.serveResponse(w, r)
		return
	}
	s.mu.Lock()
	s.handshakes = append(s.handshakes, time.Now())
	refuse := s.refuse > 0
	if refuse {
		s.refuse--
	}
	s.mu.Unlock()
	if refuse {
		http.Error(w, "refused by RefuseConnections", http.StatusServiceUnavailable)
		return
	}
	c, err := websocket.Accept(w, r, nil)
	if err != nil {
		return
	}
	c.SetReadLimit(or(s.ReadLimit, 4<<20))
	cn := &conn{s: s, ws: c, host: r.Host, lastPing: make(chan struct{}, 1), ready: make(chan struct{})}
	cn.serve(r.Context())
}

// WSURL turns an httptest server URL ("http://127.0.0.1:N") into the WebSocket URL.
func WSURL(httpURL string) string { return "ws" + strings.TrimPrefix(httpURL, "http") }

func randHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

type ackFrame struct {
	Headers headers         `json:"headers"`
	Errcode int             `json:"errcode"`
	Errmsg  string          `json:"errmsg"`
	Body    json.RawMessage `json:"body,omitempty"`
}

type headers struct {
	ReqID string `json:"req_id"`
}

type inFrame struct {
	Cmd     string          `json:"cmd"`
	Headers headers         `json:"headers"`
	Body    json.RawMessage `json:"body"`
}

var errmsgs = map[int]string{
	0:                "ok",
	CodeBadSecret:    "invalid bot_id or secret",
	CodeFreq:         "api freq out of limit",
	CodeInvalidReqID: "invalid req_id",
	CodeResponded:    "request already responded, cannot respond again",
	CodeRateLimited:  "message rate limit exceeded",
	CodeExpired:      "stream message update expired",
	CodeInvalidChat:  "invalid chatid",
	CodeBadParam:     "invalid parameter",
}

// conn is one WebSocket connection.
type conn struct {
	s        *Server
	ws       *websocket.Conn
	host     string
	authed   bool
	lastPing chan struct{}
	kicked   bool
	// ready is closed once the subscribe ack is written: pushes wait for it, as WeCom sends
	// nothing before it.
	ready     chan struct{}
	readyOnce sync.Once
}

func (c *conn) write(ctx context.Context, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	return c.ws.Write(ctx, websocket.MessageText, b)
}

func (c *conn) serve(ctx context.Context) {
	s := c.s
	defer c.ws.CloseNow()
	defer s.forget(c)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go c.watchPings(ctx, cancel)
	for {
		_, data, err := c.ws.Read(ctx)
		if err != nil {
			return
		}
		var f inFrame
		if err := json.Unmarshal(data, &f); err != nil {
			s.record(Frame{Raw: data, At: time.Now(), Errcode: -1, Reason: "not JSON"}, true)
			continue
		}
		fr := Frame{Cmd: f.Cmd, ReqID: f.Headers.ReqID, Body: f.Body, Raw: data, At: time.Now()}
		if !c.authed && f.Cmd != "aibot_subscribe" {
			fr.Errcode, fr.Reason = -1, "frame before aibot_subscribe"
			s.record(fr, true)
			c.ws.Close(websocket.StatusPolicyViolation, "aibot_subscribe first")
			return
		}
		var code int
		var body json.RawMessage
		delay := time.Duration(0)
		var kick []*conn
		switch f.Cmd {
		case "aibot_subscribe":
			code, kick = c.subscribe(f.Body)
		case "ping":
			select {
			case c.lastPing <- struct{}{}:
			default:
			}
			s.mu.Lock()
			noAck := s.noPingAck
			s.mu.Unlock()
			if noAck {
				fr.Errcode = -1
				s.record(fr, false)
				continue
			}
		default:
			var reason string
			code, body, reason = s.handle(f)
			fr.Reason = reason
			s.mu.Lock()
			delay = s.ackDelay
			if s.dropAcks != "" && (s.dropAcks == "*" || s.dropAcks == f.Cmd) {
				delay = -1
			}
			s.mu.Unlock()
		}
		fr.Errcode = code
		s.record(fr, code != 0)
		ack := ackFrame{Headers: headers{f.Headers.ReqID}, Errcode: code, Errmsg: or(errmsgs[code], "error"), Body: body}
		switch {
		case delay < 0:
		case delay > 0:
			go func() {
				t := time.NewTimer(delay)
				defer t.Stop()
				select {
				case <-t.C:
					c.write(ctx, ack)
				case <-ctx.Done():
				}
			}()
		default:
			if err := c.write(ctx, ack); err != nil {
				return
			}
		}
		if f.Cmd == "aibot_subscribe" && code == 0 {
			c.readyOnce.Do(func() { close(c.ready) }) // pushes may follow the ack now
		}
		for _, old := range kick {
			s.kick(old)
		}
	}
}

// watchPings closes the connection when no ping arrives within PingTimeout.
func (c *conn) watchPings(ctx context.Context, cancel func()) {
	d := or(c.s.PingTimeout, 90*time.Second)
	t := time.NewTimer(d)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-c.lastPing:
			t.Reset(d)
		case <-t.C:
			c.ws.Close(websocket.StatusPolicyViolation, "heartbeat timeout")
			cancel()
			return
		}
	}
}

// subscribe checks a subscribe and returns its errcode and the older connections it kicks
// (marked kicked at once, so pushes go to the newest).
func (c *conn) subscribe(body json.RawMessage) (int, []*conn) {
	s := c.s
	var b struct {
		BotID  string `json:"bot_id"`
		Secret string `json:"secret"`
	}
	json.Unmarshal(body, &b)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.subscribes++
	if len(s.failSub) > 0 {
		code := s.failSub[0]
		s.failSub = s.failSub[1:]
		return code, nil
	}
	if b.BotID != s.botID() || b.Secret != s.secret() {
		return CodeBadSecret, nil
	}
	var old []*conn
	for _, x := range s.conns {
		if x != c && !x.kicked {
			x.kicked = true
			old = append(old, x)
		}
	}
	c.authed = true
	if !slices.Contains(s.conns, c) {
		s.conns = append(s.conns, c)
		s.maxConns = max(s.maxConns, len(s.conns))
	}
	return 0, old
}

// kick sends disconnected_event to c and closes it after KickCloseDelay.
func (s *Server) kick(c *conn) {
	s.mu.Lock()
	s.seq++
	body := fmt.Sprintf(`{"msgid":"KICK%d_%s","create_time":%d,"aibotid":%q,"msgtype":"event","event":{"eventtype":"disconnected_event"}}`,
		s.seq, randHex(4), time.Now().Unix(), s.botID())
	s.mu.Unlock()
	ctx := context.Background()
	c.write(ctx, inFrame{Cmd: "aibot_event_callback", Headers: headers{"disconnected_" + randHex(8)}, Body: json.RawMessage(body)})
	if d := s.KickCloseDelay; d > 0 {
		time.AfterFunc(d, func() { c.ws.Close(websocket.StatusNormalClosure, "kicked") })
		return
	}
	c.ws.Close(websocket.StatusNormalClosure, "kicked")
}

func (s *Server) forget(c *conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, x := range s.conns {
		if x == c {
			s.conns = append(s.conns[:i], s.conns[i+1:]...)
			return
		}
	}
}

func (s *Server) record(f Frame, refused bool) {
	s.mu.Lock()
	s.frames = append(s.frames, f)
	if refused {
		s.refused = append(s.refused, f)
	}
	s.mu.Unlock()
	if s.OnFrame != nil {
		s.OnFrame(f)
	}
}
