package eventlog

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/seed-a64d9e1f/chatwire/internal/redistest"
)

// redisEnv is one redis-server and a client on it.
type redisEnv struct {
	srv *redistest.Server
	rdb *redis.Client
	n   atomic.Int64
}

func newRedisEnv(t *testing.T) *redisEnv {
	srv := redistest.Start(t)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr(), MaxRetries: -1})
	t.Cleanup(func() { rdb.Close() })
	return &redisEnv{srv: srv, rdb: rdb}
}

// open returns a log on a stream of its own.
func (e *redisEnv) open(t *testing.T, opts Options) *Redis {
	bot := fmt.Sprintf("bot%d", e.n.Add(1))
	l := NewRedis(e.rdb, "chatwire:events:{"+bot+"}", "chatwire:dedup:{"+bot+"}:", opts)
	t.Cleanup(func() { l.Close() })
	return l
}

func TestRedis(t *testing.T) {
	env := newRedisEnv(t)
	testLog(t, func(t *testing.T, opts Options) Log { return env.open(t, opts) })
}

func TestRedisDedupKeyHoldsIDFor24h(t *testing.T) {
	env := newRedisEnv(t)
	l := env.open(t, Options{})
	r := rec(1)
	r.Dedup = "ev-1"
	a := mustAppend(t, l, r)[0]
	ctx := testCtx(t)
	key := l.dedup + "ev-1"
	if v, err := env.rdb.Get(ctx, key).Result(); err != nil || v != a.ID.String() {
		t.Fatalf("dedup key = %q, %v; want the entry id %v", v, err, a.ID)
	}
	if ttl := env.rdb.PTTL(ctx, key).Val(); ttl < 23*time.Hour || ttl > 24*time.Hour {
		t.Fatalf("dedup key TTL = %v, want about 24 h", ttl)
	}
}

// TestRedisOnlyTheStreamMatters: the log keeps no key besides the stream and the dedup keys;
// deleting a dedup key forgets that key and nothing else.
func TestRedisOnlyTheStreamMatters(t *testing.T) {
	env := newRedisEnv(t)
	l := env.open(t, Options{MaxLen: 4, AckTimeout: time.Hour})
	ctx := testCtx(t)
	r := rec(1)
	r.Dedup = "ev-1"
	got := mustAppend(t, l, r, rec(2))
	l.Consumed(ctx, got[1].ID)
	l.CreateGroup(ctx, "g", ID{})
	l.ReadGroup(ctx, "g", "c", 10)
	keys := env.rdb.Keys(ctx, "*").Val()
	slices.Sort(keys)
	if want := []string{l.dedup + "ev-1", l.stream}; !slices.Equal(keys, want) {
		t.Fatalf("keys in Redis: %q, want only %q", keys, want)
	}
	env.rdb.Del(ctx, l.dedup+"ev-1")
	a := mustAppend(t, l, r, rec(3))
	if a[0].Duplicate || !got[1].ID.Less(a[0].ID) || !a[0].ID.Less(a[1].ID) {
		t.Fatalf("appends after deleting the dedup key: %+v", a)
	}
	if c, _ := l.ConsumedID(ctx); c != got[1].ID {
		t.Fatalf("consumed mark = %v, want %v", c, got[1].ID)
	}
	mustAppend(t, l, rec(4), rec(5)) // room made from the consumed entries
}

// resetCase resets the stream as Redis can lose it.
type resetCase struct {
	name  string
	reset func(t *testing.T, env *redisEnv, l *Redis)
}

var resets = []resetCase{
	{"RestartEmpty", func(t *testing.T, env *redisEnv, l *Redis) { env.srv.Restart() }},
	{"FLUSHALL", func(t *testing.T, env *redisEnv, l *Redis) { env.rdb.FlushAll(testCtx(t)) }},
	{"DEL", func(t *testing.T, env *redisEnv, l *Redis) { env.rdb.Del(testCtx(t), l.stream) }},
}

// TestRedisReaderContinuesAfterReset: a reader waiting at the last id keeps receiving what
// is appended after the stream is lost, without being restarted, and the reset is reported.
func TestRedisReaderContinuesAfterReset(t *testing.T) {
	for _, rc := range resets {
		t.Run(rc.name, func(t *testing.T) {
			env := newRedisEnv(t)
			reports := make(chan Reset, 4)
			l := env.open(t, Options{OnReset: func(r Reset) { reports <- r }})
			ctx := testCtx(t)
			var before []ID
			for i := range 5 {
				before = append(before, mustAppend(t, l, rec(i))[0].ID)
			}
			pos := before[len(before)-1]
			es, err := l.Read(ctx, before[2], 10)
			if err != nil || len(es) != 2 {
				t.Fatalf("Read: %v %v", ids(es), err)
			}
			type result struct {
				es  []Entry
				err error
			}
			got := make(chan result, 1)
			go func() {
				es, err := l.Read(ctx, pos, 10)
				got <- result{es, err}
			}()
			rc.reset(t, env, l)
			var r Reset
			select {
			case r = <-reports:
			case <-ctx.Done():
				t.Fatal("the reset was not reported")
			}
			if r.Stream != l.stream || r.LastID.Less(pos) || r.Held != 5 || r.Cause == "" {
				t.Fatalf("report %+v, want the stream, last id ≥ %v and 5 entries held", r, pos)
			}
			if !strings.Contains(r.String(), "5 entries") {
				t.Fatalf("report text %q does not say what was lost", r.String())
			}
			var a Appended
			for { // the restarted server may refuse a moment
				out, err := l.Append(ctx, rec(9))
				if err == nil {
					a = out[0]
					break
				}
				if ctx.Err() != nil {
					t.Fatalf("Append after the reset: %v", err)
				}
				time.Sleep(20 * time.Millisecond)
			}
			if !pos.Less(a.ID) {
				t.Fatalf("id after the reset %v is not above the last id a reader held, %v", a.ID, pos)
			}
			res := <-got
			for res.err != nil && !errors.Is(res.err, context.DeadlineExceeded) && ctx.Err() == nil {
				// A Redis restart fails the waiting Read; its caller reads again.
				time.Sleep(20 * time.Millisecond)
				res.es, res.err = l.Read(ctx, pos, 10)
			}
			if res.err != nil || len(res.es) != 1 || res.es[0].ID != a.ID {
				t.Fatalf("reader at %v after the reset got %v, %v; want [%v]", pos, ids(res.es), res.err, a.ID)
			}
		})
	}
}

// TestRedisIDsStayAboveFloorWhenServerClockIsBehind: a stream recreated on a server whose
// clock is behind the ids readers hold (a failover, a clock step) still gets ids above them.
func TestRedisIDsStayAboveFloorWhenServerClockIsBehind(t *testing.T) {
	env := newRedisEnv(t)
	l := env.open(t, Options{})
	ctx := testCtx(t)
	future := ID{Ms: uint64(time.Now().Add(time.Hour).UnixMilli()), Seq: 7}
	// Another writer with a clock an hour ahead.
	env.rdb.XAdd(ctx, &redis.XAddArgs{Stream: l.stream, ID: future.String(), Values: []string{"k", "message", "c", "x", "d", "{}"}})
	if es, err := l.Read(ctx, ID{}, 10); err != nil || len(es) != 1 || es[0].ID != future {
		t.Fatalf("Read: %v %v", ids(es), err)
	}
	env.rdb.Del(ctx, l.stream)
	a := mustAppend(t, l, rec(1), rec(2))
	if !future.Less(a[0].ID) || !a[0].ID.Less(a[1].ID) {
		t.Fatalf("ids after the reset %v %v, want above %v", a[0].ID, a[1].ID, future)
	}
	if es, err := l.Read(ctx, future, 10); err != nil || len(es) != 2 {
		t.Fatalf("reader at %v got %v %v, want both new entries", future, ids(es), err)
	}
}

// TestRedisOneRecordIDsStayAboveFloor is TestRedisIDsStayAboveFloorWhenServerClockIsBehind
// with one record per Append: appendScript answers a call of one record on a path of its
// own, which must keep the floor too.
func TestRedisOneRecordIDsStayAboveFloor(t *testing.T) {
	env := newRedisEnv(t)
	l := env.open(t, Options{})
	ctx := testCtx(t)
	future := ID{Ms: uint64(time.Now().Add(time.Hour).UnixMilli()), Seq: 7}
	env.rdb.XAdd(ctx, &redis.XAddArgs{Stream: l.stream, ID: future.String(), Values: []string{"k", "message", "c", "x", "d", "{}"}})
	if es, err := l.Read(ctx, ID{}, 10); err != nil || len(es) != 1 || es[0].ID != future {
		t.Fatalf("Read: %v %v", ids(es), err)
	}
	env.rdb.Del(ctx, l.stream)
	r := rec(1)
	r.Dedup = "ev-1"
	a := mustAppend(t, l, r)[0]
	b := mustAppend(t, l, rec(2))[0]
	if !future.Less(a.ID) || !a.ID.Less(b.ID) {
		t.Fatalf("ids after the reset %v %v, want above %v", a.ID, b.ID, future)
	}
	if again := mustAppend(t, l, r)[0]; !again.Duplicate || again.ID != a.ID {
		t.Fatalf("ev-1 again = %+v, want a duplicate of %v (its dedup key holds the id above the floor)", again, a.ID)
	}
	if es, err := l.Read(ctx, future, 10); err != nil || len(es) != 2 {
		t.Fatalf("reader at %v got %v %v, want both new entries", future, ids(es), err)
	}
}

// TestRedisReaderAheadOfRecreatedStream: if a stream is recreated with ids below a reader's
// position (written by a process that never saw the old ids), the reader does not wait for
// ids above its position: it reads the new stream from its first entry.
func TestRedisReaderAheadOfRecreatedStream(t *testing.T) {
	env := newRedisEnv(t)
	l := env.open(t, Options{})
	ctx := testCtx(t)
	pos := mustAppend(t, l, rec(1))[0].ID
	got := make(chan []Entry, 1)
	go func() {
		es, err := l.Read(ctx, pos, 10)
		if err != nil {
			t.Error(err)
		}
		got <- es
	}()
	env.rdb.Del(ctx, l.stream)
	env.rdb.XAdd(ctx, &redis.XAddArgs{Stream: l.stream, ID: "1-1", Values: []string{"k", "message", "c", "x", "d", "{}"}})
	if es := <-got; len(es) != 1 || es[0].ID != (ID{Ms: 1, Seq: 1}) {
		t.Fatalf("reader at %v got %v, want [1-1]", pos, ids(es))
	}
}

// TestRedisGroupRecreatedAfterReset: a consumer group lost with its stream is created again
// and its consumers keep receiving entries.
func TestRedisGroupRecreatedAfterReset(t *testing.T) {
	env := newRedisEnv(t)
	l := env.open(t, Options{AckTimeout: time.Hour})
	ctx := testCtx(t)
	l.CreateGroup(ctx, "g", ID{})
	mustAppend(t, l, rec(1))
	if es, err := l.ReadGroup(ctx, "g", "c", 10); err != nil || len(es) != 1 {
		t.Fatalf("ReadGroup: %v %v", ids(es), err)
	}
	env.rdb.FlushAll(ctx)
	a := mustAppend(t, l, rec(2))[0]
	es, err := l.ReadGroup(ctx, "g", "c", 10)
	if err != nil || len(es) != 1 || es[0].ID != a.ID {
		t.Fatalf("ReadGroup after FLUSHALL: %v %v, want [%v]", ids(es), err, a.ID)
	}
	if p, err := l.Pending(ctx, "g"); err != nil || p.Count != 1 {
		t.Fatalf("Pending = %+v, %v; want 1", p, err)
	}
}

// TestRedisErrorsAreReturned: with Redis down, Append and Read fail (nothing is taken as
// appended), and work again when it is back.
func TestRedisErrorsAreReturned(t *testing.T) {
	env := newRedisEnv(t)
	l := env.open(t, Options{})
	ctx := testCtx(t)
	env.srv.Kill()
	if _, err := l.Append(ctx, rec(1)); err == nil {
		t.Fatal("Append with Redis down succeeded")
	}
	if _, err := l.Read(ctx, ID{}, 1); err == nil || errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Read with Redis down: %v, want a Redis error", err)
	}
	env.srv.Restart()
	for {
		if _, err := l.Append(ctx, rec(1)); err == nil {
			break
		} else if ctx.Err() != nil {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestRedisAppendOutOfMemory: when Redis refuses writes (maxmemory reached, noeviction),
// Append returns the error, no dedup key is left behind, and the same record appends once
// Redis accepts writes again.
func TestRedisAppendOutOfMemory(t *testing.T) {
	env := newRedisEnv(t)
	l := env.open(t, Options{})
	ctx := testCtx(t)
	mustAppend(t, l, rec(0))
	env.rdb.ConfigSet(ctx, "maxmemory-policy", "noeviction")
	env.rdb.ConfigSet(ctx, "maxmemory", "1")
	r := rec(1)
	r.Dedup = "ev-oom"
	if _, err := l.Append(ctx, r, rec(2)); err == nil || !strings.Contains(err.Error(), "OOM") {
		t.Fatalf("Append over maxmemory: %v, want the OOM error", err)
	}
	env.rdb.ConfigSet(ctx, "maxmemory", "0")
	if n := env.rdb.Exists(ctx, l.dedup+"ev-oom").Val(); n != 0 {
		t.Fatal("a refused append left its dedup key")
	}
	if n := env.rdb.XLen(ctx, l.stream).Val(); n != 1 {
		t.Fatalf("stream holds %d entries after a refused append; want 1", n)
	}
	if a := mustAppend(t, l, r)[0]; a.Duplicate {
		t.Fatal("the record refused under OOM was taken for a duplicate")
	}
}

// TestRedisOneRecordAppendOutOfMemory is TestRedisAppendOutOfMemory with one record per
// Append (appendScript's path for a call of one record).
func TestRedisOneRecordAppendOutOfMemory(t *testing.T) {
	env := newRedisEnv(t)
	l := env.open(t, Options{})
	ctx := testCtx(t)
	mustAppend(t, l, rec(0))
	env.rdb.ConfigSet(ctx, "maxmemory-policy", "noeviction")
	env.rdb.ConfigSet(ctx, "maxmemory", "1")
	r := rec(1)
	r.Dedup = "ev-oom"
	_, err := l.Append(ctx, r)
	var re interface{ RedisError() }
	if err == nil || !strings.Contains(err.Error(), "OOM") || !errors.As(err, &re) {
		t.Fatalf("Append over maxmemory: %v, want the OOM error Redis answered", err)
	}
	env.rdb.ConfigSet(ctx, "maxmemory", "0")
	if n := env.rdb.Exists(ctx, l.dedup+"ev-oom").Val(); n != 0 {
		t.Fatal("a refused append left its dedup key")
	}
	if n := env.rdb.XLen(ctx, l.stream).Val(); n != 1 {
		t.Fatalf("stream holds %d entries after a refused append; want 1", n)
	}
	if a := mustAppend(t, l, r)[0]; a.Duplicate {
		t.Fatal("the record refused under OOM was taken for a duplicate")
	}
}

// lookGate stops the watcher of a client at each phase of a look until the test lets it go on.
type lookGate struct {
	t       *testing.T
	phases  chan string
	release chan struct{}
}

func gateLooks(t *testing.T, env *redisEnv) *lookGate {
	g := &lookGate{t: t, phases: make(chan string), release: make(chan struct{})}
	lookHooks.Store(env.rdb, func(phase string) {
		select {
		case g.phases <- phase:
		case <-t.Context().Done():
			return
		}
		select {
		case <-g.release:
		case <-t.Context().Done():
		}
	})
	t.Cleanup(func() { lookHooks.Delete(env.rdb) })
	return g
}

// at lets the watcher go on until it stops at phase.
func (g *lookGate) at(phase string) {
	for p := range g.phases {
		if p == phase {
			return
		}
		g.release <- struct{}{}
	}
}

// next lets the watcher go on from where it stopped.
func (g *lookGate) next() { g.release <- struct{}{} }

// free lets the watcher run on for the rest of the test.
func (g *lookGate) free() {
	g.next()
	go func() {
		for {
			select {
			case <-g.phases:
				g.release <- struct{}{}
			case <-g.t.Context().Done():
				return
			}
		}
	}()
}

// TestRedisResetBeforeFirstLookIsReported: entries appended before the watcher first looked
// at the stream are known to be there; a reset before that first look is reported with them.
// (The view of the stream used to be unknown until the first look, so such a reset went
// unreported: TestRedisReaderContinuesAfterReset failed "the reset was not reported" when
// the machine was slow to start the watcher.)
func TestRedisResetBeforeFirstLookIsReported(t *testing.T) {
	env := newRedisEnv(t)
	g := gateLooks(t, env)
	reports := make(chan Reset, 4)
	l := env.open(t, Options{OnReset: func(r Reset) { reports <- r }})
	g.at("start") // the watcher waits before its first look
	for i := range 5 {
		mustAppend(t, l, rec(i))
	}
	env.rdb.Del(testCtx(t), l.stream)
	g.next()
	g.at("done") // the first look, after the reset
	select {
	case r := <-reports:
		if r.Held != 5 {
			t.Fatalf("report %+v; want 5 entries held", r)
		}
	default:
		t.Fatal("a reset before the watcher's first look was not reported")
	}
	g.free()
}

// TestRedisAppendDuringLookAtNoStreamIsCounted: an entry appended while the watcher looks
// and finds no stream yet (the append comes after its snapshot) is counted in what a later
// reset reports. (It used to be dropped: TestRedisReaderContinuesAfterReset failed with a
// report of 4 entries held where 5 were appended.)
func TestRedisAppendDuringLookAtNoStreamIsCounted(t *testing.T) {
	env := newRedisEnv(t)
	g := gateLooks(t, env)
	reports := make(chan Reset, 4)
	l := env.open(t, Options{OnReset: func(r Reset) { reports <- r }})
	g.at("snapshot") // the first look found no stream
	mustAppend(t, l, rec(0))
	g.next()
	g.at("done") // before the watcher reads the stream
	for i := 1; i < 5; i++ {
		mustAppend(t, l, rec(i))
	}
	env.rdb.Del(testCtx(t), l.stream)
	g.free()
	select {
	case r := <-reports:
		if r.Held != 5 || !strings.Contains(r.String(), "5 entries") {
			t.Fatalf("report %+v (%q); want 5 entries held", r, r.String())
		}
	case <-testCtx(t).Done():
		t.Fatal("the reset was not reported")
	}
}

// commandCalls returns how many times Redis ran each command (INFO commandstats: commands
// scripts run count too), and resets the counts.
func commandCalls(t *testing.T, rdb *redis.Client) map[string]int {
	t.Helper()
	ctx := testCtx(t)
	info, err := rdb.Info(ctx, "commandstats").Result()
	if err != nil {
		t.Fatal(err)
	}
	rdb.ConfigResetStat(ctx)
	out := map[string]int{}
	for _, line := range strings.Split(info, "\n") {
		name, rest, ok := strings.Cut(strings.TrimPrefix(strings.TrimSpace(line), "cmdstat_"), ":calls=")
		if !ok {
			continue
		}
		n, _, _ := strings.Cut(rest, ",")
		var calls int
		fmt.Sscan(n, &calls)
		out[name] = calls
	}
	return out
}

// TestRedisFullLogTrimsInBatches: a log at MaxLen whose entries were consumed makes room for
// MaxLen/100 appends at a time, not one entry per append (which cost an XINFO GROUPS, an
// XRANGE and an XTRIM in every append script, and made each XADD ten times slower); it never
// holds more than MaxLen entries and never drops one that was not consumed.
func TestRedisFullLogTrimsInBatches(t *testing.T) {
	env := newRedisEnv(t)
	l := env.open(t, Options{MaxLen: 1000})
	ctx := testCtx(t)
	var last ID
	for i := range 1000 {
		last = mustAppend(t, l, rec(i))[0].ID
	}
	if err := l.Consumed(ctx, last); err != nil {
		t.Fatal(err)
	}
	commandCalls(t, env.rdb)
	var fresh []ID
	for i := range 500 {
		fresh = append(fresh, mustAppend(t, l, rec(i))[0].ID)
		if n, err := l.Len(ctx); err != nil || n.Held > 1000 || n.Unconsumed != int64(i+1) {
			t.Fatalf("after %d appends: Len = %+v, %v; want at most 1000 held, %d unconsumed", i+1, n, err, i+1)
		}
	}
	if c := commandCalls(t, env.rdb); c["xtrim"] > 500/10+1 {
		t.Fatalf("500 appends to a full log trimmed it %d times; want one per 10 appends (MaxLen/100)", c["xtrim"])
	}
	es := readAll(t, l, last)
	if len(es) != 500 || es[0].ID != fresh[0] || es[499].ID != fresh[499] {
		t.Fatalf("read %d entries after the consumed mark; want the 500 appended", len(es))
	}
}
