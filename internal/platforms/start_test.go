package platforms

import (
	"context"
	"errors"
	"log/slog"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

type fakeStarter struct {
	done     chan struct{}
	attempts atomic.Int32
	block    bool // Start waits for its ctx instead of failing at once
}

func (f *fakeStarter) Start(ctx context.Context) error {
	f.attempts.Add(1)
	if f.block {
		<-ctx.Done()
		return ctx.Err()
	}
	return errors.New("graph: subscription validation failed")
}

func (f *fakeStarter) Done() <-chan struct{} { return f.done }

// TestStartEndsWhenClosed: closing the adapter ends start's retry loop at once, during a
// backoff wait or during an attempt, never after the wait (up to a minute) runs out.
func TestStartEndsWhenClosed(t *testing.T) {
	for _, block := range []bool{false, true} {
		name := map[bool]string{false: "during a wait", true: "during an attempt"}[block]
		t.Run(name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				o := New(nil, nil)
				f := &fakeStarter{done: make(chan struct{}), block: block}
				ended := make(chan struct{})
				start := time.Now()
				go func() { o.start(f, slog.New(slog.DiscardHandler)); close(ended) }()
				time.Sleep(10 * time.Minute) // backoff reaches its 1-minute cap
				synctest.Wait()
				close(f.done)
				<-ended
				if got := time.Since(start); got != 10*time.Minute {
					t.Errorf("start ended %v after it began; want 10m (when the adapter closed)", got)
				}
				if !block && f.attempts.Load() < 5 {
					t.Errorf("Start attempts in 10m = %d; want several (500ms doubling to 1m)", f.attempts.Load())
				}
			})
		})
	}
}
