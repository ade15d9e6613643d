package main

import (
	"net/http/httptest"
	"strings"
	"testing"
	"time"

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

	chA := a.subscribe("")
	_, msg := a.push("alice", "once")
	if ev := next(t, chA); ev.ev.Text != "once" {
		t.Fatalf("host A event = %+v", ev)
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
	if held, _ := b.h.srv.bots["hr"].queue.Len(); held != 0 {
		t.Errorf("host B queued %d events; want 0", held)
	}
}
