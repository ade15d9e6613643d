package redisstore_test

import (
	"context"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/seed-a64d9e1f/chatwire/tokenmgr"
	"github.com/seed-a64d9e1f/chatwire/tokenmgr/redisstore"
)

// countHook counts the commands a client sends (pub/sub traffic is not counted).
type countHook struct{ n atomic.Int64 }

func (h *countHook) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h *countHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		h.n.Add(1)
		return next(ctx, cmd)
	}
}
func (h *countHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		h.n.Add(int64(len(cmds)))
		return next(ctx, cmds)
	}
}

// freshManager returns a Manager on a Redis store holding a fresh one-hour token, and the
// counter of commands its store sends.
func freshManager(tb testing.TB, addr string) (*tokenmgr.Manager, *countHook) {
	tb.Helper()
	c := redis.NewClient(&redis.Options{Addr: addr})
	h := new(countHook)
	c.AddHook(h)
	st, err := redisstore.New(c, redisstore.Options{})
	if err != nil {
		tb.Fatal(err)
	}
	src := &countingSource{life: time.Hour}
	m := tokenmgr.New(key, src, tokenmgr.Options{Store: st})
	tb.Cleanup(func() {
		_ = m.Close()
		_ = st.Close()
		_ = c.Close()
	})
	if _, err := m.Token(context.Background()); err != nil {
		tb.Fatal(err)
	}
	return m, h
}

func serverCommands(tb testing.TB, addr string) int64 {
	c := redis.NewClient(&redis.Options{Addr: addr})
	defer c.Close()
	info := c.Info(context.Background(), "stats").Val()
	for _, l := range strings.Split(info, "\r\n") {
		if v, ok := strings.CutPrefix(l, "total_commands_processed:"); ok {
			n, _ := strconv.ParseInt(v, 10, 64)
			return n
		}
	}
	tb.Fatalf("no total_commands_processed in INFO")
	return 0
}

// TestHotPathNoRedisIO proves T1 with the Redis store: getting a fresh token sends no command
// to Redis, counted by the client and by the server.
func TestHotPathNoRedisIO(t *testing.T) {
	srv := startRedis(t)
	m, h := freshManager(t, srv.Addr())
	before, server := h.n.Load(), serverCommands(t, srv.Addr())
	ctx := context.Background()
	for range 100_000 {
		if _, err := m.Token(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if n := h.n.Load() - before; n != 0 {
		t.Errorf("100000 fresh Token calls sent %d commands to Redis; want 0", n)
	}
	// The INFO calls themselves are the only commands the server may count (plus at most one
	// health ping of the subscription).
	if n := serverCommands(t, srv.Addr()) - server; n > 2 {
		t.Errorf("server processed %d commands during 100000 fresh Token calls; want only the INFO probe", n)
	}
	if allocs := testing.AllocsPerRun(1000, func() { _, _ = m.Token(ctx) }); allocs != 0 {
		t.Errorf("fresh Token allocates %v times; want 0", allocs)
	}
}

// sink keeps benchmark results alive, as a caller that uses its token would.
var sink atomic.Int64

// BenchmarkManagerTokenRedisStore measures a fresh-token get through a Manager on the Redis
// store (target ≤ 5 ns/op, 0 allocs); redis-cmds/op shows that no Redis I/O happens.

func BenchmarkManagerTokenRedisStore(b *testing.B) {
	srv := startRedis(b)
	m, h := freshManager(b, srv.Addr())
	ctx := context.Background()
	b.Run("serial", func(b *testing.B) {
		b.ReportAllocs()
		before := h.n.Load()
		used := 0
		for b.Loop() {
			t, err := m.Token(ctx)
			if err != nil {
				b.Fatal(err)
			}
			used += len(t.Value) // use the token, as a caller does (tokenmgr's BenchmarkFreshToken too)
		}
		sink.Add(int64(used))
		b.ReportMetric(float64(h.n.Load()-before)/float64(b.N), "redis-cmds/op")
	})
	b.Run("AccessToken", func(b *testing.B) {
		b.ReportAllocs()
		before := h.n.Load()
		used := 0
		for b.Loop() {
			v, err := m.AccessToken(ctx)
			if err != nil {
				b.Fatal(err)
			}
			used += len(v)
		}
		sink.Add(int64(used))
		b.ReportMetric(float64(h.n.Load()-before)/float64(b.N), "redis-cmds/op")
	})
	b.Run("parallel", func(b *testing.B) {
		b.ReportAllocs()
		before := h.n.Load()
		b.RunParallel(func(pb *testing.PB) {
			used := 0
			for pb.Next() {
				t, err := m.Token(ctx)
				if err != nil {
					b.Fatal(err)
				}
				used += len(t.Value)
			}
			sink.Add(int64(used))
		})
		b.ReportMetric(float64(h.n.Load()-before)/float64(b.N), "redis-cmds/op")
	})
}
