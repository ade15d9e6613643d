package pacing

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/seed-a64d9e1f/chatwire/adapter"
	"github.com/seed-a64d9e1f/chatwire/internal/redistest"
)

// BenchmarkRedisReserve: one WeCom send's reservation on a real redis-server with the
// default limits (member 30/1m and 1000/1h), each send to its own member as bench/load's
// sends step does, from 8 goroutines; redis-µs/op is the script's own time in Redis (INFO
// commandstats), the part of Redis's CPU a send costs beyond reading and writing.
func BenchmarkRedisReserve(b *testing.B) {
	srv := redistest.Start(b)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	defer rdb.Close()
	s, err := New(NewRedis(rdb, "bench"), "hr", adapter.PlatformWeCom, Options{})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	var n atomic.Int64
	rdb.ConfigResetStat(ctx)
	b.SetParallelism(4) // 8 goroutines on 2 cores
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			u := "u" + strconv.FormatInt(n.Add(1), 10)
			if _, err := s.Reserve(ctx, adapter.Message{To: adapter.Target{User: u}, Text: "x"}, 30*time.Second); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	info, _ := rdb.Info(ctx, "commandstats").Result()
	var usec, calls float64
	for _, line := range strings.Split(info, "\n") {
		if !strings.HasPrefix(line, "cmdstat_eval") {
			continue
		}
		_, fields, _ := strings.Cut(line, ":")
		for _, f := range strings.Split(strings.TrimSpace(fields), ",") {
			k, v, _ := strings.Cut(f, "=")
			x, _ := strconv.ParseFloat(v, 64)
			switch k {
			case "calls":
				calls += x
			case "usec":
				usec += x
			}
		}
	}
	if calls > 0 {
		b.ReportMetric(usec/calls, "redis-µs/call")
		b.ReportMetric(usec/float64(b.N), "redis-µs/op")
	}
}

// TestRedisOneLogPerMember: a WeCom send keeps one list per member in Redis, read by both of
// the member's limits (30/1m, 1000/1h), named as the hour's list was, with the hour's expiry.
func TestRedisOneLogPerMember(t *testing.T) {
	srv := redistest.Start(t)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	defer rdb.Close()
	clock := newManual()
	sc, err := New(NewRedis(rdb, "test"), "hr", adapter.PlatformWeCom, Options{Clock: clock})
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if _, err := sc.Reserve(t.Context(), toUser("ZhangSan"), -1); err != nil {
			t.Fatal(err)
		}
	}
	keys, err := rdb.Keys(t.Context(), "test:pace:*").Result()
	if err != nil {
		t.Fatal(err)
	}
	want := "test:pace:{hr}:log:member:zhangsan|1000/1h2m0s"
	if len(keys) != 1 || keys[0] != want {
		t.Fatalf("keys %v; want only %s", keys, want)
	}
	if n, _ := rdb.LLen(t.Context(), want).Result(); n != 3 {
		t.Errorf("%d entries; want 3", n)
	}
	if ttl, _ := rdb.PTTL(t.Context(), want).Result(); ttl < time.Hour {
		t.Errorf("expires in %v; want the hour's window", ttl)
	}
}

// TestRedisMatchesMemory: on random sends (several members, texts of up to 8 parts, so some
// cost more than a limit allows at all; limits of 7/1h, 3/1m and 5/10m on each member and
// 11/1h on the app, the clock moving by random steps, maxWait 0, 40 or 80 minutes) the Redis
// store reserves every send at the same time as the memory store and refuses the same ones:
// first with many parts and short steps, then with mostly single parts and longer ones (so
// the hour's limit reads entries older than the shorter windows).
func TestRedisMatchesMemory(t *testing.T) {
	srv := redistest.Start(t)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	defer rdb.Close()
	limits := map[string][]Limit{ScopeMember: {{7, time.Hour}, {3, time.Minute}, {5, 10 * time.Minute}}, ScopeApp: {{11, time.Hour}}}
	for run, c := range []struct{ bigEvery, step int }{{1, 90}, {4, 180}} {
		clock := newManual()
		mem := schedulers(t, []Store{NewMemory()}, adapter.PlatformWeCom, clock, limits)[0]
		red := schedulers(t, []Store{NewRedis(rdb, fmt.Sprint("test", run))}, adapter.PlatformWeCom, clock, limits)[0]
		rng := rand.New(rand.NewPCG(1, 2))
		var refused, waited int
		for i := range 400 {
			u := fmt.Sprint("u", rng.IntN(3))
			size := 1 + rng.IntN(2048)
			if rng.IntN(c.bigEvery) == 0 {
				size = 1 + rng.IntN(8*2048)
			}
			msg := adapter.Message{To: adapter.Target{User: u}, Text: strings.Repeat("x", size)}
			maxWait := time.Duration(rng.IntN(3)) * 40 * time.Minute
			rm, errM := mem.Reserve(t.Context(), msg, maxWait)
			rr, errR := red.Reserve(t.Context(), msg, maxWait)
			if !rm.At.Equal(rr.At) || (errM == nil) != (errR == nil) || adapter.RetryAfter(errM) != adapter.RetryAfter(errR) {
				t.Fatalf("run %d, send %d to %s (%d parts): memory At %v err %v; Redis At %v err %v", run, i, u,
					Plan(adapter.PlatformWeCom, msg)[0].Cost, rm.At, errM, rr.At, errR)
			}
			if errM != nil {
				refused++
			} else if rm.Wait > 0 {
				waited++
			}
			clock.Advance(time.Duration(rng.IntN(c.step)) * time.Second)
		}
		if refused < 20 || waited < 20 {
			t.Errorf("run %d: %d sends refused, %d waited: the test does not reach the limits", run, refused, waited)
		}
	}
}
