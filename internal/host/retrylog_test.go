package host

import (
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/seed-a64d9e1f/chatwire/internal/redistest"
)

func jsonLines(t *testing.T, s string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(s), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) == nil {
			out = append(out, m)
		}
	}
	return out
}

func TestRetryLogOneWarningOneSummary(t *testing.T) {
	var buf syncBuffer
	rl := newRetryLog(slog.New(slog.NewJSONHandler(&buf, nil)), "event stream watch")
	rl.ok() // nothing failed: nothing to say
	for range 46 {
		rl.failed(errors.New("dial tcp 127.0.0.1:6379: connect: connection refused"), "stream", "s")
	}
	rl.ok("stream", "s")
	rl.ok("stream", "s")
	lines := jsonLines(t, buf.String())
	if len(lines) != 2 {
		t.Fatalf("%d lines for 46 failures: %s", len(lines), buf.String())
	}
	if lines[0]["level"] != "WARN" || lines[0]["msg"] != "event stream watch failed; retrying" {
		t.Errorf("first line = %v", lines[0])
	}
	if lines[1]["msg"] != "event stream watch recovered" || lines[1]["failures"] != 46.0 || lines[1]["stream"] != "s" {
		t.Errorf("summary = %v", lines[1])
	}
	if _, ok := lines[1]["took_ms"].(float64); !ok {
		t.Errorf("took_ms = %#v; want a number", lines[1]["took_ms"])
	}
}

// During a Redis outage the event log's watcher warns once and sums up when Redis is back
// (it retries with backoff; every retry used to warn).
func TestRedisOutageWarnsOnce(t *testing.T) {
	rs := redistest.Start(t)
	e := setup(t, setupOpts{redisURL: "redis://" + rs.Addr() + "/0"})
	rs.Kill()
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(e.logs.String(), "event stream unreachable; retrying") {
		if time.Now().After(deadline) {
			t.Fatal("no warning while Redis is down")
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Let the watcher retry a few times (its backoff starts at 100 ms) before Redis comes back.
	time.Sleep(2 * time.Second)
	rs.Restart()
	var summary map[string]any
	for summary == nil {
		if time.Now().After(deadline.Add(30 * time.Second)) {
			t.Fatalf("no recovery summary:\n%s", e.logs)
		}
		for _, l := range jsonLines(t, e.logs.String()) {
			if l["msg"] == "event stream reachable again" {
				summary = l
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	if n := strings.Count(e.logs.String(), `"msg":"event stream unreachable; retrying"`); n != 1 {
		t.Errorf("%d watch warnings during one outage; want 1", n)
	}
	if f, _ := summary["failures"].(float64); f < 2 {
		t.Errorf("summary = %v; want the failures counted (at least 2)", summary)
	}
	if _, ok := summary["took_ms"].(float64); !ok {
		t.Errorf("summary took_ms = %#v; want a number", summary["took_ms"])
	}
}
