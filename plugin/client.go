package plugin

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/seed-a64d9e1f/chatwire/adapter"
	pb "github.com/seed-a64d9e1f/chatwire/plugin/proto"
)

// Client talks to one plugin process. It is what go-plugin dispenses; most hosts use the
// supervised [Plugin] from [Launch] instead. Its methods are safe for concurrent use.
type Client struct {
	rpc    pb.AdapterServiceClient
	exited <-chan struct{} // closed when the plugin process exits (nil in tests without a process)
	minor  atomic.Int32    // the plugin's ProtocolMinor plus one, once Info answered; 0: not known yet

	pollMu sync.Mutex
	polled map[string]string // by bot: the last Poll batch returned to the caller

	noCalls atomic.Bool // the plugin refused the Calls stream: calls are unary RPCs
	noWire  atomic.Bool // the wire did not open: calls take the Calls stream
	callsMu sync.Mutex  // guards the fields below
	cs      *callStream // the wire (calls.go, wire.go); nil until it opened, or after it failed
	gs      *callStream // the gRPC Calls stream; nil until a call needed it, or after it failed
	closed  bool        // closeCalls was called
	// wireOpening: openWireNow runs
	wireOpening bool

	log *slog.Logger // nil: slog.Default()
}

func (c *Client) logger() *slog.Logger {
	if c.log != nil {
		return c.log
	}
	return slog.Default()
}

// NewClient returns a Client over an existing connection's service client; for tests and
// hosts that manage connections themselves.
func NewClient(rpc pb.AdapterServiceClient) *Client { return &Client{rpc: rpc} }

// Info describes a plugin.
type Info struct {
	Version       string
	Platforms     []string
	ProtocolMinor int
}

// BotInfo is what Configure reports for each bot.
type BotInfo struct {
	Name         string
	Platform     string
	Capabilities []string // "upload", "poll", "recall"
}

// Exited returns a channel closed when the plugin process exits; nil if unknown.
func (c *Client) Exited() <-chan struct{} { return c.exited }

// Info asks the plugin what it is. The Client remembers the plugin's protocol minor: it
// decides whether Send and HandleWebhook take the Calls stream (minor 3) and whether an
// idempotency key can be honoured (minor 2).
func (c *Client) Info(ctx context.Context) (Info, error) {
	r, err := c.rpc.Info(ctx, &pb.InfoRequest{})
	if err != nil {
		return Info{}, fromStatus(ctx, err)
	}
	c.minor.Store(max(r.ProtocolMinor, 0) + 1)
	return Info{Version: r.Version, Platforms: r.Platforms, ProtocolMinor: int(r.ProtocolMinor)}, nil
}

// protocolMinor returns the plugin's ProtocolMinor, asking its Info the first time.
func (c *Client) protocolMinor(ctx context.Context) (int, error) {
	if m := c.minor.Load(); m > 0 {
		return int(m - 1), nil
	}
	info, err := c.Info(ctx)
	return info.ProtocolMinor, err
}

// Configure opens bots in the plugin, replacing any it had.
func (c *Client) Configure(ctx context.Context, store StoreConfig, bots []BotConfig) ([]BotInfo, error) {
	req := &pb.ConfigureRequest{Store: storeToProto(store)}
	for _, b := range bots {
		req.Bots = append(req.Bots, &pb.BotConfig{Name: b.Name, Platform: b.Platform, Config: b.Config})
	}
	r, err := c.rpc.Configure(ctx, req)
	if err != nil {
		return nil, fromStatus(ctx, err)
	}
	out := make([]BotInfo, 0, len(r.Bots))
	for _, b := range r.Bots {
		out = append(out, BotInfo{Name: b.Name, Platform: b.Platform, Capabilities: b.Capabilities})
	}
	return out, nil
}

// Metrics returns the plugin's metrics in the Prometheus text format.
func (c *Client) Metrics(ctx context.Context) ([]byte, error) {
	r, err := c.rpc.Metrics(ctx, &pb.MetricsRequest{})
	if err != nil {
		return nil, fromStatus(ctx, err)
	}
	return r.Text, nil
}

// Bot returns the adapter of the named bot, as served by the plugin. It implements
// [adapter.Uploader] and [adapter.Poller] too; those fail with KindInvalidRequest when the
// bot lacks the capability.
func (c *Client) Bot(name string) *Bot { return &Bot{c: c, name: name} }

// Bot is one bot served by a plugin: an [adapter.Adapter] whose calls are RPCs.
type Bot struct {
	c    *Client
	name string
}

var (
	_ adapter.Adapter  = (*Bot)(nil)
	_ adapter.Uploader = (*Bot)(nil)
	_ adapter.Poller   = (*Bot)(nil)
)

// Send implements [adapter.Adapter]. Attachments given as a Body are read into memory first
// (at most [MaxMessageSize] in all). Under a ctx from [WithIdempotencyKey] the send is
// idempotent: the plugin sends at most once per key and answers every repeat with the first
// receipt; a plugin older than protocol minor 2, which would ignore the key, gets no such
// send: it fails with an error matching [ErrIdempotencyUnsupported].
func (b *Bot) Send(ctx context.Context, msg adapter.Message) (adapter.Receipt, error) {
	msg.Attachments = append([]adapter.Attachment(nil), msg.Attachments...) // the caller's stay untouched
	if err := loadBodies(msg.Attachments); err != nil {
		return adapter.Receipt{}, err
	}
	key := IdempotencyKey(ctx)
	if key != "" {
		// A plugin before minor 2 would ignore the key and send every repeat.
		minor, err := b.c.protocolMinor(ctx)
		if err != nil {
			return adapter.Receipt{}, err
		}
		if minor < minorIdempotencyKey {
			return adapter.Receipt{}, &adapter.Error{Kind: adapter.KindInvalidRequest, Err: ErrIdempotencyUnsupported,
				Message: fmt.Sprintf("plugin: idempotency keys need a plugin of protocol minor %d or later, and this one is %d: nothing was sent (upgrade the plugin, or send without a key)", minorIdempotencyKey, minor)}
		}
	}
	r, err := b.c.sendRPC(ctx, &pb.SendRequest{Bot: b.name, Message: messageToProto(msg), IdempotencyKey: key}, sizeOfMessage(msg))
	if err != nil {
		err = fromStatus(ctx, err)
		if ae, ok := err.(*adapter.Error); ok {
			idemError(ae)
		}
		return adapter.Receipt{}, err
	}
	return receiptFromProto(r.Receipt), nil
}

// HandleWebhook implements [adapter.Adapter].
func (b *Bot) HandleWebhook(ctx context.Context, req *adapter.WebhookRequest) (*adapter.WebhookResponse, []adapter.Event, error) {
	r, err := b.c.webhookRPC(ctx, b.name, req)
	if err != nil {
		return nil, nil, fromStatus(ctx, err)
	}
	return webhookResponseFromProto(r.Response), eventsFromProto(r.Events), errorFromProto(r.Error)
}

// Status implements [adapter.Adapter].
func (b *Bot) Status(ctx context.Context) (adapter.Status, error) {
	r, err := b.c.rpc.Status(ctx, &pb.StatusRequest{Bot: b.name})
	if err != nil {
		return adapter.Status{Bot: b.name}, fromStatus(ctx, err)
	}
	return statusFromProto(r), nil
}

// Upload implements [adapter.Uploader].
func (b *Bot) Upload(ctx context.Context, a adapter.Attachment) (adapter.Attachment, error) {
	as := []adapter.Attachment{a}
	if err := loadBodies(as); err != nil {
		return adapter.Attachment{}, err
	}
	r, err := b.c.rpc.Upload(ctx, &pb.UploadRequest{Bot: b.name, Attachment: attachmentToProto(as[0])})
	if err != nil {
		return adapter.Attachment{}, fromStatus(ctx, err)
	}
	return attachmentFromProto(r.Attachment), nil
}

// Poll implements [adapter.Poller]. As the contract says, the caller has queued the batch
// the previous Poll returned when it calls Poll again: Poll names that batch to the plugin,
// which keeps every batch until it is named, so a batch whose answer was lost on the way
// (ctx ended as the plugin answered) is returned again.
func (b *Bot) Poll(ctx context.Context) ([]adapter.Event, error) {
	b.c.pollMu.Lock()
	queued := b.c.polled[b.name]
	b.c.pollMu.Unlock()
	r, err := b.c.rpc.Poll(ctx, &pb.PollRequest{Bot: b.name, Acks: true, Queued: queued})
	if err != nil {
		return nil, fromStatus(ctx, err)
	}
	if r.Batch != "" {
		b.c.pollMu.Lock()
		if b.c.polled == nil {
			b.c.polled = make(map[string]string)
		}
		b.c.polled[b.name] = r.Batch
		b.c.pollMu.Unlock()
	}
	return eventsFromProto(r.Events), nil
}

// Recall withdraws a message the bot sent (the Recall RPC), given the id from its
// [adapter.Receipt]. A bot whose capabilities lack "recall" answers with an error of kind
// invalid_request.
func (b *Bot) Recall(ctx context.Context, id string) error {
	if _, err := b.c.rpc.Recall(ctx, &pb.RecallRequest{Bot: b.name, Id: id}); err != nil {
		return fromStatus(ctx, err)
	}
	return nil
}

// Close closes the bot in the plugin.
func (b *Bot) Close() error {
	ctx := context.Background()
	if _, err := b.c.rpc.CloseBot(ctx, &pb.CloseBotRequest{Bot: b.name}); err != nil {
		return fromStatus(ctx, err)
	}
	return nil
}

// loadBodies reads streamed attachment bodies into Data, in place.
func loadBodies(as []adapter.Attachment) error {
	for i := range as {
		a := &as[i]
		if a.Body == nil {
			continue
		}
		if a.Size > MaxMessageSize {
			return &adapter.Error{Kind: adapter.KindTooLarge, Message: fmt.Sprintf("attachment %q: %d bytes is over the plugin limit of %d", a.Name, a.Size, MaxMessageSize)}
		}
		data, err := io.ReadAll(io.LimitReader(a.Body, MaxMessageSize+1))
		if err != nil {
			return &adapter.Error{Kind: adapter.KindInvalidRequest, Message: fmt.Sprintf("attachment %q: reading body", a.Name), Err: err}
		}
		if len(data) > MaxMessageSize {
			return &adapter.Error{Kind: adapter.KindTooLarge, Message: fmt.Sprintf("attachment %q is over the plugin limit of %d bytes", a.Name, MaxMessageSize)}
		}
		a.Data, a.Body, a.Size = data, nil, int64(len(data))
	}
	return nil
}
