package host

import (
	"bytes"
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/seed-a64d9e1f/chatwire/adapter"
	"github.com/seed-a64d9e1f/chatwire/internal/eventlog"
)

// streamWriter is an SSE client's view of a stream: what was flushed to it.
type streamWriter struct {
	h       http.Header
	mu      sync.Mutex
	pending bytes.Buffer
	flushed bytes.Buffer
	onFlush func() // called after each flush, outside mu; nil: nothing
}

func (w *streamWriter) Header() http.Header { return w.h }
func (w *streamWriter) WriteHeader(int)     {}
func (w *streamWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.pending.Write(p)
}
func (w *streamWriter) SetReadDeadline(time.Time) error { return nil }
func (w *streamWriter) FlushError() error {
	w.mu.Lock()
	w.flushed.Write(w.pending.Bytes())
	w.pending.Reset()
	w.mu.Unlock()
	if w.onFlush != nil {
		w.onFlush()
	}
	return nil
}
func (w *streamWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.flushed.String()
}

// sseServer is a server of one bot, "hr", on a memory log, for the SSE handler alone.
func sseServer(l eventlog.Log) *server {
	m := newMetrics()
	return &server{
		bots:    map[string]*bot{"hr": newBot("hr", adapter.PlatformWeCom, nil, l)},
		names:   []string{"hr"},
		log:     slog.New(slog.DiscardHandler),
		m:       m,
		closing: make(chan struct{}),
	}
}

// openStream runs GET /v1/bots/hr/events (Last-Event-ID 0-0: from the start) until ctx ends.
func openStream(ctx context.Context, s *server, w *streamWriter) (done chan struct{}) {
	r := httptest.NewRequestWithContext(ctx, "GET", "/v1/bots/hr/events", nil)
	r.Header.Set("Last-Event-ID", "0-0")
	r.SetPathValue("bot", "hr")
	done = make(chan struct{})
	go func() { defer close(done); s.events(w, r) }()
	return done
}

// TestSSEPingOnlyWhenQuiet: a stream gets a ": ping" comment after ssePing without events
// (not before ssePing-sseRenew), and none while events flow, however long they flow: the
// read's deadline is renewed with the events, not set once.
func TestSSEPingOnlyWhenQuiet(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := eventlog.NewMemory(eventlog.Options{})
		defer l.Close()
		s := sseServer(l)
		w := &streamWriter{h: http.Header{}}
		ctx, cancel := context.WithCancel(t.Context())
		done := openStream(ctx, s, w)
		appendOne := func(i int) {
			if _, err := l.Append(ctx, eventlog.Record{Kind: "message", Key: "c", Data: []byte(`{"n":` + strconv.Itoa(i) + `}`)}); err != nil {
				t.Fatal(err)
			}
		}
		// Events every half second for four times ssePing: no ping among them.
		n := int(4 * ssePing / (time.Second / 2))
		for i := range n {
			appendOne(i)
			time.Sleep(time.Second / 2)
		}
		synctest.Wait()
		got := w.String()
		if strings.Contains(got, ": ping") {
			t.Fatalf("a ping while events flowed every 0.5 s for %v:\n%s", 4*ssePing, got)
		}
		if c := strings.Count(got, "event: message"); c != n {
			t.Fatalf("%d events on the stream; want %d", c, n)
		}
		// Quiet: no ping before ssePing-sseRenew after the last event, one by ssePing.
		time.Sleep(ssePing - sseRenew - time.Second/2 - time.Millisecond) // the last event was half a second ago
		synctest.Wait()
		if strings.Contains(w.String(), ": ping") {
			t.Fatalf("a ping %v after the last event; want none before %v", ssePing-sseRenew-time.Millisecond, ssePing-sseRenew)
		}
		time.Sleep(sseRenew + 2*time.Millisecond)
		synctest.Wait()
		if c := strings.Count(w.String(), ": ping"); c != 1 {
			t.Fatalf("%d pings %v after the last event; want 1", c, ssePing)
		}
		// And the stream goes on: an event after the ping is sent.
		appendOne(n)
		synctest.Wait()
		if c := strings.Count(w.String(), "event: message"); c != n+1 {
			t.Fatalf("after the ping, %d events on the stream; want %d", c, n+1)
		}
		cancel()
		<-done
	})
}

// BenchmarkHostSSE measures what the host does per event on an SSE stream when events come
// one at a time (as at 2,000 events/s from webhooks): the read, the SSE bytes, the write and
// flush, the consumed mark; each op appends one event and waits until it is flushed.
func BenchmarkHostSSE(b *testing.B) {
	l := eventlog.NewMemory(eventlog.Options{MaxLen: 1 << 20})
	defer l.Close()
	s := sseServer(l)
	flushed := make(chan struct{}, 1)
	w := &streamWriter{h: http.Header{}, onFlush: func() {
		select {
		case flushed <- struct{}{}:
		default:
		}
	}}
	ctx, cancel := context.WithCancel(context.Background())
	done := openStream(ctx, s, w)
	<-flushed // the opening comment
	data := []byte(`{"id":"wecom:1","bot":"hr","platform":"wecom","kind":"message","text":"hello"}`)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if _, err := l.Append(ctx, eventlog.Record{Kind: "message", Key: "c", Data: data}); err != nil {
			b.Fatal(err)
		}
		<-flushed
		w.mu.Lock()
		w.flushed.Reset()
		w.mu.Unlock()
	}
	b.StopTimer()
	cancel()
	<-done
}
