// Package aibot is the adapter for WeCom's 智能机器人 (AI Bot) API (specs/wecom-aibot.md):
// a long connection over WebSocket (bot_id + secret) or a webhook (token +
// encoding_aes_key), streamed replies in one growing bubble ([adapter.Streamer]), markdown,
// template cards and proactive sends.
package aibot

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/seed-a64d9e1f/chatwire/adapter"
	"github.com/seed-a64d9e1f/chatwire/adapter/wecom"
)

// DefaultWSURL is WeCom's long-connection endpoint.
const DefaultWSURL = "wss://openws.work.weixin.qq.com"

// MaxBubbleBytes is the most UTF-8 bytes one stream frame or markdown message may carry.
const MaxBubbleBytes = 20480

// Options configure a [Bot]. Set BotID and Secret for the long connection, or Token and
// EncodingAESKey (and BotID, to check callbacks) for the webhook.
type Options struct {
	// Name is the configured bot name, put in [adapter.Event.Bot].
	Name string

	BotID  string
	Secret string // long-connection secret (长连接专用密钥)

	Token          string // webhook callback token
	EncodingAESKey string // webhook key, 43 characters

	// WSURL is the long-connection endpoint. Empty means [DefaultWSURL].
	WSURL string
	// HTTPClient downloads media and posts to response_url. Nil means http.DefaultClient.
	HTTPClient *http.Client
	// Logger receives the adapter's logs. Nil means none.
	Logger *slog.Logger

	// HeartbeatInterval is the ping interval; the connection is dropped when two pings in a
	// row go unanswered, at the next tick. Zero means 30 s (the SDK's).
	HeartbeatInterval time.Duration
	// AckTimeout is how long a frame waits for its ack before its outcome is taken as
	// unknown and the req_id's queue moves on. Zero means 5 s (the SDK's).
	AckTimeout time.Duration
	// ReconnectBase and ReconnectMax shape the reconnect backoff: min(base·2^(n-1), max)
	// before attempt n; n restarts at 1 after a successful subscribe. Zero means 1 s and
	// 30 s (the SDK's). MaxReconnects is how many attempts in a row Receive makes before it
	// gives up; zero means no limit.
	ReconnectBase, ReconnectMax time.Duration
	MaxReconnects               int
	// SubscribeRateLimitWait is how long to wait after 45009 on subscribe. Zero means 60 s;
	// values below 60 s are raised to it unless AllowShortRateLimitWait (for tests) is set.
	SubscribeRateLimitWait  time.Duration
	AllowShortRateLimitWait bool
	// ConnectWait is how long a reply or send waits for a live connection. Zero means 30 s.
	ConnectWait time.Duration
	// Lease, if set, makes Receive run the connection only while this process holds it,
	// so a fleet keeps exactly one connection per bot (internal/lease.Redis is one). Nil:
	// connect at once.
	Lease Lease
	// Redis, if set, makes the bot part of a fleet: each callback is recorded under
	// RedisKeyPrefix so any host can answer it, and a host without the connection relays its
	// frames to the one that holds it. Nil: this host answers only what it received.
	Redis          redis.UniversalClient
	RedisKeyPrefix string
	// KickGrace (with Lease) is how long after disconnected_event Receive waits to learn
	// that it lost the lease (another host took over: it waits to hold it again) before
	// deciding the kick came from outside the fleet (it stops with [ErrKicked]). Zero means
	// 5 s.
	KickGrace time.Duration

	// StreamPace is the least time between two frames of one stream: deltas arriving
	// faster are merged into one cumulative frame. Zero means 500 ms. At most one frame per
	// req_id is in flight at any time besides.
	StreamPace time.Duration
	// StreamMaxAge is how long one bubble is updated before it is finished and the text
	// continues in a new bubble (WeCom expires a stream 6 minutes after its first frame).
	// Zero means 5 minutes.
	StreamMaxAge time.Duration
	// MaxReplyBytes bounds the text of one streamed reply. Zero means 1 MiB.
	MaxReplyBytes int
	// MaxMediaBytes bounds a downloaded media file. Zero means 20 MiB.
	MaxMediaBytes int64
	// ReadLimit is the largest frame read from the socket. Zero means 4 MiB (a 512 KB upload
	// chunk is a ≈700 KB frame).
	ReadLimit int64

	// ReplayWindow (webhook) refuses POSTs whose timestamp is further than this from now.
	// Zero means 5 minutes.
	ReplayWindow time.Duration
	// Welcome (webhook) is the text answered to enter_chat; empty answers nothing.
	Welcome string
	// StreamWait (webhook) is how long a message's placeholder stream waits for the bot's
	// reply before it is finished empty; the reply then goes to response_url. Zero means
	// 5 minutes 30 seconds (WeCom polls for 6 minutes).
	StreamWait time.Duration
}

// A Lease grants one process of a fleet at a time the right to run a bot's long connection.
type Lease interface {
	// Acquire blocks until the caller holds the lease or ctx ends. held is cancelled when the
	// lease is lost; release gives it up (and cancels held).
	Acquire(ctx context.Context) (held context.Context, release func(), err error)
}

func orDur(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}

// Bot is one AI bot. Its methods are safe for concurrent use.
type Bot struct {
	opts    Options
	log     *slog.Logger
	http    *http.Client
	webhook bool
	crypto  *wecom.Crypto // webhook mode

	ctx    context.Context // the bot's lifetime; cancelled by Close
	cancel context.CancelFunc

	mu        sync.Mutex // protects conn, connCh, lastErr, receiving
	conn      *wsConn    // the live, subscribed connection; nil when none
	connCh    chan struct{}
	lastErr   error
	receiving bool

	calls callbacks // callbacks that can be answered, by event id
	qmu   sync.Mutex
	locks map[string]*reqLock // per-req_id queues, guarded by qmu

	hooks hookState // webhook mode: streams and dedup
	poll  pollState // Poll's background Receive
}

var (
	_ adapter.Adapter  = (*Bot)(nil)
	_ adapter.Receiver = (*Bot)(nil)
	_ adapter.Streamer = (*Bot)(nil)
	_ adapter.Uploader = (*Bot)(nil)
)

// New returns a Bot. It checks the options but does not connect: call [Bot.Receive] to run
// the long connection.
func New(opts Options) (*Bot, error) {
	long := opts.BotID != "" && opts.Secret != ""
	hook := opts.Token != "" || opts.EncodingAESKey != ""
	switch {
	case long && hook:
		return nil, errors.New("wecom_aibot: config: set either secret (long connection) or token and encoding_aes_key (webhook), not both")
	case !long && !hook:
		return nil, errors.New("wecom_aibot: config: set bot_id and secret (long connection) or token and encoding_aes_key (webhook)")
	}
	b := &Bot{opts: opts, log: opts.Logger, http: opts.HTTPClient, webhook: hook, connCh: make(chan struct{}), locks: map[string]*reqLock{}}
	if b.log == nil {
		b.log = slog.New(slog.DiscardHandler)
	}
	if b.http == nil {
		b.http = http.DefaultClient
	}
	if hook {
		c, err := wecom.NewCrypto(opts.Token, opts.EncodingAESKey, "")
		if err != nil {
			return nil, errors.New("wecom_aibot" + err.Error()[len("wecom"):])
		}
		b.crypto = c
	}
	if opts.WSURL == "" {
		b.opts.WSURL = DefaultWSURL
	}
	b.ctx, b.cancel = context.WithCancel(context.Background())
	b.calls.init()
	b.hooks.init()
	return b, nil
}

// Status reports whether the long connection is up (always healthy in webhook mode).
func (b *Bot) Status(ctx context.Context) (adapter.Status, error) {
	st := adapter.Status{Bot: b.opts.Name, Platform: adapter.PlatformWeComAIBot, Healthy: true}
	if b.ctx.Err() != nil {
		st.Healthy, st.Detail = false, "closed"
		return st, nil
	}
	if b.webhook {
		return st, nil
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.conn == nil {
		st.Healthy = false
		st.Detail = "long connection not up"
		if b.lastErr != nil {
			st.Detail += ": " + b.lastErr.Error()
		}
	}
	return st, nil
}

// Close stops the connection and any stream still being delivered.
func (b *Bot) Close() error {
	b.cancel()
	b.mu.Lock()
	c := b.conn
	b.mu.Unlock()
	if c != nil {
		c.ws.CloseNow()
	}
	return nil
}

var errClosed = &adapter.Error{Kind: adapter.KindUnavailable, Platform: adapter.PlatformWeComAIBot, Message: "bot is closed"}
