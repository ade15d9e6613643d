package tokenmgr_test

import (
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/seed-a64d9e1f/chatwire/tokenmgr"
)

// TestRefreshPointLearnsFetchLatency: with the default options and a token endpoint that takes
// 20% of the token's lifetime (a 1 s token, a 200 ms fetch), no Token call after the first
// waits: the refresh starts early enough to end before the token stops being handed out.
// Eight Managers, each with its own jittered refresh point, are run at once; each is called
// every millisecond across 50 lifetimes.
func TestRefreshPointLearnsFetchLatency(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const life, latency, lifetimes = time.Second, 200 * time.Millisecond, 50
		var wg sync.WaitGroup
		for i := range 8 {
			wg.Go(func() {
				src := counting(life, latency)
				m := tokenmgr.New("wecom/ww1/1", src, tokenmgr.Options{})
				defer m.Close()
				mustToken(t, m)
				start := time.Now()
				var blocked int
				var longest time.Duration
				for time.Since(start) < lifetimes*life {
					t0 := time.Now()
					tok := mustToken(t, m)
					if d := time.Since(t0); d > 0 {
						blocked++
						longest = max(longest, d)
					}
					if !tok.ExpiresAt.After(time.Now()) {
						t.Errorf("manager %d: Token() returned a token that expired at %v", i, tok.ExpiresAt)
						return
					}
					time.Sleep(time.Millisecond)
				}
				if blocked != 0 {
					t.Errorf("manager %d: %d Token calls waited, up to %v; want none (refresh ahead by the fetch latency)", i, blocked, longest)
				}
				// About one fetch per lifetime: the refresh comes earlier, not more often than
				// twice a lifetime.
				if n := src.fetches(); n < lifetimes || n > 2*lifetimes+1 {
					t.Errorf("manager %d: %d fetches over %d lifetimes; want between 1 and 2 per lifetime", i, n, lifetimes)
				}
			})
		}
		wg.Wait()
	})
}
