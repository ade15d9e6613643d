package plugin

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"strings"
	"sync"
	"time"

	goplugin "github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"

	"github.com/seed-a64d9e1f/chatwire/adapter"
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
	// Store and Bots are sent in a Configure call to every plugin process started.
	Store StoreConfig
	Bots  []BotConfig
	// Logger receives the supervisor's lines and the plugin's own log lines, with their
	// levels. If nil, nothing is logged.
	Logger *slog.Logger
	// StartTimeout bounds starting a plugin process and configuring its bots. Zero means 30s.
	StartTimeout time.Duration
	// BackoffMin and BackoffMax bound the jittered wait between restart attempts. Zero means
	// 200ms and 30s.
	BackoffMin, BackoffMax time.Duration
	// PingInterval is how often the plugin's health is checked; three failed checks in a row
	// restart it. Zero means 10s.
	PingInterval time.Duration
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

// Plugin is a supervised plugin process. Its bots ([Plugin.Bot]) stay valid across restarts.
// Its methods are safe for concurrent use.
type Plugin struct {
	opts LaunchOptions
	log  *slog.Logger

	mu       sync.Mutex // guards the fields below
	gp       *goplugin.Client
	cur      *Client
	sockDir  string
	ready    bool
	closed   bool
	restarts int
	lastErr  error

	stop chan struct{}
	done chan struct{}
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
	if opts.PingInterval <= 0 {
		opts.PingInterval = 10 * time.Second
	}
	if opts.Env == nil {
		for _, k := range DefaultEnvAllowlist {
			if v, ok := os.LookupEnv(k); ok {
				opts.Env = append(opts.Env, k+"="+v)
			}
		}
	}
	p := &Plugin{opts: opts, log: opts.Logger, stop: make(chan struct{}), done: make(chan struct{})}
	if p.log == nil {
		p.log = slog.New(slog.DiscardHandler)
	}
	if err := p.start(ctx); err != nil {
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
	sockDir, err := os.MkdirTemp("", "chatwire-plugin-")
	if err != nil {
		return fmt.Errorf("plugin: %w", err)
	}
	cmd := exec.Command(p.opts.Path, p.opts.Args...)
	cmd.Env = append(append([]string(nil), p.opts.Env...), "PLUGIN_UNIX_SOCKET_DIR="+sockDir)
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
			grpc.MaxCallRecvMsgSize(MaxMessageSize), grpc.MaxCallSendMsgSize(MaxMessageSize))},
	})
	fail := func(err error) error {
		gp.Kill()
		os.RemoveAll(sockDir)
		return err
	}
	cp, err := gp.Client()
	if err != nil {
		return fail(fmt.Errorf("plugin: starting %s: %w", p.opts.Path, err))
	}
	raw, err := cp.Dispense(PluginName)
	if err != nil {
		return fail(fmt.Errorf("plugin: %w", err))
	}
	c, ok := raw.(*Client)
	if !ok {
		return fail(fmt.Errorf("plugin: dispensed %T, not a chatwire adapter plugin", raw))
	}
	info, err := c.Info(ctx)
	if err != nil {
		return fail(fmt.Errorf("plugin: info: %w", err))
	}
	if _, err := c.Configure(ctx, p.opts.Store, p.opts.Bots); err != nil {
		return fail(fmt.Errorf("plugin: configuring bots: %w", err))
	}
	pid := 0
	if rc := gp.ReattachConfig(); rc != nil {
		pid = rc.Pid
	}
	p.log.Info("plugin started", "path", p.opts.Path, "pid", pid, "version", info.Version,
		"protocol", gp.NegotiatedVersion(), "bots", len(p.opts.Bots))
	p.mu.Lock()
	p.gp, p.cur, p.sockDir = gp, c, sockDir
	p.mu.Unlock()
	return nil
}

func (p *Plugin) setReady(ready bool) {
	p.mu.Lock()
	changed := p.ready != ready
	p.ready = ready
	p.mu.Unlock()
	if changed && p.opts.OnState != nil {
		p.opts.OnState(ready)
	}
}

// kill stops the current process (if any) and removes its socket directory.
func (p *Plugin) kill() {
	p.mu.Lock()
	gp, dir := p.gp, p.sockDir
	p.gp, p.cur, p.sockDir = nil, nil, ""
	p.mu.Unlock()
	if gp != nil {
		gp.Kill()
	}
	if dir != "" {
		os.RemoveAll(dir)
	}
}

// supervise waits for the current process to exit or stop answering, then replaces it.
func (p *Plugin) supervise() {
	defer close(p.done)
	for {
		p.mu.Lock()
		cur, gp := p.cur, p.gp
		p.mu.Unlock()
		why := p.watch(cur, gp)
		if why == nil {
			return // stopped
		}
		p.setReady(false)
		p.log.Error("plugin failed; restarting", "error", why)
		p.kill()
		wait := p.opts.BackoffMin
		for attempt := 1; ; attempt++ {
			select {
			case <-p.stop:
				return
			case <-time.After(jitter(wait)):
			}
			err := p.start(context.Background())
			if err == nil {
				break
			}
			p.mu.Lock()
			p.lastErr = err
			p.mu.Unlock()
			p.log.Error("plugin restart failed", "attempt", attempt, "error", err)
			wait = min(2*wait, p.opts.BackoffMax)
		}
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

// watch returns why the current plugin must be replaced, or nil when the Plugin is closed.
func (p *Plugin) watch(cur *Client, gp *goplugin.Client) error {
	t := time.NewTicker(p.opts.PingInterval)
	defer t.Stop()
	misses := 0
	for {
		select {
		case <-p.stop:
			return nil
		case <-cur.Exited():
			return errors.New("plugin process exited")
		case <-t.C:
			cp, err := gp.Client()
			if err == nil {
				err = cp.Ping()
			}
			if err == nil {
				misses = 0
				continue
			}
			if misses++; misses >= 3 {
				return fmt.Errorf("plugin not answering: %w", err)
			}
		}
	}
}

func jitter(d time.Duration) time.Duration {
	return d/2 + rand.N(d/2+1)
}

// Ready reports whether the plugin is running with its bots configured.
func (p *Plugin) Ready() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.ready && !p.closed
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
// response, so the platform redelivers).
func (p *Plugin) Bot(name string) adapter.Adapter { return &supervisedBot{p: p, name: name} }

// Close stops supervising, stops the plugin (asking it to shut down, then killing it after 2s)
// and removes its socket directory.
func (p *Plugin) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	p.mu.Unlock()
	close(p.stop)
	<-p.done
	p.kill()
	p.setReady(false)
	return nil
}

type supervisedBot struct {
	p    *Plugin
	name string
}

var (
	_ adapter.Adapter  = (*supervisedBot)(nil)
	_ adapter.Uploader = (*supervisedBot)(nil)
	_ adapter.Poller   = (*supervisedBot)(nil)
)

func (b *supervisedBot) Send(ctx context.Context, msg adapter.Message) (adapter.Receipt, error) {
	c, err := b.p.current()
	if err != nil {
		return adapter.Receipt{}, err
	}
	return c.Bot(b.name).Send(ctx, msg)
}

func (b *supervisedBot) HandleWebhook(ctx context.Context, req *adapter.WebhookRequest) (*adapter.WebhookResponse, []adapter.Event, error) {
	c, err := b.p.current()
	if err != nil {
		return &adapter.WebhookResponse{Status: 503, Body: []byte("restarting, try again\n")}, nil, err
	}
	return c.Bot(b.name).HandleWebhook(ctx, req)
}

func (b *supervisedBot) Status(ctx context.Context) (adapter.Status, error) {
	c, err := b.p.current()
	if err != nil {
		return adapter.Status{Bot: b.name, Detail: err.Error()}, err
	}
	return c.Bot(b.name).Status(ctx)
}

func (b *supervisedBot) Upload(ctx context.Context, a adapter.Attachment) (adapter.Attachment, error) {
	c, err := b.p.current()
	if err != nil {
		return adapter.Attachment{}, err
	}
	return c.Bot(b.name).Upload(ctx, a)
}

func (b *supervisedBot) Poll(ctx context.Context) ([]adapter.Event, error) {
	c, err := b.p.current()
	if err != nil {
		return nil, err
	}
	return c.Bot(b.name).Poll(ctx)
}

// Close closes the bot in the plugin; the plugin itself keeps running.
func (b *supervisedBot) Close() error {
	c, err := b.p.current()
	if err != nil {
		return nil
	}
	return c.Bot(b.name).Close()
}
