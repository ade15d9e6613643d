package plugin

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	goplugin "github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"

	"github.com/seed-a64d9e1f/chatwire/adapter"
	"github.com/seed-a64d9e1f/chatwire/internal/backoff"
)

// LaunchOptions configure [Launch].
type LaunchOptions struct {
	// Path is the plugin executable. Required.
	Path string
	// Args are its arguments (for example "plugin" when a host serves as its own plugin).
	Args []string
	// Env is the plugin's environment besides what go-plugin sets. The host's environment is
	// never inherited (it may hold secrets). If nil, the non-secret variables in
	// [DefaultEnvAllowlist] are copied from the host.
	Env []string
	// MaxProcs, if above 0, is the plugin process's GOMAXPROCS (set in its environment).
	MaxProcs int
	// AutoProcs, with MaxProcs 0, has a plugin built on [Serve] choose its GOMAXPROCS by
	// load: one CPU while one is enough, every CPU once it is busy ([ProcsEnv]=auto in its
	// environment; see chatwire's internal/procs).
	AutoProcs bool
	// Store and Bots are sent in a Configure call to every plugin process started.
	Store StoreConfig
	Bots  []BotConfig
	// Logger receives the supervisor's lines and the plugin's own log lines, with their
	// levels. If nil, nothing is logged.
	Logger *slog.Logger
	// StartTimeout bounds starting a plugin process and configuring its bots. Zero means 30s.
	StartTimeout time.Duration
	// BackoffMin and BackoffMax bound the wait between restart attempts. The wait starts at
	// BackoffMin and doubles with each consecutive failure (a crash, a hang or a failed start)
	// up to BackoffMax; each wait is jittered down to half its value. Zero means 200ms and 30s.
	BackoffMin, BackoffMax time.Duration
	// StableAfter is how long a plugin must run before it counts as stable: when a stable
	// plugin fails, the wait starts again at BackoffMin. Zero means 30s.
	StableAfter time.Duration
	// PingInterval is how often the plugin's health is checked (an Info RPC bounded by
	// PingTimeout). One failed check makes the plugin not ready (calls fail fast as
	// unavailable) until a check passes; checks then come every second at most, and
	// PingMisses failed checks in a row get it killed and replaced. A call whose caller's
	// deadline passes (a webhook the plugin did not answer in time) starts a check at once.
	// Zero means 10s.
	PingInterval time.Duration
	// PingTimeout bounds each health check. Zero means 5s, or PingInterval if shorter.
	PingTimeout time.Duration
	// PingMisses is how many failed health checks in a row restart the plugin. Zero means 3.
	PingMisses int
	// OnRestart, if not nil, is called after a crashed or hung plugin was replaced.
	OnRestart func()
	// OnState, if not nil, is called with true when the plugin is ready and false when it is
	// not (crashed, restarting).
	OnState func(ready bool)
}

// DefaultEnvAllowlist names the host environment variables a plugin gets when
// [LaunchOptions.Env] is nil: none of them is meant to hold a secret.
var DefaultEnvAllowlist = []string{"PATH", "HOME", "TMPDIR", "TZ", "LANG", "SSL_CERT_FILE", "SSL_CERT_DIR",
	"HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy"}

// ErrRestarting is the cause of the unavailable errors bots return while their plugin is
// being replaced.
var ErrRestarting = errors.New("plugin: restarting")

// ErrNotAnswering is the cause of the unavailable errors bots return while their plugin
// process fails its health checks (hung), before it is replaced.
var ErrNotAnswering = errors.New("plugin: not answering")

// Plugin is a supervised plugin process. Its bots ([Plugin.Bot]) stay valid across restarts.
// Its methods are safe for concurrent use.
type Plugin struct {
	opts LaunchOptions
	log  *slog.Logger

	mu       sync.Mutex // guards the fields below
	gp       *goplugin.Client
	proc     *os.Process // gp's process, to kill it when go-plugin's Kill is stuck
	cur      *Client
	sockDir  string
	ready    bool
	hung     bool // the current process failed its last health check
	closed   bool
	restarts int
	lastErr  error
	caps     map[string][]string // each bot's capabilities, as the first process reported them

	ctx    context.Context // cancelled by Close: bounds restarts' RPCs
	cancel context.CancelFunc
	stop   chan struct{}
	done   chan struct{}
	probe  chan struct{} // a call timed out: check the plugin's health now
}

// Launch starts the plugin at opts.Path, checks its protocol version, configures its bots
// and supervises it until Close. ctx bounds the first start only.
func Launch(ctx context.Context, opts LaunchOptions) (*Plugin, error) {
	if opts.Path == "" {
		return nil, errors.New("plugin: no plugin path")
	}
	if opts.StartTimeout <= 0 {
		opts.StartTimeout = 30 * time.Second
	}
	if opts.BackoffMin <= 0 {
		opts.BackoffMin = 200 * time.Millisecond
	}
	if opts.BackoffMax <= 0 {
		opts.BackoffMax = 30 * time.Second
	}
	opts.BackoffMax = max(opts.BackoffMax, opts.BackoffMin)
	if opts.StableAfter <= 0 {
		opts.StableAfter = 30 * time.Second
	}
	if opts.PingInterval <= 0 {
		opts.PingInterval = 10 * time.Second
	}
	if opts.PingTimeout <= 0 {
		opts.PingTimeout = min(5*time.Second, opts.PingInterval)
	}
	if opts.PingMisses <= 0 {
		opts.PingMisses = 3
	}
	if opts.Env == nil {
		for _, k := range DefaultEnvAllowlist {
			if v, ok := os.LookupEnv(k); ok {
				opts.Env = append(opts.Env, k+"="+v)
			}
		}
	}
	switch {
	case opts.MaxProcs > 0:
		opts.Env = append(slices.Clip(opts.Env), "GOMAXPROCS="+strconv.Itoa(opts.MaxProcs))
	case opts.AutoProcs:
		opts.Env = append(slices.Clip(opts.Env), ProcsEnv+"=auto")
	}
	p := &Plugin{opts: opts, log: opts.Logger, stop: make(chan struct{}), done: make(chan struct{}), probe: make(chan struct{}, 1)}
	p.ctx, p.cancel = context.WithCancel(context.Background())
	if p.log == nil {
		p.log = slog.New(slog.DiscardHandler)
	}
	if err := p.start(ctx); err != nil {
		p.cancel()
		return nil, err
	}
	p.setReady(true)
	go p.supervise()
	return p, nil
}

// start starts a new plugin process and configures it; on success it becomes current.
func (p *Plugin) start(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, p.opts.StartTimeout)
	defer cancel()
	sockDir, err := os.MkdirTemp("", socketDirPrefix+"*")
	if err != nil {
		return fmt.Errorf("plugin: %w", err)
	}
	cmd := exec.Command(p.opts.Path, p.opts.Args...)
	cmd.Env = append(append([]string(nil), p.opts.Env...), "PLUGIN_UNIX_SOCKET_DIR="+sockDir)
	ownProcessGroup(cmd)
	gp := goplugin.NewClient(&goplugin.ClientConfig{
		HandshakeConfig:  Handshake,
		VersionedPlugins: VersionedPlugins(nil),
		Cmd:              cmd,
		AllowedProtocols: []goplugin.Protocol{goplugin.ProtocolGRPC},
		AutoMTLS:         true,
		SkipHostEnv:      true,
		Managed:          true,
		StartTimeout:     p.opts.StartTimeout,
		Logger:           newHCLogAdapter(p.log, "plugin"),
		SyncStdout:       &lineLogger{log: p.log, level: slog.LevelWarn, what: "stdout"},
		SyncStderr:       &lineLogger{log: p.log, level: slog.LevelWarn, what: "stderr"},
		GRPCDialOptions: []grpc.DialOption{grpc.WithDefaultCallOptions(
			grpc.MaxCallRecvMsgSize(MaxMessageSize), grpc.MaxCallSendMsgSize(MaxMessageSize)),
			grpc.WithStaticStreamWindowSize(streamWindow), grpc.WithStaticConnWindowSize(connWindow)},
	})
	fail := func(err error) error {
		// Past the deadline (Info or Configure unanswered) the plugin is taken as hung: a
		// Shutdown RPC would only wait out the kill grace.
		p.stopProcess(gp, cmd.Process, ctx.Err() != nil)
		os.RemoveAll(sockDir)
		return err
	}
	cp, err := gp.Client() // starts cmd in this goroutine: cmd.Process is set from here on
	if err != nil {
		return fail(startError(p.opts.Path, err))
	}
	raw, err := cp.Dispense(PluginName)
	if err != nil {
		return fail(fmt.Errorf("plugin: %w", err))
	}
	c, ok := raw.(*Client)
	if !ok {
		return fail(fmt.Errorf("plugin: dispensed %T, not a chatwire adapter plugin", raw))
	}
	c.log = p.log
	info, err := c.Info(ctx)
	if err != nil {
		return fail(fmt.Errorf("plugin: info: %w", err))
	}
	bots, err := c.Configure(ctx, p.opts.Store, p.opts.Bots)
	if err != nil {
		return fail(fmt.Errorf("plugin: configuring bots: %w", err))
	}
	c.openCalls(ctx) // the wire, for the first calls already
	caps := make(map[string][]string, len(bots))
	for _, b := range bots {
		caps[b.Name] = b.Capabilities
	}
	pid := 0
	if rc := gp.ReattachConfig(); rc != nil {
		pid = rc.Pid
	}
	p.log.Info("plugin started", "path", p.opts.Path, "pid", pid, "version", info.Version,
		"protocol", gp.NegotiatedVersion(), "bots", len(p.opts.Bots))
	p.mu.Lock()
	p.gp, p.proc, p.cur, p.sockDir = gp, cmd.Process, c, sockDir
	if p.caps == nil { // the first process's answer: Bot's adapters keep their type for life
		p.caps = caps
	}
	p.mu.Unlock()
	return nil
}

func (p *Plugin) setReady(ready bool) { p.update(func() { p.ready = ready }) }

// setHung records whether the current process failed its last health check.
func (p *Plugin) setHung(hung bool) { p.update(func() { p.hung = hung }) }

// update applies change to the state under p.mu and calls OnState if readiness changed.
func (p *Plugin) update(change func()) {
	p.mu.Lock()
	before := p.ready && !p.hung
	change()
	after := p.ready && !p.hung
	p.mu.Unlock()
	if before != after && p.opts.OnState != nil {
		p.opts.OnState(after)
	}
}

// suspect asks for a health check now: a call's deadline passed without an answer.
func (p *Plugin) suspect() {
	select {
	case p.probe <- struct{}{}:
	default:
	}
}

// checkAfter reports a call's outcome to the supervisor: a call whose own deadline passed
// may mean a hung plugin.
func (p *Plugin) checkAfter(ctx context.Context, err error) {
	if err != nil && errors.Is(ctx.Err(), context.DeadlineExceeded) {
		p.suspect()
	}
}

// killGrace bounds go-plugin's Kill (a Shutdown RPC, then up to 2s for the process to
// exit): a hung plugin never answers the RPC, so past this the process is killed directly.
const killGrace = 3 * time.Second

// kill stops the current process (if any) and removes its socket directory. hung says the
// plugin stopped answering: it is killed at once instead of being asked to shut down.
func (p *Plugin) kill(hung bool) {
	p.mu.Lock()
	gp, proc, dir, cur := p.gp, p.proc, p.sockDir, p.cur
	p.gp, p.proc, p.cur, p.sockDir = nil, nil, nil, ""
	p.mu.Unlock()
	if cur != nil {
		cur.closeCalls() // its calls in flight fail now, not when the process is gone
	}
	if gp != nil {
		p.stopProcess(gp, proc, hung)
	}
	if dir != "" {
		os.RemoveAll(dir)
	}
}

// stopProcess kills gp's process and waits, boundedly, for go-plugin to clean up after it.
// go-plugin's Kill first sends a Shutdown RPC with no deadline, which a hung (or stopped)
// plugin never answers; proc is then killed directly, which makes that RPC fail.
func (p *Plugin) stopProcess(gp *goplugin.Client, proc *os.Process, hung bool) {
	if hung && proc != nil {
		proc.Kill() // SIGKILL; os.Process uses a pidfd, so a reused pid is never hit
	}
	done := make(chan struct{})
	go func() { gp.Kill(); close(done) }()
	select {
	case <-done:
		return
	case <-time.After(killGrace):
	}
	if proc != nil {
		p.log.Warn("plugin did not shut down; killing it", "pid", proc.Pid)
		proc.Kill()
	}
	select {
	case <-done:
	case <-time.After(killGrace):
		p.log.Error("plugin client still not stopped after the process was killed; giving up on it")
	}
}

// supervise waits for the current process to exit or stop answering, then replaces it.
func (p *Plugin) supervise() {
	defer close(p.done)
	bo := backoff.Backoff{Base: p.opts.BackoffMin, Max: p.opts.BackoffMax, Jitter: 0.5}
	up := time.Now() // when the current process became ready
	for {
		p.mu.Lock()
		cur := p.cur
		p.mu.Unlock()
		why, hung := p.watch(cur)
		if why == nil {
			return // stopped
		}
		uptime := time.Since(up)
		p.setReady(false)
		p.setHung(false) // the next process starts with a clean record
		p.log.Error("plugin failed; restarting", "error", why, "uptime", uptime.Round(time.Millisecond))
		p.kill(hung)
		if uptime >= p.opts.StableAfter {
			bo.Reset() // a stable plugin failed: start again at BackoffMin
		}
		for attempt := 1; ; attempt++ {
			wait := bo.Next()
			p.log.Info("plugin restart scheduled", "attempt", attempt, "wait", wait)
			if backoff.Sleep(p.ctx, wait) != nil {
				return // closed
			}
			err := p.start(p.ctx)
			if err == nil {
				break
			}
			p.mu.Lock()
			p.lastErr = err
			p.mu.Unlock()
			p.log.Error("plugin restart failed", "attempt", attempt, "error", err)
		}
		up = time.Now()
		p.mu.Lock()
		p.restarts++
		p.lastErr = nil
		p.mu.Unlock()
		p.setReady(true)
		p.log.Info("plugin restarted; bots configured again")
		if p.opts.OnRestart != nil {
			p.opts.OnRestart()
		}
	}
}

// watch returns why the current plugin must be replaced (hung: it stopped answering health
// checks), or nil when the Plugin is closed. Health checks run in their own goroutine with a
// deadline, so Close and the process's exit are noticed while one is pending.
func (p *Plugin) watch(cur *Client) (why error, hung bool) {
	t := time.NewTicker(p.opts.PingInterval)
	defer t.Stop()
	ctx, cancel := context.WithCancel(p.ctx)
	defer cancel()
	var result chan error // non-nil while a check is pending
	check := func() {
		if result != nil {
			return // the pending check ends by its own deadline
		}
		result = make(chan error, 1)
		go func(res chan<- error) {
			ctx, cancel := context.WithTimeout(ctx, p.opts.PingTimeout)
			defer cancel()
			_, err := cur.Info(ctx)
			res <- err
		}(result)
	}
	misses := 0
	for {
		select {
		case <-p.stop:
			return nil, false
		case <-cur.Exited():
			return errors.New("plugin process exited"), false
		case <-t.C:
			check()
		case <-p.probe:
			check()
		case err := <-result:
			result = nil
			if err == nil {
				if misses > 0 {
					p.log.Info("plugin answering again", "after_misses", misses)
					p.setHung(false)
					t.Reset(p.opts.PingInterval)
				}
				misses = 0
				continue
			}
			misses++
			p.log.Warn("plugin health check failed; not ready until it answers", "misses", misses, "error", err)
			if misses >= p.opts.PingMisses {
				return fmt.Errorf("plugin not answering (%d health checks failed): %w", misses, err), true
			}
			if misses == 1 {
				p.setHung(true)
				t.Reset(min(p.opts.PingInterval, time.Second))
			}
		}
	}
}

// Ready reports whether the plugin is running with its bots configured and answered its
// last health check.
func (p *Plugin) Ready() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.ready && !p.hung && !p.closed
}

// Restarts returns how many times a failed plugin was replaced.
func (p *Plugin) Restarts() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.restarts
}

// Pid returns the current plugin process id, or 0 while there is none.
func (p *Plugin) Pid() int {
	p.mu.Lock()
	gp := p.gp
	p.mu.Unlock()
	if gp == nil {
		return 0
	}
	if rc := gp.ReattachConfig(); rc != nil {
		return rc.Pid
	}
	return 0
}

func (p *Plugin) current() (*Client, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, &adapter.Error{Kind: adapter.KindUnavailable, Message: "plugin closed"}
	}
	if p.cur == nil || !p.ready {
		msg := "plugin restarting"
		if p.lastErr != nil {
			msg += " (last attempt: " + strings.TrimPrefix(p.lastErr.Error(), "plugin: ") + ")"
		}
		return nil, &adapter.Error{Kind: adapter.KindUnavailable, Message: msg, Err: ErrRestarting}
	}
	if p.hung {
		return nil, &adapter.Error{Kind: adapter.KindUnavailable, Err: ErrNotAnswering,
			Message: "plugin not answering its health checks: calls fail fast until it answers or is replaced"}
	}
	return p.cur, nil
}

// Client returns the client of the current plugin process, or an unavailable error while
// it is being replaced.
func (p *Plugin) Client() (*Client, error) { return p.current() }

// Metrics returns the current plugin's metrics in the Prometheus text format.
func (p *Plugin) Metrics(ctx context.Context) ([]byte, error) {
	c, err := p.current()
	if err != nil {
		return nil, err
	}
	return c.Metrics(ctx)
}

// Bot returns the adapter of a configured bot. It follows the plugin across restarts; while
// the plugin is down, calls fail fast with an error of kind unavailable (webhooks get a 503
// response, so the platform redelivers). It implements [adapter.Uploader], [adapter.Poller]
// and [adapter.Recaller] exactly when the bot's adapter does inside the plugin (as the
// plugin reported in Configure).
func (p *Plugin) Bot(name string) adapter.Adapter {
	p.mu.Lock()
	caps := p.caps[name]
	p.mu.Unlock()
	return withCapabilities(&supervisedBot{p: p, name: name}, caps)
}

// Close stops supervising, stops the plugin (asking it to shut down, then killing it after 2s,
// or after 3s if it does not even answer) and removes its socket directory.
func (p *Plugin) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	p.mu.Unlock()
	close(p.stop)
	p.cancel()
	<-p.done
	p.kill(false)
	p.setReady(false)
	return nil
}

type supervisedBot struct {
	p    *Plugin
	name string
}

var _ adapter.Adapter = (*supervisedBot)(nil) // the optional interfaces: withCapabilities

func (b *supervisedBot) Send(ctx context.Context, msg adapter.Message) (adapter.Receipt, error) {
	c, err := b.p.current()
	if err != nil {
		return adapter.Receipt{}, err
	}
	r, err := c.Bot(b.name).Send(ctx, msg)
	b.p.checkAfter(ctx, err)
	return r, err
}

func (b *supervisedBot) HandleWebhook(ctx context.Context, req *adapter.WebhookRequest) (*adapter.WebhookResponse, []adapter.Event, error) {
	c, err := b.p.current()
	if err != nil {
		return &adapter.WebhookResponse{Status: 503, Body: []byte("restarting, try again\n")}, nil, err
	}
	resp, events, err := c.Bot(b.name).HandleWebhook(ctx, req)
	b.p.checkAfter(ctx, err)
	return resp, events, err
}

func (b *supervisedBot) Status(ctx context.Context) (adapter.Status, error) {
	c, err := b.p.current()
	if err != nil {
		return adapter.Status{Bot: b.name, Detail: err.Error()}, err
	}
	st, err := c.Bot(b.name).Status(ctx)
	b.p.checkAfter(ctx, err)
	return st, err
}

func (b *supervisedBot) upload(ctx context.Context, a adapter.Attachment) (adapter.Attachment, error) {
	c, err := b.p.current()
	if err != nil {
		return adapter.Attachment{}, err
	}
	att, err := c.Bot(b.name).Upload(ctx, a)
	b.p.checkAfter(ctx, err)
	return att, err
}

func (b *supervisedBot) poll(ctx context.Context) ([]adapter.Event, error) {
	c, err := b.p.current()
	if err != nil {
		return nil, err
	}
	return c.Bot(b.name).Poll(ctx)
}

func (b *supervisedBot) recall(ctx context.Context, id string) error {
	c, err := b.p.current()
	if err != nil {
		return err
	}
	err = c.Bot(b.name).Recall(ctx, id)
	b.p.checkAfter(ctx, err)
	return err
}

// Close closes the bot in the plugin; the plugin itself keeps running.
func (b *supervisedBot) Close() error {
	c, err := b.p.current()
	if err != nil {
		return nil
	}
	return c.Bot(b.name).Close()
}
