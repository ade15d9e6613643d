package platforms

import (
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"os"
	"runtime"
	"runtime/pprof"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/seed-a64d9e1f/chatwire/adapter"
	"github.com/seed-a64d9e1f/chatwire/adapter/wecom/wecomtest"
	"github.com/seed-a64d9e1f/chatwire/internal/redistest"
	"github.com/seed-a64d9e1f/chatwire/plugin"
)

func liveBytes() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse + ms.StackInuse
}

// BenchmarkPluginMemoryPerBot reports the plugin's share of a configured WeCom bot (issue
// 18): opening 1,000 bots on a Redis token store, against the emulator (in this process),
// each warmed (its token fetched): goroutines and KiB of heap and stacks per bot (the
// emulator's apps and the Redis pool's buffers included, so an upper bound). With
// HEAPPROF=path it writes the heap profile (every allocation sampled) and the goroutines.
// One iteration is the measurement: run with -benchtime 1x.
func BenchmarkPluginMemoryPerBot(b *testing.B) {
	for b.Loop() {
		goroutines, kib := pluginMemoryPerBot(b)
		b.ReportMetric(goroutines, "goroutines/bot")
		b.ReportMetric(kib, "KiB/bot")
	}
}

func pluginMemoryPerBot(t testing.TB) (goroutines, kib float64) {
	const n = 1000
	prof := os.Getenv("HEAPPROF")
	if prof != "" {
		old := runtime.MemProfileRate
		runtime.MemProfileRate = 1
		t.Cleanup(func() { runtime.MemProfileRate = old })
	}
	rs := redistest.Start(t)
	emu := &wecomtest.Server{PushRetries: -1}
	ws := httptest.NewServer(emu)
	defer ws.Close()
	var cfgs [][]byte
	for i := range n {
		corp := fmt.Sprintf("wwmem%06d", i)
		emu.AddApp(corp, "secret-0123456789", 1000002)
		c, _ := json.Marshal(WeCom{CorpID: corp, CorpSecret: "secret-0123456789", AgentID: 1000002, Token: "tok",
			EncodingAESKey: "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG", APIBase: ws.URL})
		cfgs = append(cfgs, c)
	}
	o := New(nil, prometheus.NewRegistry())
	sc := plugin.StoreConfig{RedisURL: "redis://" + rs.Addr() + "/0", KeyPrefix: "mem"}
	var opened []adapter.Adapter
	defer func() {
		for _, a := range opened {
			a.Close()
		}
	}()
	// one bot first: the store's client and pools are not per bot
	open := func(i int) adapter.Adapter {
		a, err := o.Open(t.Context(), sc, plugin.BotConfig{Name: fmt.Sprintf("bot%d", i), Platform: adapter.PlatformWeCom, Config: cfgs[i]})
		if err != nil {
			t.Fatal(err)
		}
		opened = append(opened, a)
		return a
	}
	open(0)
	time.Sleep(500 * time.Millisecond)
	g0, b0 := runtime.NumGoroutine(), liveBytes()
	for i := 1; i < n; i++ {
		open(i)
	}
	time.Sleep(2 * time.Second) // tokens fetched (warm)
	g1, b1 := runtime.NumGoroutine(), liveBytes()
	goroutines, kib = float64(g1-g0)/(n-1), float64(int64(b1)-int64(b0))/(n-1)/1024
	if prof != "" {
		f, _ := os.Create(prof)
		pprof.WriteHeapProfile(f)
		f.Close()
		gf, _ := os.Create(prof + ".goroutine")
		pprof.Lookup("goroutine").WriteTo(gf, 1)
		gf.Close()
	}
	return goroutines, kib
}
