package wecom_test

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/seed-a64d9e1f/chatwire/adapter"
	"github.com/seed-a64d9e1f/chatwire/adapter/wecom"
	"github.com/seed-a64d9e1f/chatwire/adapter/wecom/wecomtest"
	"github.com/seed-a64d9e1f/chatwire/internal/redistest"
	"github.com/seed-a64d9e1f/chatwire/tokenmgr"
	"github.com/seed-a64d9e1f/chatwire/tokenmgr/redisstore"
)

// TestFleetRepeatedTokenNoRejection: two hosts share tokens through a real redis-server, and
// WeCom (wecomtest) hands back its current token on a repeated gettoken with a full expires_in.
// The host that did not fetch a token refreshes it ahead first (RefreshAt 0.6, while it has
// 40% of its life left): the token must keep the expiry stored for it, not the later one the
// repeated gettoken reports, or both hosts hand it out past its real end and a send fails
// with 42001 once per lifetime. Over 5 token lifetimes: no send rejected, no invalidation.
//
// It runs in real time (Redis), with 5 s tokens: long enough that a token's last moments
// (it is handed out until 5 ms before its end, when no newer one can be had) leave room for
// a send in flight on a loaded machine, short enough for the whole run to take ~25 s.
func TestFleetRepeatedTokenNoRejection(t *testing.T) {
	const life = 5 * time.Second
	srv := &wecomtest.Server{TokenLifetime: life}
	srv.AddApp(testCorp, testSecret, testAgent)
	rds := redistest.Start(t)

	var invalidations atomic.Int64
	host := func(opts tokenmgr.Options) *wecom.Client {
		rc := redis.NewClient(&redis.Options{Addr: rds.Addr()})
		st, err := redisstore.New(rc, redisstore.Options{})
		if err != nil {
			t.Fatal(err)
		}
		opts.Store = st
		opts.OnEvent = func(ev tokenmgr.Event) {
			if ev.Kind == tokenmgr.EventInvalidate {
				invalidations.Add(1)
			}
		}
		c, err := wecom.New(testConfig(), wecom.Options{HTTPClient: srv.Client(), TokenOptions: opts})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			c.Close()
			st.Close()
			rc.Close()
		})
		return c
	}
	first := host(tokenmgr.Options{}) // defaults: refreshes at 75-85% of a lifetime
	if _, err := first.Send(t.Context(), text(adapter.Target{User: "u"}, "first")); err != nil {
		t.Fatal(err)
	}
	second := host(tokenmgr.Options{RefreshAt: 0.6, Jitter: -1})

	stop := time.Now().Add(5 * life)
	var wg sync.WaitGroup
	var failed atomic.Int64
	for i, c := range []*wecom.Client{first, second} {
		wg.Go(func() {
			for n := 0; time.Now().Before(stop); n++ {
				if _, err := c.Send(t.Context(), text(adapter.Target{User: "u"}, fmt.Sprint(i, "-", n))); err != nil {
					failed.Add(1)
					t.Errorf("host %d send %d: %v", i, n, err)
				}
				time.Sleep(50 * time.Millisecond)
			}
		})
	}
	wg.Wait()
	rejected := srv.Calls("message/send") - len(srv.Sent())
	t.Logf("%d sends, %d gettoken calls, %d tokens issued, %d sends rejected and retried, %d invalidations",
		len(srv.Sent()), srv.TokenRequests(), srv.TokensIssued(), rejected, invalidations.Load())
	if srv.TokensIssued() < 5 {
		t.Errorf("TokensIssued() = %d; want at least 5 over 5 lifetimes", srv.TokensIssued())
	}
	if rejected != 0 || invalidations.Load() != 0 {
		t.Errorf("%d sends rejected with an expired token, %d invalidations; want 0 (a token handed back keeps the expiry stored for it)",
			rejected, invalidations.Load())
	}
}
