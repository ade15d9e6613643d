package host

import (
	"context"
	"fmt"
	"log/slog"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/seed-a64d9e1f/chatwire/internal/redistest"
)

// A held lease is renewed by a timer, not a goroutine per lease: a host holds one per
// configured bot (its outbox) and idle goroutines cost their stacks (issue 18, memory per
// bot). Renewals still keep the lease past its ttl, and a lost lease still ends fn.
func TestLeasesRenewWithoutAGoroutineEach(t *testing.T) {
	rs := redistest.Start(t)
	rdb := redis.NewClient(&redis.Options{Addr: rs.Addr()})
	t.Cleanup(func() { rdb.Close() })
	const n, ttl = 50, 3 * time.Second
	ctx, cancel := context.WithCancel(t.Context())
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		calls   = map[int]int{}
		started = make(chan int, 2*n)
		ended   = make(chan int, 2*n)
	)
	rdb.Ping(ctx) // the pool's first connection, before counting
	runtime.GC()
	before := runtime.NumGoroutine()
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			asLeader(ctx, rdb, fmt.Sprintf("lease:%d", i), ttl, slog.New(slog.DiscardHandler), func(lctx context.Context) {
				mu.Lock()
				calls[i]++
				mu.Unlock()
				started <- i
				<-lctx.Done()
				ended <- i
			})
		}()
	}
	for range n {
		<-started
	}
	// n goroutines run asLeader (each in its fn); a goroutine per lease renewing would be n more.
	if got := runtime.NumGoroutine() - before; got > n+10 {
		t.Errorf("%d held leases hold %d goroutines; want at most %d", n, got, n+10)
	}
	time.Sleep(ttl + ttl/2) // past the ttl: only renewals keep the leases
	select {
	case i := <-ended:
		t.Fatalf("lease %d ended although renewed", i)
	default:
	}
	for i := range n {
		if pttl := rdb.PTTL(ctx, fmt.Sprintf("lease:%d", i)).Val(); pttl <= 0 {
			t.Fatalf("lease:%d has ttl %v after %v; want it renewed", i, pttl, ttl+ttl/2)
		}
	}
	// A lease lost (the key deleted) ends that fn.
	rdb.Del(ctx, "lease:7")
	select {
	case i := <-ended:
		if i != 7 {
			t.Errorf("lease %d ended; want 7", i)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("fn did not end after its lease was deleted")
	}
	cancel()
	wg.Wait()
}
