package redisstore_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/seed-a64d9e1f/chatwire/internal/redistest"
	"github.com/seed-a64d9e1f/chatwire/tokenmgr/redisstore"
)

// TestCluster runs two hosts on a (one-node) Redis Cluster through redis.ClusterClient: keys of
// one token share a hash slot whatever the key contains, scripts run, and pub/sub carries
// writes and invalidations.
func TestCluster(t *testing.T) {
	srv := redistest.StartArgs(t, "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf")
	ctx := t.Context()
	raw := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	defer raw.Close()
	if err := raw.Do(ctx, "CLUSTER", "ADDSLOTSRANGE", 0, 16383).Err(); err != nil {
		t.Fatalf("CLUSTER ADDSLOTSRANGE: %v", err)
	}
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(raw.ClusterInfo(ctx).Val(), "cluster_state:ok"); {
		if time.Now().After(deadline) {
			t.Fatalf("cluster not ok after 10s:\n%s", raw.ClusterInfo(ctx).Val())
		}
		time.Sleep(20 * time.Millisecond)
	}
	for _, k := range []string{"wecom/corp/1000002", "a}b", "{x}y", "graph/t/c/u{1}"} {
		v := raw.ClusterKeySlot(ctx, "chatwire:tok:{"+k+"}").Val()
		l := raw.ClusterKeySlot(ctx, "chatwire:tok:{"+k+"}:lock").Val()
		if v != l {
			t.Errorf("key %q: entry in slot %d, lock in slot %d; want one slot", k, v, l)
		}
	}

	var ms []*managerWithStore
	src := &countingSource{life: time.Hour}
	for range 2 {
		cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: []string{srv.Addr()}})
		t.Cleanup(func() { _ = cc.Close() })
		st, err := redisstore.New(cc, redisstore.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = st.Close() })
		ms = append(ms, &managerWithStore{newManager(t, st, src), st})
	}
	waitSubscribed(t, ms[0].st, ms[1].st)
	tok, err := ms[0].m.Token(ctx)
	if err != nil {
		t.Fatal(err)
	}
	tok1, err := ms[1].m.Token(ctx)
	if err != nil || tok1.Value != tok.Value || src.n.Load() != 1 {
		t.Fatalf("second host got %q, %v after %d fetches; want %q after 1", tok1.Value, err, src.n.Load(), tok.Value)
	}
	ms[0].m.Invalidate(tok.Value)
	deadline := time.Now().Add(5 * time.Second)
	for {
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		got, err := ms[1].m.Token(cctx)
		cancel()
		if err == nil && got.Value != tok.Value {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("second host still uses the invalidated token after 5s (%v)", err)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if n := src.n.Load(); n != 2 {
		t.Errorf("%d fetches after one invalidation; want 2", n)
	}
	if r := raw.HGetAll(ctx, "chatwire:tok:{"+key+"}").Val(); r["gen"] != "2" {
		t.Errorf("stored entry %v; want gen 2", r)
	}
}
