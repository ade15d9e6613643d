package host

import (
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"runtime"
	"runtime/pprof"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/seed-a64d9e1f/chatwire/adapter"
	"github.com/seed-a64d9e1f/chatwire/internal/config"
	"github.com/seed-a64d9e1f/chatwire/internal/platforms"
	"github.com/seed-a64d9e1f/chatwire/internal/redistest"
)

// liveBytes is the live heap and the goroutine stacks, after two GCs.
func liveBytes() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse + ms.StackInuse
}

// A host with 1,000 configured WeCom bots (Redis, the plugin a subprocess) holds about one
// goroutine per bot (its outbox waiting for messages) and little memory per bot (issue 18:
// multi-tenant deployments plan with it). Before: 6 goroutines (4 outbox lanes, the outbox,
// its lease renewal) and ~60 KiB of heap and stacks per bot; now 1 and ~21 KiB. With
// HEAPPROF=path it writes the host's heap profile (every allocation sampled) and its
// goroutines to path and path.goroutine.
func TestHostMemoryPerBot(t *testing.T) {
	const n = 1000
	prof := os.Getenv("HEAPPROF")
	if prof != "" {
		old := runtime.MemProfileRate
		runtime.MemProfileRate = 1
		t.Cleanup(func() { runtime.MemProfileRate = old })
	}
	rs := redistest.Start(t)
	g0, b0 := runtime.NumGoroutine(), liveBytes()
	e := setup(t, setupOpts{quiet: true, redisURL: "redis://" + rs.Addr() + "/0", extraBots: n - 1})
	if st, _, _ := e.do("GET", "/readyz", "", nil); st != 200 {
		t.Fatalf("/readyz %d", st)
	}
	time.Sleep(time.Second) // let every outbox take its lease and start waiting
	g1, b1 := runtime.NumGoroutine(), liveBytes()
	perBot, kib := float64(g1-g0)/n, float64(int64(b1)-int64(b0))/n/1024
	t.Logf("per configured bot: %.2f goroutines, %.1f KiB heap and stacks", perBot, kib)
	if perBot > 1.5 {
		t.Errorf("%.2f goroutines per configured bot; want at most 1.5", perBot)
	}
	if kib > 40 {
		t.Errorf("%.1f KiB heap and stacks per configured bot; want at most 40", kib)
	}
	if prof != "" {
		f, err := os.Create(prof)
		if err != nil {
			t.Fatal(err)
		}
		pprof.WriteHeapProfile(f)
		f.Close()
		gf, _ := os.Create(prof + ".goroutine")
		pprof.Lookup("goroutine").WriteTo(gf, 1)
		gf.Close()
	}
}

// The send gate of 1,000 WeCom bots (no store: memory outboxes) allocates little per bot:
// its pacing scheduler, its outbox and log, and no metric collectors of its own (the
// outbox metrics are one vector and one collector for every bot; one counter vector and two
// gauge funcs with the bot as a constant label cost ~1.4 KiB per bot).
func TestSendGateBytesPerBot(t *testing.T) {
	const n = 1000
	cfg := &config.Config{Server: config.ServerConfig{Listen: "127.0.0.1:0"}}
	for i := range n {
		cfg.Bots = append(cfg.Bots, config.BotConfig{Name: fmt.Sprintf("bot%d", i), Platform: adapter.PlatformWeCom, WeCom: &platforms.WeCom{
			CorpID: testCorp, CorpSecret: testSecret, AgentID: testAgent, Token: testToken, EncodingAESKey: testAESKey}})
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	g, err := newSendGate(cfg, &server{}, nil, prometheus.NewRegistry(), slog.New(slog.DiscardHandler), nil)
	if err != nil {
		t.Fatal(err)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	perBot := float64(int64(after.HeapAlloc)-int64(before.HeapAlloc)) / n
	t.Logf("send gate: %.0f bytes per bot", perBot)
	if perBot > 2048 {
		t.Errorf("send gate holds %.0f bytes per bot; want at most 2048", perBot)
	}
	runtime.KeepAlive(g)
}

// The outbox metrics keep their names and labels (one series per bot) now that one vector
// and one collector serve every bot: depth and oldest for each configured bot, and an
// outcome counted under its bot once an asynchronous send is sent.
func TestOutboxMetricsPerBot(t *testing.T) {
	e := setup(t, setupOpts{quiet: true, extraBots: 2})
	req, _ := http.NewRequestWithContext(t.Context(), "POST", e.h.URL()+"/v1/bots/bot2/messages", strings.NewReader(`{"to":{"user":"alice"},"text":"hi"}`))
	req.Header.Set("Authorization", "Bearer "+testAPIKey)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Prefer", "respond-async")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 202 {
		t.Fatalf("async send answered %d; want 202", resp.StatusCode)
	}
	var text string
	for range 200 { // until the outbox has sent it
		_, _, body := e.do("GET", "/metrics", testAPIKey, nil)
		if text = string(body); strings.Contains(text, `chatwire_outbox_outcomes_total{bot="bot2",kind="",outcome="sent"} 1`) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, want := range []string{
		`chatwire_outbox_outcomes_total{bot="bot2",kind="",outcome="sent"} 1`,
		`chatwire_outbox_depth{bot="hr"} 0`, `chatwire_outbox_depth{bot="bot1"} 0`, `chatwire_outbox_depth{bot="bot2"} 0`,
		`chatwire_outbox_oldest_seconds{bot="hr"} 0`, `chatwire_outbox_oldest_seconds{bot="bot2"} 0`,
		"# HELP chatwire_outbox_depth Asynchronous sends accepted and not yet finished.",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	if n := strings.Count(text, "\nchatwire_outbox_depth{"); n != 3 {
		t.Errorf("%d chatwire_outbox_depth series; want 3 (one per bot)", n)
	}
}

// TestOutboxScrape: /metrics asks Redis once per idle bot for its outbox gauges (it asked
// for the length twice), the bots' lookups run side by side, and the whole lookup has one
// deadline: with Redis not answering, a scrape of many bots answered in about 2 s, not one
// second per bot (20 bots: 24 s before, past Prometheus's default scrape timeout of 10 s,
// so every metric was lost exactly when Redis was in trouble).
func TestOutboxScrape(t *testing.T) {
	rs := redistest.Start(t)
	const bots = 20
	e := setup(t, setupOpts{quiet: true, redisURL: "redis://" + rs.Addr() + "/0", extraBots: bots - 1})
	hook := &countHook{single: map[string]int{}}
	e.h.redis.AddHook(hook)
	scrape := func() string {
		_, _, body := e.do("GET", "/metrics", testAPIKey, nil)
		return string(body)
	}
	scrape() // warm: connections made
	hook.mu.Lock()
	clear(hook.single)
	hook.mu.Unlock()
	text := scrape()
	if n := strings.Count(text, "\nchatwire_outbox_depth{"); n != bots {
		t.Fatalf("%d chatwire_outbox_depth series; want %d", n, bots)
	}
	hook.mu.Lock()
	scripts := hook.single["evalsha"]
	hook.mu.Unlock()
	// Other work of the host (its event-log watcher's XREAD, lease renewals in pipelines) is
	// not a script call; an idle bot needs two: its outbox's length and its events' (3 before).
	if scripts > 2*bots+2 {
		t.Errorf("a scrape of %d idle bots made %d script calls; want two per bot", bots, scripts)
	}

	admin := redis.NewClient(&redis.Options{Addr: rs.Addr()})
	defer admin.Close()
	// Paused for 15 s: the old scrape waited for every bot's lookup in turn, so at least until
	// Redis answered again.
	if err := admin.Do(t.Context(), "CLIENT", "PAUSE", "15000", "ALL").Err(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	text = scrape()
	took := time.Since(start)
	if strings.Contains(text, `chatwire_outbox_depth{bot="hr"}`) {
		t.Error("/metrics without Redis reports an outbox depth; want it left out, not a made-up 0")
	}
	if !strings.Contains(text, "chatwire_sends_total") && !strings.Contains(text, "chatwire_plugin_ready") {
		t.Error("/metrics without Redis lost the metrics that do not need it")
	}
	if took > 8*time.Second {
		t.Errorf("/metrics took %v with Redis not answering; want about 2s (one deadline for all bots)", took)
	}
	admin.Do(t.Context(), "CLIENT", "UNPAUSE")
}

// TestPluginProcsByDefault: the host starts its plugin with plugin.max_procs auto unless
// configured otherwise: CHATWIRE_MAX_PROCS=auto and no GOMAXPROCS in its environment, and
// the plugin then runs on one CPU while idle (chatwire_plugin_gomaxprocs, from the plugin
// process itself). plugin.max_procs 0 leaves it Go's default, every CPU.
func TestPluginProcsByDefault(t *testing.T) {
	pluginProcs := func(e *env) float64 {
		t.Helper()
		v, ok := gaugeValue(t, e, "chatwire_plugin_gomaxprocs")
		if !ok {
			t.Fatal("/metrics has no chatwire_plugin_gomaxprocs")
		}
		return v
	}
	e := setup(t, setupOpts{quiet: true})
	if got, ok := gaugeValue(t, e, "chatwire_gomaxprocs"); !ok || got != float64(runtime.GOMAXPROCS(0)) {
		t.Errorf("chatwire_gomaxprocs = %v (exported %v); want this process's GOMAXPROCS %d", got, ok, runtime.GOMAXPROCS(0))
	}
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", e.h.PluginPid()))
	if err != nil {
		t.Fatal(err)
	}
	env := "\x00" + string(data) + "\x00"
	if !strings.Contains(env, "\x00CHATWIRE_MAX_PROCS=auto\x00") || strings.Contains(env, "GOMAXPROCS=") {
		t.Errorf("the plugin's environment: %q; want CHATWIRE_MAX_PROCS=auto and no GOMAXPROCS", strings.ReplaceAll(string(data), "\x00", " "))
	}
	deadline := time.Now().Add(10 * time.Second)
	for pluginProcs(e) != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("idle plugin runs on %v CPUs; want 1", pluginProcs(e))
		}
		time.Sleep(10 * time.Millisecond)
	}
	if cpus := runtime.NumCPU(); cpus > 1 {
		e := setup(t, setupOpts{quiet: true, pluginProcs: "0"})
		if got := pluginProcs(e); got != float64(cpus) {
			t.Errorf("plugin.max_procs 0: the plugin runs on %v CPUs; want every CPU (%d)", got, cpus)
		}
	}
}

// gaugeValue is the value of the gauge name (its first series) in the host's /metrics.
func gaugeValue(t *testing.T, e *env, name string) (float64, bool) {
	t.Helper()
	mfs, err := e.h.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) > 0 {
			return mf.GetMetric()[0].GetGauge().GetValue(), true
		}
	}
	return 0, false
}
