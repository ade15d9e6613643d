//go:build bench

// The smoke test builds and starts real processes (two binaries, Redis, a host with its
// plugin) for about 20 s, so it runs under `make bench-smoke` (go test -tags bench), not in
// `go test ./...`.

package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestSmoke runs the whole tool briefly at a low rate against both targets: nothing lost or
// duplicated, every callback and send answered 200, every send at WeCom once, and numbers
// that are there (CPU, RSS, latencies in order, a CPU profile written). Each sends step
// sends at least 1,600 messages: more than 50 members may receive in a minute under WeCom's
// limits, which the host's default pacing keeps (429) and the emulator enforces by dropping
// (a Mismatch). No latency bounds: this proves the tool works, it does not time anything.
func TestSmoke(t *testing.T) {
	prof := t.TempDir()
	o := &options{rates: []int{100}, targets: []string{targetChatwire, targetBaseline}, warmup: 500 * time.Millisecond,
		duration: 2 * time.Second, conns: 4, drain: 10 * time.Second, sendDuration: time.Second, sendCallers: []int{1, 4}, minSends: 1600,
		memoryBots: 5, settle: 500 * time.Millisecond, cpuprofile: prof, redisBin: "redis-server", quiet: true}
	rep, err := bench(context.Background(), o, nil)
	if rep != nil {
		var out bytes.Buffer
		printReport(&out, rep)
		t.Log(out.String())
	}
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Events) != 2 || len(rep.Sends) != 4 || rep.Memory == nil {
		t.Fatalf("%d event steps, %d send steps, memory %v; want 2, 4, a result", len(rep.Events), len(rep.Sends), rep.Memory)
	}
	for _, r := range rep.Events {
		if r.Lost != 0 || r.Dup != 0 || r.Errors != 0 {
			t.Errorf("%s: lost %d, duplicated %d, non-200 %d", r.Target, r.Lost, r.Dup, r.Errors)
		}
		if r.Offered != 200 || r.Acked != r.Offered || r.Events != r.Acked {
			t.Errorf("%s: offered %d, acked %d, on the stream %d; want 200 each", r.Target, r.Offered, r.Acked, r.Events)
		}
		if r.Achieved <= 0 || r.P50 <= 0 || r.P50 > r.P99 || r.P99 > r.Max || r.AckP99 <= 0 {
			t.Errorf("%s: achieved %.0f/s, p50 %v p99 %v max %v, 200 p99 %v", r.Target, r.Achieved, r.P50, r.P99, r.Max, r.AckP99)
		}
		want := []string{"server", "redis"}
		if r.Target == targetChatwire {
			want = []string{"host", "plugin", "redis"}
		}
		var names []string
		for _, p := range r.CPU {
			names = append(names, p.Name)
			if p.PeakKB <= 0 {
				t.Errorf("%s: no peak RSS for %s", r.Target, p.Name)
			}
		}
		if strings.Join(names, ",") != strings.Join(want, ",") {
			t.Errorf("%s: measured %v, want %v", r.Target, names, want)
		}
		if r.CPU[0].CPU <= 0 || r.cpuPerEvent() <= 0 {
			t.Errorf("%s: no CPU measured: %+v", r.Target, r.CPU)
		}
	}
	for _, s := range rep.Sends {
		if s.OK < o.minSends || s.Errors != 0 || s.Mismatch != 0 || s.P50 <= 0 || s.P50 > s.P99 || s.PerSec <= 0 {
			t.Errorf("%s sends with %d callers: %+v", s.Target, s.Callers, s)
		}
	}
	m := rep.Memory
	if m.One.Bots != 1 || m.Many.Bots != 5 || m.One.HostKB <= 0 || m.Many.PluginKB <= 0 || m.Many.HostActiveKB <= 0 {
		t.Errorf("memory: %+v", m)
	}
	for _, s := range []memSample{m.One, m.Many} {
		if s.Sends.OK != s.Bots || s.Callbacks.OK != s.Bots || s.Killed {
			t.Errorf("host with %d bots: sends %v; callbacks %v; killed at stop: %v", s.Bots, s.Sends, s.Callbacks, s.Killed)
		}
	}
	for _, name := range []string{"host-100.pprof", "plugin-100.pprof"} {
		data, err := os.ReadFile(filepath.Join(prof, name))
		if err != nil || len(data) < 100 || data[0] != 0x1f || data[1] != 0x8b { // a pprof profile is gzipped protobuf
			t.Errorf("CPU profile %s: %d bytes, %v", name, len(data), err)
		}
	}
}
