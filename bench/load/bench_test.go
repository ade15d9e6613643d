package main

import (
	"context"
	"testing"
	"time"
)

// BenchmarkHostMemory starts a host with one WeCom bot and one with 1,000 (each its own corp
// on the emulator, Redis store) and reports the RSS a configured bot adds, for planning
// multi-tenant deployments; also how many of one callback per bot the 1,000-bot host accepted
// (it stops trying after 32 failures) and how long it took to stop. It builds and starts real processes (about 20 s): `make bench`
// runs it; `go run ./bench/load --memory-bots N` is the same measurement with any N.
func BenchmarkHostMemory(b *testing.B) {
	const bots = 1000
	o := &options{targets: nil, memoryBots: bots, settle: 3 * time.Second, redisBin: "redis-server", quiet: true}
	var m *memResult
	for b.Loop() {
		rep, err := bench(context.Background(), o, nil)
		if err != nil {
			b.Fatal(err)
		}
		m = rep.Memory
	}
	host, plugin := m.perBotKB()
	ha, pa := m.perActiveBotKB()
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(host+plugin, "KiB-RSS/bot")
	b.ReportMetric(ha+pa, "KiB-RSS/bot-after-send")
	b.ReportMetric(host, "host-KiB/bot")
	b.ReportMetric(plugin, "plugin-KiB/bot")
	b.ReportMetric(float64(m.Many.HostActiveKB+m.Many.PluginActiveKB)/1024, "MiB-RSS/1000-bots-after-send")
	b.ReportMetric(m.Many.Ready.Seconds(), "s-ready/1000-bots")
	b.ReportMetric(m.Many.Stop.Seconds(), "s-stop/1000-bots")
	b.ReportMetric(float64(m.Many.Callbacks.OK), "callbacks-ok/1000-bots")
	if m.Many.Callbacks.Failed > 0 || m.Many.Sends.Failed > 0 || m.Many.Killed {
		b.Logf("host with %d bots: sends %v; callbacks %v; killed after %v at stop: %v (log lines WARN/ERROR: %d, most often %s)",
			bots, m.Many.Sends, m.Many.Callbacks, stopGrace, m.Many.Killed, m.Many.Warnings, m.Many.TopWarning)
	}
}
