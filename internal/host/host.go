// Package host is adapter-host's server: it launches the plugin, serves the HTTP API (sends,
// events over SSE and consumer groups, webhooks, ops endpoints), delivers events to
// webhooks and runs the asynchronous sends. Start starts one; cmd/adapter-host wires it.
package host

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/redis/go-redis/v9"

	"github.com/seed-a64d9e1f/chatwire/adapter"
	"github.com/seed-a64d9e1f/chatwire/internal/backoff"
	"github.com/seed-a64d9e1f/chatwire/internal/config"
	"github.com/seed-a64d9e1f/chatwire/internal/eventlog"
	"github.com/seed-a64d9e1f/chatwire/internal/pacing"
	"github.com/seed-a64d9e1f/chatwire/internal/platforms"
	"github.com/seed-a64d9e1f/chatwire/plugin"
)

// Options tune a host beyond its config file (tests and the demo).
type Options struct {
	Logger *slog.Logger
	// PluginArgs are passed to the plugin executable. Nil means ["plugin"] when the host runs
	// itself as the plugin, none otherwise.
	PluginArgs []string
	// PluginDebug makes the plugin log at debug level.
	PluginDebug bool
	// DeliverBackoff is the first wait between delivery retries. Zero means 1s.
	DeliverBackoff time.Duration
	// QueueSize bounds each bot's event queue. Zero means 10,000.
	QueueSize int
	// Listener, if not nil, is served instead of listening on cfg.Server.Listen.
	Listener net.Listener
	// PingInterval, PingTimeout and PingMisses tune the plugin's health checks (see
	// plugin.LaunchOptions); zero means its defaults.
	PingInterval, PingTimeout time.Duration
	PingMisses                int
	// PacingClock is the clock of send pacing (tests shorten time with it); nil: real time.
	PacingClock pacing.Clock
	// Version and Revision label chatwire_build_info; empty: "(devel)" and "unknown".
	Version, Revision string
}

// Host is a running adapter-host: plugin, HTTP server, deliverers.
type Host struct {
	cfg    *config.Config
	log    *slog.Logger
	plugin *plugin.Plugin
	srv    *server
	http   *http.Server
	ln     net.Listener
	m      *metrics
	redis  redis.UniversalClient // nil without Redis
	leases *leaseSet             // the fleet-wide leases this host holds (nil without Redis)

	connMu   sync.Mutex            // guards newConns
	newConns map[net.Conn]struct{} // connections that have not sent a request yet

	shutdownOnce sync.Once
	shutdownErr  error

	stopDeliver context.CancelFunc
	wg          sync.WaitGroup // deliverers and the HTTP server
	serveErr    chan error
}

// Start launches the plugin, configures the bots, and starts serving HTTP. ctx bounds
// the start only; call Shutdown to stop. A failed start stops what it started.
func Start(ctx context.Context, cfg *config.Config, opts Options) (*Host, error) {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	h := &Host{cfg: cfg, log: log, m: newMetrics(), serveErr: make(chan error, 1)}
	h.m.reg.MustRegister(buildInfo(opts.Version, opts.Revision), goMaxProcs())
	for _, start := range []func() error{
		func() error { return h.connectRedis() },                // one client for queues, dedup and leases
		func() error { return h.launchPlugin(ctx, opts) },       // the adapters, in a supervised process
		func() error { return h.newServer(opts.PacingClock) },   // the HTTP API and its send gate
		func() error { return h.openEventLogs(opts.QueueSize) }, // each bot's events
		func() error { return h.listen(opts.Listener) },
	} {
		if err := start(); err != nil {
			h.closeStarted()
			return nil, err
		}
	}
	h.registerChecks()
	h.m.reg.MustRegister(prometheus.CollectorFunc(h.srv.collectServer))
	h.serve()
	dctx, cancel := context.WithCancel(context.Background())
	h.stopDeliver = cancel
	h.startDeliverers(dctx, opts.DeliverBackoff)                  // webhook delivery of events
	h.srv.sends.start(dctx, &h.wg, h.leases, cfg.Store.KeyPrefix) // asynchronous sends
	h.startPollers(dctx)                                          // bots without webhooks
	log.Info("adapter-host listening", "addr", h.ln.Addr().String(), "bots", len(cfg.Bots), "api_keys", len(cfg.Server.APIKeys) > 0)
	return h, nil
}

// connectRedis makes the host's Redis client (nil without Redis), built like the plugin's
// for tokens.
func (h *Host) connectRedis() error {
	store, err := h.cfg.Store.Plugin()
	if err != nil {
		return err
	}
	h.redis, err = platforms.RedisClient(store)
	if h.redis != nil {
		h.leases = newLeaseSet(h.redis, leaseTTL, h.log)
	}
	return err
}

// launchPlugin starts the plugin process (this executable unless plugin.path is set) with
// every bot configured.
func (h *Host) launchPlugin(ctx context.Context, opts Options) error {
	path, args := h.cfg.Plugin.Path, opts.PluginArgs
	if path == "" {
		exe, err := os.Executable()
		if err != nil {
			return fmt.Errorf("finding this executable to run as the plugin: %w", err)
		}
		path = exe
		if args == nil {
			args = []string{"plugin"}
		}
	}
	if opts.PluginDebug {
		args = append(args, "--debug")
	}
	var bots []plugin.BotConfig
	for _, b := range h.cfg.Bots {
		section := b.PluginSection()
		data, err := json.Marshal(section)
		if err != nil {
			return err
		}
		bots = append(bots, plugin.BotConfig{Name: b.Name, Platform: b.Platform, Config: data})
	}
	store, err := h.cfg.Store.Plugin()
	if err != nil {
		return err
	}
	procs, autoProcs := h.cfg.Plugin.Procs()
	p, err := plugin.Launch(ctx, plugin.LaunchOptions{
		Path:         path,
		Args:         args,
		Store:        store,
		Bots:         bots,
		MaxProcs:     procs,
		AutoProcs:    autoProcs,
		Logger:       h.log,
		OnRestart:    h.m.restarts.Inc,
		PingInterval: opts.PingInterval,
		PingTimeout:  opts.PingTimeout,
		PingMisses:   opts.PingMisses,
		OnState: func(ready bool) {
			if ready {
				h.m.ready.Set(1)
			} else {
				h.m.ready.Set(0)
			}
		},
	})
	if err != nil {
		return err
	}
	h.plugin = p
	h.m.ready.Set(1)
	return nil
}

// newServer makes the HTTP API's server and the send gate (idempotency, pacing, outboxes).
func (h *Host) newServer(clock pacing.Clock) error {
	cfg, p := h.cfg, h.plugin
	_, _, webhookTimeout := cfg.Server.Timeouts()
	h.srv = &server{
		bots:           make(map[string]*bot),
		keys:           cfg.Server.APIKeys,
		ready:          p.Ready,
		log:            h.log,
		m:              h.m,
		gather:         prometheus.Gatherers{h.m.reg, pluginGatherer{fetch: p.Metrics}},
		closing:        make(chan struct{}),
		refusals:       newRefusalLog(h.log, refusalBurst, refusalWindow),
		webhookTimeout: webhookTimeout,
		bodies:         newBodyBudget(cfg.Server.BodyMemory(), h.m.bodyBytes.Add),

		pluginMetrics: p.Metrics,
	}
	var err error
	h.srv.sends, err = newSendGate(cfg, h.srv, h.redis, h.m.reg, h.log, clock)
	return err
}

// openEventLogs opens each bot's event log: on Redis, in store.dir, else in memory.
func (h *Host) openEventLogs(queueSize int) error {
	cfg := h.cfg
	for _, b := range cfg.Bots {
		// The stream and dedup keys are those the host used before its ids came from the
		// log, so an upgraded fleet keeps its events and dedup records.
		lopts := eventlog.Options{MaxLen: queueSize, Logger: h.log, AckTimeout: b.AckTimeout()}
		var l eventlog.Log
		if h.redis != nil {
			l = eventlog.NewRedis(h.redis, cfg.Store.KeyPrefix+":events:{"+b.Name+"}", cfg.Store.KeyPrefix+":dedup:{"+b.Name+"}:", lopts)
		} else if cfg.Store.Dir != "" {
			fl, err := eventlog.OpenFile(filepath.Join(cfg.Store.Dir, "events", b.Name+".log"), lopts)
			if err != nil {
				return fmt.Errorf("bots %s: events: %w", b.Name, err)
			}
			l = fl
		} else {
			l = eventlog.NewMemory(lopts)
		}
		h.srv.bots[b.Name] = newBot(b.Name, b.Platform, h.plugin.Bot(b.Name), l)
		h.srv.names = append(h.srv.names, b.Name)
	}
	return nil
}

// listen listens on server.listen, or takes ln if not nil.
func (h *Host) listen(ln net.Listener) error {
	if ln == nil {
		var err error
		if ln, err = net.Listen("tcp", h.cfg.Server.Listen); err != nil {
			return fmt.Errorf("server.listen: %w", err)
		}
	}
	h.ln = ln
	return nil
}

// closeStarted stops what a failed Start started, in reverse order.
func (h *Host) closeStarted() {
	if h.ln != nil {
		h.ln.Close()
	}
	if h.srv != nil {
		for _, b := range h.srv.bots {
			b.events.Close()
		}
		if h.srv.sends != nil {
			h.srv.sends.close()
		}
	}
	if h.plugin != nil {
		h.plugin.Close()
	}
	if h.redis != nil {
		h.redis.Close()
	}
}

// serve serves the HTTP API on the listener until shutdown.
func (h *Host) serve() {
	readTimeout, idleTimeout, _ := h.cfg.Server.Timeouts()
	h.http = &http.Server{Handler: h.srv.routes(), ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout: readTimeout, IdleTimeout: idleTimeout,
		ErrorLog:  slog.NewLogLogger(h.log.Handler(), slog.LevelWarn),
		ConnState: h.trackConn}
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		if err := h.http.Serve(h.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			h.serveErr <- err
		}
	}()
}

// startDeliverers POSTs the events of every bot with deliver.webhook_url; with Redis, one
// host of the fleet delivers a bot's events (in order within each chat).
func (h *Host) startDeliverers(ctx context.Context, backoff time.Duration) {
	if backoff <= 0 {
		backoff = time.Second
	}
	for _, b := range h.cfg.Bots {
		if b.Deliver == nil || b.Deliver.WebhookURL == "" {
			continue
		}
		lanes := cmp.Or(b.Deliver.Concurrency, defaultDeliverLanes)
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.MaxIdleConnsPerHost = lanes // keep one connection per lane
		d := &deliverer{bot: b.Name, url: b.Deliver.WebhookURL, secret: b.Deliver.WebhookSecret,
			events: h.srv.bots[b.Name].events, client: &http.Client{Transport: tr}, log: h.log, lanes: lanes,
			backoffMin: backoff, backoffMax: time.Minute,
			result: func(ok bool) {
				r := "ok"
				if !ok {
					r = "error"
				}
				h.m.deliveries.WithLabelValues(b.Name, r).Inc()
			}}
		h.wg.Add(1)
		go func() {
			defer h.wg.Done()
			if h.redis == nil {
				d.run(ctx)
				return
			}
			h.leases.asLeader(ctx, h.cfg.Store.KeyPrefix+":deliver:{"+b.Name+"}", d.run)
		}()
	}
}

// startPollers receives the events of the bots without webhooks: a Graph bot with no
// notification_url, and an AI bot's long connection (which runs under Poll).
func (h *Host) startPollers(ctx context.Context) {
	for _, b := range h.cfg.Bots {
		longConn := b.WeComAIBot != nil && b.WeComAIBot.Secret != ""
		if !longConn && (b.Graph == nil || b.Graph.NotificationURL != "") {
			continue
		}
		if poller, ok := h.srv.bots[b.Name].adapter.(adapter.Poller); ok {
			h.wg.Add(1)
			go func() { defer h.wg.Done(); h.poll(ctx, h.srv.bots[b.Name], poller) }()
		}
	}
}

// trackConn remembers connections that sent no request yet: http.Server.Shutdown waits up to
// 5 s for them (clients open spare connections), so shutdown closes them itself.
func (h *Host) trackConn(c net.Conn, st http.ConnState) {
	h.connMu.Lock()
	defer h.connMu.Unlock()
	if h.newConns == nil {
		h.newConns = make(map[net.Conn]struct{})
	}
	if st == http.StateNew {
		h.newConns[c] = struct{}{}
	} else {
		delete(h.newConns, c)
	}
}

// poll receives the events of a bot without webhooks (Graph with no notification_url): it
// queues each batch before asking for the next, which is when the adapter commits it.
func (h *Host) poll(ctx context.Context, b *bot, p adapter.Poller) {
	bo := backoff.Backoff{Base: time.Second, Max: time.Minute}
	rl := newRetryLog(h.log, "poll")
	for ctx.Err() == nil {
		events, err := p.Poll(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			rl.failed(err, "bot", b.name)
			if backoff.Sleep(ctx, bo.Next()) != nil {
				return
			}
			continue
		}
		bo.Reset()
		rl.ok("bot", b.name)
		for ctx.Err() == nil {
			if err := h.srv.enqueue(ctx, b, events); err == nil {
				break
			}
			backoff.Sleep(ctx, time.Second)
		}
	}
}

// URL returns the base URL the host serves on.
func (h *Host) URL() string { return "http://" + h.ln.Addr().String() }

// Wait blocks until ctx is done or the server fails, then shuts down.
func (h *Host) Wait(ctx context.Context) error {
	var err error
	select {
	case <-ctx.Done():
	case err = <-h.serveErr:
	}
	return errors.Join(err, h.Shutdown())
}

// Shutdown drains: /readyz turns 503 at once, in-flight requests finish (up to 15s), SSE
// streams end, deliverers stop after their current attempt, then the plugin is stopped.
// Later calls return the first call's result.
func (h *Host) Shutdown() error {
	h.shutdownOnce.Do(func() { h.shutdownErr = h.drain() })
	return h.shutdownErr
}

func (h *Host) drain() error {
	h.log.Info("shutting down: draining requests")
	close(h.srv.closing)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	h.connMu.Lock()
	for c := range h.newConns {
		c.Close()
	}
	h.connMu.Unlock()
	err := h.http.Shutdown(ctx)
	h.log.Debug("HTTP requests drained")
	h.srv.refusals.close()
	h.stopDeliver()
	h.wg.Wait()
	h.log.Debug("deliveries stopped")
	for _, name := range h.srv.names {
		if n, _ := h.srv.bots[name].events.Len(ctx); n.Unconsumed > 0 && h.redis == nil && h.cfg.Store.Dir == "" {
			h.log.Warn("events never consumed are lost with this process", "bot", name, "events", n.Unconsumed, "held", n.Held)
		}
	}
	for _, name := range h.srv.names {
		h.srv.bots[name].events.Close()
	}
	h.srv.sends.close()
	h.plugin.Close()
	if h.redis != nil {
		h.redis.Close()
	}
	h.log.Info("stopped")
	return err
}

// Bots returns the names of the bots served, in the config's order.
func (h *Host) Bots() []string { return h.srv.names }

// PluginPid returns the id of the plugin process running now (0: none).
func (h *Host) PluginPid() int { return h.plugin.Pid() }

// PluginRestarts returns how many crashed or hung plugin processes were replaced.
func (h *Host) PluginRestarts() int { return h.plugin.Restarts() }

// Statuses returns each bot's status, its tokens' included, as GET /v1/tokens does.
func (h *Host) Statuses(ctx context.Context) []adapter.Status {
	var out []adapter.Status
	for _, st := range h.srv.statuses(ctx) {
		out = append(out, st.Status)
	}
	return out
}

// Gather gathers the host's and the plugin's metrics, as GET /metrics serves them.
func (h *Host) Gather() ([]*dto.MetricFamily, error) { return h.srv.gather.Gather() }
