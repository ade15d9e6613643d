package host

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/seed-a64d9e1f/chatwire/adapter"
	"github.com/seed-a64d9e1f/chatwire/adapter/wecom/wecomtest"
	"github.com/seed-a64d9e1f/chatwire/internal/redistest"
)

// TestFleetSharesRedis runs two hosts on one real redis-server: a token fetched by one is
// used by the other, and a callback redelivered to the other host is dropped as a duplicate.
func TestFleetSharesRedis(t *testing.T) {
	rs := redistest.Start(t)
	emu := newEmulator()
	ws := httptest.NewServer(emu)
	defer ws.Close()
	url := "redis://" + rs.Addr() + "/0"
	a := setup(t, setupOpts{redisURL: url, emu: emu, apiBase: ws.URL})
	b := setup(t, setupOpts{redisURL: url, emu: emu, apiBase: ws.URL})

	for _, h := range []*env{a, b} {
		if status, _, body := h.do("POST", "/v1/bots/hr/messages", testAPIKey, `{"to":{"user":"alice"},"text":"hi"}`); status != 200 {
			t.Fatalf("send = %d %s", status, body)
		}
	}
	if n := emu.TokensIssued(); n != 1 {
		t.Errorf("WeCom issued %d tokens to two hosts sharing Redis; want 1", n)
	}

	// Events live in a Redis stream: a bot reading from host A gets what reached host B.
	chA := a.subscribe("")
	_, msg := b.push("alice", "once")
	once := next(t, chA)
	if once.ev.Text != "once" || once.id == "" {
		t.Fatalf("host A event = %+v; want the event host B received", once)
	}
	// WeCom retries the same bytes; the load balancer sends them to host B.
	cbB := b.cb
	if p, err := emu.Push(t.Context(), cbB, msg); err != nil || p.Status != 200 {
		t.Fatalf("redelivery to B = %+v, %v", p, err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, _, body := b.do("GET", "/metrics", "", nil)
		if strings.Contains(string(body), `chatwire_events_total{bot="hr",outcome="duplicate"} 1`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("host B did not drop the redelivery as a duplicate:\n%s", body)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if n, _ := b.h.srv.bots["hr"].events.Len(t.Context()); n.Held != 1 {
		t.Errorf("the shared stream holds %d events; want 1", n.Held)
	}
	// A consumer that connects later to either host starts after what was consumed.
	a.push("bob", "twice")
	if ev := next(t, chA); ev.ev.Text != "twice" || !idLess(t, once.id, ev.id) {
		t.Fatalf("second event = %+v", ev)
	}
}

// TestFleetDeliversOnce runs two hosts with the same delivery webhook on one Redis: each event
// is POSTed once, in order, whichever host received it.
func TestFleetDeliversOnce(t *testing.T) {
	rs := redistest.Start(t)
	emu := newEmulator()
	ws := httptest.NewServer(emu)
	defer ws.Close()
	var mu sync.Mutex
	var got []string
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var ev adapter.Event
		json.NewDecoder(r.Body).Decode(&ev)
		mu.Lock()
		got = append(got, ev.Text)
		mu.Unlock()
	}))
	defer recv.Close()
	url := "redis://" + rs.Addr() + "/0"
	a := setup(t, setupOpts{redisURL: url, emu: emu, apiBase: ws.URL, deliverURL: recv.URL})
	b := setup(t, setupOpts{redisURL: url, emu: emu, apiBase: ws.URL, deliverURL: recv.URL})
	want := []string{"1", "2", "3", "4"}
	for i, text := range want {
		if i%2 == 0 {
			a.push("alice", text)
		} else {
			b.push("alice", text)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		mu.Lock()
		n := len(got)
		mu.Unlock()
		if n >= len(want) || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond) // a second delivery would arrive now
	mu.Lock()
	defer mu.Unlock()
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("delivered %v; want %v once each, in order", got, want)
	}
}

// TestFleetDedupAtomic gives host A a Redis user that may not XADD (its append fails) nor DEL
// (a mark it set could not be undone, as if A were SIGKILLed between marking and queueing):
// A answers 503, leaves no dedup mark, and the redelivery to host B is queued, not dropped.
// Then both hosts receive the same callbacks at once: each event is queued exactly once.
func TestFleetDedupAtomic(t *testing.T) {
	rs := redistest.Start(t)
	admin := redis.NewClient(&redis.Options{Addr: rs.Addr()})
	defer admin.Close()
	if err := admin.Do(t.Context(), "ACL", "SETUSER", "crippled", "on", ">crippled-pw", "~*", "&*", "+@all", "-xadd", "-del").Err(); err != nil {
		t.Fatal(err)
	}
	emu := newEmulator()
	ws := httptest.NewServer(emu)
	defer ws.Close()
	a := setup(t, setupOpts{redisURL: "redis://crippled:crippled-pw@" + rs.Addr() + "/0", emu: emu, apiBase: ws.URL})
	b := setup(t, setupOpts{redisURL: "redis://" + rs.Addr() + "/0", emu: emu, apiBase: ws.URL})

	msg := wecomtest.TextMessage(testCorp, testAgent, "alice", "not lost", msgIDs.Add(1), time.Now())
	if p, _ := emu.Push(t.Context(), a.cb, msg); p.Status != 503 {
		t.Fatalf("push to the host that cannot queue = %d; want 503", p.Status)
	}
	if keys, _ := admin.Keys(t.Context(), "chatwire:dedup:*").Result(); len(keys) != 0 {
		t.Errorf("dedup marks %v left by a delivery that was not queued", keys)
	}
	if p, err := emu.Push(t.Context(), b.cb, msg); err != nil || p.Status != 200 {
		t.Fatalf("redelivery to host B = %+v, %v", p, err)
	}
	ch := b.subscribe("")
	if ev := next(t, ch); ev.ev.Text != "not lost" {
		t.Fatalf("host B event = %+v; want the redelivered one", ev)
	}

	// The same callbacks to both hosts at once.
	c := setup(t, setupOpts{redisURL: "redis://" + rs.Addr() + "/0", emu: emu, apiBase: ws.URL})
	const n = 10
	var wg sync.WaitGroup
	for i := range n {
		msg := wecomtest.TextMessage(testCorp, testAgent, "bob", fmt.Sprint("both ", i), msgIDs.Add(1), time.Now())
		for _, h := range []*env{b, c} {
			wg.Go(func() {
				if p, err := emu.Push(t.Context(), h.cb, msg); err != nil || p.Status != 200 {
					t.Errorf("push %d = %+v, %v", i, p, err)
				}
			})
		}
	}
	wg.Wait()
	if n2, _ := admin.XLen(t.Context(), "chatwire:events:{hr}").Result(); n2 != n+1 {
		t.Errorf("stream holds %d events after %d callbacks delivered twice each; want %d", n2, n, n+1)
	}
	seen := map[string]bool{}
	for range n {
		ev := next(t, ch)
		if seen[ev.ev.Text] {
			t.Errorf("event %q came out twice", ev.ev.Text)
		}
		seen[ev.ev.Text] = true
	}
}

// TestStoreOutageMetrics takes Redis away from a host whose WeCom token was just revoked: the
// plugin fetches a token locally, and /metrics says so (redisstore Stats).
func TestStoreOutageMetrics(t *testing.T) {
	rs := redistest.Start(t)
	e := setup(t, setupOpts{redisURL: "redis://" + rs.Addr() + "/0"})
	if status, _, body := e.do("POST", "/v1/bots/hr/messages", testAPIKey, `{"to":{"user":"alice"},"text":"hi"}`); status != 200 {
		t.Fatalf("send = %d %s", status, body)
	}
	_, _, body := e.do("GET", "/metrics", "", nil)
	for _, want := range []string{"chatwire_store_outages_total 0", "chatwire_store_local_refreshes_total 0", "chatwire_store_available 1"} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics with Redis up lacks %s", want)
		}
	}
	rs.Kill()
	defer rs.Restart()
	e.emu.RevokeTokens(42001) // the next send is rejected: the plugin must fetch a new token
	if status, _, body := e.do("POST", "/v1/bots/hr/messages", testAPIKey, `{"to":{"user":"alice"},"text":"without redis"}`); status != 200 {
		t.Fatalf("send without Redis = %d %s", status, body)
	}
	_, _, body = e.do("GET", "/metrics", "", nil)
	for _, want := range []string{"chatwire_store_outages_total 1", "chatwire_store_local_refreshes_total 1", "chatwire_store_available 0",
		"# TYPE chatwire_store_outages_total counter", "# TYPE chatwire_store_local_refreshes_total counter"} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics during the outage lacks %s", want)
		}
	}
	if t.Failed() {
		t.Logf("/metrics:\n%s", body)
	}
}

// TestSSEContinuesAfterRedisLosesTheStream keeps one SSE client connected while Redis loses
// the event stream three ways (restarted empty, FLUSHALL, the stream key deleted): every
// event acknowledged to the platform afterwards reaches the client without a reconnect,
// and the host logs that the stream was reset.
func TestSSEContinuesAfterRedisLosesTheStream(t *testing.T) {
	rs := redistest.Start(t)
	admin := redis.NewClient(&redis.Options{Addr: rs.Addr()})
	defer admin.Close()
	e := setup(t, setupOpts{redisURL: "redis://" + rs.Addr() + "/0"})
	ch := e.subscribe("")
	// pushOK pushes until the host acknowledges (a restarting Redis answers 503 for a moment).
	pushOK := func(text string) {
		t.Helper()
		msg := wecomtest.TextMessage(testCorp, testAgent, "alice", text, msgIDs.Add(1), time.Now())
		for {
			p, err := e.emu.Push(t.Context(), e.cb, msg)
			if err == nil && p.Status == 200 {
				return
			}
			if t.Context().Err() != nil {
				t.Fatalf("push %q: %v (status %d)", text, err, p.Status)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	last := ""
	for i, lose := range []func(){
		func() { rs.Restart() },
		func() { admin.FlushAll(t.Context()) },
		func() { admin.Del(t.Context(), "chatwire:events:{hr}") },
	} {
		for j := range 3 {
			pushOK(fmt.Sprintf("before %d.%d", i, j))
		}
		for j := range 3 {
			ev := next(t, ch)
			if want := fmt.Sprintf("before %d.%d", i, j); ev.ev.Text != want {
				t.Fatalf("event %q, want %q", ev.ev.Text, want)
			}
			last = ev.id
		}
		lose()
		for j := range 3 {
			pushOK(fmt.Sprintf("after %d.%d", i, j))
		}
		for j := range 3 {
			ev := next(t, ch) // fails after 10 s if the client stalls
			if want := fmt.Sprintf("after %d.%d", i, j); ev.ev.Text != want {
				t.Fatalf("after losing the stream (%d): event %q, want %q", i, ev.ev.Text, want)
			}
			if !idLess(t, last, ev.id) {
				t.Fatalf("id %s after the reset is not after %s", ev.id, last)
			}
			last = ev.id
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(e.logs.String(), "was reset") && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if !strings.Contains(e.logs.String(), "event stream chatwire:events:{hr} was reset") {
		t.Errorf("the host did not log the reset:\n%s", e.logs.String())
	}
}

// TestDeletingAnyKeyKeepsWebhooksWorking deletes, one at a time, every key the host keeps
// in Redis except the event stream itself (dedup records, tokens, leases): every later
// webhook is still acknowledged and its event reaches the SSE client.
func TestDeletingAnyKeyKeepsWebhooksWorking(t *testing.T) {
	rs := redistest.Start(t)
	admin := redis.NewClient(&redis.Options{Addr: rs.Addr()})
	defer admin.Close()
	e := setup(t, setupOpts{redisURL: "redis://" + rs.Addr() + "/0"})
	ch := e.subscribe("")
	e.push("alice", "first")
	next(t, ch)
	keys, err := admin.Keys(t.Context(), "*").Result()
	if err != nil || len(keys) < 2 {
		t.Fatalf("keys %q, %v", keys, err)
	}
	for i, k := range keys {
		if k == "chatwire:events:{hr}" {
			continue
		}
		admin.Del(t.Context(), k)
		text := fmt.Sprintf("after deleting %d", i)
		if p, _ := e.push("alice", text); p.Status != 200 {
			t.Fatalf("webhook after deleting %s answered %d", k, p.Status)
		}
		if ev := next(t, ch); ev.ev.Text != text {
			t.Fatalf("after deleting %s: event %q, want %q", k, ev.ev.Text, text)
		}
	}
}

// TestSSEResumeAcrossHostRestartWithRedis: a client that read some events from a host that
// then stopped resumes with its Last-Event-ID on a new host on the same Redis: it gets
// exactly the events after that id, including those that arrived while no host read them.
func TestSSEResumeAcrossHostRestartWithRedis(t *testing.T) {
	rs := redistest.Start(t)
	emu := newEmulator()
	ws := httptest.NewServer(emu)
	defer ws.Close()
	url := "redis://" + rs.Addr() + "/0"
	a := setup(t, setupOpts{redisURL: url, emu: emu, apiBase: ws.URL})
	ch, stop := a.subscribeTo("", "")
	a.push("alice", "one")
	a.push("alice", "two")
	next(t, ch)
	last := next(t, ch).id
	a.push("alice", "three") // received by the stream, maybe not by this client
	stop()
	if err := a.h.Shutdown(); err != nil {
		t.Fatal(err)
	}
	b := setup(t, setupOpts{redisURL: url, emu: emu, apiBase: ws.URL})
	b.push("alice", "four")
	ch = b.subscribe(last)
	for _, want := range []string{"three", "four"} {
		if ev := next(t, ch); ev.ev.Text != want || !idLess(t, last, ev.id) {
			t.Fatalf("resumed after %s: %+v, want %q", last, ev, want)
		}
	}
}

// TestManyRedisBotsAcknowledgeEveryCallback: a host with 100 WeCom bots on Redis (go-redis's
// default pool, 10 connections per CPU) acknowledges a callback to every bot, all at once,
// and each lands in its bot's log. With a watcher per bot blocked in XREAD, the watchers held
// every connection of the pool and callbacks waited for one until they were refused (503).
func TestManyRedisBotsAcknowledgeEveryCallback(t *testing.T) {
	const bots = 100
	rs := redistest.Start(t)
	e := setup(t, setupOpts{redisURL: "redis://" + rs.Addr() + "/0", extraBots: bots - 1, quiet: true})
	names := []string{"hr"}
	for i := 1; i < bots; i++ {
		names = append(names, fmt.Sprintf("bot%d", i))
	}
	var wg sync.WaitGroup
	errs := make(chan error, bots)
	for _, name := range names {
		wg.Go(func() {
			cb := e.cb
			cb.URL = e.h.URL() + "/webhook/" + name
			msg := wecomtest.TextMessage(testCorp, testAgent, "alice", "hi "+name, msgIDs.Add(1), time.Now())
			if p, err := e.emu.Push(t.Context(), cb, msg); err != nil || p.Status != 200 {
				errs <- fmt.Errorf("callback to %s: status %d, %v", name, p.Status, err)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	for _, name := range names {
		if n, err := e.h.srv.bots[name].events.Len(t.Context()); err != nil || n.Held != 1 {
			t.Errorf("bot %s holds %d events (%v); want 1", name, n.Held, err)
		}
	}
	if s := e.h.redis.PoolStats(); s.Timeouts != 0 {
		t.Errorf("Redis pool %+v: commands waited for a connection in vain", *s)
	}
}

// TestSSEConnectWhileRedisDown: a client connecting while Redis is down (its start, the
// consumed mark, unknown) gets 503 with Retry-After and an error body within the start
// budget, not a request that hangs without headers until Redis returns; it connects again
// once Redis is back. A client resuming with Last-Event-ID needs no Redis to start: it gets
// its headers at once and its events when Redis returns.
func TestSSEConnectWhileRedisDown(t *testing.T) {
	rs := redistest.Start(t)
	e := setup(t, setupOpts{redisURL: "redis://" + rs.Addr() + "/0"})
	e.subscribe("") // the host works
	rs.Kill()
	for _, query := range []string{"", "?group=g1"} {
		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
		req, _ := http.NewRequestWithContext(ctx, "GET", e.h.URL()+"/v1/bots/hr/events"+query, nil)
		req.Header.Set("Authorization", "Bearer "+testAPIKey)
		start := time.Now()
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			cancel()
			t.Fatalf("connect %q while Redis is down: %v after %v; want a 503", query, err, time.Since(start))
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		cancel()
		if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" ||
			!strings.Contains(string(body), `"kind":"unavailable"`) || !strings.Contains(string(body), "event log") {
			t.Errorf("connect %q while Redis is down = %d, Retry-After %q, %s; want 503, Retry-After and an unavailable error naming the event log",
				query, resp.StatusCode, resp.Header.Get("Retry-After"), body)
		}
	}
	// Resuming needs no Redis before the headers.
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", e.h.URL()+"/v1/bots/hr/events", nil)
	req.Header.Set("Authorization", "Bearer "+testAPIKey)
	req.Header.Set("Last-Event-ID", "1-0")
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("resume while Redis is down = %v, %v; want 200 at once", resp, err)
	}
	resp.Body.Close()
	rs.Restart()
	ch := e.subscribe("") // connects again (subscribe fails the test if the stream does not start)
	msg := wecomtest.TextMessage(testCorp, testAgent, "alice", "after", msgIDs.Add(1), time.Now())
	for { // a restarting Redis answers 503 for a moment
		if p, err := e.emu.Push(t.Context(), e.cb, msg); err == nil && p.Status == 200 {
			break
		}
		if t.Context().Err() != nil {
			t.Fatal("push after Redis returned never acknowledged")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if ev := next(t, ch); ev.ev.Text != "after" {
		t.Errorf("after Redis returned got %+v; want the new message", ev.ev)
	}
}
