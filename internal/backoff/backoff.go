// Package backoff is chatwire's one retry helper: jittered exponential waits with a cap, a
// Retry-After that wins over the computed wait, and a sleep that never outlasts its ctx.
package backoff

import (
	"context"
	"fmt"
	"math/rand/v2"
	"time"
)

// ErrDeadline is returned by [Sleep] when ctx's deadline comes before the wait would end: the
// caller gives up at once instead of sleeping into a deadline it cannot meet. It matches
// [context.DeadlineExceeded] with errors.Is.
var ErrDeadline = fmt.Errorf("backoff: the wait would pass the context's deadline: %w", context.DeadlineExceeded)

// Backoff computes the waits of one retry loop: Base, 2·Base, 4·Base … up to Max, each
// jittered. The zero value waits 1 s, doubling up to 1 minute, without jitter. A Backoff is
// not safe for concurrent use; each loop keeps its own.
type Backoff struct {
	// Base is the wait before the first retry. Zero means 1 s.
	Base time.Duration
	// Max caps the wait before jitter. Zero means 1 minute; a Max below Base means Base.
	Max time.Duration
	// Jitter is the fraction of each wait drawn at random: a wait d becomes uniform in
	// [d·(1-Jitter), d]. Zero means no jitter; it is clamped to [0, 1].
	Jitter float64

	n int // waits handed out since the last Reset
}

// Next returns the wait before the next retry and advances the sequence.
func (b *Backoff) Next() time.Duration {
	b.n++
	return b.Nth(b.n)
}

// Nth returns the wait before retry n (1 for the first), for loops that count their own
// attempts; it does not touch the sequence Next advances.
func (b *Backoff) Nth(n int) time.Duration {
	base := b.Base
	if base <= 0 {
		base = time.Second
	}
	ceil := b.Max
	if ceil <= 0 {
		ceil = time.Minute
	}
	ceil = max(ceil, base)
	d := base
	for i := 1; i < n && d < ceil; i++ {
		d *= 2
	}
	d = min(d, ceil)
	return jitter(d, b.Jitter)
}

// NextAfter is [Backoff.Next], except that a positive retryAfter (a server's Retry-After)
// wins: it is returned as is, neither jittered nor capped, and the sequence still advances.
func (b *Backoff) NextAfter(retryAfter time.Duration) time.Duration {
	d := b.Next()
	if retryAfter > 0 {
		return retryAfter
	}
	return d
}

// Attempts reports how many waits Next handed out since the last Reset.
func (b *Backoff) Attempts() int { return b.n }

// Reset starts the sequence again at Base (after a success).
func (b *Backoff) Reset() { b.n = 0 }

// Wait sleeps [Backoff.Next] with [Sleep].
func (b *Backoff) Wait(ctx context.Context) error { return Sleep(ctx, b.Next()) }

// Sleep waits d or until ctx is done, whichever is first. It returns nil after a full wait,
// ctx's cause if ctx ended first, and [ErrDeadline] at once, without sleeping, if ctx's
// deadline is less than d away.
func Sleep(ctx context.Context, d time.Duration) error {
	if err := ctx.Err(); err != nil {
		return context.Cause(ctx)
	}
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) < d {
		return ErrDeadline
	}
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}

func jitter(d time.Duration, f float64) time.Duration {
	f = min(max(f, 0), 1)
	span := time.Duration(float64(d) * f)
	if span <= 0 {
		return d
	}
	return d - rand.N(span+1)
}
