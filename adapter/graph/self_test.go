package graph

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// TestSelfSharedAndFailureNotCached: concurrent self lookups share GET /me; a failed lookup is
// not cached (the next caller asks again); a success is.
func TestSelfSharedAndFailureNotCached(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ae := newAdapter(t, func(o *Options) { o.NotificationURL = "" })
		ctx := t.Context()
		if _, err := ae.a.Tokens().Token(ctx); err != nil { // the token refresh is not what is counted
			t.Fatal(err)
		}
		meCalls := func() int {
			n := 0
			for _, r := range ae.srv.Requests() {
				if r.Method == http.MethodGet && r.Path == "/v1.0/me" {
					n++
				}
			}
			return n
		}
		ae.srv.InjectStatus(1, http.StatusInternalServerError, 0)
		if _, err := ae.a.self(ctx); err == nil {
			t.Fatal("self with Graph failing = nil error")
		}
		var wg sync.WaitGroup
		for range 20 {
			wg.Go(func() {
				if u, err := ae.a.self(ctx); err != nil || u == nil {
					t.Errorf("self() = %v, %v; want the bot's user", u, err)
				}
			})
		}
		wg.Wait()
		if _, err := ae.a.self(ctx); err != nil {
			t.Fatal(err)
		}
		if got := meCalls(); got != 2 {
			t.Errorf("GET /me called %d times; want 2 (the failure, then one shared by 21 callers)", got)
		}
	})
}

// gateMe holds GET /me requests until open is closed.
type gateMe struct {
	base http.RoundTripper
	open chan struct{}
}

func (g gateMe) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.URL.Path == "/v1.0/me" {
		select {
		case <-g.open:
		case <-r.Context().Done():
			return nil, r.Context().Err()
		}
	}
	return g.base.RoundTrip(r)
}

// TestSelfWaiterCanLeave: while one self lookup is on the network, another caller whose ctx
// ends returns at once (no lock is held across the call), and the shared lookup still
// finishes for the first caller.
func TestSelfWaiterCanLeave(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		open := make(chan struct{})
		ae := newAdapter(t, func(o *Options) {
			o.NotificationURL = ""
			o.HTTPClient = &http.Client{Transport: gateMe{base: o.HTTPClient.Transport, open: open}}
		})
		first := make(chan error, 1)
		go func() {
			_, err := ae.a.self(t.Context())
			first <- err
		}()
		synctest.Wait() // the first lookup waits at the gate
		ctx, cancel := context.WithTimeout(t.Context(), time.Second)
		defer cancel()
		start := time.Now()
		if _, err := ae.a.self(ctx); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("second self() = %v; want its ctx's deadline", err)
		}
		if got := time.Since(start); got != time.Second {
			t.Errorf("second self() returned after %v; want 1s (its deadline)", got)
		}
		close(open)
		if err := <-first; err != nil {
			t.Errorf("first self() = %v; want the bot's user", err)
		}
	})
}
