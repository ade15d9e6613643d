package outbox

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"testing"
	"testing/synctest"

	"github.com/seed-a64d9e1f/chatwire/adapter"
	"github.com/seed-a64d9e1f/chatwire/internal/eventlog"
)

// An idle outbox's Run holds one goroutine (itself, waiting for messages) and no lane
// buffers: a host runs one per configured bot, most of them idle (issue 18, memory per
// bot). Lanes start when a message comes, and still send it.
func TestIdleOutboxHoldsOneGoroutine(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const n = 50
		ctx, cancel := context.WithCancel(t.Context())
		var sent sync.WaitGroup
		send := func(context.Context, adapter.Message) (adapter.Receipt, error) {
			sent.Done()
			return adapter.Receipt{ID: "m"}, nil
		}
		ev := &events{}
		var obs []*Outbox
		var wg sync.WaitGroup
		synctest.Wait()
		before := runtime.NumGoroutine()
		for i := range n {
			ob := New(fmt.Sprintf("bot%d", i), adapter.PlatformWeCom, eventlog.NewMemory(eventlog.Options{}), NewMemoryStatus(), nil, send, ev.emit, Options{Lanes: 4})
			obs = append(obs, ob)
			wg.Add(1)
			go func() { defer wg.Done(); ob.Run(ctx) }()
		}
		synctest.Wait()
		// slack: runtime.NumGoroutine counts goroutines outside the bubble too
		if got := runtime.NumGoroutine() - before; got > n+5 {
			t.Errorf("%d idle outboxes (4 lanes each) hold %d goroutines; want at most %d", n, got, n+5)
		}
		// A message still goes, from every outbox.
		sent.Add(n)
		for _, ob := range obs {
			if _, err := ob.Accept(ctx, adapter.Message{To: adapter.Target{User: "alice"}, Text: "hi"}); err != nil {
				t.Fatal(err)
			}
		}
		sent.Wait()
		synctest.Wait()
		if c := ev.count(EventSent); c != n {
			t.Errorf("%d message.sent events; want %d", c, n)
		}
		if got := runtime.NumGoroutine() - before; got > n+5 {
			t.Errorf("after sending, %d idle outboxes hold %d goroutines; want at most %d", n, got, n+5)
		}
		cancel()
		wg.Wait()
	})
}
