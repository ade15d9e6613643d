package graph

import (
	"fmt"
	"net/http"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/seed-a64d9e1f/chatwire/adapter/graph/graphtest"
	"github.com/seed-a64d9e1f/chatwire/tokenmgr"
)

// refreshInEndpoint is a token endpoint answering like Entra for a long-lived token: a
// 24-hour expires_in with a 12-hour refresh_in (as a number, or as a string, as some
// proxies send it). It records when each request came.
type refreshInEndpoint struct {
	mu        sync.Mutex
	at        []time.Time
	refreshIn string // JSON value, "" for none
}

func (h *refreshInEndpoint) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.mu.Lock()
	h.at = append(h.at, time.Now())
	n := len(h.at)
	h.mu.Unlock()
	ri := ""
	if h.refreshIn != "" {
		ri = `,"refresh_in":` + h.refreshIn
	}
	w.Header().Set("Content-Type", "application/json")
	fmt.Fprintf(w, `{"token_type":"Bearer","expires_in":86399,"ext_expires_in":86399%s,"access_token":"at-%d","refresh_token":"rt-%d"}`, ri, n, n)
}

func (h *refreshInEndpoint) times() []time.Time {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]time.Time(nil), h.at...)
}

// TestRefreshInHonoured: when the token response carries refresh_in, the token is refreshed
// then (as MSAL does), not at the default 80% of expires_in; without it, at the default.
func TestRefreshInHonoured(t *testing.T) {
	for _, tc := range []struct {
		name, refreshIn string
		delegated       bool
		want            time.Duration // when the second fetch must have happened, ± 1 min
	}{
		{"client credentials, number", "43199", false, 43199 * time.Second},
		{"delegated, number", "43199", true, 43199 * time.Second},
		{"delegated, string", `"43199"`, true, 43199 * time.Second},
		{"client credentials, absent", "", false, 0}, // default: later than 12 h
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				h := &refreshInEndpoint{refreshIn: tc.refreshIn}
				hc := &http.Client{Transport: graphtest.HandlerTransport(h)}
				cfg := Config{Tenant: testTenant, ClientID: testClient, ClientSecret: testSecret, LoginBase: base, HTTPClient: hc}
				store := new(tokenmgr.MemoryStore)
				var src tokenmgr.Source = cfg.ClientCredentials()
				if tc.delegated {
					src = cfg.RefreshSource()
					store.Put("k", tokenmgr.Entry{State: []byte("rt-0")})
				}
				m := tokenmgr.New("k", src, tokenmgr.Options{Store: store, Jitter: -1})
				defer m.Close()
				start := time.Now()
				if _, err := m.Token(t.Context()); err != nil {
					t.Fatal(err)
				}
				time.Sleep(13 * time.Hour)
				synctest.Wait()
				at := h.times()
				if tc.want == 0 {
					if len(at) != 1 {
						t.Errorf("fetches at %v; want none after the first within 13 h without refresh_in", at)
					}
					return
				}
				if len(at) < 2 {
					t.Fatalf("one fetch in 13 h; want a refresh at refresh_in (%v)", tc.want)
				}
				if d := at[1].Sub(start); d < tc.want-time.Minute || d > tc.want+time.Minute {
					t.Errorf("second fetch after %v; want at refresh_in %v", d, tc.want)
				}
			})
		})
	}
}
