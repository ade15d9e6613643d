package client_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/seed-a64d9e1f/chatwire/adapter"
	"github.com/seed-a64d9e1f/chatwire/client"
)

// sseLog is a fake host's event log: it serves events after Last-Event-ID, and can cut each
// connection after some events, in the middle of the next one.
type sseLog struct {
	mu       sync.Mutex
	events   []string // texts; event i has id "<i+1>-0"
	cutAfter []int    // connection n is cut after cutAfter[n] events (if set)
	lastIDs  []string // Last-Event-ID of each connection
	queries  []string // query of each connection
}

func (l *sseLog) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	l.mu.Lock()
	conn := len(l.lastIDs)
	l.lastIDs = append(l.lastIDs, r.Header.Get("Last-Event-ID"))
	l.queries = append(l.queries, r.URL.RawQuery)
	start := 0
	if v := r.Header.Get("Last-Event-ID"); v != "" {
		fmt.Sscanf(v, "%d-0", &start)
	}
	limit := len(l.events) - start
	if conn < len(l.cutAfter) {
		limit = min(limit, l.cutAfter[conn])
	}
	events := l.events[start : start+limit]
	cut := conn < len(l.cutAfter)
	l.mu.Unlock()
	w.Header().Set("Content-Type", "text/event-stream")
	io.WriteString(w, ": chatwire events for hr\n\nretry: 1\n\n")
	for i, text := range events {
		fmt.Fprintf(w, "id: %d-0\nevent: message\ndata: {\"id\":\"wecom:%d\",\"bot\":\"hr\",\"kind\":\"message\",\ndata: \"text\":%q}\n\n", start+i+1, start+i+1, text)
		w.(http.Flusher).Flush()
	}
	if cut {
		// Half of the next event, then the connection drops: it must not count.
		fmt.Fprintf(w, "id: %d-0\nevent: message\ndata: {\"text\":\"half\"", start+len(events)+1)
		w.(http.Flusher).Flush()
		panic(http.ErrAbortHandler)
	}
	<-r.Context().Done()
}

// TestEventsResumeAcrossDisconnects: a stream cut twice, mid-event, resumes with
// Last-Event-ID after the last whole event: each event once, in order.
func TestEventsResumeAcrossDisconnects(t *testing.T) {
	t.Parallel()
	c, mux, _ := setup(t)
	log := &sseLog{events: []string{"a", "b", "c", "d", "e", "f", "g"}, cutAfter: []int{3, 2}}
	mux.Handle("GET /v1/bots/hr/events", log)
	ctx, cancel := context.WithCancel(testCtx(t))
	defer cancel()
	var texts, ids []string
	for ev, err := range c.Events(ctx, "hr", client.EventsOptions{ReconnectDelay: time.Millisecond}) {
		if err != nil {
			t.Fatal(err)
		}
		texts, ids = append(texts, ev.Text), append(ids, ev.LogID)
		if ev.Bot != "hr" || ev.Kind != adapter.EventMessage || ev.ID == "" {
			t.Errorf("event %+v lacks its fields", ev)
		}
		if len(texts) == len(log.events) {
			break
		}
	}
	if want := log.events; !reflect.DeepEqual(texts, want) {
		t.Errorf("events = %q; want %q", texts, want)
	}
	if want := []string{"1-0", "2-0", "3-0", "4-0", "5-0", "6-0", "7-0"}; !reflect.DeepEqual(ids, want) {
		t.Errorf("LogIDs = %q; want %q", ids, want)
	}
	log.mu.Lock()
	defer log.mu.Unlock()
	if want := []string{"", "3-0", "5-0"}; !reflect.DeepEqual(log.lastIDs, want) {
		t.Errorf("Last-Event-ID of each connection = %q; want %q", log.lastIDs, want)
	}
}

// TestEventsStartsAfterLastEventID: EventsOptions.LastEventID is sent on the first connection.
func TestEventsStartsAfterLastEventID(t *testing.T) {
	t.Parallel()
	c, mux, _ := setup(t)
	log := &sseLog{events: []string{"a", "b", "c"}}
	mux.Handle("GET /v1/bots/hr/events", log)
	for ev, err := range c.Events(testCtx(t), "hr", client.EventsOptions{LastEventID: "2-0"}) {
		if err != nil || ev.Text != "c" {
			t.Errorf("first event after 2-0 = %+v, %v; want c", ev, err)
		}
		break
	}
}

// TestEventsGroup: a group stream names one consumer on every connection and sends no
// Last-Event-ID (the group keeps the position).
func TestEventsGroup(t *testing.T) {
	t.Parallel()
	c, mux, _ := setup(t)
	log := &sseLog{events: []string{"a", "b", "c"}, cutAfter: []int{1, 1}}
	mux.Handle("GET /v1/bots/hr/events", log)
	n := 0
	for _, err := range c.Events(testCtx(t), "hr", client.EventsOptions{Group: "workers", ReconnectDelay: time.Millisecond}) {
		if err != nil {
			t.Fatal(err)
		}
		if n++; n == 3 {
			break
		}
	}
	log.mu.Lock()
	defer log.mu.Unlock()
	if len(log.queries) != 3 || log.queries[0] != log.queries[1] || log.queries[1] != log.queries[2] ||
		!strings.HasPrefix(log.queries[0], "consumer=") || !strings.HasSuffix(log.queries[0], "&group=workers") {
		t.Errorf("queries %q; want the same group and consumer on each connection", log.queries)
	}
	for i, id := range log.lastIDs {
		if id != "" {
			t.Errorf("connection %d of a group sent Last-Event-ID %q", i, id)
		}
	}
}

// TestEventsRefused: an answer that retrying cannot change ends the sequence with an *Error;
// a 503 with Retry-After is retried after it.
func TestEventsRefused(t *testing.T) {
	t.Parallel()
	c, mux, _ := setup(t)
	var mu sync.Mutex
	var tries []time.Time
	mux.HandleFunc("GET /v1/bots/{bot}/events", func(w http.ResponseWriter, r *http.Request) {
		switch r.PathValue("bot") {
		case "busy":
			mu.Lock()
			tries = append(tries, time.Now())
			n := len(tries)
			mu.Unlock()
			if n == 1 {
				w.Header().Set("Retry-After", "1")
				writeError(w, 503, "unavailable", "plugin restarting", "")
				return
			}
			w.Header().Set("Content-Type", "text/event-stream")
			io.WriteString(w, "id: 1-0\ndata: {\"text\":\"up\"}\n\n")
		case "html":
			w.Header().Set("Content-Type", "text/html")
			io.WriteString(w, "<html>")
		default:
			writeError(w, 404, "not_found", `no bot named "nobody"`, "")
		}
	})
	var errs []error
	for ev, err := range c.Events(testCtx(t), "nobody", client.EventsOptions{ReconnectDelay: time.Millisecond}) {
		errs = append(errs, err)
		if err == nil {
			t.Errorf("event %+v from a refused stream", ev)
		}
	}
	if len(errs) != 1 || !errors.Is(errs[0], adapter.ErrNotFound) {
		t.Errorf("Events(unknown bot) yielded %v; want one not_found error, then the end", errs)
	}
	errs = nil
	for _, err := range c.Events(testCtx(t), "html", client.EventsOptions{ReconnectDelay: time.Millisecond}) {
		errs = append(errs, err)
	}
	if len(errs) != 1 || errs[0] == nil || !strings.Contains(errs[0].Error(), "text/event-stream") {
		t.Errorf("Events(not an event stream) yielded %v; want one error, then the end", errs)
	}
	for ev, err := range c.Events(testCtx(t), "busy", client.EventsOptions{ReconnectDelay: time.Millisecond}) {
		if err != nil || ev.Text != "up" {
			t.Fatalf("Events(busy) = %+v, %v; want the event after the retry", ev, err)
		}
		break
	}
	mu.Lock()
	defer mu.Unlock()
	if len(tries) != 2 || tries[1].Sub(tries[0]) < 900*time.Millisecond {
		t.Errorf("tries %v; want a second one at least Retry-After (1s) after the first", tries)
	}
}

// TestEventsEndsWithContext: cancelling ctx ends the sequence with ctx's error, also while
// waiting to reconnect.
func TestEventsEndsWithContext(t *testing.T) {
	t.Parallel()
	c, mux, _ := setup(t)
	connected := make(chan struct{}, 10)
	mux.HandleFunc("GET /v1/bots/hr/events", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(200)
		w.(http.Flusher).Flush()
		connected <- struct{}{}
		<-r.Context().Done()
	})
	mux.HandleFunc("GET /v1/bots/down/events", func(w http.ResponseWriter, r *http.Request) {
		connected <- struct{}{}
		w.Header().Set("Retry-After", "3600")
		writeError(w, 503, "unavailable", "down", "")
	})
	for _, bot := range []string{"hr", "down"} {
		ctx, cancel := context.WithCancel(testCtx(t))
		go func() { <-connected; cancel() }()
		var errs []error
		for _, err := range c.Events(ctx, bot, client.EventsOptions{}) {
			errs = append(errs, err)
		}
		if len(errs) != 1 || !errors.Is(errs[0], context.Canceled) {
			t.Errorf("%s: Events after cancel yielded %v; want context.Canceled, then the end", bot, errs)
		}
	}
}

// TestEventsBadData: an event whose data is not event JSON is yielded as an error with its
// LogID, and the stream goes on.
func TestEventsBadData(t *testing.T) {
	t.Parallel()
	c, mux, _ := setup(t)
	mux.HandleFunc("GET /v1/bots/hr/events", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream; charset=utf-8")
		io.WriteString(w, "id: 1-0\ndata: not json\n\nid: 2-0\ndata: {\"text\":\"ok\"}\n\n")
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	})
	var got []string
	for ev, err := range c.Events(testCtx(t), "hr", client.EventsOptions{}) {
		got = append(got, fmt.Sprintf("%s %s %v", ev.LogID, ev.Text, err != nil))
		if len(got) == 2 {
			break
		}
	}
	if want := []string{"1-0  true", "2-0 ok false"}; !reflect.DeepEqual(got, want) {
		t.Errorf("events = %q; want %q", got, want)
	}
}
