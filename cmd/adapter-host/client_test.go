package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/seed-a64d9e1f/chatwire/adapter"
	"github.com/seed-a64d9e1f/chatwire/client"
)

func newTestClient(t *testing.T, base, key string) *client.Client {
	t.Helper()
	c, err := client.New(base, client.Options{APIKey: key})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestClientAgainstHost: package client against a real host: sends, its errors mapped with
// kind, status, platform code and Retry-After, and the status endpoints.
func TestClientAgainstHost(t *testing.T) {
	e := setup(t, setupOpts{})
	c := newTestClient(t, e.h.URL(), testAPIKey)
	ctx := t.Context()

	rc, err := c.Send(ctx, "hr", client.Message{To: client.Target{User: "alice"}, Text: "hi from the client"},
		client.WithIdempotencyKey(client.NewIdempotencyKey()))
	if err != nil || rc.Bot != "hr" || rc.Platform != adapter.PlatformWeCom || rc.ID == "" || rc.Invalid == nil {
		t.Errorf("Send() = %+v, %v", rc, err)
	}
	file := bytes.Repeat([]byte("0123456789"), 30_000)
	rc, err = c.Send(ctx, "hr", client.Message{To: client.Target{User: "alice"}, Attachments: []client.Attachment{
		{Name: "report.txt", ContentType: "text/plain", Body: bytes.NewReader(file), Size: int64(len(file))}}})
	if err != nil {
		t.Errorf("Send(streamed file) = %+v, %v", rc, err)
	}
	var uploaded bool
	for _, s := range e.emu.Sent() {
		if m := e.emu.Media(s.MediaID); m != nil && bytes.Equal(m.Data, file) {
			uploaded = true
		}
	}
	if !uploaded {
		t.Error("the streamed file did not reach the platform intact")
	}

	tests := []struct {
		name       string
		c          *client.Client
		bot        string
		to         string
		prepare    func()
		status     int
		sentinel   error
		code       string
		retryAfter bool
	}{
		{"invalid recipient", c, "hr", "nobody", nil, 400, adapter.ErrInvalidRecipient, "81013", false},
		{"rate limited", c, "hr", "alice", func() { e.emu.Fail("message/send", 45009, 1) }, 429, adapter.ErrRateLimited, "45009", true},
		{"unknown bot", c, "nobody", "alice", nil, 404, adapter.ErrNotFound, "", false},
		{"wrong key", newTestClient(t, e.h.URL(), "wrong-key-wrong-key"), "hr", "alice", nil, 401, adapter.ErrUnauthorized, "", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.prepare != nil {
				tc.prepare()
			}
			_, err := tc.c.Send(ctx, tc.bot, client.Message{To: client.Target{User: tc.to}, Text: "x"})
			var ae *client.Error
			if !errors.As(err, &ae) || ae.StatusCode != tc.status || !errors.Is(err, tc.sentinel) || ae.PlatformCode != tc.code || ae.Message == "" {
				t.Fatalf("Send() = %#v; want status %d, %v, platform code %q", err, tc.status, tc.sentinel, tc.code)
			}
			if (ae.RetryAfter > 0) != tc.retryAfter {
				t.Errorf("RetryAfter = %v; want one: %v", ae.RetryAfter, tc.retryAfter)
			}
			if strings.Contains(err.Error(), testAPIKey) {
				t.Errorf("error %q holds the API key", err)
			}
		})
	}

	st, err := c.Tokens(ctx)
	if err != nil || len(st) != 1 || st[0].Bot != "hr" || len(st[0].Tokens) != 1 || !strings.HasPrefix(st[0].Tokens[0].Key, "wecom/"+testCorp) {
		t.Errorf("Tokens() = %+v, %v", st, err)
	}
	bots, err := c.Bots(ctx)
	if want := []client.Bot{{Name: "hr", Platform: adapter.PlatformWeCom}}; err != nil || !reflect.DeepEqual(bots, want) {
		t.Errorf("Bots() = %+v, %v; want %+v", bots, err, want)
	}
	if err := c.Ready(ctx); err != nil {
		t.Errorf("Ready() = %v", err)
	}
}

// cutProxy forwards to a host and can drop every connection it carries, as a restarted
// load balancer or a network fault does. It records each request's Last-Event-ID.
type cutProxy struct {
	target string
	mu     sync.Mutex
	cancel []context.CancelFunc // of the requests in flight
	ids    []string             // Last-Event-ID of each request
}

func (p *cutProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	p.mu.Lock()
	p.cancel = append(p.cancel, cancel)
	p.ids = append(p.ids, r.Header.Get("Last-Event-ID"))
	p.mu.Unlock()
	req, _ := http.NewRequestWithContext(ctx, r.Method, p.target+r.URL.RequestURI(), r.Body)
	req.Header = r.Header.Clone()
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		panic(http.ErrAbortHandler)
	}
	defer resp.Body.Close()
	for k, v := range resp.Header {
		w.Header()[k] = v
	}
	w.WriteHeader(resp.StatusCode)
	buf := make([]byte, 32<<10)
	for {
		n, err := resp.Body.Read(buf)
		if n > 0 {
			w.Write(buf[:n])
			w.(http.Flusher).Flush()
		}
		if err != nil {
			if !errors.Is(err, io.EOF) {
				panic(http.ErrAbortHandler) // drop the client's connection mid-stream
			}
			return
		}
	}
}

// cut drops every connection in flight.
func (p *cutProxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.cancel {
		c()
	}
	p.cancel = nil
}

func (p *cutProxy) lastEventIDs() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.ids...)
}

// TestClientEventsResumeAcrossDisconnect: a real host's event stream, dropped between the
// client and the host twice, resumes with Last-Event-ID: every event once and in order.
func TestClientEventsResumeAcrossDisconnect(t *testing.T) {
	e := setup(t, setupOpts{})
	proxy := &cutProxy{target: e.h.URL()}
	ps := httptest.NewServer(proxy)
	t.Cleanup(ps.Close)
	c := newTestClient(t, ps.URL, testAPIKey)

	ctx, cancel := context.WithCancel(t.Context())
	type item struct {
		ev  client.Event
		err error
	}
	events := make(chan item, 100)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ev, err := range c.Events(ctx, "hr", client.EventsOptions{ReconnectDelay: 10 * time.Millisecond}) {
			events <- item{ev, err}
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
	nextEvent := func() client.Event {
		t.Helper()
		select {
		case it := <-events:
			if it.err != nil {
				t.Fatalf("event stream: %v", it.err)
			}
			return it.ev
		case <-time.After(10 * time.Second):
			t.Fatal("no event within 10s")
		}
		return client.Event{}
	}

	var texts, ids []string
	receive := func(n int) {
		for range n {
			ev := nextEvent()
			texts, ids = append(texts, ev.Text), append(ids, ev.LogID)
		}
	}
	for _, s := range []string{"a", "b", "c"} {
		e.push("alice", s)
	}
	receive(3)
	proxy.cut()
	for _, s := range []string{"d", "e", "f"} {
		e.push("alice", s)
	}
	receive(3)
	proxy.cut()
	e.push("alice", "g")
	receive(1)
	if want := []string{"a", "b", "c", "d", "e", "f", "g"}; !reflect.DeepEqual(texts, want) {
		t.Errorf("events = %q; want %q", texts, want)
	}
	for i := 1; i < len(ids); i++ {
		if !idLess(t, ids[i-1], ids[i]) {
			t.Errorf("LogIDs %q do not increase", ids)
		}
	}
	got := proxy.lastEventIDs()
	if len(got) != 3 || got[0] != "" || got[1] != ids[2] || got[2] != ids[5] {
		t.Errorf("Last-Event-ID of each connection = %q; want \"\", %q, %q", got, ids[2], ids[5])
	}
	select {
	case it := <-events:
		t.Errorf("an event beyond the pushed ones: %+v", it)
	default:
	}
}

// TestClientGroupAgainstHost: a group consumer of a real host gets the events and
// acknowledges them.
func TestClientGroupAgainstHost(t *testing.T) {
	e := setup(t, setupOpts{})
	c := newTestClient(t, e.h.URL(), testAPIKey)
	e.push("alice", "one")
	e.push("bob", "two")
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	var ids, texts []string
	for ev, err := range c.Events(ctx, "hr", client.EventsOptions{Group: "workers", Consumer: "w1"}) {
		if err != nil {
			t.Fatal(err)
		}
		ids, texts = append(ids, ev.LogID), append(texts, ev.Text)
		if len(ids) == 2 {
			break
		}
	}
	if want := []string{"one", "two"}; !reflect.DeepEqual(texts, want) {
		t.Errorf("group events = %q; want %q", texts, want)
	}
	if n, err := c.Ack(ctx, "hr", "workers", ids...); n != 2 || err != nil {
		t.Errorf("Ack() = %d, %v; want 2", n, err)
	}
	if n, err := c.Ack(ctx, "hr", "workers", ids...); n != 0 || err != nil {
		t.Errorf("Ack() again = %d, %v; want 0", n, err)
	}
	if _, err := c.Ack(ctx, "hr", "bad group!", ids...); !errors.Is(err, adapter.ErrInvalidRequest) {
		t.Errorf("Ack(bad group) = %v; want invalid_request", err)
	}
}

// TestCLISendIdempotencyKeyThroughClient: adapter-host send sends an Idempotency-Key
// through package client: a random one per invocation ("cli-…", printed by --verbose and
// logged at --log-level debug) unless --idempotency-key names it; a send that got no answer
// is retried with the same key; a replayed answer is said so.
func TestCLISendIdempotencyKeyThroughClient(t *testing.T) {
	var mu sync.Mutex
	var keys []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		keys = append(keys, r.Header.Get("Idempotency-Key"))
		n := len(keys)
		mu.Unlock()
		if r.Header.Get("Content-Type") != "application/json" {
			w.WriteHeader(415)
			return
		}
		if r.URL.Query().Has("drop") || strings.HasPrefix(r.Header.Get("Idempotency-Key"), "drop") && n%2 == 0 {
			panic(http.ErrAbortHandler) // no answer: the connection drops
		}
		if r.Header.Get("Idempotency-Key") == "seen" {
			w.Header().Set("Idempotent-Replayed", "true")
		}
		writeJSON(w, 200, sendResponse{ID: "m1", Bot: "hr", Platform: "wecom", Invalid: []string{}})
	}))
	defer srv.Close()
	send := func(extra ...string) (string, string, error) {
		t.Helper()
		var out, errb bytes.Buffer
		args := append([]string{"send", "--url", srv.URL, "--api-key", testAPIKey, "--bot", "hr", "--to", "user:alice", "--text", "x"}, extra...)
		err := run(t.Context(), args, &out, &errb)
		if strings.Contains(errb.String()+out.String(), testAPIKey) {
			t.Errorf("send printed the API key: %s", errb.String())
		}
		return out.String(), errb.String(), err
	}
	const sentLine = `sent: bot hr (wecom), message id "m1"`
	out, verbose, err := send("--verbose")
	if err != nil || !strings.Contains(out, sentLine) {
		t.Fatalf("send --verbose = %v\n%s%s", err, out, verbose)
	}
	_, logs, err := send("--log-level", "debug")
	if err != nil {
		t.Fatal(err)
	}
	if out, _, err := send("--idempotency-key", "seen"); err != nil || !strings.Contains(out, "already sent under Idempotency-Key seen; not sent again") {
		t.Errorf("send of a replayed key = %v\n%s", err, out)
	}
	if _, _, err := send("--idempotency-key", "bad\tkey"); err == nil || !strings.Contains(err.Error(), "--idempotency-key") {
		t.Errorf("send --idempotency-key with a tab = %v; want an error naming the flag", err)
	}
	if out, _, err := send("--idempotency-key", "drop-1"); err != nil || !strings.Contains(out, sentLine) {
		t.Errorf("send whose first answer was lost = %v\n%s", err, out)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(keys) != 5 || keys[0] == keys[1] || keys[2] != "seen" || keys[3] != "drop-1" || keys[4] != "drop-1" {
		t.Fatalf("Idempotency-Keys = %q; want two distinct random ones, seen, then drop-1 twice", keys)
	}
	for _, k := range keys[:2] {
		if !strings.HasPrefix(k, "cli-") || len(k) < 20 {
			t.Errorf("random Idempotency-Key %q; want cli- and a random text", k)
		}
	}
	if strings.TrimSpace(verbose) != "Idempotency-Key: "+keys[0] {
		t.Errorf("--verbose printed %q; want the Idempotency-Key line only", verbose)
	}
	if !strings.Contains(logs, keys[1]) {
		t.Errorf("--log-level debug did not log the idempotency key %q:\n%s", keys[1], logs)
	}
}
