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
	got, _, lost := b.Read(b.Start(0, false), 10)
	if len(got) != 2 || got[0].seq != 1 || got[1].seq != 2 || lost != 0 {
		t.Fatalf("Read from another queue = %+v, lost %d", got, lost)
	}
	b.Consumed(1)
	if s := a.Start(0, false); s != 2 {
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
