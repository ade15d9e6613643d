package pacing

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/seed-a64d9e1f/chatwire/adapter"
	"github.com/seed-a64d9e1f/chatwire/adapter/wecom"
	"github.com/seed-a64d9e1f/chatwire/adapter/wecom/wecomtest"
	"github.com/seed-a64d9e1f/chatwire/internal/redistest"
)

// m is a window with pacing's safety margin.
func m(d time.Duration) time.Duration { return d + (d / marginDivisor).Truncate(time.Millisecond) }

// manual is a clock that moves only when told to, or when a sleeper sleeps past it.
type manual struct {
	mu sync.Mutex
	t  time.Time
}

func newManual() *manual { return &manual{t: time.Date(2026, 1, 5, 9, 0, 7, 0, time.UTC)} }

func (m *manual) Now() time.Time { m.mu.Lock(); defer m.mu.Unlock(); return m.t }

func (m *manual) SleepUntil(ctx context.Context, t time.Time) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if t.After(m.t) {
		m.t = t
	}
	return ctx.Err()
}

func (m *manual) Advance(d time.Duration) { m.mu.Lock(); m.t = m.t.Add(d); m.mu.Unlock() }

type storesFunc func(t *testing.T, n int) []Store

func memoryStores(t *testing.T, n int) []Store {
	s := NewMemory()
	out := make([]Store, n)
	for i := range out {
		out[i] = s
	}
	return out
}

func redisStores(t *testing.T, n int) []Store {
	srv := redistest.Start(t)
	out := make([]Store, n)
	for i := range out {
		rdb := redis.NewClient(&redis.Options{Addr: srv.Addr()})
		t.Cleanup(func() { rdb.Close() })
		out[i] = NewRedis(rdb, "test")
	}
	return out
}

func TestMemory(t *testing.T) { testStore(t, memoryStores) }
func TestRedis(t *testing.T)  { testStore(t, redisStores) }

func toUser(u string) adapter.Message {
	return adapter.Message{To: adapter.Target{User: u}, Text: "hi"}
}

// schedulers returns one Scheduler of bot "hr" per store, all on clock.
func schedulers(t *testing.T, ss []Store, platform string, clock Clock, limits map[string][]Limit) []*Scheduler {
	t.Helper()
	var out []*Scheduler
	for _, s := range ss {
		sc, err := New(s, "hr", platform, Options{Clock: clock, Limits: limits})
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, sc)
	}
	return out
}

// checkWindows fails if more than n of times fall in any window (t−per, t].
func checkWindows(t *testing.T, times []time.Time, l Limit) {
	t.Helper()
	for i, end := range times {
		c := 0
		for _, x := range times {
			if x.After(end.Add(-l.Per)) && !x.After(end) {
				c++
			}
		}
		if c > l.N {
			t.Fatalf("%d sends in the window ending at send %d (%v); limit %v", c, i, end, l)
		}
	}
}

func testStore(t *testing.T, stores storesFunc) {
	t.Run("MemberMinuteAcrossThreeHosts", func(t *testing.T) {
		clock := newManual()
		scs := schedulers(t, stores(t, 3), adapter.PlatformWeCom, clock, nil)
		t0 := clock.Now()
		var times []time.Time
		for i := range 120 {
			r, err := scs[i%3].Reserve(t.Context(), toUser("ZhangSan"), -1)
			if err != nil {
				t.Fatal(err)
			}
			times = append(times, r.At)
		}
		for i, at := range times {
			if want := t0.Add(time.Duration(i/30) * m(time.Minute)); !at.Equal(want) {
				t.Fatalf("send %d at %v; want %v (30 a minute)", i, at.Sub(t0), want.Sub(t0))
			}
		}
		checkWindows(t, times, Limit{30, time.Minute})
		// Another member is not held back.
		if r, err := scs[1].Reserve(t.Context(), toUser("lisi"), -1); err != nil || !r.At.Equal(t0) {
			t.Errorf("other member: At %v, %v; want now", r.At.Sub(t0), err)
		}
	})

	t.Run("DeadlineGetsRetryAfter", func(t *testing.T) {
		clock := newManual()
		scs := schedulers(t, stores(t, 2), adapter.PlatformWeCom, clock, nil)
		t0 := clock.Now()
		for range 30 {
			if _, err := scs[0].Reserve(t.Context(), toUser("a"), 0); err != nil {
				t.Fatal(err)
			}
		}
		clock.Advance(15 * time.Second)
		_, err := scs[1].Reserve(t.Context(), toUser("a"), 10*time.Second)
		if adapter.KindOf(err) != adapter.KindRateLimited || adapter.RetryAfter(err) != 47*time.Second {
			t.Fatalf("31st with 10 s to spare: %v (retry after %v); want rate_limited, retry after 47s (a minute and its 2 s margin)", err, adapter.RetryAfter(err))
		}
		// The refused send recorded nothing.
		r, err := scs[1].Reserve(t.Context(), toUser("a"), time.Minute)
		if err != nil || !r.At.Equal(t0.Add(m(time.Minute))) || r.Wait != 47*time.Second {
			t.Errorf("31st with a minute to spare: At %v Wait %v, %v; want 1m2s, 47s", r.At.Sub(t0), r.Wait, err)
		}
	})

	t.Run("ConcurrentSendsWithNoWait", func(t *testing.T) {
		// Concurrent sends to one member: a reserves first with a clock read a little later
		// than b's (b read the time, then a overtook it). b could go 0.3 ms after it read the
		// time, in the same millisecond as a, well inside the window's margin: with no wait
		// allowed (Prefer: wait=0) it goes, not refused "could go in 0s". c, 2.3 ms late,
		// is refused.
		ss := stores(t, 3)
		t0 := newManual().Now() // a whole second
		clock := func(d time.Duration) *manual { return &manual{t: t0.Add(d)} }
		sc := func(i int, c Clock) *Scheduler {
			s, err := New(ss[i], "hr", adapter.PlatformWeCom, Options{Clock: c})
			if err != nil {
				t.Fatal(err)
			}
			return s
		}
		a := sc(0, clock(1200*time.Microsecond))
		b := sc(1, clock(900*time.Microsecond))
		c := sc(2, clock(-1100*time.Microsecond))
		ra, err := a.Reserve(t.Context(), toUser("zhangsan"), 0)
		if err != nil || ra.Wait != 0 {
			t.Fatalf("a: Wait %v, %v; want at once", ra.Wait, err)
		}
		rb, err := b.Reserve(t.Context(), toUser("zhangsan"), 0)
		if err != nil {
			t.Fatalf("b, 0.3 ms behind a, with no wait allowed: %v; want it to go", err)
		}
		if rb.Wait < 0 || rb.Wait > time.Millisecond || rb.At.Before(ra.At.Truncate(time.Millisecond)) {
			t.Errorf("b: At %v Wait %v; want at a's time (%v), within a millisecond", rb.At.Sub(t0), rb.Wait, ra.At.Sub(t0))
		}
		if _, err := c.Reserve(t.Context(), toUser("zhangsan"), 0); adapter.KindOf(err) != adapter.KindRateLimited {
			t.Errorf("c, 2.3 ms behind a, with no wait allowed: %v; want rate_limited", err)
		}
	})

	t.Run("HourLimit", func(t *testing.T) {
		clock := newManual()
		scs := schedulers(t, stores(t, 1), adapter.PlatformWeCom, clock, map[string][]Limit{ScopeMember: {{2, time.Minute}, {3, time.Hour}}})
		t0 := clock.Now()
		mi, h := m(time.Minute), m(time.Hour)
		want := []time.Duration{0, 0, mi, h, h, h + mi}
		for i, w := range want {
			r, err := scs[0].Reserve(t.Context(), toUser("a"), -1)
			if err != nil || r.At.Sub(t0) != w {
				t.Errorf("send %d at %v, %v; want %v", i, r.At.Sub(t0), err, w)
			}
		}
	})

	t.Run("EachRecipientCounts", func(t *testing.T) {
		clock := newManual()
		scs := schedulers(t, stores(t, 1), adapter.PlatformWeCom, clock, map[string][]Limit{ScopeMember: {{2, time.Minute}}, ScopeApp: {{5, time.Hour}}})
		sc := scs[0]
		t0 := clock.Now()
		steps := []struct {
			msg  adapter.Message
			want time.Duration
		}{
			{adapter.Message{To: adapter.Target{Users: []string{"a", "B"}}, Text: "x"}, 0},
			{toUser("a"), 0},
			{toUser("a"), m(time.Minute)}, // a: 2 in the first minute
			{toUser("b"), m(time.Minute)}, // b is "B" (ids are case-insensitive); app: 5th person-send
			{toUser("c"), m(time.Hour)},   // app: 5 person-sends an hour
			{adapter.Message{To: adapter.Target{Party: "2"}, Text: "x"}, m(time.Hour)}, // the app log keeps order
		}
		for i, st := range steps {
			r, err := sc.Reserve(t.Context(), st.msg, -1)
			if err != nil || r.At.Sub(t0) != st.want {
				t.Errorf("step %d (%s) at %v, %v; want %v", i, st.msg.To, r.At.Sub(t0), err, st.want)
			}
		}
		// A text of 3 parts counts 3 against one member.
		long := adapter.Message{To: adapter.Target{User: "d"}, Text: string(make([]byte, 2*2048+1))}
		if got := Plan(adapter.PlatformWeCom, long); got[0].Cost != 3 {
			t.Errorf("Plan(5 kB text) cost %d; want 3", got[0].Cost)
		}
	})

	t.Run("WeCom45009PausesTheBotFleetWide", func(t *testing.T) {
		clock := newManual()
		scs := schedulers(t, stores(t, 2), adapter.PlatformWeCom, clock, nil)
		t0 := clock.Now()
		scs[0].Report(t.Context(), Plan(adapter.PlatformWeCom, toUser("a")),
			&adapter.Error{Kind: adapter.KindRateLimited, Platform: "wecom", Code: "45009", RetryAfter: time.Second})
		_, err := scs[1].Reserve(t.Context(), toUser("other"), 5*time.Second)
		if adapter.RetryAfter(err) != WeComBlock {
			t.Errorf("after 45009: %v (retry after %v); want rate_limited after %v", err, adapter.RetryAfter(err), WeComBlock)
		}
		clock.Advance(WeComBlock)
		if r, err := scs[1].Reserve(t.Context(), toUser("other"), 0); err != nil || !r.At.Equal(t0.Add(WeComBlock)) {
			t.Errorf("after the block: At %v, %v; want at once", r.At.Sub(t0), err)
		}
	})

	t.Run("GraphRetryAfterPausesTheChat", func(t *testing.T) {
		clock := newManual()
		scs := schedulers(t, stores(t, 2), adapter.PlatformGraph, clock, nil)
		t0 := clock.Now()
		chat := func(id string) adapter.Message { return adapter.Message{To: adapter.Target{Chat: id}, Text: "x"} }
		scs[0].Report(t.Context(), Plan(adapter.PlatformGraph, chat("A")),
			&adapter.Error{Kind: adapter.KindRateLimited, Platform: "graph", Code: "TooManyRequests", RetryAfter: 7 * time.Second})
		if r, err := scs[1].Reserve(t.Context(), chat("A"), -1); err != nil || r.At.Sub(t0) != 7*time.Second {
			t.Errorf("chat A after its 429: At %v, %v; want 7s", r.At.Sub(t0), err)
		}
		// chats: 2 a second for the app.
		mail := adapter.Message{To: adapter.Target{Email: "a@example.com"}, Text: "x"}
		if r, err := scs[1].Reserve(t.Context(), mail, -1); err != nil || !r.At.Equal(t0) {
			t.Errorf("mail: At %v, %v; want now", r.At.Sub(t0), err)
		}
	})

	t.Run("GraphChatsPerSecond", func(t *testing.T) {
		clock := newManual()
		scs := schedulers(t, stores(t, 1), adapter.PlatformGraph, clock, nil)
		t0 := clock.Now()
		var times []time.Time
		for i := range 6 {
			r, err := scs[0].Reserve(t.Context(), adapter.Message{To: adapter.Target{Chat: fmt.Sprint("c", i)}, Text: "x"}, -1)
			if err != nil {
				t.Fatal(err)
			}
			times = append(times, r.At)
		}
		checkWindows(t, times, Limit{2, time.Second})
		if last := times[5].Sub(t0); last != 2*m(time.Second) {
			t.Errorf("6th chat post at %v; want 2.066s (2 a second, with the margin)", last)
		}
	})
}

func TestConfig(t *testing.T) {
	if _, err := Merge(adapter.PlatformWeCom, map[string][]Limit{"members": {{1, time.Second}}}); err == nil {
		t.Error("Merge(unknown scope) = nil; want an error naming the scopes")
	}
	l, err := Merge(adapter.PlatformWeCom, map[string][]Limit{ScopeApp: {{2000, 24 * time.Hour}}})
	if err != nil || len(l[ScopeApp]) != 1 || len(l[ScopeMember]) != 2 {
		t.Errorf("Merge(app) = %v, %v", l, err)
	}
	for _, tc := range []struct {
		in   string
		want Limit
		ok   bool
	}{{"30/1m", Limit{30, time.Minute}, true}, {"1000 / 1h", Limit{1000, time.Hour}, true}, {"0/1m", Limit{}, false}, {"30", Limit{}, false}, {"3/0s", Limit{}, false}} {
		got, err := ParseLimit(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("ParseLimit(%q) = %v, %v; want %v (ok %v)", tc.in, got, err, tc.want, tc.ok)
		}
	}
}

// TestConcurrency45033: 45033 halves the bound, successes grow it back.
func TestConcurrency45033(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		sc, err := New(NewMemory(), "hr", adapter.PlatformWeCom, Options{Concurrency: 4})
		if err != nil {
			t.Fatal(err)
		}
		sc.Report(t.Context(), nil, &adapter.Error{Kind: adapter.KindRateLimited, Code: "45033"})
		if n := sc.Concurrency(); n != 2 {
			t.Fatalf("Concurrency after 45033 = %d; want 2", n)
		}
		r, _ := sc.Reserve(t.Context(), toUser("a"), -1)
		d1, _ := r.Acquire(t.Context())
		d2, _ := r.Acquire(t.Context())
		got := make(chan struct{})
		go func() {
			d3, err := r.Acquire(t.Context())
			if err == nil {
				d3(t.Context(), nil)
			}
			close(got)
		}()
		synctest.Wait()
		select {
		case <-got:
			t.Fatal("a third send started under a bound of 2")
		default:
		}
		d1(t.Context(), nil)
		<-got
		d2(t.Context(), nil)
		if n := sc.Concurrency(); n != 3 {
			t.Errorf("Concurrency after 3 successes = %d; want 3", n)
		}
	})
}

// TestBurstReachesTheEmulator: 120 messages to one member in one burst all reach a WeCom
// emulator that drops what exceeds 30 a minute, in order, over 3 minutes of (fake) time;
// without pacing, the emulator drops 90 of them.
func TestBurstReachesTheEmulator(t *testing.T) {
	for _, paced := range []bool{true, false} {
		t.Run(fmt.Sprint("paced=", paced), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				srv := &wecomtest.Server{}
				srv.AddApp("ww1", "secret", 1000002)
				c, err := wecom.New(wecom.Config{CorpID: "ww1", CorpSecret: "secret", AgentID: 1000002}, wecom.Options{HTTPClient: srv.Client()})
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				sc, err := New(NewMemory(), "hr", adapter.PlatformWeCom, Options{})
				if err != nil {
					t.Fatal(err)
				}
				start := time.Now()
				// The burst: every message reserves its place at once; one sender (as the
				// outbox of one bot) then sends them in order, each when its place comes.
				var rs []Reservation
				for range 120 {
					r, err := sc.Reserve(t.Context(), toUser("zhangsan"), -1)
					if err != nil {
						t.Fatal(err)
					}
					if !paced {
						r = Reservation{s: sc}
					}
					rs = append(rs, r)
				}
				for i, r := range rs {
					msg := adapter.Message{To: adapter.Target{User: "zhangsan"}, Text: fmt.Sprint("m", i)}
					if err := r.Sleep(t.Context()); err != nil {
						t.Fatal(err)
					}
					done, err := r.Acquire(t.Context())
					if err != nil {
						t.Fatal(err)
					}
					_, err = c.Send(t.Context(), msg)
					done(t.Context(), err)
					if err != nil {
						t.Fatal(err)
					}
				}
				sent := srv.Sent()
				dropped := 0
				for i, s := range sent {
					if len(s.Dropped) > 0 {
						dropped++
					}
					if paced && s.Content != fmt.Sprint("m", i) {
						t.Errorf("message %d is %q; want m%d (in order)", i, s.Content, i)
					}
				}
				if len(sent) != 120 {
					t.Fatalf("emulator got %d messages; want 120", len(sent))
				}
				span := sent[119].Time.Sub(start)
				if paced && (dropped != 0 || span != 3*m(time.Minute)) {
					t.Errorf("paced: %d dropped, last at %v; want 0 dropped, last at 3×1m2s", dropped, span)
				}
				if !paced && dropped != 90 {
					t.Errorf("unpaced: %d dropped; want 90 (the control: the emulator enforces 30 a minute)", dropped)
				}
			})
		})
	}
}

// TestRedisDownFallsBack: with Redis gone, a Scheduler with a Fallback keeps pacing in this
// host (and keeps a pause it learned), and without one the send fails as unavailable.
func TestRedisDownFallsBack(t *testing.T) {
	srv := redistest.Start(t)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr(), MaxRetries: -1})
	defer rdb.Close()
	clock := newManual()
	limits := map[string][]Limit{ScopeMember: {{2, time.Minute}}}
	withFB, err := New(NewRedis(rdb, "t"), "hr", adapter.PlatformWeCom, Options{Clock: clock, Limits: limits, Fallback: NewMemory()})
	if err != nil {
		t.Fatal(err)
	}
	without, _ := New(NewRedis(rdb, "t"), "hr", adapter.PlatformWeCom, Options{Clock: clock, Limits: limits})
	srv.Kill()
	t0 := clock.Now()
	var got []time.Duration
	for range 3 {
		r, err := withFB.Reserve(t.Context(), toUser("a"), -1)
		if err != nil {
			t.Fatalf("Reserve with a fallback while Redis is down: %v", err)
		}
		got = append(got, r.At.Sub(t0))
	}
	if fmt.Sprint(got) != "[0s 0s 1m2s]" {
		t.Errorf("waits while Redis is down = %v; want [0s 0s 1m2s] (paced in this host)", got)
	}
	if _, err := without.Reserve(t.Context(), toUser("b"), -1); adapter.KindOf(err) != adapter.KindUnavailable {
		t.Errorf("Reserve without a fallback while Redis is down = %v; want unavailable", err)
	}
}

// TestDoSyncPassesRetryAfterOn: a synchronous send's Graph 429 is its caller's to handle (the
// next send is tried at once); an outbox send's pauses the chat; WeCom 45009 pauses the bot
// either way.
func TestDoSyncPassesRetryAfterOn(t *testing.T) {
	clock := newManual()
	chat := adapter.Message{To: adapter.Target{Chat: "A"}, Text: "x"}
	throttled := func(context.Context) error {
		return &adapter.Error{Kind: adapter.KindRateLimited, Code: "TooManyRequests", RetryAfter: time.Minute}
	}
	g, _ := New(NewMemory(), "teams", adapter.PlatformGraph, Options{Clock: clock})
	g.DoSync(t.Context(), chat, 0, throttled)
	if err := g.DoSync(t.Context(), chat, 0, func(context.Context) error { return nil }); err != nil {
		t.Errorf("sync send after a sync 429: %v; want tried at once", err)
	}
	g2, _ := New(NewMemory(), "teams", adapter.PlatformGraph, Options{Clock: clock})
	g2.Do(t.Context(), chat, 0, throttled)
	if _, err := g2.Reserve(t.Context(), chat, 0); adapter.RetryAfter(err) != time.Minute {
		t.Errorf("after an outbox 429: %v; want the chat paused a minute", err)
	}
	w, _ := New(NewMemory(), "hr", adapter.PlatformWeCom, Options{Clock: clock})
	w.DoSync(t.Context(), toUser("a"), 0, func(context.Context) error {
		return &adapter.Error{Kind: adapter.KindRateLimited, Code: "45009", RetryAfter: time.Minute}
	})
	if _, err := w.Reserve(t.Context(), toUser("b"), 0); adapter.RetryAfter(err) != WeComBlock {
		t.Errorf("after a sync 45009: %v; want the bot paused %v", err, WeComBlock)
	}
}
