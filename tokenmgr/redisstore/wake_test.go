package redisstore

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestWakeNeverBlocks wakes a waiter with failures while the waiter takes its wake-ups
// concurrently, as a Refresh waiting for another process does. wakeLocked runs under the
// Store's mutex, so it must never block: an earlier version drained a full channel with a
// blocking receive, which hung forever (holding the mutex) when the waiter emptied the
// channel first. The race needs the waiter to run between two instructions, so this test
// repeats it for a second (hundreds of thousands of rounds here); the old code hung after
// 1,000 to 33,000 rounds.
func TestWakeNeverBlocks(t *testing.T) {
	sl := &slot{waiters: make(map[chan wakeup]struct{})}
	ch := make(chan wakeup, 1)
	sl.waiters[ch] = struct{}{}
	var rounds atomic.Int64
	var mu sync.Mutex // stands for Store.mu
	stop := make(chan struct{})
	var got sync.WaitGroup
	got.Go(func() { // the waiting Refresh
		for {
			select {
			case <-ch:
			case <-stop:
				return
			}
		}
	})
	done := make(chan struct{})
	go func() {
		defer close(done)
		fail := &failure{Code: "40001"}
		for end := time.Now().Add(time.Second); rounds.Add(1)%1024 != 0 || time.Now().Before(end); {
			mu.Lock()
			wakeLocked(sl, wakeup{kind: "w"})
			wakeLocked(sl, wakeup{kind: "f", fail: fail})
			mu.Unlock()
		}
	}()
	select {
	case <-done:
	case <-time.After(11 * time.Second): // a second of rounds, then 10 s to see the last one end
		t.Fatalf("wakeLocked blocked after %d rounds while the waiter was taking its wake-ups", rounds.Load())
	}
	close(stop)
	got.Wait()
	t.Logf("%d rounds", rounds.Load())

	// A failure replaces a pending wake-up; another wake-up does not replace a failure.
	wakeLocked(sl, wakeup{kind: "w"})
	wakeLocked(sl, wakeup{kind: "f", fail: &failure{Code: "x"}})
	wakeLocked(sl, wakeup{kind: "r"})
	if w := <-ch; w.kind != "f" || w.fail.Code != "x" {
		t.Fatalf("pending wake-up = %+v; want the failure", w)
	}
	select {
	case w := <-ch:
		t.Fatalf("second wake-up %+v pending; want one at most", w)
	default:
	}
}
