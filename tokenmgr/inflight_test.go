package tokenmgr_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/seed-a64d9e1f/chatwire/tokenmgr"
)

// Invalidations that arrive while a refresh is in flight, with two Managers sharing one store
// as two hosts share Redis.

const sharedKey = "wecom/ww1/1"

// gatedSource hands out tok-n for the n-th fetch, valid for two hours, except that fetch 2
// waits for gate and returns second.
func gatedSource(gate <-chan struct{}, second string) *fakeSource {
	return &fakeSource{fn: func(ctx context.Context, n int) (tokenmgr.Token, error) {
		v := fmt.Sprintf("tok-%d", n)
		if n == 2 {
			select {
			case <-gate:
			case <-ctx.Done():
				return tokenmgr.Token{}, ctx.Err()
			}
			v = second
		}
		return tokenmgr.Token{Value: v, ExpiresAt: time.Now().Add(twoHours)}, nil
	}}
}

// notHanded fails the test if m hands out bad now. m may have no token (its refresh waits):
// a short wait is given up.
func notHanded(t *testing.T, who string, m *tokenmgr.Manager, bad string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Second)
	defer cancel()
	if tok, err := m.Token(ctx); err == nil && tok.Value == bad {
		t.Fatalf("%s hands out %s after it was invalidated", who, bad)
	}
}

// TestInvalidateDuringRefreshAheadReachesTheStore invalidates a token while this Manager's
// refresh-ahead waits for the upstream. The store and every other Manager must drop the token
// at once, not when that refresh is over (it may take long, or fail).
func TestInvalidateDuringRefreshAheadReachesTheStore(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		gate := make(chan struct{})
		src := gatedSource(gate, "tok-2")
		store := new(tokenmgr.MemoryStore)
		a := tokenmgr.New(sharedKey, src, tokenmgr.Options{Store: store, RefreshAt: 0.5, Jitter: -1, RefreshTimeout: 3 * time.Hour})
		defer a.Close()
		b := tokenmgr.New(sharedKey, src, tokenmgr.Options{Store: store, RefreshAt: 0.9, Jitter: -1, RefreshTimeout: 3 * time.Hour})
		defer b.Close()
		if mustToken(t, a).Value != "tok-1" || mustToken(t, b).Value != "tok-1" {
			t.Fatal("a and b do not share tok-1")
		}
		time.Sleep(twoHours * 6 / 10) // a's refresh-ahead (at 50%) waits for the upstream
		synctest.Wait()
		if n, st := src.fetches(), a.Status(); n != 2 || st.State != "refreshing" {
			t.Fatalf("fetches = %d, a %s; want a's refresh-ahead in flight", n, st.State)
		}

		a.Invalidate("tok-1")
		notHanded(t, "a", a, "tok-1")
		synctest.Wait() // the invalidation reached the store and b
		if e, _ := store.Load(t.Context(), sharedKey); e.Token.Value != "" {
			t.Fatalf("store holds %q after a invalidated it; want it dropped", e.Token.Value)
		}
		notHanded(t, "b", b, "tok-1")

		close(gate)
		synctest.Wait()
		for _, m := range []*tokenmgr.Manager{a, b} {
			if got := mustToken(t, m).Value; got != "tok-2" {
				t.Fatalf("Token() = %q after the refresh; want tok-2", got)
			}
		}
		if n := src.fetches(); n != 2 {
			t.Fatalf("fetches = %d; want 2 (b waited for a's)", n)
		}
	})
}

// TestInvalidatedValueFromInFlightFetchIsNotAdopted: the platform hands back the rejected token
// to a fetch that began before the rejection (WeCom returns the current token while it lives).
// Neither Manager adopts it; one more fetch, made after the rejection, is.
func TestInvalidatedValueFromInFlightFetchIsNotAdopted(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		gate := make(chan struct{})
		src := gatedSource(gate, "tok-1") // fetch 2 returns the token of fetch 1 again
		store := new(tokenmgr.MemoryStore)
		a := tokenmgr.New(sharedKey, src, tokenmgr.Options{Store: store, RefreshAt: 0.5, Jitter: -1, RefreshTimeout: 3 * time.Hour})
		defer a.Close()
		b := tokenmgr.New(sharedKey, src, tokenmgr.Options{Store: store, RefreshAt: 0.9, Jitter: -1, RefreshTimeout: 3 * time.Hour})
		defer b.Close()
		mustToken(t, a)
		mustToken(t, b)
		time.Sleep(twoHours * 6 / 10)
		synctest.Wait()
		if n, st := src.fetches(), a.Status(); n != 2 || st.State != "refreshing" {
			t.Fatalf("fetches = %d, a %s; want a's refresh-ahead in flight", n, st.State)
		}

		a.Invalidate("tok-1")
		close(gate) // fetch 2, begun before the invalidation, returns tok-1
		synctest.Wait()
		for i, m := range []*tokenmgr.Manager{a, b} {
			notHanded(t, fmt.Sprint("manager ", i), m, "tok-1")
			if got := mustToken(t, m).Value; got != "tok-3" {
				t.Fatalf("manager %d Token() = %q; want tok-3, fetched after the invalidation", i, got)
			}
		}
		if n := src.fetches(); n != 3 {
			t.Fatalf("fetches = %d; want 3", n)
		}
	})
}

// pausingStore is a MemoryStore whose next Refresh, once armed, stops before returning its
// result, as a Manager's refresh that has read an entry but not yet adopted it.
type pausingStore struct {
	*tokenmgr.MemoryStore
	armed  atomic.Bool
	paused chan struct{}
	resume chan struct{}
}

func (s *pausingStore) Refresh(ctx context.Context, key string, have uint64, fetch tokenmgr.FetchFunc) (tokenmgr.Entry, bool, error) {
	e, fetched, err := s.MemoryStore.Refresh(ctx, key, have, fetch)
	if s.armed.CompareAndSwap(true, false) {
		s.paused <- struct{}{}
		<-s.resume
	}
	return e, fetched, err
}

// TestRemoteInvalidationOfNewerGenerationDuringRefresh: a's refresh has read generation 2
// when b invalidates generation 2 (a newer one than a holds). a must not adopt it.
func TestRemoteInvalidationOfNewerGenerationDuringRefresh(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := counting(twoHours, 0)
		shared := new(tokenmgr.MemoryStore)
		ps := &pausingStore{MemoryStore: shared, paused: make(chan struct{}), resume: make(chan struct{})}
		a := tokenmgr.New(sharedKey, src, tokenmgr.Options{Store: ps})
		defer a.Close()
		b := tokenmgr.New(sharedKey, src, tokenmgr.Options{Store: shared})
		defer b.Close()
		mustToken(t, a)
		mustToken(t, b)
		time.Sleep(time.Minute)

		ps.armed.Store(true)
		b.Invalidate("tok-1") // a hears it and refreshes too; its refresh reads tok-2 and stops
		<-ps.paused
		synctest.Wait()
		if got := mustToken(t, b).Value; got != "tok-2" {
			t.Fatalf("b.Token() = %q; want tok-2", got)
		}
		b.Invalidate("tok-2") // generation 2, newer than a's
		synctest.Wait()
		notHanded(t, "b", b, "tok-2")
		if got := mustToken(t, b).Value; got != "tok-3" {
			t.Fatalf("b.Token() = %q; want tok-3", got)
		}

		close(ps.resume) // a's refresh returns generation 2, invalidated meanwhile
		synctest.Wait()
		notHanded(t, "a", a, "tok-2")
		if got := mustToken(t, a).Value; got != "tok-3" {
			t.Fatalf("a.Token() = %q; want tok-3 from the store", got)
		}
		if n := src.fetches(); n != 3 {
			t.Fatalf("fetches = %d; want 3", n)
		}
	})
}

// failingInvalidateStore is a MemoryStore whose Invalidate always fails, as a store does
// during an outage.
type failingInvalidateStore struct{ *tokenmgr.MemoryStore }

func (failingInvalidateStore) Invalidate(context.Context, string, uint64) error {
	return errors.New("store unavailable")
}

// TestStoreInvalidateFailureIsNotAWarningEachTime: a store reports its own outages (once);
// the Manager must not add a warning per rejected token.
func TestStoreInvalidateFailureIsNotAWarningEachTime(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var logs logBuffer
		m := tokenmgr.New(sharedKey, counting(twoHours, 0), tokenmgr.Options{
			Store: failingInvalidateStore{new(tokenmgr.MemoryStore)}, Logger: newLogger(&logs)})
		defer m.Close()
		for range 5 {
			m.Invalidate(mustToken(t, m).Value)
			time.Sleep(time.Minute)
		}
		out := logs.String()
		if n := strings.Count(out, `"level":"DEBUG","msg":"token store invalidate failed"`); n != 5 {
			t.Errorf("%d debug lines for 5 failed store invalidations; want 5:\n%s", n, out)
		}
		if strings.Contains(out, `"level":"WARN"`) {
			t.Errorf("warning logged for a failed store invalidation:\n%s", out)
		}
	})
}
