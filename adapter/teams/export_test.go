package teams

import (
	"context"
	"time"

	"github.com/seed-a64d9e1f/chatwire/adapter"
)

// funcClock adapts two functions to clock.
type funcClock struct {
	now   func() time.Time
	sleep func(ctx context.Context, d time.Duration) error
}

func (c funcClock) Now() time.Time                                   { return c.now() }
func (c funcClock) Sleep(ctx context.Context, d time.Duration) error { return c.sleep(ctx, d) }

// SetStreamClock makes a's streams read and wait on a virtual clock.
func SetStreamClock(a *Adapter, now func() time.Time, sleep func(ctx context.Context, d time.Duration) error) {
	a.clock = funcClock{now, sleep}
}

// StreamWaits reports how many times a Teams stream's sender has waited for more text: it
// grows once the sender has dealt with everything appended so far.
func StreamWaits(s adapter.Stream) int64 { return s.(*stream).waits.Load() }
