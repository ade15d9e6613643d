package tokenmgr_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/silenceper/wechat/v2/credential"
	"golang.org/x/oauth2"

	"github.com/seed-a64d9e1f/chatwire/tokenmgr"
)

// rotatingSource is an OAuth refresh-token grant whose refresh token rotates on every use and
// is single-use, as the Graph emulator's strict mode is.
type rotatingSource struct {
	mu       sync.Mutex
	current  string   // the only refresh token the platform accepts
	redeemed []string // refresh tokens presented, in order
	n        int
}

func (s *rotatingSource) Token(ctx context.Context) (tokenmgr.Token, error) {
	return tokenmgr.Token{}, errors.New("rotatingSource needs its state")
}

func (s *rotatingSource) TokenState(ctx context.Context, state []byte) (tokenmgr.Token, []byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.redeemed = append(s.redeemed, string(state))
	if string(state) != s.current {
		return tokenmgr.Token{}, nil, &tokenmgr.PlatformError{Platform: "graph", Code: "invalid_grant",
			Message: "AADSTS70000: refresh token already redeemed", Kind: tokenmgr.ErrCredentials}
	}
	s.n++
	s.current = fmt.Sprintf("rt-%d", s.n)
	return tokenmgr.Token{Value: fmt.Sprintf("at-%d", s.n), ExpiresAt: time.Now().Add(time.Hour)}, []byte(s.current), nil
}

func TestRotatingStateIsPersistedWithTheToken(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := &rotatingSource{current: "rt-0"}
		store := new(tokenmgr.MemoryStore)
		store.Put("graph/t/c/bot", tokenmgr.Entry{State: []byte("rt-0")}) // from a login
		m := tokenmgr.New("graph/t/c/bot", src, tokenmgr.Options{Store: store})
		seen := map[string]bool{}
		for range 10 {
			seen[mustToken(t, m).Value] = true
			time.Sleep(time.Hour) // refresh-ahead runs in the background meanwhile
		}
		m.Close()
		if len(seen) < 10 {
			t.Fatalf("saw %d distinct tokens in 10 hours of 1-hour tokens; want >= 10", len(seen))
		}
		// A restart: a new Manager over the same store redeems the latest refresh token.
		m2 := tokenmgr.New("graph/t/c/bot", src, tokenmgr.Options{Store: store})
		defer m2.Close()
		time.Sleep(2 * time.Hour)
		before := src.n
		if got, want := mustToken(t, m2).Value, fmt.Sprintf("at-%d", before+1); got != want {
			t.Fatalf("Token() after restart = %q; want %s", got, want)
		}
		for i, rt := range src.redeemed {
			if want := fmt.Sprintf("rt-%d", i); rt != want {
				t.Fatalf("redemption %d used %q; want %q (never lost, never reused)", i, rt, want)
			}
		}
		e, _ := store.Load(t.Context(), "graph/t/c/bot")
		if want := fmt.Sprint(src.n); string(e.State) != "rt-"+want || e.Token.Value != "at-"+want {
			t.Fatalf("stored entry = %q/%q; want at-%s/rt-%s written together", e.Token.Value, e.State, want, want)
		}
	})
}

// Two managers over one store behave like two hosts sharing Redis.
func TestSharedStoreOneFetchAndInvalidationEverywhere(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := counting(twoHours, 100*time.Millisecond)
		store := new(tokenmgr.MemoryStore)
		a := tokenmgr.New("wecom/ww1/1", src, tokenmgr.Options{Store: store})
		defer a.Close()
		b := tokenmgr.New("wecom/ww1/1", src, tokenmgr.Options{Store: store})
		defer b.Close()

		var wg sync.WaitGroup
		for _, m := range []*tokenmgr.Manager{a, b, a, b} {
			wg.Go(func() { mustToken(t, m) })
		}
		wg.Wait()
		if n := src.fetches(); n != 1 {
			t.Fatalf("fetches = %d for two managers; want 1", n)
		}
		if st := b.Status(); st.Fingerprint != tokenmgr.Fingerprint("tok-1") {
			t.Fatalf("b holds %s; want tok-1", st.Fingerprint)
		}

		// a learns the platform rejected tok-1: b drops it too, and one fetch serves both.
		time.Sleep(time.Minute)
		a.Invalidate("tok-1")
		synctest.Wait()
		if st := b.Status(); st.State == "fresh" && st.Fingerprint == tokenmgr.Fingerprint("tok-1") {
			t.Fatalf("b still hands out tok-1 after a invalidated it")
		}
		if got := mustToken(t, b).Value; got != "tok-2" {
			t.Fatalf("b.Token() = %q; want tok-2", got)
		}
		if got := mustToken(t, a).Value; got != "tok-2" || src.fetches() != 2 {
			t.Fatalf("a.Token() = %q after %d fetches; want tok-2 after 2", got, src.fetches())
		}
		if n := a.Status().Fetches + b.Status().Fetches; n != 2 {
			t.Fatalf("a and b made %d fetches together; want 2", n)
		}
		// Refresh-ahead: whichever refreshes first, the other picks the token up from the store.
		time.Sleep(105 * time.Minute) // past both jittered refresh points (at most 85% of 2h after ~1 min)
		synctest.Wait()
		if n := src.fetches(); n != 3 {
			t.Fatalf("fetches after one refresh-ahead cycle = %d; want 3", n)
		}
		if a.Status().Fingerprint != b.Status().Fingerprint {
			t.Fatalf("a and b hold different tokens after refresh-ahead")
		}
	})
}

func TestMemoryStoreConditionalSemantics(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := t.Context()
		s := new(tokenmgr.MemoryStore)
		calls := 0
		fetch := func(ctx context.Context, prev tokenmgr.Entry) (tokenmgr.Entry, error) {
			calls++
			return tokenmgr.Entry{Token: tokenmgr.Token{Value: fmt.Sprintf("v%d", calls)}, State: prev.State}, nil
		}
		e, fetched, _ := s.Refresh(ctx, "k", 0, fetch)
		if !fetched || e.Gen != 1 || e.Token.Value != "v1" {
			t.Fatalf("Refresh(have 0) = %+v, %v; want v1 gen 1 fetched", e, fetched)
		}
		e, fetched, _ = s.Refresh(ctx, "k", 0, fetch) // someone else already wrote gen 1
		if fetched || e.Gen != 1 || calls != 1 {
			t.Fatalf("Refresh(have 0) again = gen %d fetched %v calls %d; want gen 1 from the store", e.Gen, fetched, calls)
		}
		s.Invalidate(ctx, "k", 0) // stale generation: no effect
		if e, _ := s.Load(ctx, "k"); e.Token.Value != "v1" {
			t.Fatalf("Invalidate(old gen) cleared the token")
		}
		s.Invalidate(ctx, "k", 1)
		if e, _ := s.Load(ctx, "k"); e.Token.Value != "" || e.Gen != 1 {
			t.Fatalf("Invalidate(gen 1) left %+v; want the token cleared, gen kept", e)
		}
		e, fetched, _ = s.Refresh(ctx, "k", 1, fetch)
		if !fetched || e.Gen != 2 || e.Token.Value != "v2" {
			t.Fatalf("Refresh(have 1) = %+v, %v; want v2 gen 2", e, fetched)
		}
		// A waiter gives up on its ctx while another fetch holds the key.
		hold, holding := make(chan struct{}), make(chan struct{})
		go s.Refresh(ctx, "k", 2, func(context.Context, tokenmgr.Entry) (tokenmgr.Entry, error) {
			close(holding)
			<-hold
			return tokenmgr.Entry{Token: tokenmgr.Token{Value: "v3"}}, nil
		})
		<-holding
		short, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
		defer cancel()
		t0 := time.Now()
		if _, _, err := s.Refresh(short, "k", 2, fetch); !errors.Is(err, context.DeadlineExceeded) || time.Since(t0) != 20*time.Millisecond {
			t.Fatalf("Refresh while another fetch holds the key = %v after %v; want DeadlineExceeded after 20ms", err, time.Since(t0))
		}
		close(hold)
		synctest.Wait()
		if e, _ := s.Load(ctx, "k"); e.Token.Value != "v3" || e.Gen != 3 || calls != 2 {
			t.Fatalf("after the held fetch: %q gen %d, %d fetches; want v3 gen 3, the waiter's fetch not made", e.Token.Value, e.Gen, calls)
		}
	})
}

// secretSource is a StatefulSource whose tokens and states are marked SECRET-, and whose
// errors, in the mode set, carry ERRTEXT- markers (not secret: they must reach the log).
type secretSource struct {
	mu   sync.Mutex
	n    int
	mode string // "", "temporary" or "credentials"
}

func (s *secretSource) Token(ctx context.Context) (tokenmgr.Token, error) {
	return tokenmgr.Token{}, errors.New("secretSource needs its state")
}

func (s *secretSource) TokenState(ctx context.Context, state []byte) (tokenmgr.Token, []byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch s.mode {
	case "temporary":
		return tokenmgr.Token{}, nil, fmt.Errorf("%w: upstream said 503 ERRTEXT-temporary", tokenmgr.ErrTemporary)
	case "credentials":
		return tokenmgr.Token{}, nil, &tokenmgr.PlatformError{Platform: "wecom", Code: "40001",
			Message: "invalid credential ERRTEXT-credentials", Hint: "check the corp secret", Kind: tokenmgr.ErrCredentials}
	}
	if want := fmt.Sprintf("SECRET-RT-%d", s.n); string(state) != want {
		return tokenmgr.Token{}, nil, fmt.Errorf("%w: wrong refresh token (fp %s; want fp %s)", tokenmgr.ErrCredentials,
			tokenmgr.Fingerprint(string(state)), tokenmgr.Fingerprint(want))
	}
	s.n++
	return tokenmgr.Token{Value: fmt.Sprintf("SECRET-AT-%d", s.n), ExpiresAt: time.Now().Add(twoHours)},
		[]byte(fmt.Sprintf("SECRET-RT-%d", s.n)), nil
}

func (s *secretSource) set(mode string) {
	s.mu.Lock()
	s.mode = mode
	s.mu.Unlock()
}

// TestLogsAndStatusHoldNoSecrets runs two Managers on a shared store through success,
// invalidation (local and heard from the store), refresh-ahead, temporary and credential
// failures and recovery, and checks that no token or state marker reaches the log, Status,
// the events or any error returned, while the failures' own texts do reach the log.
func TestLogsAndStatusHoldNoSecrets(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const key = "wecom/ww1/1"
		var (
			logs   logBuffer
			out    strings.Builder // Status, errors and events, next to the log
			outMu  sync.Mutex
			issued []string
		)
		record := func(format string, args ...any) {
			outMu.Lock()
			fmt.Fprintf(&out, format+"\n", args...)
			outMu.Unlock()
		}
		src := &secretSource{}
		store := new(tokenmgr.MemoryStore)
		store.Put(key, tokenmgr.Entry{State: []byte("SECRET-RT-0")}) // from a login
		opts := tokenmgr.Options{Store: store, Logger: newLogger(&logs),
			OnEvent: func(ev tokenmgr.Event) { record("event %+v err %v", ev, ev.Err) }}
		a := tokenmgr.New(key, src, opts)
		defer a.Close()
		b := tokenmgr.New(key, src, opts)
		defer b.Close()
		status := func() {
			for _, m := range []*tokenmgr.Manager{a, b} {
				st, err := json.Marshal(m.Status())
				if err != nil {
					t.Fatal(err)
				}
				record("status %s %+v", st, m.Status())
			}
		}
		token := func(m *tokenmgr.Manager) (tokenmgr.Token, error) {
			tok, err := m.Token(t.Context())
			record("token error %v", err)
			if err == nil {
				issued = append(issued, tok.Value)
			}
			return tok, err
		}

		tok, _ := token(a) // initial, from upstream
		token(b)           // from the store
		status()
		a.Invalidate(tok.Value) // b hears it from the store
		synctest.Wait()
		status()
		token(a)
		token(b)
		time.Sleep(104 * time.Minute) // refresh-ahead: at 80% ± 5% of 2 h, so by 102 min
		synctest.Wait()
		status()
		tok, _ = token(b)

		src.set("temporary")
		b.Invalidate(tok.Value)
		tok, _ = token(b) // the refresh fails
		synctest.Wait()
		status()
		src.set("credentials")
		time.Sleep(10 * time.Second) // past the backoff: the retry fails with a credentials error
		synctest.Wait()
		token(a)
		status()
		src.set("")
		time.Sleep(5 * time.Minute) // past BackoffMax: recovered
		synctest.Wait()
		token(a)
		token(b)
		status()
		a.Close()
		b.Close()
		token(a) // closed
		status()

		all := logs.String() + out.String()
		if len(issued) < 4 {
			t.Fatalf("only %d tokens handed out; the scenario did not run:\n%s", len(issued), all)
		}
		if strings.Contains(all, "SECRET") {
			t.Fatalf("a token or a refresh token reached the log, Status, an event or an error:\n%s", all)
		}
		for _, want := range []string{
			// every path ran and was logged or reported
			`"msg":"token refreshed"`, `"msg":"token invalidated"`, `"msg":"token refresh failed"`,
			`"msg":"token refresh failed: credentials rejected, fix the configuration"`,
			"ERRTEXT-temporary", "ERRTEXT-credentials", "check the corp secret", `"last_error":`,
			"tokenmgr: manager closed",
			// with the keys of T8
			`"key":"wecom/ww1/1"`, `"platform":"wecom"`, `"reason":"initial"`, `"reason":"invalidated"`,
			`"reason":"ahead"`, `"reason":"shared"`, `"source":"upstream"`, `"source":"store"`, `"took":`,
			`"expires_in":`, `"attempt":2`, `"fp":"` + tokenmgr.Fingerprint(issued[0]) + `"`,
		} {
			if !strings.Contains(all, want) {
				t.Errorf("log, Status, events and errors lack %s:\n%s", want, all)
			}
		}
	})
}

var _ credential.AccessTokenContextHandle = tokenmgr.WeChatHandle{}

func TestAdapters(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := counting(twoHours, 0)
		m := tokenmgr.New("wecom/ww1/1", src, tokenmgr.Options{})
		defer m.Close()

		var ts oauth2.TokenSource = m.TokenSource()
		ot, err := ts.Token()
		if err != nil || ot.AccessToken != "tok-1" || ot.TokenType != "Bearer" || !ot.Valid() || ot.Expiry.Sub(time.Now()) != twoHours {
			t.Fatalf("TokenSource().Token() = %+v, %v", ot, err)
		}
		h := m.WeChatHandle()
		if v, err := h.GetAccessToken(); err != nil || v != "tok-1" {
			t.Fatalf("GetAccessToken() = %q, %v", v, err)
		}
		if v, err := h.GetAccessTokenContext(t.Context()); err != nil || v != "tok-1" {
			t.Fatalf("GetAccessTokenContext() = %q, %v", v, err)
		}
		if src.fetches() != 1 {
			t.Fatalf("fetches = %d; want 1", src.fetches())
		}
	})
}

// A Manager that has held no token yet takes a short-lived token from the store instead of
// judging it by the 2-hour defaults (found by the redisstore tests: a 20 s token was fetched
// again, and 1.5 s tokens failed with "store keeps returning a stale token").
func TestShortLivedTokenFromStoreIsUsed(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := counting(20*time.Second, 0)
		store := new(tokenmgr.MemoryStore)
		a := tokenmgr.New("wecom/ww1/1", src, tokenmgr.Options{Store: store})
		defer a.Close()
		mustToken(t, a)
		time.Sleep(5 * time.Second) // 15 s left: less than the unscaled 30 s skew
		b := tokenmgr.New("wecom/ww1/1", src, tokenmgr.Options{Store: store})
		defer b.Close()
		if got := mustToken(t, b).Value; got != "tok-1" || src.fetches() != 1 {
			t.Fatalf("b.Token() = %q after %d fetches; want tok-1 from the store, 1 fetch", got, src.fetches())
		}
	})
}
