package eventlog

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/redis/go-redis/v9"
)

// cmdCounter is a go-redis hook counting the commands a client sends, by name.
type cmdCounter struct {
	mu sync.Mutex
	n  map[string]int
}

func countCommands(rdb *redis.Client) *cmdCounter {
	c := &cmdCounter{n: map[string]int{}}
	rdb.AddHook(c)
	return c
}

func (c *cmdCounter) add(cmds ...redis.Cmder) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, cmd := range cmds {
		name := cmd.Name()
		if name == "xinfo" && len(cmd.Args()) > 1 {
			name += " " + strings.ToLower(fmt.Sprint(cmd.Args()[1]))
		}
		c.n[name]++
	}
}

// take returns the counts so far and starts again from zero.
func (c *cmdCounter) take() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := c.n
	c.n = map[string]int{}
	return n
}

func (c *cmdCounter) DialHook(next redis.DialHook) redis.DialHook { return next }

func (c *cmdCounter) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		c.add(cmd)
		return next(ctx, cmd)
	}
}

func (c *cmdCounter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		c.add(cmds...)
		return next(ctx, cmds)
	}
}

// readUnderWay makes l's hub read its stream as while a Read is under way (the hub's XREAD
// names only streams with a reader, or just delivered to), for tests of what the hub holds.
func readUnderWay(t *testing.T, l *Redis) {
	l.mu.Lock()
	l.readers++
	l.mu.Unlock()
	l.hub.want()
	t.Cleanup(func() {
		l.mu.Lock()
		l.readers--
		l.mu.Unlock()
	})
}

// reader reads l from after into a channel until ctx ends.
func reader(ctx context.Context, t *testing.T, l Log, after ID) <-chan Entry {
	got := make(chan Entry, 1000)
	go func() {
		for {
			es, err := l.Read(ctx, after, 100)
			if err != nil {
				if ctx.Err() == nil {
					t.Errorf("Read: %v", err)
				}
				return
			}
			for _, e := range es {
				got <- e
			}
			after = es[len(es)-1].ID
		}
	}()
	return got
}

// TestRedisCaughtUpReaderSendsNoCommandPerEntry: a reader that keeps up takes each new entry
// from what the hub's XREAD returned: no XRANGE and no XINFO per entry (the client sends
// the appends, the hub's XREADs and its looks, nothing else). It used to send an XRANGE
// for each entry, and an XRANGE and an XINFO STREAM each time it found nothing new and
// waited: 400 XRANGE and 200 XINFO for 200 entries.
func TestRedisCaughtUpReaderSendsNoCommandPerEntry(t *testing.T) {
	env := newRedisEnv(t)
	count := countCommands(env.rdb)
	l := env.open(t, Options{})
	ctx, cancel := context.WithCancel(testCtx(t))
	defer cancel()
	got := reader(ctx, t, l, ID{})
	// Until the hub has first looked at the stream the reader reads with XRANGE; the read
	// that returns the entry after that is the last one that may have.
	waitPositioned(t, l)
	a := mustAppend(t, l, rec(0))[0]
	if e := <-got; e.ID != a.ID {
		t.Fatalf("reader got %v, want %v", e.ID, a.ID)
	}
	count.take()
	const n = 200
	for i := 1; i <= n; i++ {
		a := mustAppend(t, l, rec(i))[0]
		if e := <-got; e.ID != a.ID || string(e.Data) != string(rec(i).Data) {
			t.Fatalf("reader got %v %s, want %v %s", e.ID, e.Data, a.ID, rec(i).Data)
		}
	}
	c := count.take()
	if c["xrange"] != 0 || c["xinfo stream"] != 0 || c["xinfo groups"] != 0 {
		t.Fatalf("a caught-up reader sent %d XRANGE, %d XINFO STREAM, %d XINFO GROUPS for %d entries (all commands: %v); want none",
			c["xrange"], c["xinfo stream"], c["xinfo groups"], n, c)
	}
	if c["evalsha"] < n || c["xread"] > 2*n+10 {
		t.Fatalf("commands for %d entries: %v; want %d appends and at most one XREAD each", n, c, n)
	}
}

// waitPositioned waits for the hub's first look at l's stream, which gives it a position
// there (before it, l's readers read with XRANGE and the hub keeps no entries of l).
func waitPositioned(t *testing.T, l *Redis) {
	t.Helper()
	ctx := testCtx(t)
	for {
		l.mu.Lock()
		ok, wake := l.tail.usable(), l.wake
		l.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-wake:
		case <-ctx.Done():
			t.Fatal("the hub never looked at the stream")
		}
	}
}

// lowerTail sets the tail's bounds for one test.
func lowerTail(t *testing.T, max, bytes int) {
	oldMax, oldBytes := tailMax, tailBytes
	tailMax, tailBytes = max, bytes
	t.Cleanup(func() { tailMax, tailBytes = oldMax, oldBytes })
}

// hubAt waits until the hub has read l up to id.
func hubAt(t *testing.T, l *Redis, id ID) {
	t.Helper()
	ctx := testCtx(t)
	for {
		l.mu.Lock()
		last, wake := l.tail.last(), l.wake
		l.mu.Unlock()
		if !last.Less(id) {
			return
		}
		select {
		case <-wake:
		case <-ctx.Done():
			t.Fatalf("the hub never read %v (it is at %v)", id, last)
		}
	}
}

// TestRedisSlowReaderReadsWithXRANGE: the hub keeps at most tailMax entries (and tailBytes)
// of a log however far its readers are behind; a reader behind them reads every entry, in
// order, with XRANGE, and once it has caught up takes new entries from the hub again.
func TestRedisSlowReaderReadsWithXRANGE(t *testing.T) {
	lowerTail(t, 8, 1<<20)
	env := newRedisEnv(t)
	count := countCommands(env.rdb)
	l := env.open(t, Options{})
	waitPositioned(t, l)
	readUnderWay(t, l)
	var all []ID
	for i := range 50 {
		all = append(all, mustAppend(t, l, rec(i))[0].ID)
	}
	hubAt(t, l, all[len(all)-1])
	l.mu.Lock()
	held, from := len(l.tail.es), l.tail.from
	l.mu.Unlock()
	if held > 8 || from != all[len(all)-9] {
		t.Fatalf("the hub holds %d entries from %v; want 8, from %v", held, from, all[len(all)-9])
	}
	count.take()
	var pos ID
	for i := 0; i < len(all); {
		es, err := l.Read(testCtx(t), pos, 5)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range es {
			if e.ID != all[i] {
				t.Fatalf("entry %d: %v, want %v", i, e.ID, all[i])
			}
			i++
		}
		pos = es[len(es)-1].ID
	}
	if c := count.take(); c["xrange"] < (len(all)-8)/5 {
		t.Fatalf("a reader behind the hub's entries sent %v; want XRANGEs", c)
	}
	// Caught up: new entries come from the hub.
	ctx, cancel := context.WithCancel(testCtx(t))
	defer cancel()
	got := reader(ctx, t, l, pos)
	for i := range 20 {
		a := mustAppend(t, l, rec(i))[0]
		if e := <-got; e.ID != a.ID {
			t.Fatalf("reader got %v, want %v", e.ID, a.ID)
		}
	}
	if c := count.take(); c["xrange"] != 0 || c["xinfo stream"] != 0 {
		t.Fatalf("the reader once caught up sent %v; want no XRANGE or XINFO", c)
	}
}

// TestRedisTailBytesBound: large entries are held up to tailBytes, not tailMax.
func TestRedisTailBytesBound(t *testing.T) {
	lowerTail(t, 1000, 10<<10)
	env := newRedisEnv(t)
	l := env.open(t, Options{})
	waitPositioned(t, l)
	readUnderWay(t, l)
	big := Record{Kind: "message", Key: "k", Data: []byte(strings.Repeat("x", 1000))}
	var last ID
	for range 40 {
		last = mustAppend(t, l, big)[0].ID
	}
	hubAt(t, l, last)
	l.mu.Lock()
	held, bytes := len(l.tail.es), l.tail.bytes
	l.mu.Unlock()
	if bytes > 10<<10 || held == 0 || held >= 40 {
		t.Fatalf("the hub holds %d entries, %d bytes; want at most 10 KiB", held, bytes)
	}
	if es := readAll(t, l, ID{}); len(es) != 40 {
		t.Fatalf("read %d entries, want 40", len(es))
	}
}

// TestRedisTailDroppedWhenOld: entries the hub read more than tailAge ago are dropped at its
// next look, so a log nobody reads holds nothing for long; its readers still read them.
func TestRedisTailDroppedWhenOld(t *testing.T) {
	old := tailAge
	tailAge = 0
	t.Cleanup(func() { tailAge = old })
	env := newRedisEnv(t)
	g := gateLooks(t, env)
	l := env.open(t, Options{})
	g.at("done") // the first look: the hub has a position
	readUnderWay(t, l)
	g.next()
	var all []ID
	for i := range 5 {
		all = append(all, mustAppend(t, l, rec(i))[0].ID)
	}
	hubAt(t, l, all[4])
	g.at("done") // a look after the hub read them
	l.mu.Lock()
	held, from := len(l.tail.es), l.tail.from
	l.mu.Unlock()
	if held != 0 || from != all[4] {
		t.Fatalf("after a look the hub holds %d entries from %v; want none, from %v", held, from, all[4])
	}
	g.free()
	if es := readAll(t, l, ID{}); len(es) != 5 {
		t.Fatalf("read %d entries, want 5", len(es))
	}
}
