package eventlog

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"
)

// opener opens a new, empty log for one test.
type opener func(t *testing.T, opts Options) Log

// testCtx is a test's context, bounded so a broken wait fails instead of hanging.
func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func rec(i int) Record {
	return Record{Kind: "message", Key: fmt.Sprintf("chat%d", i%3), Data: fmt.Appendf(nil, `{"n":%d}`, i)}
}

func mustAppend(t *testing.T, l Log, recs ...Record) []Appended {
	t.Helper()
	out, err := l.Append(testCtx(t), recs...)
	if err != nil {
		t.Fatalf("Append: %v", err)
	}
	if len(out) != len(recs) {
		t.Fatalf("Append returned %d results for %d records", len(out), len(recs))
	}
	return out
}

// readAll reads every entry after after without waiting for more.
func readAll(t *testing.T, l Log, after ID) []Entry {
	t.Helper()
	var out []Entry
	for {
		ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
		es, err := l.Read(ctx, after, 7)
		cancel()
		if errors.Is(err, context.DeadlineExceeded) {
			return out
		}
		if err != nil {
			t.Fatalf("Read: %v", err)
		}
		out = append(out, es...)
		after = es[len(es)-1].ID
	}
}

// testLog is the suite every Log implementation passes.
func testLog(t *testing.T, open opener) {
	t.Run("AppendRead", func(t *testing.T) {
		l := open(t, Options{})
		got := mustAppend(t, l, rec(1), rec(2), rec(3))
		for i, a := range got {
			if a.Duplicate || a.ID.IsZero() {
				t.Fatalf("record %d: %+v, want a new entry", i, a)
			}
			if back, err := ParseID(a.ID.String()); err != nil || back != a.ID {
				t.Fatalf("id %v does not round-trip: %v %v", a.ID, back, err)
			}
			if i > 0 && !got[i-1].ID.Less(a.ID) {
				t.Fatalf("ids not increasing: %v then %v", got[i-1].ID, a.ID)
			}
		}
		es, err := l.Read(testCtx(t), ID{}, 10)
		if err != nil {
			t.Fatal(err)
		}
		if len(es) != 3 {
			t.Fatalf("Read got %d entries, want 3", len(es))
		}
		for i, e := range es {
			want := rec(i + 1)
			if e.ID != got[i].ID || e.Kind != want.Kind || e.Key != want.Key || string(e.Data) != string(want.Data) {
				t.Errorf("entry %d = %+v, want id %v and %+v", i, e, got[i].ID, want)
			}
		}
		es, err = l.Read(testCtx(t), got[0].ID, 1)
		if err != nil || len(es) != 1 || es[0].ID != got[1].ID {
			t.Fatalf("Read after the first, n=1: %v %v, want [%v]", ids(es), err, got[1].ID)
		}
		if n, err := l.Len(testCtx(t)); err != nil || n != (Length{Held: 3, Unconsumed: 3}) {
			t.Fatalf("Len = %+v, %v; want 3 held, 3 unconsumed", n, err)
		}
	})

	t.Run("Dedup", func(t *testing.T) {
		l := open(t, Options{})
		a := rec(1)
		a.Dedup = "ev-a"
		first := mustAppend(t, l, a)[0]
		again := mustAppend(t, l, a)[0]
		if !again.Duplicate || again.ID != first.ID {
			t.Fatalf("second append of ev-a = %+v, want a duplicate of %v", again, first.ID)
		}
		b1, b2 := rec(2), rec(3)
		b1.Dedup, b2.Dedup = "ev-b", "ev-b"
		plain := rec(4)
		got := mustAppend(t, l, b1, plain, b2, plain, a)
		if got[0].Duplicate || got[1].Duplicate || got[3].Duplicate {
			t.Fatalf("new records taken for duplicates: %+v", got)
		}
		if !got[2].Duplicate || got[2].ID != got[0].ID {
			t.Fatalf("ev-b twice in one call: %+v, want the second a duplicate of %v", got[2], got[0].ID)
		}
		if !got[4].Duplicate || got[4].ID != first.ID {
			t.Fatalf("ev-a in a batch: %+v, want a duplicate of %v", got[4], first.ID)
		}
		if es := readAll(t, l, ID{}); len(es) != 4 {
			t.Fatalf("log holds %d entries, want 4 (ev-a, ev-b, two without dedup)", len(es))
		}
	})

	t.Run("ReadWaits", func(t *testing.T) {
		l := open(t, Options{})
		first := mustAppend(t, l, rec(1))[0].ID
		got := make(chan []Entry, 1)
		errc := make(chan error, 1)
		go func() {
			es, err := l.Read(testCtx(t), first, 10)
			errc <- err
			got <- es
		}()
		second := mustAppend(t, l, rec(2))[0].ID
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
		if es := <-got; len(es) != 1 || es[0].ID != second {
			t.Fatalf("waiting Read got %v, want [%v]", ids(es), second)
		}
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		if _, err := l.Read(ctx, second, 10); !errors.Is(err, context.Canceled) {
			t.Fatalf("Read with a cancelled ctx and nothing to read: %v, want context.Canceled", err)
		}
	})

	t.Run("PositionBeyondLastReadsFromFirst", func(t *testing.T) {
		l := open(t, Options{})
		got := mustAppend(t, l, rec(1), rec(2))
		future := ID{Ms: got[1].ID.Ms + 3600_000}
		es, err := l.Read(testCtx(t), future, 10)
		if err != nil || !slices.Equal(ids(es), []ID{got[0].ID, got[1].ID}) {
			t.Fatalf("Read beyond the last id: %v %v, want both entries", ids(es), err)
		}
	})

	t.Run("FullAndConsumed", func(t *testing.T) {
		l := open(t, Options{MaxLen: 3})
		ctx := testCtx(t)
		got := mustAppend(t, l, rec(1), rec(2), rec(3))
		r4 := rec(4)
		r4.Dedup = "ev-4"
		if _, err := l.Append(ctx, r4); !errors.Is(err, ErrFull) {
			t.Fatalf("append to a full log: %v, want ErrFull", err)
		}
		if n, _ := l.Len(ctx); n.Held != 3 {
			t.Fatalf("full log holds %d after a refused append, want 3", n.Held)
		}
		if err := l.Consumed(ctx, got[1].ID); err != nil {
			t.Fatal(err)
		}
		if err := l.Consumed(ctx, got[0].ID); err != nil { // lower: no change
			t.Fatal(err)
		}
		if c, err := l.ConsumedID(ctx); err != nil || c != got[1].ID {
			t.Fatalf("ConsumedID = %v, %v; want %v", c, err, got[1].ID)
		}
		if n, _ := l.Len(ctx); n != (Length{Held: 3, Unconsumed: 1}) {
			t.Fatalf("Len = %+v, want 3 held, 1 unconsumed", n)
		}
		a4 := mustAppend(t, l, r4)[0] // ev-4 was not remembered by the refused append
		if a4.Duplicate {
			t.Fatal("a record refused with ErrFull was remembered as appended")
		}
		es := readAll(t, l, ID{})
		if want := []ID{got[1].ID, got[2].ID, a4.ID}; !slices.Equal(ids(es), want) {
			t.Fatalf("after making room: %v, want %v (only the oldest consumed entry dropped)", ids(es), want)
		}
		if _, err := l.Append(ctx, rec(5), rec(6)); !errors.Is(err, ErrFull) {
			t.Fatalf("two more with one consumed entry: %v, want ErrFull (all or none)", err)
		}
		if err := l.Consumed(ctx, ID{Ms: a4.ID.Ms + 3600_000}); err != nil {
			t.Fatal(err)
		}
		if c, _ := l.ConsumedID(ctx); c != a4.ID {
			t.Fatalf("consumed mark past the last entry = %v, want it held at %v", c, a4.ID)
		}
		mustAppend(t, l, rec(5), rec(6), rec(7))
		if n, _ := l.Len(ctx); n != (Length{Held: 3, Unconsumed: 3}) {
			t.Fatalf("Len = %+v, want 3 held, 3 unconsumed", n)
		}
	})

	t.Run("GroupEachEntryToOneConsumer", func(t *testing.T) {
		l := open(t, Options{AckTimeout: time.Hour})
		ctx := testCtx(t)
		if err := l.CreateGroup(ctx, "workers", ID{}); err != nil {
			t.Fatal(err)
		}
		var all []ID
		for i := range 6 {
			all = append(all, mustAppend(t, l, rec(i))[0].ID)
		}
		seen := map[ID]string{}
		for _, c := range []string{"a", "b", "a", "b"} {
			es, err := l.ReadGroup(ctx, "workers", c, 2)
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range es {
				if prev, dup := seen[e.ID]; dup {
					t.Fatalf("entry %v went to %s and %s", e.ID, prev, c)
				}
				if e.Redelivered {
					t.Fatalf("first delivery of %v marked Redelivered", e.ID)
				}
				seen[e.ID] = c
			}
			if len(seen) == len(all) {
				break
			}
		}
		if len(seen) != len(all) {
			t.Fatalf("group handed out %d of %d entries", len(seen), len(all))
		}
		p, err := l.Pending(ctx, "workers")
		if err != nil || p.Count != 6 || p.Consumers["a"]+p.Consumers["b"] != 6 || p.Oldest != all[0] {
			t.Fatalf("Pending = %+v, %v; want 6 from %v", p, err, all[0])
		}
		var mine []ID
		for id, c := range seen {
			if c == "a" {
				mine = append(mine, id)
			}
		}
		if n, err := l.Ack(ctx, "workers", append(mine, ID{Ms: 1})...); err != nil || n != len(mine) {
			t.Fatalf("Ack = %d, %v; want %d", n, err, len(mine))
		}
		if n, _ := l.Ack(ctx, "workers", mine...); n != 0 {
			t.Fatalf("second Ack = %d, want 0", n)
		}
		if p, _ := l.Pending(ctx, "workers"); p.Count != int64(6-len(mine)) || p.Consumers["a"] != 0 {
			t.Fatalf("Pending after a's acks = %+v", p)
		}
	})

	t.Run("GroupStartAndNames", func(t *testing.T) {
		l := open(t, Options{})
		ctx := testCtx(t)
		got := mustAppend(t, l, rec(1), rec(2), rec(3))
		if err := l.CreateGroup(ctx, "late", got[1].ID); err != nil {
			t.Fatal(err)
		}
		if err := l.CreateGroup(ctx, "late", ID{}); err != nil { // exists: no change
			t.Fatal(err)
		}
		es, err := l.ReadGroup(ctx, "late", "c1", 10)
		if err != nil || !slices.Equal(ids(es), []ID{got[2].ID}) {
			t.Fatalf("group from the second entry got %v, %v; want [%v]", ids(es), err, got[2].ID)
		}
		if _, err := l.ReadGroup(ctx, "never", "c1", 1); !errors.Is(err, ErrNoGroup) {
			t.Fatalf("ReadGroup of a group never created: %v, want ErrNoGroup", err)
		}
		for _, bad := range []string{"", "_consumed", "a b", "x\n"} {
			if err := l.CreateGroup(ctx, bad, ID{}); err == nil {
				t.Errorf("CreateGroup(%q) accepted", bad)
			}
		}
	})

	t.Run("ClaimStale", func(t *testing.T) {
		l := open(t, Options{AckTimeout: time.Hour})
		ctx := testCtx(t)
		l.CreateGroup(ctx, "g", ID{})
		id := mustAppend(t, l, rec(1))[0].ID
		if es, err := l.ReadGroup(ctx, "g", "a", 1); err != nil || len(es) != 1 {
			t.Fatalf("ReadGroup: %v %v", ids(es), err)
		}
		if es, err := l.Claim(ctx, "g", "b", time.Hour, 10); err != nil || len(es) != 0 {
			t.Fatalf("Claim of an entry idle less than minIdle: %v %v, want none", ids(es), err)
		}
		es, err := l.Claim(ctx, "g", "b", 0, 10)
		if err != nil || len(es) != 1 || es[0].ID != id || !es[0].Redelivered {
			t.Fatalf("Claim: %+v %v, want %v redelivered", es, err, id)
		}
		if p, _ := l.Pending(ctx, "g"); p.Consumers["b"] != 1 || p.Consumers["a"] != 0 {
			t.Fatalf("Pending after the claim = %+v, want the entry with b", p)
		}
	})

	t.Run("UnackedGoesToAnotherConsumer", func(t *testing.T) {
		l := open(t, Options{AckTimeout: 50 * time.Millisecond})
		ctx := testCtx(t)
		l.CreateGroup(ctx, "g", ID{})
		got := mustAppend(t, l, rec(1), rec(2))
		es, err := l.ReadGroup(ctx, "g", "dies", 1)
		if err != nil || len(es) != 1 || es[0].ID != got[0].ID {
			t.Fatalf("first consumer got %v %v", ids(es), err)
		}
		es, err = l.ReadGroup(ctx, "g", "lives", 10)
		if err != nil || !slices.Equal(ids(es), []ID{got[1].ID}) {
			t.Fatalf("second consumer got %v %v, want the entry nobody had", ids(es), err)
		}
		l.Ack(ctx, "g", got[1].ID)
		// The first consumer never acknowledges: ReadGroup waits until its entry is idle
		// for AckTimeout and hands it over.
		es, err = l.ReadGroup(ctx, "g", "lives", 10)
		if err != nil || len(es) != 1 || es[0].ID != got[0].ID || !es[0].Redelivered {
			t.Fatalf("after the ack timeout: %+v %v, want %v redelivered", es, err, got[0].ID)
		}
	})

	t.Run("ConcurrentAppendsAndGroupReaders", func(t *testing.T) {
		l := open(t, Options{AckTimeout: time.Hour})
		ctx := testCtx(t)
		l.CreateGroup(ctx, "g", ID{})
		const writers, each = 4, 50
		var wg sync.WaitGroup
		for w := range writers {
			wg.Go(func() {
				for i := range each {
					r := rec(i)
					r.Dedup = fmt.Sprintf("w%d-%d", w, i)
					if _, err := l.Append(ctx, r, r); err != nil { // each twice: one entry
						t.Error(err)
						return
					}
				}
			})
		}
		var mu sync.Mutex
		got := map[ID]string{}
		var rg sync.WaitGroup
		for _, c := range []string{"c1", "c2", "c3"} {
			rg.Go(func() {
				for {
					mu.Lock()
					done := len(got) >= writers*each
					mu.Unlock()
					if done {
						return
					}
					rctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
					es, err := l.ReadGroup(rctx, "g", c, 16)
					cancel()
					if err != nil && !errors.Is(err, context.DeadlineExceeded) {
						t.Error(err)
						return
					}
					mu.Lock()
					for _, e := range es {
						if prev, dup := got[e.ID]; dup {
							t.Errorf("entry %v went to %s and %s", e.ID, prev, c)
						}
						got[e.ID] = c
					}
					mu.Unlock()
					if len(es) > 0 {
						l.Ack(ctx, "g", ids(es)...)
					}
				}
			})
		}
		wg.Wait()
		rg.Wait()
		es := readAll(t, l, ID{})
		if len(es) != writers*each || len(got) != writers*each {
			t.Fatalf("log holds %d, group handed out %d; want %d each", len(es), len(got), writers*each)
		}
		for i := 1; i < len(es); i++ {
			if !es[i-1].ID.Less(es[i].ID) {
				t.Fatalf("ids not increasing at %d: %v, %v", i, es[i-1].ID, es[i].ID)
			}
		}
	})

	t.Run("CloseEndsReads", func(t *testing.T) {
		l := open(t, Options{})
		errc := make(chan error, 1)
		go func() {
			_, err := l.Read(testCtx(t), ID{}, 1)
			errc <- err
		}()
		l.Close()
		if err := <-errc; !errors.Is(err, ErrClosed) {
			t.Fatalf("Read on a closed log: %v, want ErrClosed", err)
		}
		if _, err := l.Append(testCtx(t), rec(1)); !errors.Is(err, ErrClosed) {
			t.Fatalf("Append on a closed log: %v, want ErrClosed", err)
		}
	})
}
