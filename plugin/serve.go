package plugin

import (
	"log"
	"log/slog"
	"os"
	"time"

	"github.com/hashicorp/go-hclog"
	goplugin "github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"
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
	if opts.Logger == nil {
		opts.Logger = slog.New(NewPluginLogHandler(os.Stderr, opts.LogLevel))
		slog.SetDefault(opts.Logger)
	}
	srv := NewServer(opts.ServerOptions)
	go watchParent(srv, opts.Logger, opts.ParentPoll)
	goplugin.Serve(&goplugin.ServeConfig{
		HandshakeConfig:  Handshake,
		VersionedPlugins: VersionedPlugins(srv),
		GRPCServer:       newGRPCServer,
		Logger: hclog.New(&hclog.LoggerOptions{Name: "go-plugin", Output: os.Stderr, JSONFormat: true,
			Level: hclog.LevelFromString(hclogLevelName(opts.LogLevel))}),
	})
	if err := srv.Close(); err != nil {
		opts.Logger.Warn("closing bots", "error", err)
	}
}

func newGRPCServer(opts []grpc.ServerOption) *grpc.Server {
	opts = append(opts, grpc.MaxRecvMsgSize(MaxMessageSize), grpc.MaxSendMsgSize(MaxMessageSize))
	return grpc.NewServer(opts...)
}

// watchParent exits the process when its parent changes: the host died without killing the
// plugin (SIGKILL, OOM), and the plugin was re-parented.
func watchParent(srv *Server, log *slog.Logger, every time.Duration) {
	if every <= 0 {
		every = 250 * time.Millisecond
	}
	ppid := os.Getppid()
	for range time.Tick(every) {
		if os.Getppid() != ppid {
			log.Warn("host process is gone; plugin exiting", "host_pid", ppid)
			done := make(chan struct{})
			go func() { srv.Close(); close(done) }()
			select {
			case <-done:
			case <-time.After(time.Second):
			}
			os.Exit(2)
		}
	}
}
