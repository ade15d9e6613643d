package host

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/seed-a64d9e1f/chatwire/adapter"
	"github.com/seed-a64d9e1f/chatwire/internal/eventlog"
)

// TestDeliveryLanes: with several lanes, events of one chat arrive one after the other in
// queue order, several chats are delivered at once (never more than the lanes), every event
// arrives exactly once, and the consumed mark never covers an event not yet delivered.
func TestDeliveryLanes(t *testing.T) {
	const lanes, chats, perChat = 4, 9, 40
	q := eventlog.NewMemory(eventlog.Options{})
	defer q.Close()
	var appended []eventlog.ID // in log order
	var mu sync.Mutex
	inFlight, peak := 0, 0
	byChat := map[string][]int{}
	seen := map[string]int{}
	delivered := map[string]bool{}
	failedOnce := map[string]bool{}
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		var ev adapter.Event
		if err := json.Unmarshal(body, &ev); err != nil {
			t.Errorf("bad body %q", body)
		}
		mu.Lock()
		inFlight++
		peak = max(peak, inFlight)
		// The consumed mark may only cover events already delivered.
		consumed, _ := q.ConsumedID(t.Context())
		for _, id := range appended {
			if consumed.Less(id) {
				break
			}
			if !delivered[id.String()] {
				t.Errorf("consumed mark %v covers event %v, not delivered yet", consumed, id)
				break
			}
		}
		fail := !failedOnce[ev.ID] && rand.N(10) == 0
		failedOnce[ev.ID] = true
		mu.Unlock()
		time.Sleep(time.Duration(rand.N(2000)) * time.Microsecond)
		mu.Lock()
		defer mu.Unlock()
		inFlight--
		if fail {
			http.Error(w, "not now", 500) // retried: still in order within its chat
			return
		}
		delivered[r.Header.Get("X-Chatwire-Event-Id")] = true
		seen[ev.ID]++
		var i int
		fmt.Sscanf(ev.Text, "m%d", &i)
		byChat[ev.Chat.ID] = append(byChat[ev.Chat.ID], i)
	}))
	defer recv.Close()

	var events []adapter.Event
	for i := range perChat {
		for c := range chats {
			events = append(events, adapter.Event{ID: fmt.Sprintf("c%d-%d", c, i), Chat: adapter.Chat{ID: fmt.Sprintf("chat%d", c)}, Text: fmt.Sprintf("m%d", i)})
		}
	}
	s := &server{log: slog.New(slog.DiscardHandler), m: newMetrics()}
	if err := s.enqueue(t.Context(), newBot("hr", adapter.PlatformWeCom, nil, q), events); err != nil {
		t.Fatal(err)
	}
	all, err := q.Read(t.Context(), eventlog.ID{}, len(events))
	if err != nil || len(all) != len(events) {
		t.Fatalf("Read = %d entries, %v", len(all), err)
	}
	mu.Lock()
	for _, e := range all {
		appended = append(appended, e.ID)
	}
	mu.Unlock()
	d := &deliverer{bot: "hr", url: recv.URL, secret: "s", events: q, client: recv.Client(), log: slog.New(slog.DiscardHandler),
		lanes: lanes, backoffMin: time.Millisecond, backoffMax: 5 * time.Millisecond, result: func(bool) {}}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	go d.run(ctx)
	for {
		if n, _ := q.Len(ctx); n.Unconsumed == 0 {
			break
		}
		if ctx.Err() != nil {
			t.Fatal("events not all delivered in 30s")
		}
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	mu.Lock()
	defer mu.Unlock()
	if len(seen) != chats*perChat {
		t.Errorf("%d distinct events delivered; want %d", len(seen), chats*perChat)
	}
	for id, n := range seen {
		if n != 1 {
			t.Errorf("event %s delivered %d times", id, n)
		}
	}
	for c, got := range byChat {
		for i, v := range got {
			if v != i {
				t.Errorf("chat %s got events in order %v; want 0..%d", c, got, perChat-1)
				break
			}
		}
	}
	if peak < 2 || peak > lanes {
		t.Errorf("at most %d POSTs in flight at once; want 2 to %d", peak, lanes)
	}
}
