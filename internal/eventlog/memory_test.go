package eventlog

import (
	"sync"
	"testing"
	"time"
)

func TestMemory(t *testing.T) {
	testLog(t, func(t *testing.T, opts Options) Log {
		l := NewMemory(opts)
		t.Cleanup(func() { l.Close() })
		return l
	})
}

// fakeClock is a settable clock for Options.Now.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

func TestMemoryDedupExpiresAfterTTL(t *testing.T) {
	clock := &fakeClock{now: time.Unix(1_800_000_000, 0)}
	l := NewMemory(Options{Now: clock.Now})
	r := rec(1)
	r.Dedup = "ev"
	first := mustAppend(t, l, r)[0]
	clock.Add(24*time.Hour - time.Second)
	if a := mustAppend(t, l, r)[0]; !a.Duplicate || a.ID != first.ID {
		t.Fatalf("within 24 h: %+v, want a duplicate of %v", a, first.ID)
	}
	clock.Add(time.Second)
	if a := mustAppend(t, l, r)[0]; a.Duplicate {
		t.Fatalf("after 24 h the dedup key is still remembered: %+v", a)
	}
}

func TestMemoryDedupMaxForgetsOldest(t *testing.T) {
	l := NewMemory(Options{DedupMax: 2})
	for _, k := range []string{"a", "b", "c"} {
		r := rec(1)
		r.Dedup = k
		mustAppend(t, l, r)
	}
	for k, wantDup := range map[string]bool{"a": false, "c": true} {
		r := rec(1)
		r.Dedup = k
		if a := mustAppend(t, l, r)[0]; a.Duplicate != wantDup {
			t.Errorf("%s: duplicate %v, want %v", k, a.Duplicate, wantDup)
		}
	}
}

func TestMemoryIDsIncreaseWhenClockGoesBack(t *testing.T) {
	clock := &fakeClock{now: time.Unix(1_800_000_000, 0)}
	l := NewMemory(Options{Now: clock.Now})
	a := mustAppend(t, l, rec(1), rec(2))
	if a[0].ID != (ID{Ms: 1_800_000_000_000}) || a[1].ID != (ID{Ms: 1_800_000_000_000, Seq: 1}) {
		t.Fatalf("ids %v %v, want 1800000000000-0 and -1", a[0].ID, a[1].ID)
	}
	clock.Add(-time.Hour)
	if b := mustAppend(t, l, rec(3))[0]; !a[1].ID.Less(b.ID) {
		t.Fatalf("after the clock went back: %v, not after %v", b.ID, a[1].ID)
	}
}
