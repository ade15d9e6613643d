package lease_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/seed-a64d9e1f/chatwire/internal/lease"
	"github.com/seed-a64d9e1f/chatwire/internal/redistest"
)

func TestOneHolderAndTakeover(t *testing.T) {
	rs := redistest.Start(t)
	newClient := func() *redis.Client {
		c := redis.NewClient(&redis.Options{Addr: rs.Addr()})
		t.Cleanup(func() { c.Close() })
		return c
	}
	const ttl = 300 * time.Millisecond
	var holders atomic.Int32
	var maxHolders atomic.Int32
	type proc struct {
		client *redis.Client
		held   context.Context
		rel    func()
	}
	procs := make([]*proc, 3)
	var wg sync.WaitGroup
	got := make(chan int, 3)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	for i := range procs {
		procs[i] = &proc{client: newClient()}
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			l := &lease.Redis{Client: procs[i].client, Key: "lease:bot", TTL: ttl}
			held, rel, err := l.Acquire(ctx)
			if err != nil {
				return
			}
			n := holders.Add(1)
			for {
				m := maxHolders.Load()
				if n <= m || maxHolders.CompareAndSwap(m, n) {
					break
				}
			}
			procs[i].held, procs[i].rel = held, rel
			got <- i
			<-held.Done()
			holders.Add(-1)
		}(i)
	}
	first := <-got
	// The holder "dies": its Redis connection goes away, so it can neither renew nor release.
	procs[first].client.Close()
	second := <-got
	if second == first {
		t.Fatal("the same process acquired twice")
	}
	// A graceful release hands over at once.
	procs[second].rel()
	third := <-got
	if third == first || third == second {
		t.Fatalf("third holder %d", third)
	}
	if m := maxHolders.Load(); m != 1 {
		t.Errorf("%d holders at once; want 1", m)
	}
	procs[third].rel()
	cancel()
	wg.Wait()
}

func TestLostLeaseCancelsHeld(t *testing.T) {
	rs := redistest.Start(t)
	c := redis.NewClient(&redis.Options{Addr: rs.Addr()})
	defer c.Close()
	l := &lease.Redis{Client: c, Key: "lease:x", TTL: 300 * time.Millisecond}
	held, release, err := l.Acquire(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	// Someone else takes the key (an operator, or an expiry during a pause).
	c.Set(t.Context(), "lease:x", "intruder", time.Minute)
	select {
	case <-held.Done():
	case <-time.After(20 * time.Second):
		t.Fatal("held was not cancelled after the key changed owner")
	}
	release()
	if v, _ := c.Get(t.Context(), "lease:x").Result(); v != "intruder" {
		t.Errorf("release deleted another owner's key (value %q)", v)
	}
}
