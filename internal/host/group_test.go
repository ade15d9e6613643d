package host

import (
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/seed-a64d9e1f/chatwire/internal/redistest"
)

// ackEvents acknowledges ids for group on e and returns how many were pending.
func ackEvents(t *testing.T, e *env, group string, ids ...string) int {
	t.Helper()
	body, _ := json.Marshal(map[string]any{"group": group, "ids": ids})
	status, _, out := e.do("POST", "/v1/bots/hr/events/ack", testAPIKey, string(body))
	var res struct{ Acked int }
	if status != 200 || json.Unmarshal(out, &res) != nil {
		t.Fatalf("ack = %d %s", status, out)
	}
	return res.Acked
}

// TestSSEGroupCompetingConsumers runs three consumers of one group on two hosts sharing
// Redis: each event pushed to either host reaches exactly one consumer, and together they
// get every event. Acknowledged events are not handed out again; broadcast clients still get
// every event.
func TestSSEGroupCompetingConsumers(t *testing.T) {
	rs := redistest.Start(t)
	emu := newEmulator()
	ws := httptest.NewServer(emu)
	defer ws.Close()
	url := "redis://" + rs.Addr() + "/0"
	a := setup(t, setupOpts{redisURL: url, emu: emu, apiBase: ws.URL})
	b := setup(t, setupOpts{redisURL: url, emu: emu, apiBase: ws.URL})
	c1, _ := a.subscribeTo("?group=bots&consumer=c1", "")
	c2, _ := a.subscribeTo("?group=bots&consumer=c2", "")
	c3, _ := b.subscribeTo("?group=bots", "")
	all := b.subscribe("")
	const n = 60
	for i := range n {
		h := []*env{a, b}[i%2]
		h.push("alice", fmt.Sprint("ev ", i))
	}
	got := map[string]int{} // text → consumers it reached
	var ids []string
	deadline := time.After(20 * time.Second)
	for len(ids) < n {
		var ev sseEvent
		select {
		case ev = <-c1:
		case ev = <-c2:
		case ev = <-c3:
		case <-deadline:
			t.Fatalf("the group delivered %d of %d events", len(ids), n)
		}
		got[ev.ev.Text]++
		ids = append(ids, ev.id)
	}
	for i := range n {
		if k := got[fmt.Sprint("ev ", i)]; k != 1 {
			t.Errorf("event %d reached %d consumers; want 1", i, k)
		}
	}
	for range n {
		next(t, all) // the broadcast client gets every event too
	}
	if acked := ackEvents(t, b, "bots", ids...); acked != n {
		t.Errorf("acked %d; want %d", acked, n)
	}
	if acked := ackEvents(t, a, "bots", ids[0]); acked != 0 {
		t.Errorf("acked %d again; want 0", acked)
	}
	select {
	case ev := <-c1:
		t.Errorf("an acknowledged event came again: %+v", ev)
	case ev := <-c2:
		t.Errorf("an acknowledged event came again: %+v", ev)
	case ev := <-c3:
		t.Errorf("an acknowledged event came again: %+v", ev)
	case <-time.After(300 * time.Millisecond):
	}
}

// TestSSEGroupUnackedGoesToAnother: a consumer that received an event and went away without
// acknowledging it: the event reaches another consumer of the group after ack_timeout.
func TestSSEGroupUnackedGoesToAnother(t *testing.T) {
	e := setup(t, setupOpts{ackTimeout: "300ms"})
	dies, stop := e.subscribeTo("?group=bots&consumer=dies", "")
	e.push("alice", "handled twice")
	first := next(t, dies)
	stop()
	lives, _ := e.subscribeTo("?group=bots&consumer=lives", "")
	again := next(t, lives)
	if again.id != first.id || again.ev.Text != "handled twice" {
		t.Fatalf("second consumer got %+v; want %+v", again, first)
	}
	if acked := ackEvents(t, e, "bots", again.id); acked != 1 {
		t.Errorf("acked %d; want 1", acked)
	}
}

// TestSSEGroupBadRequests: bad group, consumer and ack bodies get a 400 naming the problem.
func TestSSEGroupBadRequests(t *testing.T) {
	e := setup(t, setupOpts{})
	for _, tc := range []struct{ method, path, body, want string }{
		{"GET", "/v1/bots/hr/events?group=_x", "", "group"},
		{"GET", "/v1/bots/hr/events?group=a%20b", "", "group"},
		{"GET", "/v1/bots/hr/events?group=g&consumer=%2F", "", "consumer"},
		{"GET", "/v1/bots/hr/events?consumer=c", "", "consumer needs group"},
		{"POST", "/v1/bots/hr/events/ack", `{"group":"g","ids":["nope"]}`, "ids[0]"},
		{"POST", "/v1/bots/hr/events/ack", `{"group":"g","ids":[]}`, "ids"},
		{"POST", "/v1/bots/hr/events/ack", `{"group":"","ids":["1-1"]}`, "group"},
		{"POST", "/v1/bots/hr/events/ack", `{"group":"g","ids":["1-1"],"x":1}`, "unknown field"},
	} {
		status, _, body := e.do(tc.method, tc.path, testAPIKey, tc.body)
		if status != 400 || !strings.Contains(string(body), tc.want) {
			t.Errorf("%s %s %s = %d %s; want 400 mentioning %q", tc.method, tc.path, tc.body, status, body, tc.want)
		}
	}
}
