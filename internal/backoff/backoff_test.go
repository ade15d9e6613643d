package backoff

import (
	"context"
	"errors"
	"testing"
	"testing/synctest"
	"time"
)

func TestNext(t *testing.T) {
	tests := []struct {
		name string
		b    Backoff
		want []time.Duration
	}{
		{"zero value", Backoff{}, []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 16 * time.Second, 32 * time.Second, time.Minute, time.Minute}},
		{"capped", Backoff{Base: 50 * time.Millisecond, Max: time.Second}, []time.Duration{50 * time.Millisecond, 100 * time.Millisecond, 200 * time.Millisecond, 400 * time.Millisecond, 800 * time.Millisecond, time.Second, time.Second}},
		{"max below base", Backoff{Base: time.Second, Max: time.Millisecond}, []time.Duration{time.Second, time.Second}},
		{"huge base does not overflow", Backoff{Base: time.Duration(1) << 61, Max: time.Duration(1) << 62}, []time.Duration{1 << 61, 1 << 62, 1 << 62, 1 << 62}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for i, want := range tc.want {
				if got := tc.b.Next(); got != want {
					t.Fatalf("Next() #%d = %v; want %v", i+1, got, want)
				}
			}
			for range 100 {
				tc.b.Next()
			}
			if got, want := tc.b.Next(), tc.want[len(tc.want)-1]; got != want {
				t.Errorf("Next() after many = %v; want %v", got, want)
			}
			if got := tc.b.Nth(2); len(tc.want) > 1 && got != tc.want[1] {
				t.Errorf("Nth(2) = %v; want %v", got, tc.want[1])
			}
			tc.b.Reset()
			if got := tc.b.Next(); got != tc.want[0] {
				t.Errorf("Next() after Reset = %v; want %v", got, tc.want[0])
			}
		})
	}
}

func TestJitterRange(t *testing.T) {
	b := Backoff{Base: time.Second, Max: time.Second, Jitter: 0.5}
	seen := map[bool]bool{}
	for range 1000 {
		d := b.Next()
		if d < 500*time.Millisecond || d > time.Second {
			t.Fatalf("Next() = %v; want in [500ms, 1s]", d)
		}
		seen[d < 750*time.Millisecond] = true
	}
	if !seen[true] || !seen[false] {
		t.Errorf("1000 jittered waits all fell in one half of [500ms, 1s]: %v", seen)
	}
}

func TestNextAfterRetryAfterWins(t *testing.T) {
	b := Backoff{Base: time.Second, Max: 2 * time.Second}
	if got := b.NextAfter(10 * time.Second); got != 10*time.Second {
		t.Errorf("NextAfter(10s) = %v; want 10s (Retry-After wins, uncapped)", got)
	}
	if got := b.NextAfter(0); got != 2*time.Second {
		t.Errorf("NextAfter(0) = %v; want 2s (the sequence advanced)", got)
	}
	if got := b.Attempts(); got != 2 {
		t.Errorf("Attempts() = %d; want 2", got)
	}
}

func TestSleep(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		start := time.Now()
		if err := Sleep(t.Context(), time.Minute); err != nil {
			t.Fatalf("Sleep(1m) = %v; want nil", err)
		}
		if got := time.Since(start); got != time.Minute {
			t.Errorf("Sleep(1m) slept %v", got)
		}
	})
	t.Run("cancelled during the wait", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			cause := errors.New("shutting down")
			ctx, cancel := context.WithCancelCause(t.Context())
			start := time.Now()
			go func() { time.Sleep(time.Second); cancel(cause) }()
			if err := Sleep(ctx, time.Hour); !errors.Is(err, cause) {
				t.Errorf("Sleep = %v; want the ctx's cause", err)
			}
			if got := time.Since(start); got != time.Second {
				t.Errorf("Sleep returned after %v; want 1s (when ctx ended)", got)
			}
		})
	})
	t.Run("already cancelled", func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		if err := Sleep(ctx, 0); !errors.Is(err, context.Canceled) {
			t.Errorf("Sleep(cancelled, 0) = %v; want context.Canceled", err)
		}
	})
	t.Run("deadline too near", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), time.Second)
			defer cancel()
			start := time.Now()
			err := Sleep(ctx, 2*time.Second)
			if !errors.Is(err, ErrDeadline) || !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("Sleep(2s) with 1s left = %v; want ErrDeadline, a context.DeadlineExceeded", err)
			}
			if time.Since(start) != 0 {
				t.Errorf("Sleep slept %v before giving up; want 0", time.Since(start))
			}
		})
	})
}

func TestWait(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := Backoff{Base: time.Second, Max: 4 * time.Second}
		start := time.Now()
		for range 4 {
			if err := b.Wait(t.Context()); err != nil {
				t.Fatal(err)
			}
		}
		if got, want := time.Since(start), 11*time.Second; got != want {
			t.Errorf("4 waits took %v; want %v (1+2+4+4)", got, want)
		}
	})
}
