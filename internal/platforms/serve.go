package platforms

import (
	"log/slog"
	"os"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/seed-a64d9e1f/chatwire/plugin"
)

// Serve serves every supported platform as a chatwire plugin and returns when the host stops
// it. It must be called before anything is written to stdout.
func Serve(version string, level slog.Level) {
	log := slog.New(plugin.NewPluginLogHandler(os.Stderr, level))
	slog.SetDefault(log)
	InstallRedisLog(log)
	reg := prometheus.NewRegistry()
	o := New(log, reg)
	plugin.Serve(plugin.ServeOptions{
		ServerOptions: plugin.ServerOptions{
			Open:      o.Open,
			Platforms: Supported(),
			Version:   version,
			Gatherer:  reg,
			Logger:    log,
			// idempotent sends keep their keys in the store's Redis, built as the token store's
			RedisClient: RedisClient,
		},
		LogLevel: level,
	})
}
