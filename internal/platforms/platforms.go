// Package platforms opens the adapter of a configured bot (WeCom or Graph) inside a plugin
// process, with the token store the host chose and metrics for the plugin's registry.
package platforms

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/seed-a64d9e1f/chatwire/adapter"
	"github.com/seed-a64d9e1f/chatwire/adapter/graph"
	"github.com/seed-a64d9e1f/chatwire/adapter/wecom"
	"github.com/seed-a64d9e1f/chatwire/internal/backoff"
	"github.com/seed-a64d9e1f/chatwire/internal/filestore"
	"github.com/seed-a64d9e1f/chatwire/plugin"
	"github.com/seed-a64d9e1f/chatwire/tokenmgr"
	"github.com/seed-a64d9e1f/chatwire/tokenmgr/redisstore"
)

// WeCom is a WeCom bot's configuration section, published as [plugin.WeComConfig] so a Go
// framework configuring the plugin uses the same type.
type WeCom = plugin.WeComConfig

// Graph is a Microsoft Graph bot's configuration section, published as [plugin.GraphConfig].
type Graph = plugin.GraphConfig

// GraphOptions turns a bot's Graph section into the adapter's options.
func GraphOptions(bot string, c Graph, hc *http.Client, store tokenmgr.Store, log *slog.Logger, topts tokenmgr.Options) graph.Options {
	return graph.Options{
		Bot:             bot,
		Config:          GraphConfig(c, hc),
		Auth:            c.Auth,
		User:            c.User,
		GraphBase:       c.GraphBase,
		HTTPClient:      hc,
		Store:           store,
		Logger:          log,
		TokenOptions:    topts,
		NotificationURL: c.NotificationURL,
		ClientState:     c.ClientState,
		Subscribe:       c.Subscribe,
		Chats:           c.Chats,
		PollInterval:    pollInterval(c.PollInterval),
	}
}

func pollInterval(s string) time.Duration {
	d, _ := time.ParseDuration(s) // validated by the host; empty or bad: the adapter's default
	return d
}

// GraphConfig returns the app registration of a Graph section. It declares the cp1 client
// capability (continuous access evaluation): the adapter answers Graph's claims challenges,
// so a revoked session is noticed at once instead of when the token expires.
func GraphConfig(c Graph, hc *http.Client) graph.Config {
	return graph.Config{Tenant: c.TenantID, ClientID: c.ClientID, ClientSecret: c.ClientSecret, LoginBase: c.LoginBase, HTTPClient: hc, CAE: true}
}

// GraphKey returns the token key of a Graph bot, where graph login stores its sign-in.
func GraphKey(c Graph) string {
	if c.Auth == graph.AuthClientCredentials {
		return GraphConfig(c, nil).Key("")
	}
	return GraphConfig(c, nil).Key(cmp.Or(c.User, "me"))
}

// starter is what start needs of a [graph.Adapter].
type starter interface {
	Start(ctx context.Context) error
	Done() <-chan struct{}
}

// start runs the Graph adapter's Start (subscriptions, which Graph validates by calling the
// host's webhook) once the host can answer, retrying with backoff (500ms doubling to 1
// minute) until it succeeds or the adapter is closed; closing it ends a wait or an attempt
// at once.
func (o *Opener) start(a starter, log *slog.Logger) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-a.Done():
			cancel()
		case <-ctx.Done():
		}
	}()
	bo := backoff.Backoff{Base: 500 * time.Millisecond, Max: time.Minute}
	for attempt := 1; ; attempt++ {
		if backoff.Sleep(ctx, bo.Next()) != nil {
			return // closed
		}
		actx, acancel := context.WithTimeout(ctx, time.Minute)
		err := a.Start(actx)
		acancel()
		if err == nil {
			log.Info("graph bot started", "attempt", attempt)
			return
		}
		if ctx.Err() != nil {
			return
		}
		log.Warn("graph bot start failed; retrying", "attempt", attempt, "error", err)
	}
}

// Supported lists the platforms this build can open.
func Supported() []string {
	return []string{adapter.PlatformWeCom, adapter.PlatformGraph, adapter.PlatformTeams, adapter.PlatformWeComAIBot, adapter.PlatformWeComRobot}
}

// Opener opens bots for a plugin [plugin.Server]. Its zero value is not usable: use New.
type Opener struct {
	// NoStart leaves Graph bots unstarted: no subscriptions are created (for credential
	// probes). False: each Graph bot is started in the background after it opens.
	NoStart bool

	log    *slog.Logger
	m      *Metrics
	health *health
	// upstream carries every bot's platform API calls (through m's counting transport).
	upstream *http.Transport

	mu      sync.Mutex                       // guards stores and clients
	stores  map[string]tokenmgr.Store        // by storeID
	clients map[string]redis.UniversalClient // the Redis stores' clients, by storeID
}

// New returns an Opener logging to log (nil: nowhere) and counting in reg (nil: nowhere).
func New(log *slog.Logger, reg prometheus.Registerer) *Opener {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	o := &Opener{log: log, m: NewMetrics(reg), health: newHealth(), upstream: newUpstreamTransport(),
		stores: make(map[string]tokenmgr.Store), clients: make(map[string]redis.UniversalClient)}
	if reg != nil {
		reg.MustRegister(prometheus.CollectorFunc(o.collectStores), prometheus.CollectorFunc(o.health.collect))
	}
	return o
}

// upstreamIdlePerHost is how many idle connections to one platform API host the plugin keeps
// for the next request: as many as the sends in flight to it at once, typically (every bot of
// a platform calls the same host). http.DefaultTransport keeps 2, so with more concurrent
// sends most requests dialed (and, in production, TLS-handshook) a new connection: the
// plugin's profile under bench/load with 8 callers had 11% of its CPU in Transport.dialConn.
const upstreamIdlePerHost = 64

// newUpstreamTransport is http.DefaultTransport (proxy from the environment, timeouts, HTTP/2)
// keeping upstreamIdlePerHost idle connections per host.
func newUpstreamTransport() *http.Transport {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = upstreamIdlePerHost
	tr.MaxIdleConns = max(tr.MaxIdleConns, 4*upstreamIdlePerHost)
	return tr
}

var (
	storeOutagesDesc = prometheus.NewDesc("chatwire_store_outages_total",
		"Times the Redis token store became unavailable (redisstore Stats.Outages).", nil, nil)
	storeLocalDesc = prometheus.NewDesc("chatwire_store_local_refreshes_total",
		"Token fetches made in this plugin process without the fleet's Redis lock: Redis was unavailable, or the stored entry is sealed with an encryption key this host does not have (redisstore Stats.LocalRefreshes).", nil, nil)
	storeAvailableDesc = prometheus.NewDesc("chatwire_store_available",
		"1 while the Redis token store answers, 0 from a failed call until one succeeds (redisstore Stats.Available).", nil, nil)
)

// collectStores reports the Redis stores' outage counters at scrape time; nothing without a
// Redis store.
func (o *Opener) collectStores(ch chan<- prometheus.Metric) {
	o.mu.Lock()
	var stats []redisstore.Stats
	for _, s := range o.stores {
		if rs, ok := s.(*redisstore.Store); ok {
			stats = append(stats, rs.Stats())
		}
	}
	o.mu.Unlock()
	if len(stats) == 0 {
		return
	}
	var outages, local uint64
	available := 1.0
	for _, st := range stats {
		outages += st.Outages
		local += st.LocalRefreshes
		if !st.Available {
			available = 0
		}
	}
	ch <- prometheus.MustNewConstMetric(storeOutagesDesc, prometheus.CounterValue, float64(outages))
	ch <- prometheus.MustNewConstMetric(storeLocalDesc, prometheus.CounterValue, float64(local))
	ch <- prometheus.MustNewConstMetric(storeAvailableDesc, prometheus.GaugeValue, available)
}

// storeID identifies a StoreConfig (which holds slices, so it is no map key itself). It holds
// no secret in the clear: it is a digest.
func storeID(cfg plugin.StoreConfig) string {
	data, _ := json.Marshal(cfg) // strings, numbers, bools and bytes: cannot fail
	sum := sha256.Sum256(data)
	return string(sum[:])
}

// store returns the one store for cfg, opening it on first use.
func (o *Opener) store(cfg plugin.StoreConfig) (tokenmgr.Store, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	id := storeID(cfg)
	if s, ok := o.stores[id]; ok {
		return s, nil
	}
	var (
		s   tokenmgr.Store
		err error
	)
	switch {
	case cfg.UsesRedis():
		var rs *redisstore.Store
		// Kept for the life of the process, as the store; Teams references use it too.
		if rs, err = o.openRedisStore(cfg); err == nil {
			s = rs
		}
	case cfg.Dir != "":
		s, err = filestore.Open(cfg.Dir)
	default:
		s = new(tokenmgr.MemoryStore)
	}
	if err != nil {
		return nil, err
	}
	o.stores[id] = s
	return s, nil
}

// openRedisStore opens the Redis store of cfg and records its client.
func (o *Opener) openRedisStore(cfg plugin.StoreConfig) (*redisstore.Store, error) {
	rdb, err := RedisClient(cfg)
	if err != nil {
		return nil, err
	}
	if rdb == nil {
		return nil, errors.New("store: no Redis configured")
	}
	s, err := redisstore.New(rdb, RedisStoreOptions(cfg, o.log))
	if err != nil {
		rdb.Close()
		return nil, err
	}
	o.clients[storeID(cfg)] = rdb
	return s, nil
}

// Open opens bot's adapter; it has the signature of [plugin.OpenFunc].
func (o *Opener) Open(ctx context.Context, sc plugin.StoreConfig, bot plugin.BotConfig) (adapter.Adapter, error) {
	store, err := o.store(sc)
	if err != nil {
		return nil, err
	}
	log := o.log.With("bot", bot.Name)
	topts := tokenmgr.Options{Store: store, Logger: log, OnEvent: func(ev tokenmgr.Event) {
		o.m.tokenEvent(ev)
		o.health.event(bot.Name, ev)
	}}
	hc := &http.Client{Transport: o.m.transport(bot.Platform, o.upstream), Timeout: 2 * time.Minute}
	switch bot.Platform {
	case adapter.PlatformWeCom:
		var c WeCom
		if err := json.Unmarshal(bot.Config, &c); err != nil {
			return nil, err // "wecom config: …", naming the expected keys if one is unknown
		}
		cl, err := wecom.New(wecom.Config{Bot: bot.Name, CorpID: c.CorpID, CorpSecret: c.CorpSecret, AgentID: c.AgentID,
			Token: c.Token, EncodingAESKey: c.EncodingAESKey, APIBase: c.APIBase},
			wecom.Options{HTTPClient: hc, Logger: log, TokenOptions: topts, SplitText: true, DuplicateCheck: pollInterval(c.DuplicateCheck)})
		if err != nil {
			return nil, err
		}
		o.m.watch(cl.Tokens())
		o.health.open(bot.Name, bot.Platform, cl.Tokens())
		if !o.NoStart {
			warm(cl.Tokens(), log)
		}
		log.Info("bot opened", "platform", bot.Platform, "corp_id", c.CorpID, "agent_id", strconv.FormatInt(c.AgentID, 10))
		return cl, nil
	case adapter.PlatformGraph:
		var c Graph
		if err := json.Unmarshal(bot.Config, &c); err != nil {
			return nil, err // "graph config: …", naming the expected keys if one is unknown
		}
		a, err := graph.New(GraphOptions(bot.Name, c, hc, store, log, topts))
		if err != nil {
			return nil, err
		}
		o.m.watch(a.Tokens())
		o.health.open(bot.Name, bot.Platform, a.Tokens())
		if !o.NoStart {
			warm(a.Tokens(), log)
		}
		log.Info("bot opened", "platform", bot.Platform, "tenant", c.TenantID, "auth", c.Auth, "notifications", c.NotificationURL != "")
		if !o.NoStart {
			go o.start(a, log)
		}
		return a, nil
	case adapter.PlatformTeams:
		return o.openTeams(sc, store, bot, hc, log, topts)
	}
	if a, ok, err := openWeComBot(sc, bot, hc, log); ok {
		return a, err
	}
	return nil, &adapter.Error{Kind: adapter.KindInvalidRequest, Message: fmt.Sprintf("unknown platform %q", bot.Platform)}
}
