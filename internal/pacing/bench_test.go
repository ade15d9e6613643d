package pacing

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/seed-a64d9e1f/chatwire/adapter"
	"github.com/seed-a64d9e1f/chatwire/internal/redistest"
)

// BenchmarkRedisReserve: one WeCom send's reservation on a real redis-server with the
// default limits (member 30/1m and 1000/1h), each send to its own member as bench/load's
// sends step does, from 1 and from 8 goroutines: CPU per reservation in this process and in
// Redis, and redis-µs/op, the script's own time in Redis (INFO commandstats).
func BenchmarkRedisReserve(b *testing.B) {
	for _, callers := range []int{1, 8} {
		b.Run(fmt.Sprintf("callers=%d", callers), func(b *testing.B) { benchReserve(b, callers) })
	}
}

func benchReserve(b *testing.B, callers int) {
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
	cpu0, rcpu0 := processCPU(), redisCPU(ctx, rdb)
	b.ResetTimer()
	var wg sync.WaitGroup
	for range callers {
		wg.Go(func() {
			for {
				i := n.Add(1)
				if i > int64(b.N) {
					return
				}
				u := "u" + strconv.FormatInt(i, 10)
				if _, err := s.Reserve(ctx, adapter.Message{To: adapter.Target{User: u}, Text: "x"}, 30*time.Second); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	b.StopTimer()
	b.ReportMetric(float64((processCPU()-cpu0).Microseconds())/float64(b.N), "client-cpu-µs/op")
	b.ReportMetric(float64((redisCPU(ctx, rdb)-rcpu0).Microseconds())/float64(b.N), "redis-cpu-µs/op")
	info, _ := rdb.Info(ctx, "commandstats").Result()
	var usec float64
	for _, line := range strings.Split(info, "\n") {
		if !strings.HasPrefix(line, "cmdstat_eval") {
			continue
		}
		_, fields, _ := strings.Cut(line, ":")
		for _, f := range strings.Split(strings.TrimSpace(fields), ",") {
			if k, v, _ := strings.Cut(f, "="); k == "usec" {
				x, _ := strconv.ParseFloat(v, 64)
				usec += x
			}
		}
	}
	b.ReportMetric(usec/float64(b.N), "redis-script-µs/op")
}

// processCPU is this process's CPU time (user + system).
func processCPU() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// redisCPU is the server's CPU time (INFO cpu: used_cpu_user + used_cpu_sys).
func redisCPU(ctx context.Context, rdb *redis.Client) time.Duration {
	info, _ := rdb.Info(ctx, "cpu").Result()
	var sec float64
	for _, line := range strings.Split(info, "\n") {
		k, v, _ := strings.Cut(strings.TrimSpace(line), ":")
		if k == "used_cpu_user" || k == "used_cpu_sys" {
			x, _ := strconv.ParseFloat(v, 64)
			sec += x
		}
	}
	return time.Duration(sec * float64(time.Second))
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

// gateHook holds the first script call until released, and records pipeline sizes; before
// a pipeline it can flush Redis's scripts (as a restart would).
type gateHook struct {
	held      chan struct{} // closed when the first call is held
	release   chan struct{}
	once      sync.Once
	flush     *redis.Client // if set, SCRIPT FLUSH before each pipeline
	mu        sync.Mutex
	pipelines []int
}

func (h *gateHook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *gateHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if name := cmd.Name(); name == "evalsha" || name == "eval" {
			h.once.Do(func() { close(h.held); <-h.release })
		}
		return next(ctx, cmd)
	}
}

func (h *gateHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if cmds[0].Name() != "evalsha" { // the connection's HELLO
			return next(ctx, cmds)
		}
		h.mu.Lock()
		h.pipelines = append(h.pipelines, len(cmds))
		h.mu.Unlock()
		if h.flush != nil {
			h.flush.ScriptFlush(ctx)
		}
		return next(ctx, cmds)
	}
}

// TestRedisBatchesConcurrentReservations: reservations made while one is in Redis go
// together as one pipeline once it is back, each answered as if alone and in order (8
// sends to a member allowed 3 a minute: 3 now, 3 a minute on, 2 two minutes on), also when
// Redis lost its scripts in between (NOSCRIPT: each runs again alone).
func TestRedisBatchesConcurrentReservations(t *testing.T) {
	for _, flush := range []bool{false, true} {
		t.Run(fmt.Sprint("flushed=", flush), func(t *testing.T) {
			srv := redistest.Start(t)
			rdb := redis.NewClient(&redis.Options{Addr: srv.Addr()})
			defer rdb.Close()
			h := &gateHook{held: make(chan struct{}), release: make(chan struct{})}
			if flush {
				h.flush = redis.NewClient(&redis.Options{Addr: srv.Addr()})
				defer h.flush.Close()
			}
			rdb.AddHook(h)
			clock := newManual()
			st := NewRedis(rdb, "test").(*redisStore)
			sc := schedulers(t, []Store{st}, adapter.PlatformWeCom, clock, map[string][]Limit{ScopeMember: {{3, time.Minute}}})[0]
			t0 := clock.Now()
			ats := make(chan time.Duration, 8)
			reserve := func() {
				r, err := sc.Reserve(t.Context(), toUser("a"), -1)
				if err != nil {
					t.Error(err)
				}
				ats <- r.At.Sub(t0)
			}
			go reserve()
			<-h.held
			for range 7 {
				go reserve()
			}
			for queued := 0; queued < 7; {
				time.Sleep(time.Millisecond)
				st.mu.Lock()
				queued = len(st.queue)
				st.mu.Unlock()
			}
			close(h.release)
			count := map[time.Duration]int{}
			for range 8 {
				count[<-ats]++
			}
			if mi := m(time.Minute); count[0] != 3 || count[mi] != 3 || count[2*mi] != 2 {
				t.Errorf("reserved at %v; want 3 at 0, 3 at %v, 2 at %v", count, mi, 2*mi)
			}
			h.mu.Lock()
			defer h.mu.Unlock()
			if len(h.pipelines) != 1 || h.pipelines[0] != 7 {
				t.Errorf("pipelines of %v; want one of 7", h.pipelines)
			}
		})
	}
}

// TestRedisClusterBatch: on a two-node Redis Cluster, a batch with the reservations of two
// bots whose keys live on different nodes is answered as if each went alone (a host's bots
// share its Store, so one pipeline can span the nodes).
func TestRedisClusterBatch(t *testing.T) {
	nodes := []*redistest.Server{
		redistest.StartArgs(t, "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"),
		redistest.StartArgs(t, "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"),
	}
	ctx := t.Context()
	var raws []*redis.Client
	for i, n := range nodes {
		raw := redis.NewClient(&redis.Options{Addr: n.Addr()})
		defer raw.Close()
		raws = append(raws, raw)
		if err := raw.Do(ctx, "CLUSTER", "ADDSLOTSRANGE", i*8192, i*8192+8191).Err(); err != nil {
			t.Fatalf("CLUSTER ADDSLOTSRANGE: %v", err)
		}
	}
	host, port, _ := strings.Cut(nodes[1].Addr(), ":")
	if err := raws[0].Do(ctx, "CLUSTER", "MEET", host, port).Err(); err != nil {
		t.Fatalf("CLUSTER MEET: %v", err)
	}
	for deadline := time.Now().Add(15 * time.Second); ; {
		ok := true
		for _, raw := range raws {
			info := raw.ClusterInfo(ctx).Val()
			ok = ok && strings.Contains(info, "cluster_state:ok") && strings.Contains(info, "cluster_known_nodes:2")
		}
		if ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("cluster not ok after 15s:\n%s", raws[0].ClusterInfo(ctx).Val())
		}
		time.Sleep(50 * time.Millisecond)
	}
	// Two bots on different nodes.
	var bots []string
	half := map[bool]bool{}
	for i := 0; len(bots) < 2; i++ {
		bot := fmt.Sprint("b", i)
		slot, err := raws[0].ClusterKeySlot(ctx, "{"+bot+"}").Result()
		if err != nil {
			t.Fatal(err)
		}
		if !half[slot >= 8192] {
			half[slot >= 8192] = true
			bots = append(bots, bot)
		}
	}
	cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: []string{nodes[0].Addr(), nodes[1].Addr()}})
	defer cc.Close()
	h := &gateHook{held: make(chan struct{}), release: make(chan struct{})}
	cc.AddHook(h)
	st := NewRedis(cc, "test").(*redisStore)
	clock := newManual()
	limits := Options{Clock: clock, Limits: map[string][]Limit{ScopeMember: {{3, time.Minute}}}}
	var scs []*Scheduler
	for _, bot := range bots {
		sc, err := New(st, bot, adapter.PlatformWeCom, limits)
		if err != nil {
			t.Fatal(err)
		}
		scs = append(scs, sc)
	}
	t0 := clock.Now()
	type res struct {
		bot int
		at  time.Duration
	}
	ats := make(chan res, 8)
	reserve := func(i int) {
		r, err := scs[i].Reserve(ctx, toUser("a"), -1)
		if err != nil {
			t.Error(err)
		}
		ats <- res{i, r.At.Sub(t0)}
	}
	go reserve(0)
	<-h.held
	for i := range 7 {
		go reserve((i + 1) % 2)
	}
	for queued := 0; queued < 7; {
		time.Sleep(time.Millisecond)
		st.mu.Lock()
		queued = len(st.queue)
		st.mu.Unlock()
	}
	close(h.release)
	count := map[res]int{}
	for range 8 {
		count[<-ats]++
	}
	mi := m(time.Minute)
	for i := range 2 {
		if count[res{i, 0}] != 3 || count[res{i, mi}] != 1 {
			t.Errorf("bot %s reserved at %v; want 3 at 0 and 1 at %v", bots[i], count, mi)
		}
	}
	if len(h.pipelines) != 1 || h.pipelines[0] != 7 {
		t.Errorf("pipelines of %v; want one of 7", h.pipelines)
	}
}

// panicHook panics in the first script call, once released.
type panicHook struct{ gateHook }

func (h *panicHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if name := cmd.Name(); name == "evalsha" || name == "eval" {
			first := false
			h.once.Do(func() { first = true; close(h.held); <-h.release })
			if first {
				panic("client bug")
			}
		}
		return next(ctx, cmd)
	}
}

// TestRedisBatchLeaderPanics: if running a batch panics, the reservations queued behind it
// still run (or fail), and later ones are not stuck behind it.
func TestRedisBatchLeaderPanics(t *testing.T) {
	srv := redistest.Start(t)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	defer rdb.Close()
	h := &panicHook{gateHook{held: make(chan struct{}), release: make(chan struct{})}}
	rdb.AddHook(h)
	st := NewRedis(rdb, "test").(*redisStore)
	sc := schedulers(t, []Store{st}, adapter.PlatformWeCom, newManual(), nil)[0]
	panicked := make(chan any, 1)
	go func() {
		defer func() { panicked <- recover() }()
		sc.Reserve(t.Context(), toUser("a"), -1)
	}()
	<-h.held
	errs := make(chan error, 2)
	for range 2 {
		go func() { _, err := sc.Reserve(t.Context(), toUser("a"), -1); errs <- err }()
	}
	for queued := 0; queued < 2; {
		time.Sleep(time.Millisecond)
		st.mu.Lock()
		queued = len(st.queue)
		st.mu.Unlock()
	}
	close(h.release)
	if p := <-panicked; p == nil {
		t.Fatal("the hook did not panic")
	}
	for range 2 {
		select {
		case err := <-errs:
			if err != nil {
				t.Errorf("queued reservation: %v", err)
			}
		case <-time.After(30 * time.Second): // a stuck queue; nothing here takes a second
			t.Fatal("the reservations queued behind the panic never returned")
		}
	}
	if _, err := sc.Reserve(t.Context(), toUser("b"), -1); err != nil {
		t.Errorf("after the panic: %v", err)
	}
}

// TestRedisSeesOlderHostsLog: a host that kept a list per limit (before one log per member)
// wrote every send to the member's hour list, which is the name of the one log now: its
// sends count against both limits here.
func TestRedisSeesOlderHostsLog(t *testing.T) {
	srv := redistest.Start(t)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	defer rdb.Close()
	clock := newManual()
	t0 := clock.Now()
	old := "test:pace:{hr}:log:member:a|1000/1h2m0s"
	for range 30 { // an older host's 30 sends to a, just now
		rdb.RPush(t.Context(), old, t0.UnixMilli())
	}
	rdb.RPush(t.Context(), "test:pace:{hr}:log:member:a|30/1m2s", t0.UnixMilli()) // its minute list, not read
	sc := schedulers(t, []Store{NewRedis(rdb, "test")}, adapter.PlatformWeCom, clock, nil)[0]
	r, err := sc.Reserve(t.Context(), toUser("a"), -1)
	if err != nil || r.At.Sub(t0) != m(time.Minute) {
		t.Errorf("31st send to a: At %v, %v; want %v (after the older host's 30)", r.At.Sub(t0), err, m(time.Minute))
	}
}
