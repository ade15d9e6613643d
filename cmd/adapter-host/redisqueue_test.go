package main

import (
	"log/slog"
	"slices"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/seed-a64d9e1f/chatwire/internal/redistest"
)

func TestRedisQueue(t *testing.T) {
	rs := redistest.Start(t)
	rdb := redis.NewClient(&redis.Options{Addr: rs.Addr()})
	defer rdb.Close()
	log := slog.New(slog.DiscardHandler)
	a := NewRedisQueue(rdb, "p", "hr", 3, log)
	defer a.Close()
	b := NewRedisQueue(rdb, "p", "hr", 3, log)
	defer b.Close()
	if err := a.Append(events("x", "y")); err != nil {
		t.Fatal(err)
	}
	start, _ := b.Start(0, false)
	got, _, lost := b.Read(start, 10)
	if len(got) != 2 || got[0].seq != 1 || got[1].seq != 2 || lost != 0 {
		t.Fatalf("Read from another queue = %+v, lost %d", got, lost)
	}
	b.Consumed(1)
	if s, _ := a.Start(0, false); s != 2 {
		t.Errorf("Start after another host consumed 1 = %d; want 2", s)
	}
	if err := a.Append(events("z", "w")); err != nil {
		t.Fatalf("Append with a consumed event to trim = %v", err)
	}
	if err := b.Append(events("v")); err != errQueueFull {
		t.Errorf("Append to a full stream = %v; want errQueueFull", err)
	}
	if held, unconsumed := a.Len(); held != 3 || unconsumed != 3 {
		t.Errorf("Len = %d, %d; want 3, 3", held, unconsumed)
	}
}

// TestRedisQueueResumeUnknownID resets the stream (its keys deleted, as FLUSHDB or a new Redis
// would): a client resuming with an id from before gets the oldest unconsumed event, and an
// id the stream did issue still resumes right after it.
func TestRedisQueueResumeUnknownID(t *testing.T) {
	rs := redistest.Start(t)
	rdb := redis.NewClient(&redis.Options{Addr: rs.Addr()})
	defer rdb.Close()
	q := NewRedisQueue(rdb, "p", "hr", 0, slog.New(slog.DiscardHandler))
	defer q.Close()
	for range 5 {
		if err := q.Append(events("old")); err != nil {
			t.Fatal(err)
		}
	}
	q.Consumed(5)
	if s, unknown := q.Start(5, true); s != 6 || unknown {
		t.Errorf("Start(Last-Event-ID 5, issued) = %d, %v; want 6, false", s, unknown)
	}
	if err := rdb.FlushDB(t.Context()).Err(); err != nil {
		t.Fatal(err)
	}
	if err := q.Append(events("x", "y")); err != nil {
		t.Fatal(err)
	}
	s, unknown := q.Start(5, true)
	if s != 1 || !unknown {
		t.Fatalf("Start(Last-Event-ID 5) after the reset = %d, %v; want 1, true", s, unknown)
	}
	if got, _, _ := q.Read(s, 10); len(got) != 2 || got[0].seq != 1 {
		t.Errorf("Read(%d) = %+v; want the two new events", s, got)
	}
	if s, unknown := q.Start(1, true); s != 2 || unknown {
		t.Errorf("Start(Last-Event-ID 1) after the reset = %d, %v; want 2, false", s, unknown)
	}
}

// TestRedisQueueAppendNew calls AppendNew directly: a key twice in one batch queues its
// event once, a full queue sets no dedup key (so the redelivery is not taken for a
// duplicate), and a batch of only duplicates adds nothing and reports the current counter.
func TestRedisQueueAppendNew(t *testing.T) {
	rs := redistest.Start(t)
	rdb := redis.NewClient(&redis.Options{Addr: rs.Addr()})
	defer rdb.Close()
	ctx := t.Context()
	q := NewRedisQueue(rdb, "p", "hr", 3, slog.New(slog.DiscardHandler))
	defer q.Close()

	dup, err := q.AppendNew(ctx, events("a", "a", "n"), []string{"k1", "k1", ""})
	if err != nil || !slices.Equal(dup, []bool{false, true, false}) {
		t.Fatalf("AppendNew(a/k1, a/k1, n/no key) = %v, %v; want [false true false]", dup, err)
	}
	if n, _ := rdb.XLen(ctx, q.stream).Result(); n != 2 {
		t.Errorf("stream holds %d entries after a batch with one duplicate; want 2", n)
	}
	if n, _ := rdb.Exists(ctx, q.dedup+"k1").Result(); n != 1 {
		t.Errorf("dedup key k1 missing after its event was queued")
	}
	if ttl, _ := rdb.PTTL(ctx, q.dedup+"k1").Result(); ttl <= 0 || ttl > dedupTTL {
		t.Errorf("dedup key k1 TTL = %v; want within (0, %v]", ttl, dedupTTL)
	}

	// one slot left: two fresh events do not fit, nothing is consumed to trim
	if _, err := q.AppendNew(ctx, events("b", "c"), []string{"k2", "k3"}); err != errQueueFull {
		t.Fatalf("AppendNew of two to a queue with one slot = %v; want errQueueFull", err)
	}
	if n, _ := rdb.Exists(ctx, q.dedup+"k2", q.dedup+"k3").Result(); n != 0 {
		t.Errorf("%d dedup keys set by an append that failed as full; want 0", n)
	}
	if n, _ := rdb.XLen(ctx, q.stream).Result(); n != 2 {
		t.Errorf("stream holds %d entries after a failed append; want 2", n)
	}

	// only duplicates: nothing added, the counter stays and is what the script answers
	dup, err = q.AppendNew(ctx, events("a"), []string{"k1"})
	if err != nil || !slices.Equal(dup, []bool{true}) {
		t.Fatalf("AppendNew of a duplicate = %v, %v; want [true], nil", dup, err)
	}
	res, err := appendNewScript.Run(ctx, rdb, []string{q.stream, q.counter, q.consumd, q.dedup + "k1"},
		q.max, dedupTTL.Milliseconds(), 1, "message", "{}").Int64Slice()
	if err != nil || !slices.Equal(res, []int64{2, 1}) {
		t.Errorf("append script on a batch of only duplicates = %v, %v; want [2 1] (the counter, one duplicate)", res, err)
	}
	if seq, _ := rdb.Get(ctx, q.counter).Int64(); seq != 2 {
		t.Errorf("counter = %d after duplicates only; want 2", seq)
	}
	if n, _ := rdb.XLen(ctx, q.stream).Result(); n != 2 {
		t.Errorf("stream holds %d entries after duplicates only; want 2", n)
	}
	// and the slot is still free for a fresh event
	if dup, err := q.AppendNew(ctx, events("b"), []string{"k2"}); err != nil || !slices.Equal(dup, []bool{false}) {
		t.Errorf("AppendNew of a fresh event into the last slot = %v, %v", dup, err)
	}
}

// TestRedisQueueAppendNewXADDFails: when an XADD of the script fails (here: an entry with a
// later id already in the stream, as a stream written by something else would have), the
// append returns the error and leaves the counter and the dedup keys as they were, so the
// webhook is answered 503 and its redelivery is not taken for a duplicate.
func TestRedisQueueAppendNewXADDFails(t *testing.T) {
	rs := redistest.Start(t)
	rdb := redis.NewClient(&redis.Options{Addr: rs.Addr()})
	defer rdb.Close()
	ctx := t.Context()
	q := NewRedisQueue(rdb, "p", "hr", 100, slog.New(slog.DiscardHandler))
	defer q.Close()
	if err := rdb.XAdd(ctx, &redis.XAddArgs{Stream: q.stream, ID: "0-5", Values: []string{"k", "message", "d", "{}"}}).Err(); err != nil {
		t.Fatal(err)
	}
	if _, err := q.AppendNew(ctx, events("a", "b"), []string{"k1", "k2"}); err == nil {
		t.Fatal("AppendNew over a stream whose top id is ahead of the counter succeeded; want the XADD error")
	}
	if n, _ := rdb.Exists(ctx, q.dedup+"k1", q.dedup+"k2").Result(); n != 0 {
		t.Errorf("%d dedup keys set by a failed append; want 0", n)
	}
	if n, err := rdb.Get(ctx, q.counter).Result(); err != redis.Nil {
		t.Errorf("counter = %q, %v after a failed append; want unset", n, err)
	}
	if n, _ := rdb.XLen(ctx, q.stream).Result(); n != 1 {
		t.Errorf("stream holds %d entries after a failed append; want only the 1 it had", n)
	}
}
