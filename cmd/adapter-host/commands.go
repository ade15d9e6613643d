package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/seed-a64d9e1f/chatwire/internal/check"
	"github.com/seed-a64d9e1f/chatwire/internal/config"
	"github.com/seed-a64d9e1f/chatwire/internal/demo"
)

// errNoConfig is returned when no --config was given.
var errNoConfig = errors.New("no config file: pass --config FILE (see adapter-host --help)")

func cmdCheck(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("check", "check --config FILE [--offline]", stdout, stderr)
	configPath := fs.String("config", "", "config file to check (required)")
	offline := fs.Bool("offline", false, "only validate the file; do not contact the platforms")
	timeout := fs.Duration("timeout", 20*time.Second, "how long each credential probe may take")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *configPath == "" {
		return errNoConfig
	}
	cfg, err := config.Load(*configPath)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "config %s: ok (%d bots, listen %s)\n", *configPath, len(cfg.Bots), cfg.Server.Listen)
	if *offline {
		return nil
	}
	return check.Bots(ctx, cfg, *configPath, *timeout, stdout)
}

func cmdGraphLogin(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("graph login", "graph login --config FILE --bot NAME [--redirect URL | --device]", stdout, stderr)
	configPath := fs.String("config", os.Getenv("CHATWIRE_CONFIG"), "config file (required)")
	botName := fs.String("bot", "", "the delegated Graph bot to sign in (required)")
	redirect := fs.String("redirect", "http://localhost:8400/callback", "loopback redirect URI registered for the app (Authentication → Mobile and desktop applications)")
	device := fs.Bool("device", false, "use the device code flow instead (sign in on another device)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *configPath == "" {
		return errNoConfig
	}
	cfg, err := config.Load(*configPath)
	if err != nil {
		return err
	}
	return check.GraphLogin(ctx, cfg, *configPath, *botName, *redirect, *device, stdout)
}

func cmdDemo(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("demo", "demo [--duration 40s] [--token-lifetime 12s] [--log-format text|json]", stdout, stderr)
	duration := fs.Duration("duration", 40*time.Second, "how long the simulated users talk")
	lifetime := fs.Duration("token-lifetime", 12*time.Second, "lifetime of the access tokens both emulators issue, WeCom's and Graph's (real ones live 2h and 60-90 min)")
	every := fs.Duration("every", 2*time.Second, "time between simulated user messages")
	noEcho := fs.Bool("no-echo", false, "do not run the built-in echo bot: print how to connect your own (e.g. examples/python-bot) and wait for it")
	var lf logFlags
	lf.register(fs.FlagSet)
	if err := fs.Parse(args); err != nil {
		return err
	}
	log, level, err := lf.logger(stderr)
	if err != nil {
		return err
	}
	return demo.Run(ctx, demo.Options{Duration: *duration, TokenLifetime: *lifetime, Every: *every,
		Log: log, PluginDebug: level <= slog.LevelDebug, Out: stdout, NoEcho: *noEcho})
}

func cmdEmulate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("emulate", "emulate [--dir DIR] [--listen ADDR] [--wecom ADDR] [--graph ADDR] [--teams ADDR]", stdout, stderr)
	o := demo.EmulateDefaults
	fs.StringVar(&o.Dir, "dir", o.Dir, "directory for the bots.yaml written and the token state")
	fs.StringVar(&o.Listen, "listen", o.Listen, "server.listen written into bots.yaml (the host you run)")
	fs.StringVar(&o.WeCom, "wecom", o.WeCom, "loopback address of the emulated WeCom API")
	fs.StringVar(&o.Graph, "graph", o.Graph, "loopback address of the emulated identity platform and Graph")
	fs.StringVar(&o.Teams, "teams", o.Teams, "loopback address of the emulated Azure Bot Service and Teams (identity, Bot Connector)")
	fs.DurationVar(&o.TokenLifetime, "token-lifetime", 0, "lifetime of the access tokens the emulators issue (default theirs: 2h WeCom, 1h Graph)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	return demo.Emulate(ctx, o, stdout)
}
