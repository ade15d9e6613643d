// Command adapter-host runs chatwire as a sidecar: bots written in any language send and
// receive WeCom and Microsoft Graph messages through its HTTP API, while the platform
// adapters run in a supervised plugin subprocess (this same executable by default).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"strings"
	"syscall"

	"github.com/seed-a64d9e1f/chatwire/internal/config"
	"github.com/seed-a64d9e1f/chatwire/internal/host"
	"github.com/seed-a64d9e1f/chatwire/internal/platforms"
	"github.com/seed-a64d9e1f/chatwire/internal/procs"
	"github.com/seed-a64d9e1f/chatwire/plugin"
)

// version is set at build time with -ldflags "-X main.version=v1.2.3"; left "dev", the
// module version and VCS revision Go stamps into the binary are used (buildVersion).
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "adapter-host:", err)
		}
		os.Exit(exitCode(err))
	}
}

// exitCode is the exit status for run's result: 0 for nil and --help, an error's own
// ExitCode (check failures: 2), else 1.
func exitCode(err error) int {
	if err == nil || errors.Is(err, flag.ErrHelp) {
		return 0
	}
	var ec interface{ ExitCode() int }
	if errors.As(err, &ec) {
		return ec.ExitCode()
	}
	return 1
}

const usage = `adapter-host: WeCom (apps, AI bots, group robots), Microsoft Graph and Teams bots over a
local HTTP API.

Usage:
  adapter-host demo [--duration 40s] [--no-echo]
                                            see it work: emulated WeCom, AI Bot, Graph and Teams, a
                                            real plugin process, an echo bot; no credentials, no network
  adapter-host emulate [--dir DIR]          run emulated WeCom, Graph and Teams on fixed loopback ports,
                                            write DIR/bots.yaml for them and print commands to try
  adapter-host run --config FILE            serve the HTTP API for the bots in FILE
  adapter-host check --config FILE          validate FILE and try each bot's credentials
  adapter-host token status [--config FILE | --url URL --api-key KEY]
                                            token state of a running host (no secrets shown)
  adapter-host send --bot NAME --to KIND:ID (--text T | --markdown M | --html H | --file PATH) [...]
                                            send through a running host
  adapter-host graph login --config FILE --bot NAME
                                            sign a delegated Graph bot in (browser, PKCE)
  adapter-host version                      print the version, VCS revision and Go version
  adapter-host plugin                       serve as the adapter plugin (started by the host itself)

Common flags:
  --log-format text|json   log line format on stderr (default text)
  --log-level  debug|info|warn|error (default info)

Examples:
  adapter-host check --config bots.yaml
  CHATWIRE_API_KEY=... adapter-host run --config bots.yaml --log-format json
  adapter-host send --config bots.yaml --bot hr --to user:zhangsan --text "build is green"
  adapter-host send --config bots.yaml --bot teams --to chat:19:abc@thread.v2 --file report.pdf

Run "adapter-host COMMAND --help" for a command's flags. Commented configs for real WeCom and
Graph apps are in examples/configs; the HTTP API and the event JSON are in the README.
`

// run is the whole program; main only adds signals and the exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if startedAsPluginWithoutArg(args, stdout) {
		return errors.New(`started by a plugin launcher without the "plugin" argument`)
	}
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return errors.New("no command given")
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "-h", "--help", "help":
		fmt.Fprint(stdout, usage)
		return nil
	case "version", "--version":
		if isHelp(rest) {
			fmt.Fprint(stdout, versionUsage)
			return nil
		}
		printVersion(stdout)
		return nil
	case "plugin":
		if isHelp(rest) {
			fmt.Fprint(stdout, pluginUsage)
			return nil
		}
		level := slog.LevelInfo
		profile := ""
		for i, a := range rest {
			switch {
			case a == "--debug":
				level = slog.LevelDebug
			case a == "--cpuprofile" && i+1 < len(rest):
				profile = rest[i+1]
			}
		}
		if profile != "" {
			stop, err := startCPUProfile(profile)
			if err != nil {
				return err
			}
			defer stop()
		}
		v, _ := buildVersion()
		platforms.Serve(v, level)
		return nil
	case "run":
		return cmdRun(ctx, rest, stdout, stderr)
	case "demo":
		return cmdDemo(ctx, rest, stdout, stderr)
	case "check":
		return cmdCheck(ctx, rest, stdout, stderr)
	case "emulate":
		return cmdEmulate(ctx, rest, stdout, stderr)
	case "token":
		if isHelp(rest) {
			fmt.Fprint(stdout, tokenUsage)
			return nil
		}
		if len(rest) == 0 || rest[0] != "status" {
			fmt.Fprint(stderr, tokenUsage)
			return errors.New(`token: want "token status" (see adapter-host --help)`)
		}
		return cmdTokenStatus(ctx, rest[1:], stdout, stderr)
	case "send":
		return cmdSend(ctx, rest, stdout, stderr)
	case "graph":
		if isHelp(rest) {
			fmt.Fprint(stdout, graphUsage)
			return nil
		}
		if len(rest) == 0 || rest[0] != "login" {
			fmt.Fprint(stderr, graphUsage)
			return errors.New(`graph: want "graph login" (see adapter-host --help)`)
		}
		return cmdGraphLogin(ctx, rest[1:], stdout, stderr)
	}
	fmt.Fprint(stderr, usage)
	return fmt.Errorf("unknown command %q", cmd)
}

// logFlags are the logging flags every long-running command takes.
type logFlags struct {
	format string
	level  string
}

func (l *logFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&l.format, "log-format", "text", "log line format on stderr: text or json")
	fs.StringVar(&l.level, "log-level", "info", "least level logged: debug, info, warn or error")
}

func (l *logFlags) logger(w io.Writer) (*slog.Logger, slog.Level, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(l.level)); err != nil {
		return nil, 0, fmt.Errorf("--log-level %q: want debug, info, warn or error", l.level)
	}
	opts := &slog.HandlerOptions{Level: level, ReplaceAttr: plugin.DurationsAsMillis}
	switch strings.ToLower(l.format) {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), level, nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), level, nil
	}
	return nil, 0, fmt.Errorf("--log-format %q: want text or json", l.format)
}

// runProcs sets how many CPUs run this process's Go code (server.max_procs, unless
// GOMAXPROCS is in the environment) and returns what undoes it: for auto, a procs.Controller
// runs until then.
func runProcs(ctx context.Context, sc config.ServerConfig, log *slog.Logger) (stop func()) {
	if n, ok := procs.FromEnvironment(); ok {
		if sc.MaxProcs != "" {
			log.Warn("GOMAXPROCS is set in the environment: server.max_procs is ignored", "gomaxprocs", n, "max_procs", sc.MaxProcs)
		}
		return func() {}
	}
	n, auto := sc.Procs()
	switch {
	case auto:
		ctx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() {
			defer close(done)
			(&procs.Controller{Log: log}).Run(ctx)
		}()
		return func() { cancel(); <-done }
	case n > 0:
		runtime.GOMAXPROCS(n)
		return runtime.SetDefaultGOMAXPROCS
	}
	return func() {}
}

// startCPUProfile profiles the CPU into path until the returned function is called.
func startCPUProfile(path string) (stop func(), err error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("--cpuprofile: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("--cpuprofile: %w", err)
	}
	return func() { pprof.StopCPUProfile(); f.Close() }, nil
}

// newFlagSet returns the flag set of a command; see flagSet.
func newFlagSet(name, synopsis string, stdout, stderr io.Writer) *flagSet {
	f := &flagSet{FlagSet: flag.NewFlagSet(name, flag.ContinueOnError), synopsis: synopsis, stdout: stdout, stderr: stderr}
	f.SetOutput(stderr)
	f.FlagSet.Usage = func() { f.printUsage(f.Output()) }
	if onFlagSet != nil {
		onFlagSet(f)
	}
	return f
}

func cmdRun(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("run", "run --config FILE [--log-format text|json] [--log-level info] [--cpuprofile FILE] [--plugin-cpuprofile FILE]", stdout, stderr)
	configPath := fs.String("config", os.Getenv("CHATWIRE_CONFIG"), "config file (default $CHATWIRE_CONFIG)")
	cpuprofile := fs.String("cpuprofile", "", "write a CPU profile of this process (not the plugin) from start to shutdown to `FILE`, for go tool pprof (bench/load uses it)")
	pluginProfile := fs.String("plugin-cpuprofile", "", "write a CPU profile of the built-in plugin process from its start to its shutdown to `FILE` (a restarted plugin starts it over)")
	var lf logFlags
	lf.register(fs.FlagSet)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *configPath == "" {
		return errNoConfig
	}
	log, level, err := lf.logger(stderr)
	if err != nil {
		return err
	}
	cfg, err := config.Load(*configPath)
	if err != nil {
		return err
	}
	// Every line of this host, the plugin's included, says which host wrote it.
	log = log.With("instance", instanceID())
	platforms.InstallRedisLog(log)
	if *cpuprofile != "" {
		stop, err := startCPUProfile(*cpuprofile)
		if err != nil {
			return err
		}
		defer stop()
	}
	defer runProcs(ctx, cfg.Server, log)()
	clock, err := host.PacingClockFromEnv(log)
	if err != nil {
		return err
	}
	v, rev := buildVersion()
	opts := host.Options{Logger: log, PluginDebug: level <= slog.LevelDebug, PacingClock: clock, Version: v, Revision: rev}
	if *pluginProfile != "" {
		if cfg.Plugin.Path != "" {
			return errors.New("--plugin-cpuprofile works with the built-in plugin only (plugin.path is set)")
		}
		opts.PluginArgs = []string{"plugin", "--cpuprofile", *pluginProfile}
	}
	h, err := host.Start(ctx, cfg, opts)
	if err != nil {
		return err
	}
	return h.Wait(ctx)
}
