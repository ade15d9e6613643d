package plugin

import (
	"context"
	"log"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	goplugin "github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"

	"github.com/seed-a64d9e1f/chatwire/internal/procs"
)

// ServeOptions configure [Serve].
type ServeOptions struct {
	ServerOptions
	// LogLevel is the least level logged to stderr. Zero means Info.
	LogLevel slog.Level
	// ParentPoll is how often the plugin checks that its parent (the host) is alive; if the
	// parent dies, the plugin closes its bots and exits. Zero means 250ms.
	ParentPoll time.Duration
}

// ProcsEnv is the environment variable through which the host asks a plugin to choose its
// GOMAXPROCS by load ([LaunchOptions.AutoProcs]): "auto". A GOMAXPROCS in the plugin's
// environment wins over it.
const ProcsEnv = "CHATWIRE_MAX_PROCS"

// Serve serves adapters to a host and returns when the host tells the plugin to stop. It
// must be called at once in main, before any network work or output: the handshake goes to
// stdout, and anything printed there before it breaks the host's start. Bots are opened
// later, by the host's Configure call.
//
// Logs go to stderr as hclog-shaped JSON (see [NewPluginLogHandler]), so the host keeps
// their levels. If opts.Logger is nil, Serve sets it to that handler and also makes it the
// default slog logger. Run without a host, Serve prints a note and exits with status 1.
func Serve(opts ServeOptions) {
	log.SetFlags(0)
	// stderr is a pipe to the host: once the host is gone, Go's default for a write to a
	// broken stdout/stderr pipe is death by SIGPIPE, which would skip the orphan cleanup
	// below (and leave the socket). Ignored, such a write just fails.
	signal.Ignore(syscall.SIGPIPE)
	if opts.Logger == nil {
		opts.Logger = slog.New(NewPluginLogHandler(os.Stderr, opts.LogLevel))
		slog.SetDefault(opts.Logger)
	}
	if _, set := procs.FromEnvironment(); os.Getenv(ProcsEnv) == "auto" && !set {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() {
			defer close(done)
			(&procs.Controller{Log: opts.Logger}).Run(ctx)
		}()
		defer func() { cancel(); <-done }()
	}
	srv := NewServer(opts.ServerOptions)
	o := &orphanWatch{srv: srv, log: opts.Logger, served: make(chan struct{})}
	go o.watchParent(opts.ParentPoll)
	goplugin.Serve(&goplugin.ServeConfig{
		HandshakeConfig:  Handshake,
		VersionedPlugins: VersionedPlugins(srv),
		GRPCServer:       o.newGRPCServer,
		Logger: hclog.New(&hclog.LoggerOptions{Name: "go-plugin", Output: os.Stderr, JSONFormat: true,
			Level: hclog.LevelFromString(hclogLevelName(opts.LogLevel))}),
	})
	close(o.served)
	if o.orphaned.Load() {
		o.exit() // does not return
	}
	if err := srv.Close(); err != nil {
		opts.Logger.Warn("closing bots", "error", err)
	}
}

// newGRPCServer is the server factory for srv: a panic in a call is recovered into an
// internal error for that call (see recoverUnary).
func (s *Server) newGRPCServer(opts []grpc.ServerOption) *grpc.Server {
	opts = append(opts, grpc.ChainUnaryInterceptor(s.recoverUnary), grpc.ChainStreamInterceptor(s.recoverStream))
	return newGRPCServer(opts)
}

func newGRPCServer(opts []grpc.ServerOption) *grpc.Server {
	opts = append(opts, grpc.MaxRecvMsgSize(MaxMessageSize), grpc.MaxSendMsgSize(MaxMessageSize),
		grpc.NumStreamWorkers(streamWorkers),
		grpc.StaticStreamWindowSize(streamWindow), grpc.StaticConnWindowSize(connWindow))
	return grpc.NewServer(opts...)
}

// streamWorkers is how many long-lived goroutines serve the plugin's calls. Without them gRPC
// starts a goroutine per call, whose stack grows (copied) on every call: 8% of the plugin's
// CPU at 2,000 webhooks/s under bench/load (runtime.newstack). When all are busy (long sends)
// a call gets its own goroutine as before, so they never limit concurrency.
const streamWorkers = 16

// streamWindow and connWindow are the HTTP/2 flow-control windows of the plugin connection,
// on both sides: fixed, which turns off gRPC's BDP estimator (a PING and its ack on every
// call that carries data, at a low call rate).
const (
	streamWindow = 4 << 20
	connWindow   = 16 << 20
)

// socketDirPrefix names the per-process socket directories [Launch] creates.
const socketDirPrefix = "chatwire-plugin-"

// orphanWatch makes the plugin exit, cleaning up after itself, when its host is gone.
type orphanWatch struct {
	srv      *Server
	log      *slog.Logger
	grpc     atomic.Pointer[grpc.Server]
	served   chan struct{} // closed when goplugin.Serve returns
	orphaned atomic.Bool
	once     sync.Once
}

// newGRPCServer is go-plugin's GRPCServer factory; it keeps the server to stop it.
func (o *orphanWatch) newGRPCServer(opts []grpc.ServerOption) *grpc.Server {
	s := o.srv.newGRPCServer(opts)
	o.grpc.Store(s)
	return s
}

// watchParent exits the process when its parent changes: the host died without killing the
// plugin (SIGKILL, OOM), and the plugin was re-parented.
func (o *orphanWatch) watchParent(every time.Duration) {
	if every <= 0 {
		every = 250 * time.Millisecond
	}
	ppid := os.Getppid()
	for range time.Tick(every) {
		if os.Getppid() != ppid {
			o.log.Warn("host process is gone; plugin exiting", "host_pid", ppid)
			o.orphaned.Store(true)
			o.exit()
		}
	}
}

// exit closes the bots (for at most 1s), stops the gRPC server, removes the socket
// directory and exits with status 2. Stopping the server closes go-plugin's listener, which
// removes the unix socket file; os.Exit alone would skip that and leave it behind.
func (o *orphanWatch) exit() {
	o.once.Do(func() {
		done := make(chan struct{})
		go func() { o.srv.Close(); close(done) }()
		select {
		case <-done:
		case <-time.After(time.Second):
			o.log.Warn("closing bots took over 1s; exiting anyway")
		}
		if s := o.grpc.Load(); s != nil {
			s.Stop()
		}
		select { // goplugin.Serve returns once its server stopped
		case <-o.served:
		case <-time.After(time.Second):
		}
		removeSocketDir(o.log)
		os.Exit(2)
	})
}

// removeSocketDir removes the socket directory the host gave this plugin, which nobody else
// will remove once the host is gone. Only a directory made by [Launch] (its name says so)
// and only once empty, that is with this plugin's socket already removed: os.Remove never
// deletes anything else in it (but the wire's own directories, below).
func removeSocketDir(log *slog.Logger) {
	dir := os.Getenv("PLUGIN_UNIX_SOCKET_DIR")
	if dir == "" || !strings.HasPrefix(filepath.Base(dir), socketDirPrefix) {
		return
	}
	if fi, err := os.Lstat(dir); err != nil || !fi.IsDir() {
		return
	}
	// A wire directory (wireDirPattern) this plugin made for a host that died before it
	// connected is removed first: nothing else would.
	wires, _ := filepath.Glob(filepath.Join(dir, wireDirPattern))
	for _, w := range wires {
		os.RemoveAll(w)
	}
	if err := os.Remove(dir); err != nil {
		log.Warn("removing socket directory", "dir", dir, "error", err)
	}
}
