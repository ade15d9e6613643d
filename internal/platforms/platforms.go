// Package platforms opens the adapter of a configured bot (WeCom or Graph) inside a plugin
// process, with the token store the host chose and metrics for the plugin's registry.
package platforms

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/seed-a64d9e1f/chatwire/adapter"
	"github.com/seed-a64d9e1f/chatwire/adapter/graph"
	"github.com/seed-a64d9e1f/chatwire/adapter/wecom"
	"github.com/seed-a64d9e1f/chatwire/internal/filestore"
	"github.com/seed-a64d9e1f/chatwire/plugin"
	"github.com/seed-a64d9e1f/chatwire/tokenmgr"
	"github.com/seed-a64d9e1f/chatwire/tokenmgr/redisstore"
)

// WeCom is a WeCom bot's configuration section. CorpSecret, Token and EncodingAESKey are
// secrets.
type WeCom struct {
	CorpID         string `yaml:"corp_id" json:"corp_id"`
	CorpSecret     string `yaml:"corp_secret" json:"corp_secret"`
	AgentID        int64  `yaml:"agent_id" json:"agent_id"`
	Token          string `yaml:"token" json:"token,omitempty"`
	EncodingAESKey string `yaml:"encoding_aes_key" json:"encoding_aes_key,omitempty"`
	APIBase        string `yaml:"api_base" json:"api_base,omitempty"`
	// DuplicateCheck turns on WeCom's enable_duplicate_check with this interval, as a Go
	// duration ("30m", at most 4h): a message/send identical to one WeCom accepted within
	// it is accepted but not shown again (see wecom.Options.DuplicateCheck). Empty: off.
	DuplicateCheck string `yaml:"duplicate_check" json:"duplicate_check,omitempty"`
}

// Graph is a Microsoft Graph bot's configuration section. ClientSecret and ClientState are
// secrets.
type Graph struct {
	TenantID        string   `yaml:"tenant_id" json:"tenant_id"`
	ClientID        string   `yaml:"client_id" json:"client_id"`
	ClientSecret    string   `yaml:"client_secret" json:"client_secret"`
	Auth            string   `yaml:"auth" json:"auth"` // "delegated" or "client_credentials"
	User            string   `yaml:"user" json:"user,omitempty"`
	NotificationURL string   `yaml:"notification_url" json:"notification_url,omitempty"`
	ClientState     string   `yaml:"client_state" json:"client_state,omitempty"`
	Subscribe       []string `yaml:"subscribe" json:"subscribe,omitempty"`
	LoginBase       string   `yaml:"login_base" json:"login_base,omitempty"`
	GraphBase       string   `yaml:"graph_base" json:"graph_base,omitempty"`
	// Chats limits chat subscriptions to these chat ids, and names the chats polled when
	// there is no notification URL. Empty: every chat of the user (subscriptions only).
	Chats []string `yaml:"chats" json:"chats,omitempty"`
	// PollInterval is how often a bot without a notification URL looks for new mail and
	// chat messages, as a Go duration ("30s"). Empty means 30s.
	PollInterval string `yaml:"poll_interval" json:"poll_interval,omitempty"`
}

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

// start runs the Graph adapter's Start (subscriptions, which Graph validates by calling the
// host's webhook) once the host can answer, retrying with backoff until it succeeds or the
// adapter is closed.
func (o *Opener) start(bot string, a *graph.Adapter, log *slog.Logger) {
	wait := 500 * time.Millisecond
	for attempt := 1; ; attempt++ {
		time.Sleep(wait)
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		err := a.Start(ctx)
		cancel()
		if err == nil {
			log.Info("graph bot started", "attempt", attempt)
			return
		}
		if st, _ := a.Status(context.Background()); st.Detail == "closed" {
			return
		}
		log.Warn("graph bot start failed; retrying", "attempt", attempt, "in", wait*2, "error", err)
		wait = min(2*wait, time.Minute)
	}
}

// Supported lists the platforms this build can open.
func Supported() []string { return []string{adapter.PlatformWeCom, adapter.PlatformGraph} }

// Opener opens bots for a plugin [plugin.Server]. Its zero value is not usable: use New.
type Opener struct {
	// NoStart leaves Graph bots unstarted: no subscriptions are created (for credential
	// probes). False: each Graph bot is started in the background after it opens.
	NoStart bool

	log *slog.Logger
	m   *Metrics

	mu     sync.Mutex                // guards stores
	stores map[string]tokenmgr.Store // by storeID
}

// New returns an Opener logging to log (nil: nowhere) and counting in reg (nil: nowhere).
func New(log *slog.Logger, reg prometheus.Registerer) *Opener {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	o := &Opener{log: log, m: NewMetrics(reg), stores: make(map[string]tokenmgr.Store)}
	if reg != nil {
		reg.MustRegister(prometheus.CollectorFunc(o.collectStores))
	}
	return o
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
		s, _, err = OpenRedisStore(cfg, o.log) // kept for the life of the process, as the store
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

// Open opens bot's adapter; it has the signature of [plugin.OpenFunc].
func (o *Opener) Open(ctx context.Context, sc plugin.StoreConfig, bot plugin.BotConfig) (adapter.Adapter, error) {
	store, err := o.store(sc)
	if err != nil {
		return nil, err
	}
	log := o.log.With("bot", bot.Name)
	topts := tokenmgr.Options{Store: store, Logger: log, OnEvent: o.m.tokenEvent}
	hc := &http.Client{Transport: o.m.transport(bot.Platform, http.DefaultTransport), Timeout: 2 * time.Minute}
	switch bot.Platform {
	case adapter.PlatformWeCom:
		var c WeCom
		if err := json.Unmarshal(bot.Config, &c); err != nil {
			return nil, fmt.Errorf("wecom config: %w", err)
		}
		cl, err := wecom.New(wecom.Config{Bot: bot.Name, CorpID: c.CorpID, CorpSecret: c.CorpSecret, AgentID: c.AgentID,
			Token: c.Token, EncodingAESKey: c.EncodingAESKey, APIBase: c.APIBase},
			wecom.Options{HTTPClient: hc, Logger: log, TokenOptions: topts, SplitText: true, DuplicateCheck: pollInterval(c.DuplicateCheck)})
		if err != nil {
			return nil, err
		}
		o.m.watch(cl.Tokens())
		log.Info("bot opened", "platform", bot.Platform, "corp_id", c.CorpID, "agent_id", strconv.FormatInt(c.AgentID, 10))
		return cl, nil
	case adapter.PlatformGraph:
		var c Graph
		if err := json.Unmarshal(bot.Config, &c); err != nil {
			return nil, fmt.Errorf("graph config: %w", err)
		}
		a, err := graph.New(GraphOptions(bot.Name, c, hc, store, log, topts))
		if err != nil {
			return nil, err
		}
		o.m.watch(a.Tokens())
		log.Info("bot opened", "platform", bot.Platform, "tenant", c.TenantID, "auth", c.Auth, "notifications", c.NotificationURL != "")
		if !o.NoStart {
			go o.start(bot.Name, a, log)
		}
		return a, nil
	}
	return nil, &adapter.Error{Kind: adapter.KindInvalidRequest, Message: fmt.Sprintf("unknown platform %q", bot.Platform)}
}
