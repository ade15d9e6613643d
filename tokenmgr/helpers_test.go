package tokenmgr_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/seed-a64d9e1f/chatwire/tokenmgr"
)

// fakeSource counts fetches and answers each with fn(n), n counting from 1.
type fakeSource struct {
	mu    sync.Mutex
	times []time.Time
	fn    func(ctx context.Context, n int) (tokenmgr.Token, error)
}

func (s *fakeSource) Token(ctx context.Context) (tokenmgr.Token, error) {
	s.mu.Lock()
	s.times = append(s.times, time.Now())
	n := len(s.times)
	s.mu.Unlock()
	return s.fn(ctx, n)
}

func (s *fakeSource) fetches() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.times)
}

func (s *fakeSource) fetchTimes() []time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]time.Time(nil), s.times...)
}

// counting returns a source whose n-th fetch yields "tok-n" valid for life, after latency.
func counting(life, latency time.Duration) *fakeSource {
	return &fakeSource{fn: func(ctx context.Context, n int) (tokenmgr.Token, error) {
		if latency > 0 {
			select {
			case <-time.After(latency):
			case <-ctx.Done():
				return tokenmgr.Token{}, ctx.Err()
			}
		}
		return tokenmgr.Token{Value: fmt.Sprintf("tok-%d", n), ExpiresAt: time.Now().Add(life)}, nil
	}}
}

// logBuffer is a concurrency-safe log sink.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func newLogger(b *logBuffer) *slog.Logger {
	return slog.New(slog.NewJSONHandler(b, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func mustToken(t *testing.T, m *tokenmgr.Manager) tokenmgr.Token {
	t.Helper()
	tok, err := m.Token(t.Context())
	if err != nil {
		t.Fatalf("Token() error = %v", err)
	}
	return tok
}
