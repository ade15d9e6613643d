package host

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/seed-a64d9e1f/chatwire/adapter"
	"github.com/seed-a64d9e1f/chatwire/internal/eventlog"
)

// gatedLog is a log whose Append waits for release (and then fails with fail, if set).
type gatedLog struct {
	eventlog.Log
	entered chan struct{} // gets a value when an Append starts
	release chan struct{}
	fail    error
}

func (l *gatedLog) Append(ctx context.Context, recs ...eventlog.Record) ([]eventlog.Appended, error) {
	l.entered <- struct{}{}
	<-l.release
	if l.fail != nil {
		return nil, l.fail
	}
	return l.Log.Append(ctx, recs...)
}

// hookServer is a server of one WeCom bot, "hr", whose adapter answers every webhook with
// one event (hookAdapter) and whose events go to l.
func hookServer(tb testing.TB, l eventlog.Log) *server {
	ev, _ := wecomEvent(tb)
	m := newMetrics()
	return &server{
		bots:     map[string]*bot{"hr": newBot("hr", adapter.PlatformWeCom, &hookAdapter{ev: ev}, l)},
		names:    []string{"hr"},
		ready:    func() bool { return true },
		log:      slog.New(slog.DiscardHandler),
		m:        m,
		gather:   m.reg,
		closing:  make(chan struct{}),
		refusals: newRefusalLog(slog.New(slog.DiscardHandler), refusalBurst, refusalWindow),
		bodies:   newBodyBudget(64<<20, m.bodyBytes.Add),
	}
}

// TestWebhookAnsweredAfterAppend: a webhook is answered only once the append of its event
// has returned: nothing (no status, no byte) reaches the platform while the append is under
// way; 200 with the plugin's answer after it succeeded, 503 + Retry-After after it failed
// (the platform redelivers). A faster path that answers before the event is in the log
// would lose it when the host dies in between: this pins the order.
func TestWebhookAnsweredAfterAppend(t *testing.T) {
	for _, fail := range []error{nil, errors.New("redis: connection refused")} {
		name := "append-ok"
		if fail != nil {
			name = "append-fails"
		}
		t.Run(name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				mem := eventlog.NewMemory(eventlog.Options{})
				defer mem.Close()
				l := &gatedLog{Log: mem, entered: make(chan struct{}, 1), release: make(chan struct{}), fail: fail}
				h := hookServer(t, l).routes()
				w := &recordingWriter{ResponseRecorder: httptest.NewRecorder()}
				r := httptest.NewRequest("POST", "/webhook/hr?msg_signature=x&timestamp=1&nonce=1", strings.NewReader("<xml>body</xml>"))
				done := make(chan struct{})
				go func() { defer close(done); h.ServeHTTP(w, r) }()
				<-l.entered
				synctest.Wait() // everything but the append has run
				if got := w.events(); len(got) != 0 {
					t.Errorf("while the append was under way the webhook already did %v; want nothing", got)
				}
				close(l.release)
				<-done
				if t.Failed() {
					return
				}
				switch {
				case fail == nil && (w.Code != 200 || w.Body.String() != "success"):
					t.Fatalf("after the append: %d %q; want 200 success", w.Code, w.Body.String())
				case fail != nil && (w.Code != http.StatusServiceUnavailable || w.Header().Get("Retry-After") == ""):
					t.Fatalf("after a failed append: %d, Retry-After %q; want 503 with Retry-After", w.Code, w.Header().Get("Retry-After"))
				}
				n, _ := mem.Len(t.Context())
				if want := int64(1); fail != nil && n.Held != 0 || fail == nil && n.Held != want {
					t.Fatalf("log holds %d events", n.Held)
				}
			})
		})
	}
}

// recordingWriter records which ResponseWriter calls the handler made, in order.
type recordingWriter struct {
	*httptest.ResponseRecorder
	mu  sync.Mutex
	ops []string
}

func (w *recordingWriter) note(op string) {
	w.mu.Lock()
	w.ops = append(w.ops, op)
	w.mu.Unlock()
}

func (w *recordingWriter) events() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]string(nil), w.ops...)
}

func (w *recordingWriter) WriteHeader(code int) {
	w.note("WriteHeader")
	w.ResponseRecorder.WriteHeader(code)
}
func (w *recordingWriter) Write(p []byte) (int, error) {
	w.note("Write")
	return w.ResponseRecorder.Write(p)
}
func (w *recordingWriter) Flush()                           { w.note("Flush"); w.ResponseRecorder.Flush() }
func (w *recordingWriter) SetReadDeadline(time.Time) error  { return nil }
func (w *recordingWriter) SetWriteDeadline(time.Time) error { return nil }

// countingStream is an SSE client's connection as the handler sees it: it counts the
// handler's writes and flushes and keeps what each flush sent.
type countingStream struct {
	h       http.Header
	mu      sync.Mutex
	writes  int
	pending bytes.Buffer
	flushes []string // what each flush sent
}

func (w *countingStream) Header() http.Header { return w.h }
func (w *countingStream) WriteHeader(int)     {}
func (w *countingStream) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.writes++
	return w.pending.Write(p)
}
func (w *countingStream) SetReadDeadline(time.Time) error { return nil }
func (w *countingStream) FlushError() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.flushes = append(w.flushes, w.pending.String())
	w.pending.Reset()
	return nil
}

func (w *countingStream) counts() (writes int, flushes []string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.writes, append([]string(nil), w.flushes...)
}

// TestSSEBatchOneWriteOneFlush: the events a stream finds ready together go to its client in
// one write and one flush (one write syscall on the connection), not one per event; and
// nothing is held back: each batch is flushed as soon as it is written, before the stream
// waits for more. Deterministic (synctest): 5 events are in the log when the stream opens,
// then 3 more are appended at once.
func TestSSEBatchOneWriteOneFlush(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := eventlog.NewMemory(eventlog.Options{})
		defer l.Close()
		rec := func(n int) []eventlog.Record {
			out := make([]eventlog.Record, n)
			for i := range out {
				out[i] = eventlog.Record{Kind: "message", Key: "c", Data: []byte(`{"n":1}`)}
			}
			return out
		}
		if _, err := l.Append(t.Context(), rec(5)...); err != nil {
			t.Fatal(err)
		}
		s := sseServer(l)
		w := &countingStream{h: http.Header{}}
		ctx, cancel := context.WithCancel(t.Context())
		r := httptest.NewRequestWithContext(ctx, "GET", "/v1/bots/hr/events", nil)
		r.Header.Set("Last-Event-ID", "0-0")
		r.SetPathValue("bot", "hr")
		done := make(chan struct{})
		go func() { defer close(done); s.events(w, r) }()
		synctest.Wait()
		check := func(wantWrites int, wantEvents ...int) {
			t.Helper()
			writes, flushes := w.counts()
			if writes != wantWrites || len(flushes) != 1+len(wantEvents) {
				t.Fatalf("%d writes, %d flushes; want %d writes, %d flushes (the opening comment, then one per batch):\n%q",
					writes, len(flushes), wantWrites, 1+len(wantEvents), flushes)
			}
			for i, n := range wantEvents {
				if got := strings.Count(flushes[1+i], "event: message\n"); got != n {
					t.Fatalf("flush %d sent %d events; want the batch's %d:\n%q", 1+i, got, n, flushes[1+i])
				}
			}
		}
		check(2, 5)
		if _, err := l.Append(t.Context(), rec(3)...); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		check(3, 5, 3)
		cancel()
		<-done
	})
}
