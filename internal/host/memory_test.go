package host

import (
	"os"
	"runtime"
	"runtime/pprof"
	"testing"
	"time"

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
