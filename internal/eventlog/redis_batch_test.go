package eventlog

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// holdHook holds the first script call (EVALSHA or EVAL) after arm until release, and then
// panics if panics is set, as a client bug would. It counts the calls of appendScript (the
// watcher's scripts run meanwhile, so INFO commandstats would count those too).
type holdHook struct {
	appends atomic.Int64
	armed   atomic.Bool
	held    chan struct{}
	release chan struct{}
	panics  bool
}

func holdScripts(rdb *redis.Client, panics bool) *holdHook {
	h := &holdHook{held: make(chan struct{}), release: make(chan struct{}), panics: panics}
	rdb.AddHook(h)
	return h
}

func (h *holdHook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *holdHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		name := cmd.Name()
		if args := cmd.Args(); name == "evalsha" && args[1] == appendScript.Hash() || name == "eval" && args[1] == appendSrc {
			h.appends.Add(1)
		}
		if (name == "evalsha" || name == "eval") && h.armed.CompareAndSwap(true, false) {
			close(h.held)
			<-h.release
			if h.panics {
				panic("client bug")
			}
		}
		return next(ctx, cmd)
	}
}

func (h *holdHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

type appendResult struct {
	out []Appended
	err error
}

// startAppend runs Append in a goroutine; its answer comes on the channel.
func startAppend(ctx context.Context, l *Redis, recs ...Record) <-chan appendResult {
	ch := make(chan appendResult, 1)
	go func() {
		out, err := l.Append(ctx, recs...)
		ch <- appendResult{out, err}
	}()
	return ch
}

// queueAppend starts an Append and waits until it is queued behind the script call in
// Redis, so that the calls of a test queue in a known order.
func queueAppend(t *testing.T, ctx context.Context, l *Redis, recs ...Record) <-chan appendResult {
	t.Helper()
	l.batchMu.Lock()
	n := len(l.batchQueue) + 1
	l.batchMu.Unlock()
	ch := startAppend(ctx, l, recs...)
	for {
		l.batchMu.Lock()
		queued := len(l.batchQueue)
		l.batchMu.Unlock()
		if queued >= n {
			return ch
		}
		select {
		case r := <-ch:
			t.Fatalf("Append returned before queueing behind the held call: %+v", r)
		case <-testCtx(t).Done():
			t.Fatal("Append never queued")
		case <-time.After(time.Millisecond):
		}
	}
}

func recv(t *testing.T, ch <-chan appendResult) appendResult {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-testCtx(t).Done():
		t.Fatal("Append never returned")
		return appendResult{}
	}
}

func dedupRec(i int, key string) Record {
	r := rec(i)
	r.Dedup = key
	return r
}

// TestRedisConcurrentAppendsShareOneScriptCall: Appends arriving while a script call is in
// Redis go together in the next one (two calls for five Appends), each answered as if alone,
// in the order they came: ids increase in that order, a record repeating the Dedup of an
// earlier Append of the batch, or of the call in flight, is that entry's duplicate.
func TestRedisConcurrentAppendsShareOneScriptCall(t *testing.T) {
	env := newRedisEnv(t)
	l := env.open(t, Options{})
	h := holdScripts(env.rdb, false)
	ctx := testCtx(t)
	mustAppend(t, l, rec(0)) // loads the script
	h.appends.Store(0)
	h.armed.Store(true)
	first := startAppend(ctx, l, dedupRec(1, "ev-1"))
	<-h.held
	a := queueAppend(t, ctx, l, dedupRec(2, "ev-2"))
	b := queueAppend(t, ctx, l, rec(3), rec(4))
	c := queueAppend(t, ctx, l, dedupRec(5, "ev-2"))
	d := queueAppend(t, ctx, l, dedupRec(6, "ev-1"))
	close(h.release)
	rf, ra, rb, rc, rd := recv(t, first), recv(t, a), recv(t, b), recv(t, c), recv(t, d)
	for i, r := range []appendResult{rf, ra, rb, rc, rd} {
		if r.err != nil {
			t.Fatalf("Append %d: %v", i, r.err)
		}
	}
	if n := h.appends.Load(); n != 2 {
		t.Fatalf("5 Appends, 4 of them queued behind the first, made %d script calls; want 2", n)
	}
	fresh := []Appended{rf.out[0], ra.out[0], rb.out[0], rb.out[1]}
	for i, x := range fresh {
		if x.Duplicate || i > 0 && !fresh[i-1].ID.Less(x.ID) {
			t.Fatalf("new entries %+v: want new ids increasing in queue order", fresh)
		}
	}
	if got := rc.out[0]; !got.Duplicate || got.ID != ra.out[0].ID {
		t.Fatalf("repeated Dedup within the batch: %+v, want a duplicate of %v", got, ra.out[0].ID)
	}
	if got := rd.out[0]; !got.Duplicate || got.ID != rf.out[0].ID {
		t.Fatalf("Dedup of the call in flight: %+v, want a duplicate of %v", got, rf.out[0].ID)
	}
	if es := readAll(t, l, ID{}); len(es) != 5 || es[4].ID != rb.out[1].ID {
		t.Fatalf("the log holds %v; want 5 entries ending with %v", ids(es), rb.out[1].ID)
	}
}

// TestRedisBatchFullFailsOnlyCallsThatWouldNotFit: in a batch at a log near MaxLen, an
// Append that would not fit alone gets ErrFull and adds nothing (nor its dedup keys: a later
// Append of the same Dedup is new), while later ones that fit are added, and a duplicate is
// answered with its id even though the log is full, as each would be alone in that order.
func TestRedisBatchFullFailsOnlyCallsThatWouldNotFit(t *testing.T) {
	env := newRedisEnv(t)
	l := env.open(t, Options{MaxLen: 5})
	h := holdScripts(env.rdb, false)
	ctx := testCtx(t)
	mustAppend(t, l, rec(0), rec(1))
	h.appends.Store(0)
	h.armed.Store(true)
	first := startAppend(ctx, l, rec(2)) // 3 held
	<-h.held
	a := queueAppend(t, ctx, l, rec(3), dedupRec(4, "ev-a"), rec(5)) // 6 > 5: full
	b := queueAppend(t, ctx, l, dedupRec(6, "ev-b"))                 // 4
	e := queueAppend(t, ctx, l, dedupRec(7, "ev-a"))                 // 5: new, a added nothing
	c := queueAppend(t, ctx, l, rec(8))                              // 6 > 5: full
	d := queueAppend(t, ctx, l, dedupRec(9, "ev-b"))                 // a duplicate of b: no room needed
	close(h.release)
	rf, ra, rb, re, rc, rd := recv(t, first), recv(t, a), recv(t, b), recv(t, e), recv(t, c), recv(t, d)
	if rf.err != nil || rb.err != nil || re.err != nil || rd.err != nil {
		t.Fatalf("Appends that fit: %v, %v, %v, %v", rf.err, rb.err, re.err, rd.err)
	}
	if !errors.Is(ra.err, ErrFull) || ra.out != nil || !errors.Is(rc.err, ErrFull) || rc.out != nil {
		t.Fatalf("Appends that do not fit: %+v, %+v; want ErrFull", ra, rc)
	}
	if re.out[0].Duplicate || rb.out[0].Duplicate || !rb.out[0].ID.Less(re.out[0].ID) {
		t.Fatalf("b %+v, then e %+v: want two new entries (the full Append of ev-a added nothing)", rb.out[0], re.out[0])
	}
	if got := rd.out[0]; !got.Duplicate || got.ID != rb.out[0].ID {
		t.Fatalf("b %+v, its duplicate %+v", rb.out[0], got)
	}
	if n := h.appends.Load(); n != 2 {
		t.Fatalf("%d script calls; want 2 (the held call, then the batch)", n)
	}
	if n, err := l.Len(ctx); err != nil || n.Held != 5 {
		t.Fatalf("Len = %+v, %v; want 5 held", n, err)
	}
}

// TestRedisBatchErrorAnswersEachCall: when Redis refuses writes while a batch runs, every
// Append of it gets the error it would get alone (Redis's OOM error), none leaves an entry or
// a dedup key, and each appends once Redis accepts writes again.
func TestRedisBatchErrorAnswersEachCall(t *testing.T) {
	env := newRedisEnv(t)
	l := env.open(t, Options{})
	h := holdScripts(env.rdb, false)
	ctx := testCtx(t)
	mustAppend(t, l, rec(0))
	h.armed.Store(true)
	first := startAppend(ctx, l, rec(1))
	<-h.held
	a := queueAppend(t, ctx, l, dedupRec(2, "ev-a"))
	b := queueAppend(t, ctx, l, rec(3), dedupRec(4, "ev-b"))
	env.rdb.ConfigSet(ctx, "maxmemory-policy", "noeviction")
	env.rdb.ConfigSet(ctx, "maxmemory", "1")
	close(h.release)
	for i, ch := range []<-chan appendResult{first, a, b} {
		r := recv(t, ch)
		var rerr redis.Error
		if r.err == nil || !strings.Contains(r.err.Error(), "OOM") || !errors.As(r.err, &rerr) || r.out != nil {
			t.Fatalf("Append %d over maxmemory: %+v; want Redis's OOM error", i, r)
		}
	}
	env.rdb.ConfigSet(ctx, "maxmemory", "0")
	if n := env.rdb.Exists(ctx, l.dedup+"ev-a", l.dedup+"ev-b").Val(); n != 0 {
		t.Fatal("a refused append left its dedup key")
	}
	if n := env.rdb.XLen(ctx, l.stream).Val(); n != 1 {
		t.Fatalf("stream holds %d entries after refused appends; want 1", n)
	}
	if got := mustAppend(t, l, dedupRec(2, "ev-a"), dedupRec(4, "ev-b")); got[0].Duplicate || got[1].Duplicate {
		t.Fatalf("records refused under OOM taken for duplicates: %+v", got)
	}
}

// TestRedisBatchLeaderPanics: if the script call of a batch panics, the Appends queued
// behind it still run, and later ones are not stuck.
func TestRedisBatchLeaderPanics(t *testing.T) {
	env := newRedisEnv(t)
	l := env.open(t, Options{})
	h := holdScripts(env.rdb, true)
	ctx := testCtx(t)
	mustAppend(t, l, rec(0))
	h.armed.Store(true)
	panicked := make(chan any, 1)
	go func() {
		defer func() { panicked <- recover() }()
		l.Append(ctx, rec(1))
	}()
	<-h.held
	a := queueAppend(t, ctx, l, rec(2))
	b := queueAppend(t, ctx, l, rec(3))
	close(h.release)
	if p := <-panicked; p == nil {
		t.Fatal("the hook did not panic")
	}
	for _, ch := range []<-chan appendResult{a, b} {
		if r := recv(t, ch); r.err != nil {
			t.Fatalf("Append queued behind the panic: %v", r.err)
		}
	}
	mustAppend(t, l, rec(4))
	if n := env.rdb.XLen(ctx, l.stream).Val(); n != 4 {
		t.Fatalf("stream holds %d entries; want 4 (all but the one whose call panicked)", n)
	}
}

// TestRedisQueuedAppendOutlivesItsCtx: an Append whose ctx ends while it is queued does not
// fail the others of its batch; it waits for its answer (its records may be in Redis
// already) and gets it.
func TestRedisQueuedAppendOutlivesItsCtx(t *testing.T) {
	env := newRedisEnv(t)
	l := env.open(t, Options{})
	h := holdScripts(env.rdb, false)
	ctx := testCtx(t)
	mustAppend(t, l, rec(0))
	h.armed.Store(true)
	first := startAppend(ctx, l, rec(1))
	<-h.held
	cctx, cancel := context.WithCancel(ctx)
	a := queueAppend(t, cctx, l, rec(2)) // leads the next batch
	b := queueAppend(t, ctx, l, rec(3))
	cancel()
	close(h.release)
	for i, ch := range []<-chan appendResult{first, a, b} {
		if r := recv(t, ch); r.err != nil || len(r.out) != 1 || r.out[0].ID.IsZero() {
			t.Fatalf("Append %d: %+v", i, r)
		}
	}
	if n := env.rdb.XLen(ctx, l.stream).Val(); n != 4 {
		t.Fatalf("stream holds %d entries; want 4", n)
	}
}

// TestRedisBatchIDsStayAboveFloor: a batch of one-record Appends that runs on a stream reset
// under the ids this process has seen (here: read from a writer an hour ahead, while the
// call before the batch was in Redis) still gets ids above them, in queue order: the first
// XADD is redone after the floor, the next ones follow it.
func TestRedisBatchIDsStayAboveFloor(t *testing.T) {
	env := newRedisEnv(t)
	l := env.open(t, Options{})
	h := holdScripts(env.rdb, false)
	ctx := testCtx(t)
	last := mustAppend(t, l, rec(0))[0].ID // loads the script
	h.appends.Store(0)
	h.armed.Store(true)
	first := startAppend(ctx, l, rec(1))
	<-h.held
	a := queueAppend(t, ctx, l, dedupRec(2, "ev-a"))
	b := queueAppend(t, ctx, l, rec(3))
	future := ID{Ms: uint64(time.Now().Add(time.Hour).UnixMilli()), Seq: 7}
	env.rdb.XAdd(ctx, &redis.XAddArgs{Stream: l.stream, ID: future.String(), Values: []string{"k", "message", "c", "x", "d", "{}"}})
	if es, err := l.Read(ctx, last, 10); err != nil || len(es) != 1 || es[0].ID != future {
		t.Fatalf("Read: %v %v", ids(es), err)
	}
	env.rdb.Del(ctx, l.stream)
	close(h.release)
	rf, ra, rb := recv(t, first), recv(t, a), recv(t, b)
	if rf.err != nil || ra.err != nil || rb.err != nil {
		t.Fatalf("Appends: %v, %v, %v", rf.err, ra.err, rb.err)
	}
	if n := h.appends.Load(); n != 2 {
		t.Fatalf("%d script calls; want 2 (the held call, then the batch)", n)
	}
	x, y := ra.out[0].ID, rb.out[0].ID
	if !future.Less(x) || !x.Less(y) {
		t.Fatalf("ids of the batch after the reset %v %v, want above %v, increasing", x, y, future)
	}
	if again := mustAppend(t, l, dedupRec(2, "ev-a"))[0]; !again.Duplicate || again.ID != x {
		t.Fatalf("ev-a again = %+v, want a duplicate of %v", again, x)
	}
}
