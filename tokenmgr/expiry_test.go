package tokenmgr_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/seed-a64d9e1f/chatwire/tokenmgr"
)

// fullLifetimePlatform hands back its current token while that has at least a second left,
// each time with a full lifetime as its expiry (a repeated WeCom gettoken may report the full
// 7200 s: which expires_in it reports is unverified), and issues a new token in the last
// second, as wecomtest does. Fetching never extends a token: accepts tells whether the
// platform takes a value now.
type fullLifetimePlatform struct {
	life time.Duration

	mu     sync.Mutex
	cur    string
	ends   map[string]time.Time // the real end of every token issued
	issued int
}

func (p *fullLifetimePlatform) source() *fakeSource {
	return &fakeSource{fn: func(ctx context.Context, n int) (tokenmgr.Token, error) {
		p.mu.Lock()
		defer p.mu.Unlock()
		now := time.Now()
		if p.cur == "" || p.ends[p.cur].Sub(now) < time.Second {
			p.issued++
			p.cur = fmt.Sprintf("tok-%d", p.issued)
			if p.ends == nil {
				p.ends = make(map[string]time.Time)
			}
			p.ends[p.cur] = now.Add(p.life)
		}
		return tokenmgr.Token{Value: p.cur, ExpiresAt: now.Add(p.life)}, nil
	}}
}

func (p *fullLifetimePlatform) accepts(v string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	end, ok := p.ends[v]
	return ok && time.Now().Before(end)
}

// TestRepeatedTokenKeepsStoredExpiry: a platform hands back a token it issued before with a
// later expiry than its real one. Whichever Manager (host) fetches it again, the token keeps
// the expiry stored for it, so no Manager hands it out after its real end: no call is rejected.
// With two Managers on one store, the one that did not fetch the token refreshes first (it
// has no memory of that token but what the store holds).
func TestRepeatedTokenKeepsStoredExpiry(t *testing.T) {
	for _, hosts := range []int{1, 2} {
		t.Run(fmt.Sprintf("%d hosts", hosts), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				p := &fullLifetimePlatform{life: twoHours}
				store := new(tokenmgr.MemoryStore)
				var ms []*tokenmgr.Manager
				var invalidations int
				var mu sync.Mutex
				for i := range hosts {
					opts := tokenmgr.Options{Store: store, OnEvent: func(ev tokenmgr.Event) {
						if ev.Kind == tokenmgr.EventInvalidate {
							mu.Lock()
							invalidations++
							mu.Unlock()
						}
					}}
					if i == 1 {
						opts.RefreshAt, opts.Jitter = 0.6, -1 // before the first host's 75-85%
					}
					m := tokenmgr.New("wecom/ww1/1", p.source(), opts)
					defer m.Close()
					ms = append(ms, m)
				}
				start := time.Now()
				rejected := 0
				for time.Since(start) < 5*twoHours {
					for _, m := range ms {
						tok, err := m.Token(t.Context())
						if err != nil {
							t.Fatalf("Token() at %v: %v", time.Since(start), err)
						}
						if !p.accepts(tok.Value) {
							rejected++
							m.Invalidate(tok.Value) // as a client answered 42001 would
						}
					}
					time.Sleep(10 * time.Second)
				}
				p.mu.Lock()
				issued := p.issued
				p.mu.Unlock()
				t.Logf("%d tokens issued over 5 lifetimes", issued)
				if rejected != 0 || invalidations != 0 {
					t.Errorf("%d calls rejected, %d invalidations over 5 lifetimes; want 0 (a token handed back keeps its stored expiry)",
						rejected, invalidations)
				}
			})
		})
	}
}

// TestRepeatedTokenAfterInvalidationKeepsExpiry: an invalidation clears the stored token, so
// the store no longer knows a value's expiry; the Manager that held it still does. A platform
// that hands the rejected value back with a later expiry does not extend it.
func TestRepeatedTokenAfterInvalidationKeepsExpiry(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		start := time.Now()
		src := &fakeSource{fn: func(ctx context.Context, n int) (tokenmgr.Token, error) {
			return tokenmgr.Token{Value: "tok", ExpiresAt: time.Now().Add(twoHours)}, nil
		}}
		m := tokenmgr.New("wecom/ww1/1", src, tokenmgr.Options{})
		defer m.Close()
		first := mustToken(t, m)
		time.Sleep(time.Hour)
		m.Invalidate(first.Value)
		tok := mustToken(t, m)
		if src.fetches() != 2 {
			t.Fatalf("fetches = %d; want 2 (the invalidation refetches)", src.fetches())
		}
		if !tok.ExpiresAt.Equal(start.Add(twoHours)) {
			t.Errorf("token handed back after its invalidation expires at start+%v; want start+%v (its first expiry)",
				tok.ExpiresAt.Sub(start), twoHours)
		}
	})
}
