package plugin

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"
	"github.com/redis/go-redis/v9"

	"github.com/seed-a64d9e1f/chatwire/adapter"
	"github.com/seed-a64d9e1f/chatwire/internal/idempotency"
	pb "github.com/seed-a64d9e1f/chatwire/plugin/proto"
)

// BotConfig is one bot as the host configures it.
type BotConfig struct {
	Name     string
	Platform string // adapter.PlatformWeCom, adapter.PlatformGraph
	// Config is the bot's platform section as JSON. It holds secrets: it crosses the process
	// boundary only inside the Configure RPC, never in argv or the environment.
	Config json.RawMessage
}

// StoreConfig says where a plugin keeps tokens and state that must survive restarts. It holds
// secrets (passwords, encryption keys): it crosses the process boundary only inside the
// Configure RPC, never in argv or the environment, and must never be logged.
type StoreConfig struct {
	RedisURL  string // shared Redis store on one node; empty: none (or RedisAddrs)
	KeyPrefix string
	Dir       string // state directory for an embedded file store; empty: memory only

	// RedisAddrs name the shared Redis store instead of RedisURL: with RedisMasterName they are
	// Sentinel addresses; several without it, Cluster nodes; one, a single node.
	RedisAddrs            []string
	RedisMasterName       string
	RedisUsername         string
	RedisPassword         string
	RedisSentinelPassword string // for the Sentinels themselves, if they require one
	RedisDB               int    // not with Cluster
	RedisTLS              bool

	// EncryptionKey (32 bytes) seals the tokens and state stored in Redis with AES-256-GCM;
	// PreviousEncryptionKeys are still read, never written; AcceptPlaintext reads entries
	// stored in the clear while encryption is being turned on (see redisstore.Options).
	EncryptionKey          []byte
	PreviousEncryptionKeys [][]byte
	AcceptPlaintext        bool
}

// UsesRedis reports whether c names a Redis store (RedisURL or RedisAddrs).
func (c StoreConfig) UsesRedis() bool { return c.RedisURL != "" || len(c.RedisAddrs) > 0 }

// OpenFunc opens the adapter of one bot. It may do network work (it runs inside Configure,
// after the handshake). It must not log secrets.
type OpenFunc func(ctx context.Context, store StoreConfig, bot BotConfig) (adapter.Adapter, error)

// ServerOptions configure a [Server].
type ServerOptions struct {
	// Open opens a bot's adapter. Required.
	Open OpenFunc
	// Platforms lists the platforms Open serves, reported by Info.
	Platforms []string
	// Version is the plugin's release, reported by Info. Empty means "dev".
	Version string
	// Gatherer provides the metrics the Metrics RPC returns. If nil, the RPC returns none.
	Gatherer prometheus.Gatherer
	// Logger receives bot lifecycle lines. If nil, nothing is logged.
	Logger *slog.Logger
	// RedisClient builds the client of the Redis store a StoreConfig names, for the keys of
	// idempotent sends ([WithIdempotencyKey]). nil: a plain client from RedisURL or
	// RedisAddrs. Without a Redis store the keys live in the plugin's memory.
	RedisClient func(StoreConfig) (redis.UniversalClient, error)
	// IdempotencyLease is how long a send's claim on its key outlives a plugin process that
	// died mid-send; a repeat waits that long before it answers "outcome unknown". Zero
	// means 30 s.
	IdempotencyLease time.Duration
}

// Server serves the adapter service: it holds the bots the host configured and routes every
// request to the bot it names. Its methods are safe for concurrent use.
type Server struct {
	pb.UnimplementedAdapterServiceServer
	opts ServerOptions
	log  *slog.Logger

	reg    *prometheus.Registry   // the Server's own metrics, served with opts.Gatherer's
	panics *prometheus.CounterVec // recovered panics by gRPC method

	mu        sync.RWMutex // guards bots and the fields below
	bots      map[string]adapter.Adapter
	idem      *idempotency.Keeper // keys of idempotent sends; nil before the first Configure
	idemStore string              // the store idem uses (idemStoreID)
	idemClose func() error        // closes idem's Redis client

	wires     atomic.Int32 // wire connections awaited or served (wire.go)
	wireCalls atomic.Int64 // calls received on wires
	wireMu    sync.Mutex   // guards wireConns
	wireConns map[net.Conn]struct{}

	pollNonce string // names this process's Poll batches, so a batch id from a previous plugin never matches
	pollMu    sync.Mutex
	polls     map[string]*keptBatch // by bot
}

// keptBatch is the last Poll batch answered to an acking host, kept until the host names it
// as queued (PollRequest.queued): an answer lost on the way back is answered again.
type keptBatch struct {
	turn   chan struct{} // one Poll per bot at a time
	seq    uint64
	id     string // "" when nothing is kept
	events []adapter.Event
}

// NewServer returns a Server with no bots.
func NewServer(opts ServerOptions) *Server {
	if opts.Version == "" {
		opts.Version = "dev"
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{opts: opts, log: log, bots: make(map[string]adapter.Adapter), reg: prometheus.NewRegistry(),
		panics: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "chatwire_plugin_panics_total",
			Help: "Panics in plugin calls recovered into internal errors, by gRPC method."}, []string{"method"})}
	s.reg.MustRegister(s.panics)
	s.pollNonce = rand.Text()[:10]
	return s
}

func (s *Server) bot(name string) (adapter.Adapter, error) {
	s.mu.RLock()
	a := s.bots[name]
	s.mu.RUnlock()
	if a == nil {
		return nil, toStatus(&adapter.Error{Kind: adapter.KindNotFound, Message: fmt.Sprintf("no bot named %q", name)})
	}
	return a, nil
}

// Info implements the Info RPC.
func (s *Server) Info(ctx context.Context, _ *pb.InfoRequest) (*pb.InfoResponse, error) {
	return &pb.InfoResponse{Version: s.opts.Version, Platforms: s.opts.Platforms, ProtocolMinor: ProtocolMinor}, nil
}

// Configure opens every bot in the request and then replaces the set of bots with them,
// closing bots that are replaced or no longer listed. If any bot fails to open, nothing
// changes and the error names the bot.
func (s *Server) Configure(ctx context.Context, req *pb.ConfigureRequest) (*pb.ConfigureResponse, error) {
	if s.opts.Open == nil {
		return nil, toStatus(&adapter.Error{Kind: adapter.KindInternal, Message: "plugin has no Open function"})
	}
	store := storeFromProto(req.GetStore())
	s.mu.RLock()
	keepIdem := s.idem != nil && s.idemStore == idemStoreID(store)
	s.mu.RUnlock()
	var (
		idem      *idempotency.Keeper
		idemClose func() error
	)
	if !keepIdem {
		var err error
		if idem, idemClose, err = s.keeper(store); err != nil {
			return nil, toStatus(&adapter.Error{Kind: adapter.KindInvalidRequest, Message: "idempotency store: " + err.Error()})
		}
	}
	opened := make(map[string]adapter.Adapter, len(req.Bots))
	closeAll := func() {
		for _, a := range opened {
			a.Close()
		}
	}
	resp := &pb.ConfigureResponse{}
	for _, b := range req.Bots {
		if _, dup := opened[b.Name]; dup || b.Name == "" {
			closeAll()
			if idemClose != nil {
				idemClose()
			}
			return nil, toStatus(&adapter.Error{Kind: adapter.KindInvalidRequest, Message: fmt.Sprintf("bot name %q empty or repeated", b.Name)})
		}
		a, err := s.opts.Open(ctx, store, BotConfig{Name: b.Name, Platform: b.Platform, Config: json.RawMessage(b.Config)})
		if err != nil {
			closeAll()
			if idemClose != nil {
				idemClose()
			}
			ae := &adapter.Error{Kind: adapter.KindOf(err), Message: fmt.Sprintf("bot %s: %v", b.Name, err), Code: adapter.Code(err), Err: err}
			return nil, toStatus(ae)
		}
		opened[b.Name] = a
		resp.Bots = append(resp.Bots, &pb.BotInfo{Name: b.Name, Platform: b.Platform, Capabilities: capabilities(a)})
	}
	s.mu.Lock()
	old := s.bots
	s.bots = opened
	var oldIdemClose func() error
	if idem != nil {
		oldIdemClose = s.idemClose
		s.idem, s.idemStore, s.idemClose = idem, idemStoreID(store), idemClose
	}
	s.mu.Unlock()
	if oldIdemClose != nil {
		oldIdemClose()
	}
	for name, a := range old {
		if err := a.Close(); err != nil {
			s.log.Warn("closing replaced bot", "bot", name, "error", err)
		}
	}
	names := make([]string, 0, len(opened))
	for n := range opened {
		names = append(names, n)
	}
	sort.Strings(names)
	s.log.Info("bots configured", "bots", names)
	return resp, nil
}

func capabilities(a adapter.Adapter) []string {
	var caps []string
	if _, ok := a.(adapter.Uploader); ok {
		caps = append(caps, CapUpload)
	}
	if _, ok := a.(adapter.Poller); ok {
		caps = append(caps, CapPoll)
	}
	if _, ok := a.(adapter.Recaller); ok {
		caps = append(caps, CapRecall)
	}
	return caps
}

// Send implements the Send RPC.
func (s *Server) Send(ctx context.Context, req *pb.SendRequest) (*pb.SendResponse, error) {
	a, err := s.bot(req.Bot)
	if err != nil {
		return nil, err
	}
	send := func(ctx context.Context) (*pb.SendResponse, error) {
		r, err := a.Send(ctx, messageFromProto(req.Message))
		if err != nil {
			return nil, toStatus(err)
		}
		return &pb.SendResponse{Receipt: receiptToProto(r)}, nil
	}
	if req.IdempotencyKey == "" {
		return send(ctx)
	}
	s.mu.RLock()
	k := s.idem
	s.mu.RUnlock()
	return s.sendOnce(ctx, k, req, send)
}

// idemStoreID identifies the Redis store (or memory) sc names, so a Configure with the same
// store keeps the keys.
func idemStoreID(sc StoreConfig) string {
	return fmt.Sprintf("%q %q %q %q %q %d %t", sc.RedisURL, sc.RedisAddrs, sc.RedisMasterName, sc.RedisUsername, sc.KeyPrefix, sc.RedisDB, sc.RedisTLS)
}

// HandleWebhook implements the HandleWebhook RPC. A refused request is not an RPC error:
// its response and error both travel in the reply.
func (s *Server) HandleWebhook(ctx context.Context, req *pb.HandleWebhookRequest) (*pb.HandleWebhookResponse, error) {
	a, err := s.bot(req.Bot)
	if err != nil {
		return nil, err
	}
	resp, events, err := a.HandleWebhook(ctx, webhookRequestFromProto(req.Request))
	return &pb.HandleWebhookResponse{Response: webhookResponseToProto(resp), Events: eventsToProto(events),
		Error: errorToProto(err)}, nil
}

// Status implements the Status RPC.
func (s *Server) Status(ctx context.Context, req *pb.StatusRequest) (*pb.StatusResponse, error) {
	a, err := s.bot(req.Bot)
	if err != nil {
		return nil, err
	}
	st, err := a.Status(ctx)
	if err != nil {
		return nil, toStatus(err)
	}
	return statusToProto(st), nil
}

// Upload implements the Upload RPC.
func (s *Server) Upload(ctx context.Context, req *pb.UploadRequest) (*pb.UploadResponse, error) {
	a, err := s.bot(req.Bot)
	if err != nil {
		return nil, err
	}
	u, ok := a.(adapter.Uploader)
	if !ok {
		return nil, toStatus(&adapter.Error{Kind: adapter.KindInvalidRequest, Message: "bot " + req.Bot + " cannot upload ahead of sending"})
	}
	att, err := u.Upload(ctx, attachmentFromProto(req.Attachment))
	if err != nil {
		return nil, toStatus(err)
	}
	return &pb.UploadResponse{Attachment: attachmentToProto(att)}, nil
}

// Poll implements the Poll RPC. For a host that acknowledges batches (req.Acks) it keeps
// each non-empty batch it answers and answers it again, without polling the adapter, until a
// request names it as queued; only then does it poll the adapter again, which commits the
// adapter's cursor for that batch. A Poll answer lost between plugin and host (the host's
// call ended as the plugin answered) is thus not lost, as [adapter.Poller] promises.
func (s *Server) Poll(ctx context.Context, req *pb.PollRequest) (*pb.PollResponse, error) {
	a, err := s.bot(req.Bot)
	if err != nil {
		return nil, err
	}
	p, ok := a.(adapter.Poller)
	if !ok {
		return nil, toStatus(&adapter.Error{Kind: adapter.KindInvalidRequest, Message: "bot " + req.Bot + " has nothing to poll"})
	}
	if !req.Acks {
		events, err := p.Poll(ctx)
		if err != nil {
			return nil, toStatus(err)
		}
		return &pb.PollResponse{Events: eventsToProto(events)}, nil
	}
	k := s.keptBatch(req.Bot)
	select {
	case k.turn <- struct{}{}:
		defer func() { <-k.turn }()
	case <-ctx.Done():
		return nil, toStatus(&adapter.Error{Kind: adapter.KindUnavailable, Message: "bot " + req.Bot + " is still answering an earlier Poll", Err: ctx.Err()})
	}
	if k.id != "" {
		if req.Queued != k.id {
			return &pb.PollResponse{Events: eventsToProto(k.events), Batch: k.id}, nil
		}
		k.id, k.events = "", nil
	}
	events, err := p.Poll(ctx)
	if err != nil {
		return nil, toStatus(err)
	}
	resp := &pb.PollResponse{Events: eventsToProto(events)}
	if len(events) > 0 {
		k.seq++
		k.id, k.events = fmt.Sprintf("%s-%d", s.pollNonce, k.seq), events
		resp.Batch = k.id
	}
	return resp, nil
}

// keptBatch returns the Poll state of a bot.
func (s *Server) keptBatch(bot string) *keptBatch {
	s.pollMu.Lock()
	defer s.pollMu.Unlock()
	if s.polls == nil {
		s.polls = make(map[string]*keptBatch)
	}
	k := s.polls[bot]
	if k == nil {
		k = &keptBatch{turn: make(chan struct{}, 1)}
		s.polls[bot] = k
	}
	return k
}

// Recall implements the Recall RPC.
func (s *Server) Recall(ctx context.Context, req *pb.RecallRequest) (*pb.RecallResponse, error) {
	a, err := s.bot(req.Bot)
	if err != nil {
		return nil, err
	}
	r, ok := a.(adapter.Recaller)
	if !ok {
		return nil, toStatus(&adapter.Error{Kind: adapter.KindInvalidRequest, Message: "bot " + req.Bot + " cannot recall messages"})
	}
	if err := r.Recall(ctx, req.Id); err != nil {
		return nil, toStatus(err)
	}
	return &pb.RecallResponse{}, nil
}

// CloseBot implements the CloseBot RPC.
func (s *Server) CloseBot(ctx context.Context, req *pb.CloseBotRequest) (*pb.CloseBotResponse, error) {
	s.mu.Lock()
	a := s.bots[req.Bot]
	delete(s.bots, req.Bot)
	s.mu.Unlock()
	if a != nil {
		if err := a.Close(); err != nil {
			return nil, toStatus(err)
		}
	}
	return &pb.CloseBotResponse{}, nil
}

// Metrics implements the Metrics RPC.
func (s *Server) Metrics(ctx context.Context, _ *pb.MetricsRequest) (*pb.MetricsResponse, error) {
	gatherers := prometheus.Gatherers{s.reg}
	if s.opts.Gatherer != nil {
		gatherers = append(gatherers, s.opts.Gatherer)
	}
	mfs, err := gatherers.Gather()
	if err != nil && len(mfs) == 0 {
		return nil, toStatus(&adapter.Error{Kind: adapter.KindInternal, Message: "gathering metrics", Err: err})
	}
	var buf bytes.Buffer
	enc := expfmt.NewEncoder(&buf, expfmt.NewFormat(expfmt.TypeTextPlain))
	for _, mf := range mfs {
		if err := enc.Encode(mf); err != nil {
			return nil, toStatus(&adapter.Error{Kind: adapter.KindInternal, Message: "encoding metrics", Err: err})
		}
	}
	return &pb.MetricsResponse{Text: buf.Bytes()}, nil
}

// Close closes every bot, and the wires: their calls in flight fail as unavailable.
func (s *Server) Close() error {
	s.closeWires()
	s.mu.Lock()
	bots := s.bots
	s.bots = make(map[string]adapter.Adapter)
	idemClose := s.idemClose
	s.idem, s.idemStore, s.idemClose = nil, "", nil
	s.mu.Unlock()
	var errs []error
	if idemClose != nil {
		errs = append(errs, idemClose())
	}
	for _, a := range bots {
		errs = append(errs, a.Close())
	}
	return errors.Join(errs...)
}
