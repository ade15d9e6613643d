package redisstore_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/seed-a64d9e1f/chatwire/internal/redistest"
	"github.com/seed-a64d9e1f/chatwire/tokenmgr"
	"github.com/seed-a64d9e1f/chatwire/tokenmgr/redisstore"
)

// newSentinelHost returns a Store on its own go-redis UniversalClient that knows only the
// Sentinel's address and the master's name, as a host configured for Sentinel would have.
func newSentinelHost(t *testing.T, sentinel *redistest.Server, opts redisstore.Options) *redisstore.Store {
	t.Helper()
	c := redis.NewUniversalClient(&redis.UniversalOptions{Addrs: []string{sentinel.Addr()}, MasterName: redistest.MasterName})
	if _, ok := c.(*redis.Client); !ok { // NewUniversalClient makes a FailoverClient (a *Client) for a MasterName
		t.Fatalf("UniversalClient with a MasterName is a %T; want a failover *redis.Client", c)
	}
	s, err := redisstore.New(c, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = s.Close()
		_ = c.Close()
	})
	return s
}

// sharedInvalidation invalidates the token of ms[0] and waits until every Manager hands out
// one new token, which it returns.
func sharedInvalidation(t *testing.T, ms []*tokenmgr.Manager, old string) string {
	t.Helper()
	ms[0].Invalidate(old)
	return waitShared(t, "after invalidating "+old, ms, 5*time.Second, func(v string) bool { return v != old })
}

// TestSentinel runs two hosts through a Sentinel (a go-redis FailoverClient built by
// NewUniversalClient from the Sentinel's address and MasterName): they make one upstream fetch
// for both, and an invalidation on one reaches the other, as on a single node.
func TestSentinel(t *testing.T) {
	master := redistest.Start(t)
	sentinel := redistest.StartSentinel(t, master)
	ctx := t.Context()
	raw := redis.NewClient(&redis.Options{Addr: master.Addr()})
	defer raw.Close()

	src := &countingSource{life: time.Hour}
	a := newSentinelHost(t, sentinel, redisstore.Options{})
	b := newSentinelHost(t, sentinel, redisstore.Options{})
	waitSubscribed(t, a, b)
	waitSubscribed(t, b, a)
	ms := []*tokenmgr.Manager{newManager(t, a, src), newManager(t, b, src)}

	tok := waitShared(t, "first token", ms, 5*time.Second, func(string) bool { return true })
	if n := src.n.Load(); n != 1 {
		t.Fatalf("%d upstream fetches for two hosts; want 1", n)
	}
	// The entry is on the master the Sentinel named, not somewhere else.
	if r := raw.HGetAll(ctx, "chatwire:tok:{"+key+"}").Val(); r["gen"] != "1" {
		t.Fatalf("master holds %v; want the entry at gen 1", r)
	}

	tok2 := sharedInvalidation(t, ms, tok)
	if n := src.n.Load(); n != 2 {
		t.Errorf("%d upstream fetches after one invalidation; want 2", n)
	}
	if r := raw.HGetAll(ctx, "chatwire:tok:{"+key+"}").Val(); r["gen"] != "2" {
		t.Errorf("master holds %v after the invalidation; want gen 2", r)
	}
	for i, st := range []*redisstore.Store{a, b} {
		if s := st.Stats(); !s.Available || s.Outages != 0 || s.LocalRefreshes != 0 {
			t.Errorf("host %d: Stats %+v; want available, no outage, no local refresh", i, s)
		}
	}
	t.Logf("tokens %s then %s", tokenmgr.Fingerprint(tok), tokenmgr.Fingerprint(tok2))
}

// TestSentinelFailover kills the master: the Sentinel promotes the replica, the Managers keep
// serving their token meanwhile, and afterwards the hosts share through the new master (an
// invalidation, one fetch for both).
func TestSentinelFailover(t *testing.T) {
	master := redistest.StartArgs(t, "--repl-diskless-sync-delay", "0") // the replica syncs at once, not after 5 s
	_, mport, _ := strings.Cut(master.Addr(), ":")
	replica := redistest.StartArgs(t, "--replicaof", "127.0.0.1", mport)
	ctx := t.Context()
	rawR := redis.NewClient(&redis.Options{Addr: replica.Addr()})
	defer rawR.Close()
	waitWithin(t, "replica in sync", 10*time.Second, func() bool {
		return strings.Contains(rawR.Info(ctx, "replication").Val(), "master_link_status:up")
	})
	// Started after the replica connected, the Sentinel sees it in its first INFO of the master.
	sentinel := redistest.StartSentinel(t, master)
	rawS := redis.NewSentinelClient(&redis.Options{Addr: sentinel.Addr()})
	defer rawS.Close()
	waitWithin(t, "sentinel knows the replica", 10*time.Second, func() bool {
		rs, err := rawS.Replicas(ctx, redistest.MasterName).Result()
		return err == nil && len(rs) == 1 && rs[0]["flags"] == "slave"
	})

	src := &countingSource{life: time.Hour}
	a := newSentinelHost(t, sentinel, redisstore.Options{})
	b := newSentinelHost(t, sentinel, redisstore.Options{})
	ms := []*tokenmgr.Manager{newManager(t, a, src), newManager(t, b, src)}
	tok := waitShared(t, "first token", ms, 5*time.Second, func(string) bool { return true })
	waitWithin(t, "entry replicated", 5*time.Second, func() bool {
		return rawR.HGet(ctx, "chatwire:tok:{"+key+"}", "gen").Val() == "1"
	})

	start := time.Now()
	master.Kill()
	waitWithin(t, "sentinel promotes the replica", 15*time.Second, func() bool {
		addr, err := rawS.GetMasterAddrByName(ctx, redistest.MasterName).Result()
		return err == nil && len(addr) == 2 && addr[0]+":"+addr[1] == replica.Addr()
	})
	// While there is no master, the Managers hand out the token they hold: no Redis I/O.
	for i, m := range ms {
		if got, err := m.Token(ctx); err != nil || got.Value != tok {
			t.Fatalf("host %d during the failover: Token = %q, %v; want %q", i, got.Value, err, tok)
		}
	}
	// Sharing resumes through the new master in both directions.
	waitSubscribed(t, a, b)
	waitSubscribed(t, b, a)
	t.Logf("failover and resubscription took %v", time.Since(start).Round(time.Millisecond))

	sharedInvalidation(t, ms, tok)
	if n := src.n.Load(); n != 2 {
		t.Errorf("%d upstream fetches after an invalidation on the new master; want 2", n)
	}
	if g := rawR.HGet(ctx, "chatwire:tok:{"+key+"}", "gen").Val(); g != "2" {
		t.Errorf("new master holds gen %q; want 2", g)
	}
}

// waitWithin polls cond every 20 ms until it holds, failing the test after within.
func waitWithin(t *testing.T, what string, within time.Duration, cond func() bool) {
	t.Helper()
	start := time.Now()
	defer func() { t.Logf("%s: %v", what, time.Since(start).Round(time.Millisecond)) }()
	deadline := start.Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not after %v", what, within)
		}
		select {
		case <-time.After(20 * time.Millisecond):
		case <-t.Context().Done():
			t.Fatal(context.Cause(t.Context()))
		}
	}
}
