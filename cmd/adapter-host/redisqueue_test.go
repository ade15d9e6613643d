package main

import (
	"log/slog"
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
