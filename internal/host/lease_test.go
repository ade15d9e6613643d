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
	ls := newLeaseSet(rdb, ttl, slog.New(slog.DiscardHandler))
	rdb.Ping(ctx) // the pool's first connection, before counting
	runtime.GC()
	before := runtime.NumGoroutine()
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ls.asLeader(ctx, fmt.Sprintf("lease:%d", i), func(lctx context.Context) {
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

// countHook counts the round trips a go-redis client makes: single commands by name, and
// pipelines with the commands they carried.
type countHook struct {
	mu        sync.Mutex
	single    map[string]int
	pipelines []int // commands per pipeline of scripts (not the connection's handshake)
}

func (h *countHook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *countHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		h.mu.Lock()
		h.single[cmd.Name()]++
		h.mu.Unlock()
		return next(ctx, cmd)
	}
}

func (h *countHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if len(cmds) > 0 && (cmds[0].Name() == "evalsha" || cmds[0].Name() == "eval") {
			h.mu.Lock()
			h.pipelines = append(h.pipelines, len(cmds))
			h.mu.Unlock()
		}
		return next(ctx, cmds)
	}
}

// TestLeasesRenewInOnePipeline: a host's held leases are renewed together, one pipeline per
// renewal for all of them, not a round trip per lease: 1,000 bots made 300 a second (issue
// 18). A lease another host took meanwhile is lost alone, and a script Redis forgot (SCRIPT
// FLUSH, a restart) is loaded again without losing any lease.
func TestLeasesRenewInOnePipeline(t *testing.T) {
	rs := redistest.Start(t)
	rdb := redis.NewClient(&redis.Options{Addr: rs.Addr()})
	t.Cleanup(func() { rdb.Close() })
	hook := &countHook{single: map[string]int{}}
	rdb.AddHook(hook)
	const n, ttl = 40, 1500 * time.Millisecond
	ls := newLeaseSet(rdb, ttl, slog.New(slog.DiscardHandler))
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	started, ended := make(chan int, n), make(chan int, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ls.asLeader(ctx, fmt.Sprintf("lease:%d", i), func(lctx context.Context) {
				started <- i
				<-lctx.Done()
				if ctx.Err() == nil {
					ended <- i
				}
			})
		}()
	}
	for range n {
		<-started
	}
	rdb.ScriptFlush(ctx) // the next renewal must load the script again
	time.Sleep(2 * ttl)  // six renewals at ttl/3; without them every lease would have expired
	for i := range n {
		if pttl := rdb.PTTL(ctx, fmt.Sprintf("lease:%d", i)).Val(); pttl <= 0 {
			t.Fatalf("lease:%d has ttl %v after 2 ttl; want it renewed", i, pttl)
		}
	}
	select {
	case i := <-ended:
		t.Fatalf("lease %d ended although renewed", i)
	default:
	}
	hook.mu.Lock()
	single, pipelines := hook.single["evalsha"]+hook.single["eval"], append([]int(nil), hook.pipelines...)
	hook.mu.Unlock()
	if single != 0 {
		t.Errorf("%d lease scripts went as single commands; want all renewals in pipelines", single)
	}
	full := 0
	for _, c := range pipelines {
		if c == n {
			full++
		}
	}
	if full < 2 || len(pipelines) > 8 {
		t.Errorf("renewals went in pipelines of %v commands; want about 6 of %d in 2 ttl", pipelines, n)
	}
	rdb.Set(ctx, "lease:3", "another host", ttl) // taken over: this lease alone is lost
	select {
	case i := <-ended:
		if i != 3 {
			t.Errorf("lease %d ended; want 3", i)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the holder of a lease another host took was not stopped")
	}
	time.Sleep(ttl)
	select {
	case i := <-ended:
		t.Errorf("lease %d ended; only 3 was taken", i)
	default:
	}
	cancel()
	wg.Wait()
}
