package platforms

import (
	"log/slog"
	"os"
	"runtime"

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
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "chatwire_plugin_gomaxprocs",
		Help: "How many CPUs run the plugin process's Go code now (GOMAXPROCS; plugin.max_procs auto moves it between 1 and every CPU with the load)."},
		func() float64 { return float64(runtime.GOMAXPROCS(0)) }))
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
