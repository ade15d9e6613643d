package eventlog

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/seed-a64d9e1f/chatwire/internal/redistest"
)

// inUse is the number of the client's connections taken from its pool.
func inUse(rdb *redis.Client) int {
	s := rdb.PoolStats()
	return int(s.TotalConns) - int(s.IdleConns)
}

// TestRedisManyLogsShareOneWatcher: 200 logs on one client with go-redis's default pool (10
// connections per CPU) watch their streams on one connection, so the pool never runs dry:
// while a reader waits on every log, at most one connection is in use; every reader is woken
// by an append from another process, every log appends and reads back, and no command ever
// waited for a connection in vain (PoolStats.Timeouts). With a watcher per log, 200 blocking
// XREADs held every connection and commands timed out waiting for one.
func TestRedisManyLogsShareOneWatcher(t *testing.T) {
	const n = 200
	srv := redistest.Start(t)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr()}) // the default pool
	defer rdb.Close()
	writer := redis.NewClient(&redis.Options{Addr: srv.Addr()}) // another process
	defer writer.Close()
	ctx := testCtx(t)
	logs := make([]*Redis, n)
	for i := range logs {
		bot := fmt.Sprintf("many%d", i)
		logs[i] = NewRedis(rdb, "chatwire:events:{"+bot+"}", "chatwire:dedup:{"+bot+"}:", Options{})
	}
	defer func() {
		for _, l := range logs {
			l.Close()
		}
		hubs.mu.Lock()
		defer hubs.mu.Unlock()
		if hubs.m[rdb] != nil {
			t.Error("the watcher of a client outlived its last log")
		}
	}()

	type result struct {
		i   int
		es  []Entry
		err error
	}
	got := make(chan result, n)
	for i, l := range logs {
		go func() {
			es, err := l.Read(ctx, ID{}, 10)
			got <- result{i, es, err}
		}()
	}
	// Once every reader waits, only the watcher holds a connection.
	for inUse(rdb) > 1 {
		if ctx.Err() != nil {
			t.Fatalf("%d connections in use while readers wait on %d logs (%+v); want the watcher's alone", inUse(rdb), n, *rdb.PoolStats())
		}
		time.Sleep(10 * time.Millisecond)
	}
	added := make([]string, n)
	for i, l := range logs {
		id, err := writer.XAdd(ctx, &redis.XAddArgs{Stream: l.stream, Values: []string{"k", "message", "c", "x", "d", "{}"}}).Result()
		if err != nil {
			t.Fatal(err)
		}
		added[i] = id
	}
	for range n {
		r := <-got
		if r.err != nil || len(r.es) != 1 || r.es[0].ID.String() != added[r.i] {
			t.Fatalf("reader of log %d got %v, %v; want [%s]", r.i, ids(r.es), r.err, added[r.i])
		}
	}

	// Every log appends and reads back, all at once.
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i, l := range logs {
		wg.Go(func() {
			a, err := l.Append(ctx, rec(i))
			if err != nil {
				errs <- fmt.Errorf("log %d: Append: %w", i, err)
				return
			}
			prev, _ := ParseID(added[i])
			es, err := l.Read(ctx, prev, 10)
			if err != nil || len(es) != 1 || es[0].ID != a[0].ID {
				errs <- fmt.Errorf("log %d: Read after %s = %v, %v; want [%v]", i, prev, ids(es), err, a[0].ID)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if s := rdb.PoolStats(); s.Timeouts != 0 || s.TotalConns > uint32(rdb.Options().PoolSize) {
		t.Errorf("pool %+v: commands waited for a connection in vain", *s)
	}
}

// BenchmarkAppendToReadManyLogs: an append by another process to one of 200 logs on one
// client, until that log's waiting reader has it.
func BenchmarkAppendToReadManyLogs(b *testing.B) {
	const n = 200
	srv := redistest.Start(b)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	defer rdb.Close()
	writer := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	defer writer.Close()
	logs := make([]*Redis, n)
	for i := range logs {
		logs[i] = NewRedis(rdb, fmt.Sprintf("bench:events:{m%d}", i), fmt.Sprintf("bench:dedup:{m%d}:", i), Options{MaxLen: 1 << 30})
		defer logs[i].Close()
	}
	ctx := context.Background()
	pos := make([]ID, n)
	i := 0
	cpu := redisCPU(b, rdb)
	for b.Loop() {
		l := logs[i%n]
		done := make(chan error, 1)
		go func() {
			_, err := l.Read(ctx, pos[i%n], 1)
			done <- err
		}()
		id, err := writer.XAdd(ctx, &redis.XAddArgs{Stream: l.stream, Values: []string{"k", "message", "c", "x", "d", "{}"}}).Result()
		if err != nil {
			b.Fatal(err)
		}
		if err := <-done; err != nil {
			b.Fatal(err)
		}
		pos[i%n], _ = ParseID(id)
		i++
	}
	reportRedisCPU(b, rdb, cpu)
}

// TestRedisClusterWatcher: on Redis Cluster (streams in many hash slots) the shared watcher
// polls the streams slot by slot: readers on every log are woken by another process's
// appends, and a deleted stream is reported.
func TestRedisClusterWatcher(t *testing.T) {
	const n = 20
	srv := redistest.StartArgs(t, "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf")
	ctx := testCtx(t)
	raw := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	defer raw.Close()
	if err := raw.Do(ctx, "CLUSTER", "ADDSLOTSRANGE", 0, 16383).Err(); err != nil {
		t.Fatalf("CLUSTER ADDSLOTSRANGE: %v", err)
	}
	for !strings.Contains(raw.ClusterInfo(ctx).Val(), "cluster_state:ok") {
		if ctx.Err() != nil {
			t.Fatal("cluster not ok")
		}
		time.Sleep(20 * time.Millisecond)
	}
	cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: []string{srv.Addr()}})
	defer cc.Close()
	reports := make(chan Reset, n)
	logs := make([]*Redis, n)
	for i := range logs {
		bot := fmt.Sprintf("c%d", i)
		logs[i] = NewRedis(cc, "chatwire:events:{"+bot+"}", "chatwire:dedup:{"+bot+"}:", Options{OnReset: func(r Reset) { reports <- r }})
		defer logs[i].Close()
		if i > 0 && slot(logs[i].stream) == slot(logs[0].stream) {
			t.Fatalf("streams %d and 0 share a slot; the test wants many slots", i)
		}
		if s := raw.ClusterKeySlot(ctx, logs[i].stream).Val(); int(s) != slot(logs[i].stream) {
			t.Fatalf("slot(%q) = %d, Redis says %d", logs[i].stream, slot(logs[i].stream), s)
		}
	}
	got := make(chan error, n)
	added := make([]string, n)
	for i, l := range logs {
		id, err := raw.XAdd(ctx, &redis.XAddArgs{Stream: l.stream, Values: []string{"k", "message", "c", "x", "d", "{}"}}).Result()
		if err != nil {
			t.Fatal(err)
		}
		added[i] = id
		first, _ := ParseID(id)
		go func() {
			es, err := l.Read(ctx, first, 10)
			if err == nil && len(es) != 1 {
				err = fmt.Errorf("got %v", ids(es))
			}
			got <- err
		}()
	}
	for _, l := range logs {
		if err := raw.XAdd(ctx, &redis.XAddArgs{Stream: l.stream, Values: []string{"k", "message", "c", "x", "d", "{}"}}).Err(); err != nil {
			t.Fatal(err)
		}
	}
	for range n {
		if err := <-got; err != nil {
			t.Fatalf("reader: %v", err)
		}
	}
	// The watcher has seen both entries of log 3 (its reader was woken); delete its stream.
	for {
		logs[3].mu.Lock()
		seen := logs[3].view.held
		logs[3].mu.Unlock()
		if seen == 2 {
			break
		}
		if ctx.Err() != nil {
			t.Fatal("the watcher never looked at the stream")
		}
		time.Sleep(10 * time.Millisecond)
	}
	raw.Del(ctx, logs[3].stream)
	select {
	case r := <-reports:
		if r.Stream != logs[3].stream || r.Held != 2 {
			t.Fatalf("report %+v; want %s with 2 entries held", r, logs[3].stream)
		}
	case <-ctx.Done():
		t.Fatal("the reset was not reported")
	}
}

// xreadStreams is a go-redis hook recording how many streams each XREAD names.
type xreadStreams struct {
	mu sync.Mutex
	n  []int
}

func (x *xreadStreams) DialHook(next redis.DialHook) redis.DialHook { return next }
func (x *xreadStreams) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}
func (x *xreadStreams) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if cmd.Name() == "xread" {
			args := cmd.Args()
			for i, a := range args {
				if s, ok := a.(string); ok && strings.EqualFold(s, "streams") {
					x.mu.Lock()
					x.n = append(x.n, (len(args)-i-1)/2)
					x.mu.Unlock()
					break
				}
			}
		}
		return next(ctx, cmd)
	}
}

func (x *xreadStreams) take() []int {
	x.mu.Lock()
	defer x.mu.Unlock()
	n := x.n
	x.n = nil
	return n
}

// TestRedisHubReadsOnlyStreamsWithReaders: of 200 logs on one client, only one has a
// reader; the hub's XREADs name that stream alone, not all 200 (an XREAD's cost in Redis
// grows with the streams it names, and every event waited for one over all of them). Every
// entry another process appends reaches the reader. It used to name every stream.
func TestRedisHubReadsOnlyStreamsWithReaders(t *testing.T) {
	const n = 200
	srv := redistest.Start(t)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	defer rdb.Close()
	x := &xreadStreams{}
	rdb.AddHook(x)
	writer := redis.NewClient(&redis.Options{Addr: srv.Addr()}) // another process
	defer writer.Close()
	ctx := testCtx(t)
	logs := make([]*Redis, n)
	for i := range logs {
		bot := fmt.Sprintf("only%d", i)
		logs[i] = NewRedis(rdb, "chatwire:events:{"+bot+"}", "chatwire:dedup:{"+bot+"}:", Options{})
		defer logs[i].Close()
	}
	for _, l := range logs {
		waitPositioned(t, l)
	}
	l := logs[7]
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	got := reader(rctx, t, l, ID{})
	x.take()
	for i := range 20 {
		id, err := writer.XAdd(ctx, &redis.XAddArgs{Stream: l.stream, Values: []string{"k", "message", "c", "x", "d", strconv.Itoa(i)}}).Result()
		if err != nil {
			t.Fatal(err)
		}
		if e := <-got; e.ID.String() != id {
			t.Fatalf("reader got %v, want %s", e.ID, id)
		}
	}
	named := x.take()
	if len(named) == 0 {
		t.Fatal("no XREAD while the reader read 20 entries")
	}
	for _, k := range named {
		if k != 1 {
			t.Fatalf("the hub's XREADs named %v streams; want 1 (the one stream with a reader of %d)", named, n)
		}
	}
}
