package redisstore_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/seed-a64d9e1f/chatwire/tokenmgr"
	"github.com/seed-a64d9e1f/chatwire/tokenmgr/redisstore"
)

const key = "graph/tenant/client/bot"

// countingSource hands out tok-1, tok-2, … living life each.
type countingSource struct {
	life time.Duration
	n    atomic.Int64
}

func (s *countingSource) Token(ctx context.Context) (tokenmgr.Token, error) {
	n := s.n.Add(1)
	return tokenmgr.Token{Value: fmt.Sprintf("tok-%d", n), ExpiresAt: time.Now().Add(s.life)}, nil
}

func newManager(t *testing.T, st tokenmgr.Store, src tokenmgr.Source) *tokenmgr.Manager {
	t.Helper()
	m := tokenmgr.New(key, src, tokenmgr.Options{Store: st, ExpirySkew: testSkew})
	t.Cleanup(func() { _ = m.Close() })
	return m
}

// waitShared polls until every manager hands out the same token and ok accepts it, and
// returns that token.
func waitShared(t *testing.T, what string, ms []*tokenmgr.Manager, within time.Duration, ok func(string) bool) string {
	t.Helper()
	deadline := time.Now().Add(within)
	var vals []string
	for time.Now().Before(deadline) {
		vals = vals[:0]
		for _, m := range ms {
			ctx, cancel := context.WithTimeout(t.Context(), time.Second)
			tok, err := m.Token(ctx)
			cancel()
			if err != nil {
				t.Fatalf("%s: Token: %v", what, err)
			}
			vals = append(vals, tok.Value)
		}
		same := true
		for _, v := range vals {
			same = same && v == vals[0]
		}
		if same && ok(vals[0]) {
			return vals[0]
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("%s: managers hold %v after %v; want one shared token", what, vals, within)
	return ""
}

func tokNum(v string) int64 {
	n, _ := strconv.ParseInt(strings.TrimPrefix(v, "tok-"), 10, 64)
	return n
}

// TestRedisRestart kills redis-server in the middle of a run and starts it again, empty:
// no Token call fails, each host refreshes by itself meanwhile, and afterwards a refresh is
// shared again (one fetch for all three hosts).
func TestRedisRestart(t *testing.T) {
	srv := startRedis(t)
	src := &countingSource{life: time.Second}
	var (
		logs   [3]syncBuffer
		ms     []*tokenmgr.Manager
		stores []*redisstore.Store
	)
	for i := range 3 {
		log := slog.New(slog.NewTextHandler(&logs[i], &slog.HandlerOptions{Level: slog.LevelDebug}))
		st, _ := newHost(t, srv.Addr(), redisstore.Options{LockTTL: time.Second, PollInterval: 50 * time.Millisecond, Logger: log})
		stores = append(stores, st)
		m := tokenmgr.New(key, src, tokenmgr.Options{Store: st, ExpirySkew: testSkew, Logger: log})
		t.Cleanup(func() { _ = m.Close() })
		ms = append(ms, m)
	}
	defer func() {
		if t.Failed() {
			for i := range 3 {
				t.Logf("host %d: status %+v\n%s", i, ms[i].Status(), logs[i].String())
			}
		}
	}()

	// Callers ask for tokens all the time, as a busy bot would.
	var (
		failures atomic.Int64
		calls    atomic.Int64
		lastErr  atomic.Value
		stop     = make(chan struct{})
		wg       sync.WaitGroup
	)
	for _, m := range ms {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
				if _, err := m.Token(ctx); err != nil {
					failures.Add(1)
					lastErr.Store(err)
				}
				cancel()
				calls.Add(1)
				time.Sleep(time.Millisecond)
			}
		})
	}
	defer func() { close(stop); wg.Wait() }()

	waitShared(t, "before the outage", ms, 5*time.Second, func(v string) bool { return tokNum(v) >= 2 })

	srv.Kill()
	deadline := time.Now().Add(5 * time.Second)
	for i, st := range stores {
		for st.Stats().LocalRefreshes < 1 {
			if time.Now().After(deadline) {
				t.Fatalf("host %d made no local refresh during the outage: stats %+v", i, st.Stats())
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	during := src.n.Load()
	srv.Restart()

	v1 := waitShared(t, "after the restart", ms, 5*time.Second, func(string) bool { return true })
	f1 := src.n.Load()
	v2 := waitShared(t, "next refresh after the restart", ms, 5*time.Second, func(v string) bool { return v != v1 })
	f2 := src.n.Load()
	t.Logf("fetches: %d before the restart, %d when hosts shared %s again, next refresh %s after %d; %d Token calls",
		during, f1, v1, v2, f2, calls.Load())
	if f2-f1 != 1 || tokNum(v2) != f2 {
		t.Errorf("refresh after the restart: token %s, fetches %d → %d; want one shared fetch", v2, f1, f2)
	}
	if n := failures.Load(); n > 0 {
		t.Errorf("%d of %d Token calls failed while the upstream was healthy; last: %v", n, calls.Load(), lastErr.Load())
	}
	for i, st := range stores {
		s := st.Stats()
		if !s.Available || s.Outages < 1 {
			t.Errorf("host %d stats %+v; want available after at least one outage", i, s)
		}
	}
	if n := strings.Count(logs[0].String(), "redis unavailable"); n != 1 {
		t.Errorf("host 0 logged %d outage warnings; want 1", n)
	}
	if !strings.Contains(logs[0].String(), "redis available again") {
		t.Errorf("host 0 logged no recovery")
	}
}

// rotatingSource is a StatefulSource whose state (a refresh token) rotates on every use: it
// accepts only the latest state and records every state redeemed.
type rotatingSource struct {
	life time.Duration

	mu       sync.Mutex
	cur      int // the only state accepted
	redeemed []int
	bad      []string // redemptions of a stale or unknown state
}

func (s *rotatingSource) Token(ctx context.Context) (tokenmgr.Token, error) {
	return tokenmgr.Token{}, errors.New("stateful only")
}

func (s *rotatingSource) TokenState(ctx context.Context, state []byte) (tokenmgr.Token, []byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	got := 0
	if state != nil {
		got, _ = strconv.Atoi(strings.TrimPrefix(string(state), "refresh-"))
	}
	if got != s.cur {
		s.bad = append(s.bad, string(state))
		return tokenmgr.Token{}, nil, fmt.Errorf("%w: invalid_grant: refresh token already redeemed (fp %s)", tokenmgr.ErrCredentials, tokenmgr.Fingerprint(string(state)))
	}
	s.redeemed = append(s.redeemed, got)
	s.cur++
	return tokenmgr.Token{Value: fmt.Sprintf("tok-%d", s.cur), ExpiresAt: time.Now().Add(s.life)},
		[]byte(fmt.Sprintf("refresh-%d", s.cur)), nil
}

// TestStateRotation runs two hosts on a source whose refresh token rotates on every fetch,
// with refresh-ahead and invalidations from both sides: every state is redeemed exactly once,
// in order, and none is lost.
func TestStateRotation(t *testing.T) {
	srv := startRedis(t)
	src := &rotatingSource{life: 400 * time.Millisecond}
	var ms []*tokenmgr.Manager
	for range 2 {
		st, _ := newHost(t, srv.Addr(), redisstore.Options{LockTTL: time.Second, PollInterval: 20 * time.Millisecond})
		ms = append(ms, newManager(t, st, src))
	}
	deadline := time.Now().Add(3 * time.Second)
	for i := 0; time.Now().Before(deadline); i++ {
		m := ms[i%2]
		ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
		tok, err := m.Token(ctx)
		cancel()
		if err != nil {
			t.Fatalf("Token: %v", err)
		}
		if i%7 == 0 { // the platform rejects the token now and then
			m.Invalidate(tok.Value)
		}
		time.Sleep(10 * time.Millisecond)
	}
	src.mu.Lock()
	defer src.mu.Unlock()
	t.Logf("states redeemed: %v", src.redeemed)
	if len(src.bad) > 0 {
		t.Errorf("stale states redeemed: %q", src.bad)
	}
	if len(src.redeemed) < 5 {
		t.Errorf("only %d fetches; want at least 5 rotations to prove anything", len(src.redeemed))
	}
	for i, s := range src.redeemed {
		if s != i {
			t.Fatalf("redeemed states %v: position %d is %d; want 0, 1, 2, … (each state once, in order)", src.redeemed, i, s)
		}
	}
}

// blockingFetch returns a FetchFunc that signals started, then waits for release.
func blockingFetch(started chan<- struct{}, release <-chan struct{}, v string) tokenmgr.FetchFunc {
	return func(ctx context.Context, prev tokenmgr.Entry) (tokenmgr.Entry, error) {
		started <- struct{}{}
		<-release
		return tokenmgr.Entry{Token: tokenmgr.Token{Value: v, ExpiresAt: time.Now().Add(time.Hour)}, Issued: time.Now()}, nil
	}
}

func fixedFetch(v string, n *atomic.Int64) tokenmgr.FetchFunc {
	return func(ctx context.Context, prev tokenmgr.Entry) (tokenmgr.Entry, error) {
		n.Add(1)
		return tokenmgr.Entry{Token: tokenmgr.Token{Value: v, ExpiresAt: time.Now().Add(time.Hour)}, Issued: time.Now()}, nil
	}
}

// TestStaleHolder lets a holder's lease run out mid-fetch (as in a long GC pause): another
// host fetches and writes; the stale holder's write is refused and it returns the newer entry.
func TestStaleHolder(t *testing.T) {
	srv := startRedis(t)
	a, rc := newHost(t, srv.Addr(), redisstore.Options{LockTTL: time.Minute})
	b, _ := newHost(t, srv.Addr(), redisstore.Options{LockTTL: time.Minute})
	ctx := t.Context()

	started, release := make(chan struct{}, 1), make(chan struct{})
	type result struct {
		e       tokenmgr.Entry
		fetched bool
		err     error
	}
	done := make(chan result, 1)
	go func() {
		e, f, err := a.Refresh(ctx, key, 0, blockingFetch(started, release, "stale"))
		done <- result{e, f, err}
	}()
	<-started
	// The lease of a expires (simulated: a stalled process cannot extend it).
	if n := rc.Del(ctx, "chatwire:tok:{"+key+"}:lock").Val(); n != 1 {
		t.Fatalf("lock key not found: DEL = %d", n)
	}
	var fetches atomic.Int64
	e, fetched, err := b.Refresh(ctx, key, 0, fixedFetch("fresh", &fetches))
	if err != nil || !fetched || e.Token.Value != "fresh" || e.Gen != 1 {
		t.Fatalf("b.Refresh = %q gen %d fetched %v, %v; want fresh gen 1 fetched", e.Token.Value, e.Gen, fetched, err)
	}
	close(release)
	r := <-done
	if r.err != nil || r.fetched || r.e.Token.Value != "fresh" || r.e.Gen != 1 {
		t.Fatalf("stale a.Refresh = %q gen %d fetched %v, %v; want b's entry (fresh, gen 1), not fetched", r.e.Token.Value, r.e.Gen, r.fetched, r.err)
	}
	if got, _ := b.Load(ctx, key); got.Token.Value != "fresh" || got.Gen != 1 {
		t.Fatalf("stored %q gen %d; want fresh gen 1", got.Token.Value, got.Gen)
	}
}

// TestRefreshProtocol checks Refresh against its contract on one Redis: a newer stored entry is
// returned without a fetch, concurrent refreshes from many hosts fetch once, and a waiter gives
// up when its ctx is done.
func TestRefreshProtocol(t *testing.T) {
	srv := startRedis(t)
	var hosts []*redisstore.Store
	for range 5 {
		st, _ := newHost(t, srv.Addr(), redisstore.Options{LockTTL: 5 * time.Second})
		hosts = append(hosts, st)
	}
	ctx := t.Context()
	if e, err := hosts[0].Load(ctx, key); err != nil || e.Gen != 0 || e.Token.Value != "" || e.State != nil {
		t.Fatalf("Load of an absent key = %+v, %v; want a zero Entry and no error", e, err)
	}
	if _, _, err := hosts[0].Refresh(ctx, "", 0, nil); err == nil {
		t.Fatal("Refresh of an empty key succeeded; want an error")
	}
	var fetches atomic.Int64
	var wg sync.WaitGroup
	results := make([]tokenmgr.Entry, 20)
	for i := range results {
		wg.Go(func() {
			e, _, err := hosts[i%len(hosts)].Refresh(ctx, key, 0, fixedFetch("one", &fetches))
			if err != nil {
				t.Errorf("Refresh: %v", err)
			}
			results[i] = e
		})
	}
	wg.Wait()
	for i, e := range results {
		if e.Token.Value != "one" || e.Gen != 1 {
			t.Fatalf("refresh %d = %q gen %d; want one gen 1", i, e.Token.Value, e.Gen)
		}
	}
	if n := fetches.Load(); n != 1 {
		t.Fatalf("20 concurrent refreshes on 5 hosts made %d fetches; want 1", n)
	}
	// Stored gen 1 > have 0: returned without fetching.
	e, fetched, err := hosts[1].Refresh(ctx, key, 0, fixedFetch("two", &fetches))
	if err != nil || fetched || e.Token.Value != "one" {
		t.Fatalf("Refresh(have 0) = %q fetched %v, %v; want stored one, not fetched", e.Token.Value, fetched, err)
	}
	// have = stored gen: fetch, gen 2.
	e, fetched, err = hosts[2].Refresh(ctx, key, 1, fixedFetch("two", &fetches))
	if err != nil || !fetched || e.Token.Value != "two" || e.Gen != 2 {
		t.Fatalf("Refresh(have 1) = %q gen %d fetched %v, %v; want two gen 2 fetched", e.Token.Value, e.Gen, fetched, err)
	}

	// A waiter leaves on its ctx while another host holds the lock.
	started, release := make(chan struct{}, 1), make(chan struct{})
	go func() { _, _, _ = hosts[3].Refresh(ctx, key, 2, blockingFetch(started, release, "three")) }()
	<-started
	wctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	t0 := time.Now()
	_, _, err = hosts[4].Refresh(wctx, key, 2, fixedFetch("never", &fetches))
	if !errors.Is(err, context.DeadlineExceeded) || time.Since(t0) > 2*time.Second {
		t.Fatalf("waiting Refresh = %v after %v; want DeadlineExceeded soon after 200ms", err, time.Since(t0))
	}
	// When the holder finishes, a waiter is woken by the publish, not by a poll.
	slow, _ := newHost(t, srv.Addr(), redisstore.Options{PollInterval: time.Hour})
	waitSubscribed(t, hosts[0], slow)
	got := make(chan tokenmgr.Entry, 1)
	go func() {
		e, _, _ := slow.Refresh(ctx, key, 2, fixedFetch("never", &fetches))
		got <- e
	}()
	waitWithin(t, "the waiter to find the lock taken", 5*time.Second, func() bool { return slow.Stats().Waits == 1 })
	close(release)
	select {
	case e := <-got:
		if e.Token.Value != "three" || e.Gen != 3 {
			t.Fatalf("woken waiter got %q gen %d; want three gen 3", e.Token.Value, e.Gen)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("waiter not woken by the publish within 5s (poll interval 1h)")
	}
	if st := slow.Stats(); st.Waits != 1 || st.Shared != 1 || st.Fetches != 0 {
		t.Errorf("waiter Stats = %+v; want 1 wait, 1 shared entry, no fetch", st)
	}
}

// TestWatch checks that a watcher hears about writes and invalidations made by other hosts,
// also after redis-server restarted.
func TestWatch(t *testing.T) {
	srv := startRedis(t)
	a, _ := newHost(t, srv.Addr(), redisstore.Options{})
	b, _ := newHost(t, srv.Addr(), redisstore.Options{})
	changes := make(chan tokenmgr.Change, 16)
	stop := a.Watch(key, func(c tokenmgr.Change) { changes <- c })
	defer stop()
	ctx := t.Context()
	var n atomic.Int64
	expect := func(want tokenmgr.Change) {
		t.Helper()
		select {
		case c := <-changes:
			if c != want {
				t.Fatalf("change %+v; want %+v", c, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("no change within 5s; want %+v", want)
		}
	}
	waitSubscribed(t, b, a)
	if _, _, err := b.Refresh(ctx, key, 0, fixedFetch("x", &n)); err != nil {
		t.Fatal(err)
	}
	expect(tokenmgr.Change{Gen: 1})
	if err := b.Invalidate(ctx, key, 1); err != nil {
		t.Fatal(err)
	}
	expect(tokenmgr.Change{Gen: 1, Invalidated: true})

	srv.Restart()
	// After resubscribing, a tells its watchers nothing (the entry is gone with the restart)
	// and then hears b's next write.
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, _, err := b.Refresh(ctx, key, 0, fixedFetch("y", &n)); err == nil && b.Stats().Available {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("b cannot write after the restart")
		}
		time.Sleep(20 * time.Millisecond)
	}
	for {
		select {
		case c := <-changes:
			if !c.Invalidated && c.Gen >= 1 {
				return // heard a write after the restart
			}
		case <-time.After(10 * time.Second):
			t.Fatal("watcher heard no write within 10s of the restart")
		}
	}
}

// waitSubscribed writes through b until a's watchers can hear it: the subscription of a new
// Store is set up in the background.
func waitSubscribed(t *testing.T, b, a *redisstore.Store) {
	t.Helper()
	const probe = "probe/subscribed"
	heard := make(chan struct{}, 1)
	stop := a.Watch(probe, func(tokenmgr.Change) {
		select {
		case heard <- struct{}{}:
		default:
		}
	})
	defer stop()
	var n atomic.Int64
	for have := uint64(0); ; have++ {
		if _, _, err := b.Refresh(t.Context(), probe, have, fixedFetch("p", &n)); err != nil {
			t.Fatal(err)
		}
		select {
		case <-heard:
			return
		case <-time.After(50 * time.Millisecond):
		}
		if have > 100 {
			t.Fatal("subscription not ready after 100 writes")
		}
	}
}

// TestTTL checks that the key TTL is only garbage collection: far beyond the token's expiry,
// and none for entries holding state.
func TestTTL(t *testing.T) {
	srv := startRedis(t)
	st, rc := newHost(t, srv.Addr(), redisstore.Options{})
	ctx := t.Context()
	var n atomic.Int64
	if _, _, err := st.Refresh(ctx, "a", 0, fixedFetch("x", &n)); err != nil {
		t.Fatal(err)
	}
	if ttl := rc.PTTL(ctx, "chatwire:tok:{a}").Val(); ttl < 24*time.Hour {
		t.Errorf("TTL of a stateless entry expiring in 1h = %v; want ≥ 1h + 24h retention", ttl)
	}
	withState := func(ctx context.Context, prev tokenmgr.Entry) (tokenmgr.Entry, error) {
		return tokenmgr.Entry{Token: tokenmgr.Token{Value: "y", ExpiresAt: time.Now().Add(time.Hour)}, State: []byte("refresh")}, nil
	}
	if _, _, err := st.Refresh(ctx, "b", 0, withState); err != nil {
		t.Fatal(err)
	}
	if ttl := rc.PTTL(ctx, "chatwire:tok:{b}").Val(); ttl != -1 {
		t.Errorf("TTL of an entry with state = %v; want none (-1)", ttl)
	}
	if n := rc.Exists(ctx, "chatwire:tok:{b}:lock").Val(); n != 0 {
		t.Errorf("lock left behind after Refresh")
	}
}

// TestEncryption checks that with a key nothing readable reaches Redis, that a previous key
// still reads, and that without the right key the entry is useless.
func TestEncryption(t *testing.T) {
	srv := startRedis(t)
	k1, k2 := bytes.Repeat([]byte{1}, 32), bytes.Repeat([]byte{2}, 32)
	ctx := t.Context()
	const tokVal, stVal = "SECRET-ACCESS-TOKEN", "SECRET-REFRESH-TOKEN"
	fetch := func(ctx context.Context, prev tokenmgr.Entry) (tokenmgr.Entry, error) {
		return tokenmgr.Entry{Token: tokenmgr.Token{Value: tokVal, ExpiresAt: time.Now().Add(time.Hour)}, State: []byte(stVal)}, nil
	}
	raw := func(rc *redis.Client) string {
		h := rc.HGetAll(ctx, "chatwire:tok:{"+key+"}").Val()
		var b strings.Builder
		for k, v := range h {
			fmt.Fprintf(&b, "%s=%s\n", k, v)
		}
		return b.String()
	}

	// In the clear, the test can see the secrets: the check below can fail.
	plain, rc := newHost(t, srv.Addr(), redisstore.Options{KeyPrefix: "chatwire:tok:"})
	if _, _, err := plain.Refresh(ctx, key, 0, fetch); err != nil {
		t.Fatal(err)
	}
	if r := raw(rc); !strings.Contains(r, tokVal) || !strings.Contains(r, stVal) {
		t.Fatalf("plaintext entry does not show the secrets; the check is broken:\n%q", r)
	}
	rc.Del(ctx, "chatwire:tok:{"+key+"}")

	enc1, _ := newHost(t, srv.Addr(), redisstore.Options{EncryptionKey: k1})
	if _, _, err := enc1.Refresh(ctx, key, 0, fetch); err != nil {
		t.Fatal(err)
	}
	if r := raw(rc); strings.Contains(r, tokVal) || strings.Contains(r, stVal) || strings.Contains(r, "SECRET") {
		t.Fatalf("encrypted entry shows a secret:\n%q", r)
	}
	for _, tc := range []struct {
		name string
		opts redisstore.Options
		ok   bool
	}{
		{"same key", redisstore.Options{EncryptionKey: k1}, true},
		{"rotated: new key, old one previous", redisstore.Options{EncryptionKey: k2, PreviousKeys: [][]byte{k1}}, true},
		{"other key", redisstore.Options{EncryptionKey: k2}, false},
		{"no key", redisstore.Options{}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st, _ := newHost(t, srv.Addr(), tc.opts)
			e, err := st.Load(ctx, key)
			if err != nil {
				t.Fatal(err)
			}
			readable := e.Token.Value == tokVal && string(e.State) == stVal
			if readable != tc.ok || e.Gen != 1 {
				t.Fatalf("Load = token %q state %q gen %d; want readable=%v gen 1", e.Token.Value, e.State, e.Gen, tc.ok)
			}
			if !tc.ok && (e.Token.Value != "" || e.State != nil) {
				t.Fatalf("unreadable entry gave token %q state %q; want neither", e.Token.Value, e.State)
			}
		})
	}

	// Rotation: a store with the new key refreshes; its write uses the new key, which the
	// old-key-only store can no longer read.
	enc2, _ := newHost(t, srv.Addr(), redisstore.Options{EncryptionKey: k2, PreviousKeys: [][]byte{k1}})
	var n atomic.Int64
	if _, _, err := enc2.Refresh(ctx, key, 1, func(ctx context.Context, prev tokenmgr.Entry) (tokenmgr.Entry, error) {
		if string(prev.State) != stVal {
			t.Errorf("fetch got state %q; want the one sealed with the previous key", prev.State)
		}
		return fixedFetch("ROTATED", &n)(ctx, prev)
	}); err != nil {
		t.Fatal(err)
	}
	if e, _ := enc1.Load(ctx, key); e.Token.Value != "" || e.Gen != 2 {
		t.Fatalf("old-key store read %q gen %d after rotation; want nothing readable at gen 2", e.Token.Value, e.Gen)
	}
	if r := raw(rc); strings.Contains(r, "ROTATED") {
		t.Fatalf("rotated entry shows the token:\n%q", r)
	}

	// A Manager on a store without the key refetches instead of using garbage. (plain itself
	// would hand out the entry it read before the key was set, as during an outage.)
	nokey, _ := newHost(t, srv.Addr(), redisstore.Options{})
	src := &countingSource{life: time.Hour}
	m := newManager(t, nokey, src)
	tok, err := m.Token(ctx)
	if err != nil || tok.Value != "tok-1" {
		t.Fatalf("Manager on an unreadable entry: Token = %q, %v; want a fresh fetch tok-1", tok.Value, err)
	}
}

// syncBuffer is a bytes.Buffer safe for concurrent use, for slog output.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// hintedError is a platform error as an adapter makes it: its code only in its text, and a
// Hint method (like wecom.APIError).
type hintedError struct{}

func (hintedError) Error() string {
	return "wecom: gettoken: errcode 40013: invalid corpid SECRET-free-text-stays-here"
}
func (hintedError) Hint() string              { return "corp_id is wrong: copy it from My Company" }
func (hintedError) Is(target error) bool      { return target == tokenmgr.ErrCredentials }
func (hintedError) RetryAfter() time.Duration { return 0 }

// TestFetchFailureShared checks that when the lock holder's fetch fails, the processes waiting
// for it get the failure instead of each calling the failing upstream in turn: its kind
// (errors.Is), and the platform's code, hint and wait when the holder's error had them, but
// nothing else of the holder's error text.
func TestFetchFailureShared(t *testing.T) {
	srv := startRedis(t)
	for i, tc := range []struct {
		name string
		err  error
		kind error
		// want a *tokenmgr.PlatformError with these (code "" = no PlatformError at all)
		platform, code, hint string
		wait                 time.Duration
	}{
		{name: "temporary", err: fmt.Errorf("%w: 503", tokenmgr.ErrTemporary), kind: tokenmgr.ErrTemporary},
		{name: "credentials", err: fmt.Errorf("%w: errcode", tokenmgr.ErrCredentials), kind: tokenmgr.ErrCredentials},
		{name: "platform error", kind: tokenmgr.ErrCredentials,
			err: fmt.Errorf("graph: token: %w", &tokenmgr.PlatformError{Platform: "graph", Code: "AADSTS7000215",
				Message: "Invalid client secret provided SECRET-free-text-stays-here", Hint: "use the secret's Value, not its ID", Kind: tokenmgr.ErrCredentials}),
			platform: "graph", code: "AADSTS7000215", hint: "use the secret's Value, not its ID"},
		{name: "rate limited", kind: tokenmgr.ErrTemporary,
			err: &tokenmgr.PlatformError{Platform: "wecom", Code: "45009", Message: "api freq out of limit SECRET-free-text-stays-here",
				Kind: tokenmgr.ErrTemporary, Wait: 90 * time.Second},
			platform: "wecom", code: "45009", wait: 90 * time.Second},
		// The platform is the key's first part when the error does not say.
		{name: "adapter error", err: fmt.Errorf("refresh: %w", hintedError{}), kind: tokenmgr.ErrCredentials,
			platform: "graph", code: "40013", hint: "corp_id is wrong: copy it from My Company"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			key := fmt.Sprintf("%s-%d", key, i)
			holder, _ := newHost(t, srv.Addr(), redisstore.Options{})
			var fetches atomic.Int64
			started, release := make(chan struct{}, 1), make(chan struct{})
			go func() {
				_, _, _ = holder.Refresh(t.Context(), key, 0, func(ctx context.Context, prev tokenmgr.Entry) (tokenmgr.Entry, error) {
					fetches.Add(1)
					started <- struct{}{}
					<-release
					return tokenmgr.Entry{}, tc.err
				})
			}()
			<-started
			var waiters []*redisstore.Store
			for range 3 {
				w, _ := newHost(t, srv.Addr(), redisstore.Options{PollInterval: time.Hour})
				waitSubscribed(t, holder, w)
				waiters = append(waiters, w)
			}
			errs := make(chan error, 3)
			for _, w := range waiters {
				go func() {
					_, _, err := w.Refresh(t.Context(), key, 0, func(ctx context.Context, prev tokenmgr.Entry) (tokenmgr.Entry, error) {
						fetches.Add(1)
						return tokenmgr.Entry{}, tc.err
					})
					errs <- err
				}()
			}
			for _, w := range waiters {
				waitWithin(t, "every waiter to find the lock taken", 5*time.Second, func() bool { return w.Stats().Waits == 1 })
			}
			close(release)
			for range 3 {
				err := <-errs
				if !errors.Is(err, tc.kind) {
					t.Errorf("waiter Refresh = %v; want the holder's failure kind %v", err, tc.kind)
				}
				if err != nil && strings.Contains(err.Error(), "SECRET") {
					t.Errorf("waiter error %q carries the holder's free text; want only code and hint", err)
				}
				var pe *tokenmgr.PlatformError
				switch {
				case tc.code == "":
					if errors.As(err, &pe) {
						t.Errorf("waiter error %v is a PlatformError %+v; the holder's error had no code", err, pe)
					}
				case !errors.As(err, &pe):
					t.Errorf("waiter error %v is no *tokenmgr.PlatformError; want code %s", err, tc.code)
				case pe.Code != tc.code || pe.Hint != tc.hint || pe.Platform != tc.platform || pe.Kind != tc.kind || tokenmgr.RetryAfter(err) != tc.wait:
					t.Errorf("waiter error = %+v (retry after %v); want platform %q code %q hint %q kind %v wait %v",
						pe, tokenmgr.RetryAfter(err), tc.platform, tc.code, tc.hint, tc.kind, tc.wait)
				case tc.hint != "" && !strings.Contains(err.Error(), tc.hint) || !strings.Contains(err.Error(), tc.code):
					t.Errorf("waiter error text %q lacks the code or the hint", err)
				}
			}
			if n := fetches.Load(); n != 1 {
				t.Errorf("%d fetches; want 1 (the holder's)", n)
			}
			for _, w := range waiters {
				if st := w.Stats(); st.PeerFailures != 1 || st.Fetches != 0 {
					t.Errorf("waiter Stats = %+v; want 1 peer failure, no fetch", st)
				}
			}
		})
	}
}

// slowSource blocks every fetch until its ctx is done, as a token endpoint that hangs.
type slowSource struct{ started chan struct{} }

func (s slowSource) Token(ctx context.Context) (tokenmgr.Token, error) {
	s.started <- struct{}{}
	<-ctx.Done()
	// As a source over HTTP reports it: a temporary failure of the request.
	return tokenmgr.Token{}, fmt.Errorf("%w: Get token: %w", tokenmgr.ErrTemporary, ctx.Err())
}

// TestClosedHolderLetsOthersFetch closes the Manager holding the lock while its fetch runs
// (a host shutting down): the fetch fails with the Manager's own cancellation, which says
// nothing about the upstream, so the waiting process is not told to back off; it takes the
// lock and fetches at once.
func TestClosedHolderLetsOthersFetch(t *testing.T) {
	srv := startRedis(t)
	holder, _ := newHost(t, srv.Addr(), redisstore.Options{})
	waiter, _ := newHost(t, srv.Addr(), redisstore.Options{PollInterval: time.Hour})
	waitSubscribed(t, holder, waiter)

	src := slowSource{started: make(chan struct{}, 1)}
	m := tokenmgr.New(key, src, tokenmgr.Options{Store: holder})
	go func() { _, _ = m.Token(t.Context()) }()
	<-src.started

	type result struct {
		e       tokenmgr.Entry
		fetched bool
		err     error
	}
	got := make(chan result, 1)
	var fetches atomic.Int64
	go func() {
		e, fetched, err := waiter.Refresh(t.Context(), key, 0, fixedFetch("mine", &fetches))
		got <- result{e, fetched, err}
	}()
	waitWithin(t, "the waiter to find the lock taken", 5*time.Second, func() bool { return waiter.Stats().Waits == 1 })
	m.Close() // cancels the holder's fetch
	select {
	case r := <-got:
		if r.err != nil || !r.fetched || r.e.Token.Value != "mine" {
			t.Fatalf("waiter Refresh after the holder closed = %q fetched %v, %v; want its own fetch", r.e.Token.Value, r.fetched, r.err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("waiter not done 5s after the holder closed (poll interval 1h)")
	}
	if st := waiter.Stats(); st.PeerFailures != 0 || st.Fetches != 1 {
		t.Errorf("waiter Stats = %+v; want no peer failure, 1 fetch", st)
	}
}

// TestOutageWriteBack refreshes while Redis is down and then restarted empty: the local fetch
// starts from the state seen last, and the entry it made (with its rotated state) is written
// back once Redis answers, so other hosts get it.
func TestOutageWriteBack(t *testing.T) {
	srv := startRedis(t)
	var logs syncBuffer
	log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	st, _ := newHost(t, srv.Addr(), redisstore.Options{Timeout: 200 * time.Millisecond, Logger: log})
	ctx := t.Context()
	// Values carry a marker so the log check below can find any leak.
	withState := func(v, state, wantPrev string) tokenmgr.FetchFunc {
		return func(ctx context.Context, prev tokenmgr.Entry) (tokenmgr.Entry, error) {
			if string(prev.State) != wantPrev {
				t.Errorf("fetch %s: prev state %q; want %q", v, prev.State, wantPrev)
			}
			return tokenmgr.Entry{Token: tokenmgr.Token{Value: v, ExpiresAt: time.Now().Add(time.Hour)}, State: []byte(state)}, nil
		}
	}
	defer func() {
		out := logs.String()
		if strings.Contains(out, "SECRET") {
			t.Errorf("a token or state reached the log:\n%s", out)
		}
		if !strings.Contains(out, "redis unavailable") || !strings.Contains(out, "stored a token fetched while redis was unavailable") {
			t.Errorf("log lacks the outage and write-back lines:\n%s", out)
		}
	}()
	if _, _, err := st.Refresh(ctx, key, 0, withState("SECRET-t1", "SECRET-s1", "")); err != nil {
		t.Fatal(err)
	}
	srv.Kill()
	t0 := time.Now()
	e, fetched, err := st.Refresh(ctx, key, 1, withState("SECRET-t2", "SECRET-s2", "SECRET-s1"))
	if err != nil || !fetched || e.Gen != 2 || e.Token.Value != "SECRET-t2" {
		t.Fatalf("Refresh without Redis = %q gen %d fetched %v, %v; want t2 gen 2 fetched", e.Token.Value, e.Gen, fetched, err)
	}
	t.Logf("refresh without redis took %v (Timeout 200ms)", time.Since(t0))
	if s := st.Stats(); s.Available || s.Outages != 1 || s.LocalRefreshes != 1 {
		t.Errorf("Stats = %+v; want unavailable, 1 outage, 1 local refresh", s)
	}
	if _, err := st.Load(ctx, key); err == nil {
		t.Error("Load without Redis succeeded")
	}
	if err := st.Invalidate(ctx, key, 1); !errors.Is(err, redisstore.ErrUnavailable) {
		t.Errorf("Invalidate right after a failure = %v; want ErrUnavailable at once", err)
	}

	srv.Restart() // empty: no persistence
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := st.Load(ctx, key); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Load still fails 10s after the restart: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	other, _ := newHost(t, srv.Addr(), redisstore.Options{})
	got, err := other.Load(ctx, key)
	if err != nil || got.Gen != 2 || got.Token.Value != "SECRET-t2" || string(got.State) != "SECRET-s2" {
		t.Fatalf("another host reads %q gen %d state %q, %v; want the written-back t2 gen 2 state s2", got.Token.Value, got.Gen, got.State, err)
	}
	if !st.Stats().Available {
		t.Errorf("Stats().Available = false after Redis answered")
	}
	// The next refresh continues the generations and the state.
	if e, fetched, err := other.Refresh(ctx, key, 2, withState("SECRET-t3", "SECRET-s3", "SECRET-s2")); err != nil || !fetched || e.Gen != 3 {
		t.Fatalf("Refresh after write-back = gen %d fetched %v, %v; want gen 3 fetched", e.Gen, fetched, err)
	}
}

// TestSharedStateOnly checks that with SharedStateOnly a refresh redeeming state is refused
// without Redis, while a stateless one still falls back to a local fetch.
func TestSharedStateOnly(t *testing.T) {
	srv := startRedis(t)
	st, _ := newHost(t, srv.Addr(), redisstore.Options{SharedStateOnly: true, Timeout: 200 * time.Millisecond})
	ctx := t.Context()
	var fetches atomic.Int64
	stateful := func(ctx context.Context, prev tokenmgr.Entry) (tokenmgr.Entry, error) {
		fetches.Add(1)
		return tokenmgr.Entry{Token: tokenmgr.Token{Value: "a", ExpiresAt: time.Now().Add(time.Hour)}, State: []byte("refresh")}, nil
	}
	if _, _, err := st.Refresh(ctx, "with-state", 0, stateful); err != nil {
		t.Fatal(err)
	}
	if _, _, err := st.Refresh(ctx, "stateless", 0, fixedFetch("b", &fetches)); err != nil {
		t.Fatal(err)
	}
	srv.Kill()
	_, _, err := st.Refresh(ctx, "with-state", 1, stateful)
	if !errors.Is(err, redisstore.ErrUnavailable) || !errors.Is(err, tokenmgr.ErrTemporary) {
		t.Errorf("stateful Refresh without Redis = %v; want ErrUnavailable and ErrTemporary", err)
	}
	if e, fetched, err := st.Refresh(ctx, "stateless", 1, fixedFetch("c", &fetches)); err != nil || !fetched || e.Token.Value != "c" {
		t.Errorf("stateless Refresh without Redis = %q fetched %v, %v; want a local fetch", e.Token.Value, fetched, err)
	}
	if n := fetches.Load(); n != 3 {
		t.Errorf("%d fetches; want 3 (none for the refused stateful refresh)", n)
	}
}
