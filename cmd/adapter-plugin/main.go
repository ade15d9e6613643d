// Command adapter-plugin is the chatwire adapter plugin: a hashicorp/go-plugin (gRPC)
// executable serving WeCom and Graph bots to a host such as adapter-host or a Go bot
// framework using package plugin. It is started by its host, never by hand.
package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/seed-a64d9e1f/chatwire/internal/platforms"
)

// version is set at build time with -ldflags "-X main.version=v1.2.3".
var version = "dev"

func main() {
	if err := run(context.Background(), os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "adapter-plugin:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	level := slog.LevelInfo
	for _, a := range args {
		switch a {
		case "version", "--version", "-version":
			fmt.Fprintln(stdout, "adapter-plugin", version)
			return nil
		case "--debug":
			level = slog.LevelDebug
		case "-h", "--help", "help":
			fmt.Fprintln(stdout, "adapter-plugin serves chatwire's WeCom and Graph adapters over hashicorp/go-plugin (gRPC).\n"+
				"It is started by a host (adapter-host with plugin.path set, or a Go program using\n"+
				"github.com/seed-a64d9e1f/chatwire/plugin.Launch); bots and secrets arrive over RPC.\n\n"+
				"Flags: --debug (log at debug level), --version.")
			return nil
		default:
			return fmt.Errorf("unknown argument %q (try --help)", a)
		}
	}
	platforms.Serve(version, level)
	return nil
}
