package platforms

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

type lockedBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuf) lines(t *testing.T) []map[string]any {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(l.b.String()), "\n") {
		if line == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("%q: %v", line, err)
		}
		out = append(out, m)
	}
	return out
}

// An outage's 25 go-redis lines become one warning and one summary; a second outage gets its
// own pair.
func TestRedisLogOncePerOutage(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var buf lockedBuf
		l := NewRedisLog(slog.New(slog.NewJSONHandler(&buf, nil)), 30*time.Second)
		ctx := context.Background()
		for i := range 25 { // one per second, as a 25 s outage
			l.Printf(ctx, "redis: %s pool.go:%d: failed to dial after %d attempts: dial tcp 127.0.0.1:6379: connect: connection refused", "2026/12/04", 401, i)
			time.Sleep(time.Second)
		}
		synctest.Wait()
		if got := buf.lines(t); len(got) != 1 || got[0]["level"] != "WARN" || !strings.Contains(got[0]["msg"].(string), "connection refused") {
			t.Fatalf("during the outage: %v; want one warning", got)
		}
		time.Sleep(31 * time.Second)
		synctest.Wait()
		got := buf.lines(t)
		if len(got) != 2 || got[1]["msg"] != "redis client quiet again" || got[1]["suppressed_lines"] != 24.0 {
			t.Fatalf("after the outage: %v; want the summary with 24 suppressed lines", got)
		}
		if ms, ok := got[1]["took_ms"].(float64); !ok || ms < 24000 {
			t.Errorf("took_ms = %v; want a number of milliseconds ≥ 24000", got[1]["took_ms"])
		}
		l.Printf(ctx, "redis: second outage")
		time.Sleep(31 * time.Second)
		synctest.Wait()
		if got := buf.lines(t); len(got) != 3 || !strings.Contains(got[2]["msg"].(string), "second outage") {
			t.Errorf("second outage: %v; want its own warning (and no summary: nothing suppressed)", got)
		}
	})
}
