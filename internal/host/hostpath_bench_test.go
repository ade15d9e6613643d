package host

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/seed-a64d9e1f/chatwire/adapter"
	"github.com/seed-a64d9e1f/chatwire/adapter/wecom"
	"github.com/seed-a64d9e1f/chatwire/adapter/wecom/wecomtest"
	"github.com/seed-a64d9e1f/chatwire/internal/eventlog"
)

// wecomEvent returns the event the WeCom adapter makes of one text callback (Chinese text
// with a newline, as chats have), and the callback's body: the host path's typical input.
func wecomEvent(tb testing.TB) (adapter.Event, []byte) {
	tb.Helper()
	cl, err := wecom.New(wecom.Config{Bot: "hr", CorpID: testCorp, CorpSecret: testSecret, AgentID: testAgent,
		Token: testToken, EncodingAESKey: testAESKey, APIBase: "http://127.0.0.1:1"}, wecom.Options{})
	if err != nil {
		tb.Fatal(err)
	}
	defer cl.Close()
	cb := wecomtest.Callback{URL: "http://x/webhook/hr", Token: testToken, EncodingAESKey: testAESKey, CorpID: testCorp, AgentID: testAgent}
	now := time.Now()
	msg := wecomtest.TextMessage(cb.CorpID, cb.AgentID, "alice", "你好, <b>world</b> & friends\nsecond line", 1_000_001, now)
	body, q, err := wecomtest.Encrypt(cb, msg, now.Unix(), "1")
	if err != nil {
		tb.Fatal(err)
	}
	_, evs, err := cl.HandleWebhook(context.Background(), &adapter.WebhookRequest{Method: "POST", Path: "/webhook/hr", Query: q, Body: body})
	if err != nil || len(evs) != 1 {
		tb.Fatalf("HandleWebhook = %d events, %v", len(evs), err)
	}
	return evs[0], body
}

// hookAdapter answers every webhook with a copy of its event under a new id, as a plugin
// that checked and parsed the callback would: the host's own work, without the plugin's.
type hookAdapter struct {
	adapter.Adapter
	ev adapter.Event
	n  atomic.Int64
}

func (a *hookAdapter) HandleWebhook(ctx context.Context, req *adapter.WebhookRequest) (*adapter.WebhookResponse, []adapter.Event, error) {
	ev := a.ev
	ev.ID = "wecom:" + strconv.FormatInt(a.n.Add(1), 10)
	return &adapter.WebhookResponse{Status: 200, Body: []byte("success")}, []adapter.Event{ev}, nil
}

// BenchmarkHostWebhook measures what the host itself does for one webhook carrying one
// event, in process: the mux, the handler (body budget, read, metrics, logging), the event's
// JSON and the append to a memory event log. The adapter is hookAdapter (no plugin hop, no
// Redis): those are measured by BenchmarkWebhookToEvent and bench/load.
func BenchmarkHostWebhook(b *testing.B) {
	ev, body := wecomEvent(b)
	l := eventlog.NewMemory(eventlog.Options{MaxLen: 1 << 20})
	defer l.Close()
	m := newMetrics()
	s := &server{
		bots:     map[string]*bot{"hr": newBot("hr", adapter.PlatformWeCom, &hookAdapter{ev: ev}, l)},
		names:    []string{"hr"},
		ready:    func() bool { return true },
		log:      slog.New(slog.NewTextHandler(discard{}, &slog.HandlerOptions{Level: slog.LevelInfo})),
		m:        m,
		gather:   m.reg,
		closing:  make(chan struct{}),
		refusals: newRefusalLog(slog.New(slog.DiscardHandler), refusalBurst, refusalWindow),
		bodies:   newBodyBudget(64<<20, m.bodyBytes.Add),
	}
	h := s.routes()
	const target = "/webhook/hr?msg_signature=0123456789abcdef0123456789abcdef01234567&timestamp=1700000000&nonce=1"
	req := httptest.NewRequest("POST", target, nil)
	req.Header.Set("Content-Type", "text/xml")
	req.Header.Set("User-Agent", "Mozilla/4.0")
	req.ContentLength = int64(len(body))
	rd := bytes.NewReader(body)
	w := &benchWriter{h: http.Header{}}
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		// What net/http hands a handler, without the cost of parsing it (not the host's).
		r := *req
		rd.Reset(body)
		r.Body = io.NopCloser(rd)
		clear(w.h)
		w.code = 0
		h.ServeHTTP(w, &r)
		if w.code != 200 {
			b.Fatalf("webhook answered %d", w.code)
		}
		if i%1024 == 1023 {
			l.Consumed(context.Background(), eventlog.ID{Ms: 1<<63 - 1}) // a consumer keeps up
		}
	}
}

// BenchmarkJSONEvent measures an event's JSON (what the log stores and SSE sends).
func BenchmarkJSONEvent(b *testing.B) {
	ev, _ := wecomEvent(b)
	b.Run("jsonEvent", func(b *testing.B) {
		b.ReportAllocs()
		for range b.N {
			if _, err := jsonEvent(ev); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("encoding-json", func(b *testing.B) {
		b.ReportAllocs()
		for range b.N {
			if _, err := json.Marshal(ev); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// benchWriter is a reusable http.ResponseWriter with the deadline methods a connection's has.
type benchWriter struct {
	h    http.Header
	code int
}

func (w *benchWriter) Header() http.Header { return w.h }
func (w *benchWriter) Write(p []byte) (int, error) {
	if w.code == 0 {
		w.code = 200
	}
	return len(p), nil
}
func (w *benchWriter) WriteHeader(code int)             { w.code = code }
func (w *benchWriter) SetReadDeadline(time.Time) error  { return nil }
func (w *benchWriter) SetWriteDeadline(time.Time) error { return nil }
func (w *benchWriter) Flush()                           {}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }
