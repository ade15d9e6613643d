package host

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"testing"
	"testing/synctest"

	"github.com/seed-a64d9e1f/chatwire/internal/eventlog"
)

// TestSSEStartFixedAtHeaders: a stream opened without Last-Event-ID starts at the consumed
// mark as it was when its response headers were sent. An event appended and consumed by
// another consumer (a group stream raising the mark, as in TestSSEGroupCompetingConsumers)
// right after the client saw the headers still reaches it, in broadcast and for a new group.
// The old handler flushed the headers first and read the mark after: it started after the
// event. Deterministic: the event is appended and consumed inside the headers' flush.
func TestSSEStartFixedAtHeaders(t *testing.T) {
	for _, query := range []string{"", "?group=g&consumer=c"} {
		t.Run("query="+query, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				l := eventlog.NewMemory(eventlog.Options{})
				defer l.Close()
				s := sseServer(l)
				ctx, cancel := context.WithCancel(t.Context())
				var once sync.Once
				var w *streamWriter
				w = &streamWriter{h: http.Header{}, onFlush: func() {
					once.Do(func() { // the client has its headers: an event comes, another consumer takes it
						app, err := l.Append(ctx, eventlog.Record{Kind: "message", Key: "c", Data: []byte(`{"n":1}`)})
						if err != nil {
							t.Error(err)
							return
						}
						if err := l.Consumed(ctx, app[0].ID); err != nil {
							t.Error(err)
						}
					})
				}}
				r := newEventsRequest(ctx, query)
				done := make(chan struct{})
				go func() { defer close(done); s.events(w, r) }()
				synctest.Wait()
				if got := w.String(); !strings.Contains(got, `data: {"n":1}`) {
					t.Errorf("the event appended after the headers did not reach the stream:\n%s", got)
				}
				cancel()
				<-done
			})
		})
	}
}

// newEventsRequest is GET /v1/bots/hr/events+query without Last-Event-ID.
func newEventsRequest(ctx context.Context, query string) *http.Request {
	r, _ := http.NewRequestWithContext(ctx, "GET", "/v1/bots/hr/events"+query, nil)
	r.SetPathValue("bot", "hr")
	return r
}
