package tokenmgr_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/seed-a64d9e1f/chatwire/tokenmgr"
)

const twoHours = 2 * time.Hour

func TestFreshTokenIsCached(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := counting(twoHours, 0)
		m := tokenmgr.New("wecom/ww1/1", src, tokenmgr.Options{})
		defer m.Close()
		for range 100 {
			if got := mustToken(t, m).Value; got != "tok-1" {
				t.Fatalf("Token() = %q; want tok-1", got)
			}
		}
		if n := src.fetches(); n != 1 {
			t.Fatalf("fetches = %d; want 1", n)
		}
	})
}

func TestColdStartSingleflight(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := counting(twoHours, time.Second)
		m := tokenmgr.New("wecom/ww1/1", src, tokenmgr.Options{})
		defer m.Close()
		var wg sync.WaitGroup
		var bad atomic.Int64
		for range 10000 {
			wg.Go(func() {
				tok, err := m.Token(context.Background())
				if err != nil || tok.Value != "tok-1" {
					bad.Add(1)
				}
			})
		}
		wg.Wait()
		if n := src.fetches(); n != 1 {
			t.Errorf("fetches = %d; want 1", n)
		}
		if bad.Load() != 0 {
			t.Errorf("%d callers got an error or another token", bad.Load())
		}
	})
}

// 10,000 goroutines arrive while the token is expired (the refresh-ahead fetch hung past the
// expiry): they share that one fetch.
func TestExpiredTokenSingleflight(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		gate := make(chan struct{})
		src := &fakeSource{fn: func(ctx context.Context, n int) (tokenmgr.Token, error) {
			if n == 2 {
				<-gate
			}
			return tokenmgr.Token{Value: fmt.Sprintf("tok-%d", n), ExpiresAt: time.Now().Add(twoHours)}, nil
		}}
		m := tokenmgr.New("wecom/ww1/1", src, tokenmgr.Options{RefreshTimeout: 10 * time.Hour})
		defer m.Close()
		mustToken(t, m)
		time.Sleep(twoHours + time.Minute)
		synctest.Wait()
		if st := m.Status(); st.State != "expired" && st.State != "refreshing" {
			t.Fatalf("Status().State = %q after expiry; want expired", st.State)
		}
		var wg sync.WaitGroup
		results := make(chan string, 10000)
		for range 10000 {
			wg.Go(func() {
				tok, err := m.Token(context.Background())
				if err != nil {
					results <- "error: " + err.Error()
					return
				}
				results <- tok.Value
			})
		}
		synctest.Wait() // every caller is now blocked on the one fetch
		close(gate)
		wg.Wait()
		close(results)
		for r := range results {
			if r != "tok-2" {
				t.Fatalf("a caller got %q; want tok-2", r)
			}
		}
		if n := src.fetches(); n != 2 {
			t.Fatalf("fetches = %d; want 2 (initial + one refresh)", n)
		}
	})
}

func TestRefreshAheadDoesNotBlockCallers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		// A 6-second token and a 200 ms token endpoint: like a 2-hour token in production.
		src := counting(6*time.Second, 200*time.Millisecond)
		m := tokenmgr.New("wecom/ww1/1", src, tokenmgr.Options{})
		defer m.Close()
		mustToken(t, m)
		start := time.Now()
		var maxWait time.Duration
		for time.Since(start) < 100*6*time.Second {
			t0 := time.Now()
			tok := mustToken(t, m)
			maxWait = max(maxWait, time.Since(t0))
			if !tok.ExpiresAt.After(time.Now()) {
				t.Fatalf("Token() returned a token that expired at %v", tok.ExpiresAt)
			}
			time.Sleep(10 * time.Millisecond)
		}
		if maxWait != 0 {
			t.Errorf("a caller waited %v; want 0 (refreshes happen in the background)", maxWait)
		}
		// ~100 lifetimes at a refresh every ~80% of one: about 125 fetches, never a loop.
		if n := src.fetches(); n < 110 || n > 140 {
			t.Errorf("fetches = %d over 100 lifetimes; want about 125", n)
		}
		times := src.fetchTimes()
		for i := 2; i < len(times); i++ {
			gap := times[i].Sub(times[i-1])
			// 80% ± 5% of 6 s, plus the 200 ms fetch.
			if gap < 4700*time.Millisecond || gap > 5300*time.Millisecond {
				t.Fatalf("gap between fetches %d and %d = %v; want 4.7s..5.3s", i, i+1, gap)
			}
		}
	})
}

func TestJitterSpreadsRefreshPoints(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		seen := map[time.Duration]bool{}
		for range 20 {
			src := counting(twoHours, 0)
			m := tokenmgr.New("wecom/ww1/1", src, tokenmgr.Options{})
			mustToken(t, m)
			at := m.Status().RefreshAt.Sub(time.Now())
			lo, hi := time.Duration(0.75*float64(twoHours)), time.Duration(0.85*float64(twoHours))
			if at < lo || at > hi {
				t.Errorf("refresh point %v; want within [%v, %v]", at, lo, hi)
			}
			seen[at] = true
			m.Close()
		}
		if len(seen) < 10 {
			t.Errorf("20 managers chose only %d distinct refresh points; want them jittered", len(seen))
		}
	})
}

func TestInvalidateSameStaleValueRefreshesOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := counting(twoHours, 50*time.Millisecond)
		m := tokenmgr.New("wecom/ww1/1", src, tokenmgr.Options{})
		defer m.Close()
		stale := mustToken(t, m).Value
		time.Sleep(time.Minute) // past the minimum interval
		var wg sync.WaitGroup
		var wrong atomic.Int64
		for range 1000 {
			wg.Go(func() {
				m.Invalidate(stale)
				tok, err := m.Token(context.Background())
				if err != nil || tok.Value != "tok-2" {
					wrong.Add(1)
				}
			})
		}
		wg.Wait()
		if n := src.fetches(); n != 2 {
			t.Errorf("fetches = %d after 1,000 invalidations of one value; want 2", n)
		}
		if wrong.Load() != 0 {
			t.Errorf("%d callers did not get tok-2", wrong.Load())
		}
	})
}

func TestInvalidateOldValueAfterRefreshIsIgnored(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := counting(twoHours, 0)
		m := tokenmgr.New("wecom/ww1/1", src, tokenmgr.Options{})
		defer m.Close()
		old := mustToken(t, m).Value
		time.Sleep(time.Minute)
		m.Invalidate(old)
		if got := mustToken(t, m).Value; got != "tok-2" {
			t.Fatalf("Token() after Invalidate = %q; want tok-2", got)
		}
		for range 100 {
			m.Invalidate(old) // late reports about the old token
		}
		m.Invalidate("never-issued")
		synctest.Wait()
		if got := mustToken(t, m).Value; got != "tok-2" {
			t.Fatalf("Token() = %q; want tok-2 kept", got)
		}
		if n := src.fetches(); n != 2 {
			t.Fatalf("fetches = %d; want 2", n)
		}
	})
}

func TestInvalidateRespectsMinInterval(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := counting(twoHours, 0)
		m := tokenmgr.New("wecom/ww1/1", src, tokenmgr.Options{MinInterval: 10 * time.Second})
		defer m.Close()
		// The platform keeps rejecting every token at once: refreshes must not loop.
		deadline := time.Now().Add(time.Minute)
		for time.Now().Before(deadline) {
			m.Invalidate(mustToken(t, m).Value)
		}
		times := src.fetchTimes()
		// The first rejection is answered at once; rejections of that answer wait.
		if gap := times[1].Sub(times[0]); gap != 0 {
			t.Errorf("first refresh after a rejection waited %v; want none", gap)
		}
		for i := 2; i < len(times); i++ {
			if gap := times[i].Sub(times[i-1]); gap < 10*time.Second {
				t.Fatalf("fetches %d and %d only %v apart; want >= MinInterval 10s", i, i+1, gap)
			}
		}
		if n := len(times); n > 8 {
			t.Fatalf("fetches = %d in a minute of rejections; want <= 8", n)
		}
	})
}

func TestDoRetriesOnceOnInvalid(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := counting(twoHours, 0)
		m := tokenmgr.New("wecom/ww1/1", src, tokenmgr.Options{})
		defer m.Close()
		mustToken(t, m)
		time.Sleep(time.Minute)
		var used []string
		err := m.Do(t.Context(), func(ctx context.Context, tok tokenmgr.Token) error {
			used = append(used, tok.Value)
			if tok.Value == "tok-1" {
				return &tokenmgr.PlatformError{Platform: "wecom", Code: "42001", Message: "access_token expired", Kind: tokenmgr.ErrInvalid}
			}
			return nil
		})
		if err != nil || strings.Join(used, ",") != "tok-1,tok-2" {
			t.Fatalf("Do() = %v with tokens %v; want nil with tok-1,tok-2", err, used)
		}

		// A second rejection is returned as is, after exactly two calls.
		time.Sleep(time.Minute)
		calls := 0
		err = m.Do(t.Context(), func(ctx context.Context, tok tokenmgr.Token) error {
			calls++
			return fmt.Errorf("send: %w", tokenmgr.ErrInvalid)
		})
		if !errors.Is(err, tokenmgr.ErrInvalid) || calls != 2 {
			t.Fatalf("Do() = %v after %d calls; want ErrInvalid after 2", err, calls)
		}

		// Other errors are not retried.
		calls = 0
		boom := errors.New("boom")
		if err := m.Do(t.Context(), func(context.Context, tokenmgr.Token) error { calls++; return boom }); err != boom || calls != 1 {
			t.Fatalf("Do() = %v after %d calls; want boom after 1", err, calls)
		}
	})
}

func TestFailingSourceServesValidTokenAndBacksOff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		upstreamDown := errors.New("dial tcp: connection refused")
		src := &fakeSource{fn: func(ctx context.Context, n int) (tokenmgr.Token, error) {
			if n == 1 {
				return tokenmgr.Token{Value: "tok-1", ExpiresAt: time.Now().Add(twoHours)}, nil
			}
			return tokenmgr.Token{}, fmt.Errorf("%w: %w", tokenmgr.ErrTemporary, upstreamDown)
		}}
		m := tokenmgr.New("wecom/ww1/1", src, tokenmgr.Options{Jitter: -1})
		defer m.Close()
		issued := time.Now()
		mustToken(t, m)
		// Until just before expiry every caller still gets the valid token.
		for time.Since(issued) < twoHours-31*time.Second {
			if got := mustToken(t, m).Value; got != "tok-1" {
				t.Fatalf("Token() = %q at %v; want tok-1 while it is valid", got, time.Since(issued))
			}
			time.Sleep(5 * time.Second)
		}
		times := src.fetchTimes()[1:]
		if first := times[0].Sub(issued); first != time.Duration(0.8*float64(twoHours)) {
			t.Errorf("first refresh attempt at %v; want at 80%% of the lifetime", first)
		}
		// Backoff: gap n lies in [d/2, d] with d = 1s·2^(n-1), capped at 3 minutes.
		for i := 1; i < len(times); i++ {
			d := min(time.Second<<(i-1), 3*time.Minute)
			if gap := times[i].Sub(times[i-1]); gap < d/2 || gap > d {
				t.Errorf("gap after failure %d = %v; want within [%v, %v]", i, gap, d/2, d)
			}
		}
		if len(times) < 8 || len(times) > 20 {
			t.Errorf("%d failed attempts in 24 minutes; want backoff to keep it between 8 and 20", len(times))
		}
		// After expiry the failure is returned at once, wrapped with the key, and shared.
		time.Sleep(time.Minute)
		before := src.fetches()
		for range 100 {
			_, err := m.Token(t.Context())
			if !errors.Is(err, tokenmgr.ErrTemporary) || !errors.Is(err, upstreamDown) || !strings.Contains(err.Error(), "wecom/ww1/1") {
				t.Fatalf("Token() after expiry = %v; want the shared temporary failure", err)
			}
		}
		if n := src.fetches(); n > before+1 {
			t.Errorf("100 callers during backoff caused %d fetches; want at most 1", n-before)
		}
		if st := m.Status(); st.State != "expired" || st.LastError == "" || st.Consecutive < 8 {
			t.Errorf("Status() = %+v; want expired with the last error and the failure count", st)
		}
	})
}

func TestCredentialsErrorFailsFastAndRetriesSlowly(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var logs logBuffer
		src := &fakeSource{fn: func(ctx context.Context, n int) (tokenmgr.Token, error) {
			return tokenmgr.Token{}, &tokenmgr.PlatformError{Platform: "wecom", Code: "40001", Message: "invalid credential",
				Hint: "corp_secret is wrong: copy the app's Secret again", Kind: tokenmgr.ErrCredentials}
		}}
		m := tokenmgr.New("wecom/ww1/1", src, tokenmgr.Options{Logger: newLogger(&logs)})
		defer m.Close()
		_, err := m.Token(t.Context())
		if !errors.Is(err, tokenmgr.ErrCredentials) || !tokenmgr.IsPermanent(err) {
			t.Fatalf("Token() = %v; want ErrCredentials", err)
		}
		var pe *tokenmgr.PlatformError
		if !errors.As(err, &pe) || pe.Code != "40001" || !strings.Contains(err.Error(), "copy the app's Secret") {
			t.Fatalf("Token() = %v; want the platform code and the hint", err)
		}
		t0 := time.Now()
		for range 1000 {
			if _, err := m.Token(t.Context()); !errors.Is(err, tokenmgr.ErrCredentials) {
				t.Fatalf("Token() = %v; want the same failure", err)
			}
		}
		if time.Since(t0) != 0 || src.fetches() != 1 {
			t.Fatalf("1000 callers took %v and %d fetches; want at once and 1", time.Since(t0), src.fetches())
		}
		// Retried slowly in the background: not before 90 s, at least once within 3 minutes.
		time.Sleep(89 * time.Second)
		if n := src.fetches(); n != 1 {
			t.Fatalf("fetches after 89s = %d; want 1", n)
		}
		time.Sleep(92 * time.Second)
		if n := src.fetches(); n != 2 {
			t.Fatalf("fetches after 3min = %d; want 2", n)
		}
		if !strings.Contains(logs.String(), `"level":"ERROR"`) || !strings.Contains(logs.String(), "credentials rejected") {
			t.Fatalf("log = %s; want an ERROR line saying credentials were rejected", logs.String())
		}
	})
}

func TestRetryAfterIsHonoured(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := &fakeSource{fn: func(ctx context.Context, n int) (tokenmgr.Token, error) {
			if n == 1 {
				return tokenmgr.Token{}, &tokenmgr.PlatformError{Platform: "wecom", Code: "45009", Message: "api freq out of limit",
					Kind: tokenmgr.ErrTemporary, Wait: time.Minute}
			}
			return tokenmgr.Token{Value: "tok", ExpiresAt: time.Now().Add(twoHours)}, nil
		}}
		m := tokenmgr.New("wecom/ww1/1", src, tokenmgr.Options{})
		defer m.Close()
		if _, err := m.Token(t.Context()); tokenmgr.RetryAfter(err) != time.Minute {
			t.Fatalf("Token() = %v; want the rate limit with its wait", err)
		}
		time.Sleep(20 * time.Second)
		// A caller during the wait gets the same failure, with the time left to wait.
		_, err := m.Token(t.Context())
		var pe *tokenmgr.PlatformError
		if !errors.Is(err, tokenmgr.ErrTemporary) || !errors.As(err, &pe) || pe.Code != "45009" {
			t.Fatalf("Token() during the wait = %v; want the shared 45009 failure", err)
		}
		if got := tokenmgr.RetryAfter(err); got != 40*time.Second {
			t.Fatalf("RetryAfter during the wait = %v; want the 40s left", got)
		}
		time.Sleep(39 * time.Second)
		if n := src.fetches(); n != 1 {
			t.Fatalf("fetches before Retry-After elapsed = %d; want 1", n)
		}
		time.Sleep(2 * time.Second)
		if got := mustToken(t, m).Value; got != "tok" || src.fetches() != 2 {
			t.Fatalf("Token() = %q after %d fetches; want tok after 2", got, src.fetches())
		}
	})
}

// sameTokenPlatform hands back the same token while it is valid, reporting the remaining
// lifetime (WeCom may do this), and a new one once it has expired.
func sameTokenPlatform() (*fakeSource, func() int) {
	var mu sync.Mutex
	var cur tokenmgr.Token
	issued := 0
	src := &fakeSource{fn: func(ctx context.Context, n int) (tokenmgr.Token, error) {
		mu.Lock()
		defer mu.Unlock()
		if !cur.ExpiresAt.After(time.Now()) {
			issued++
			cur = tokenmgr.Token{Value: fmt.Sprintf("tok-%d", issued), ExpiresAt: time.Now().Add(twoHours)}
		}
		// expires_in has whole seconds: the reported expiry wobbles a little.
		return tokenmgr.Token{Value: cur.Value, ExpiresAt: cur.ExpiresAt.Truncate(time.Second)}, nil
	}}
	return src, func() int { mu.Lock(); defer mu.Unlock(); return issued }
}

// Against such a platform: no refresh loop, two fetches per lifetime (refresh-ahead, which
// gets the same token, then one at expiry), and no caller ever fails or gets an expired
// token. Three managers sharing a store (three hosts sharing Redis) fetch no more than one.
func TestSameTokenShortLifetimeDoesNotLoop(t *testing.T) {
	for _, managers := range []int{1, 3} {
		t.Run(fmt.Sprintf("%d managers", managers), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				src, issued := sameTokenPlatform()
				store := new(tokenmgr.MemoryStore)
				var ms []*tokenmgr.Manager
				for range managers {
					ms = append(ms, tokenmgr.New("wecom/ww1/1", src, tokenmgr.Options{Store: store}))
				}
				start := time.Now()
				for i := 0; time.Since(start) < 5*twoHours; i++ {
					m := ms[i%len(ms)]
					tok, err := m.Token(t.Context())
					if err != nil {
						t.Fatalf("Token() at %v: %v", time.Since(start), err)
					}
					if !tok.ExpiresAt.After(time.Now()) {
						t.Fatalf("Token() at %v returned an expired token", time.Since(start))
					}
					time.Sleep(time.Second)
				}
				for _, m := range ms {
					m.Close()
				}
				lifetimes := issued()
				t.Logf("%d fetches over %d token lifetimes", src.fetches(), lifetimes)
				if n := src.fetches(); n > 2*lifetimes+1 {
					t.Fatalf("fetches = %d over %d lifetimes; want at most 2 per lifetime", n, lifetimes)
				}
				times := src.fetchTimes()
				for i := 1; i < len(times); i++ {
					if gap := times[i].Sub(times[i-1]); gap < 10*time.Second {
						t.Fatalf("fetches %d and %d only %v apart; want >= the 10s minimum interval", i, i+1, gap)
					}
				}
			})
		})
	}
}

func TestSourceReturningBadTokens(t *testing.T) {
	tests := []struct {
		name  string
		value string
		life  time.Duration
		want  string
	}{
		{"empty", "", time.Hour, "empty token"},
		{"expired", "x", -time.Hour, "expired"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				src := tokenmgr.SourceFunc(func(context.Context) (tokenmgr.Token, error) {
					return tokenmgr.Token{Value: tc.value, ExpiresAt: time.Now().Add(tc.life)}, nil
				})
				m := tokenmgr.New("wecom/ww1/1", src, tokenmgr.Options{})
				defer m.Close()
				_, err := m.Token(t.Context())
				if !errors.Is(err, tokenmgr.ErrTemporary) || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("Token() = %v; want a temporary error mentioning %q", err, tc.want)
				}
			})
		})
	}
}

func TestTokenWithoutExpiryIsKeptUntilInvalidated(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := &fakeSource{fn: func(ctx context.Context, n int) (tokenmgr.Token, error) {
			return tokenmgr.Token{Value: fmt.Sprintf("tok-%d", n)}, nil
		}}
		m := tokenmgr.New("graph/t/c/app", src, tokenmgr.Options{})
		defer m.Close()
		mustToken(t, m)
		time.Sleep(1000 * time.Hour)
		if got := mustToken(t, m).Value; got != "tok-1" || src.fetches() != 1 {
			t.Fatalf("Token() = %q after %d fetches; want tok-1 after 1", got, src.fetches())
		}
		m.Invalidate("tok-1")
		if got := mustToken(t, m).Value; got != "tok-2" {
			t.Fatalf("Token() after Invalidate = %q; want tok-2", got)
		}
	})
}

func TestCallerContextBoundsOnlyThatCaller(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := counting(twoHours, 5*time.Second)
		m := tokenmgr.New("wecom/ww1/1", src, tokenmgr.Options{})
		defer m.Close()
		ctx, cancel := context.WithTimeout(t.Context(), time.Second)
		defer cancel()
		if _, err := m.Token(ctx); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Token(1s ctx) = %v; want DeadlineExceeded", err)
		}
		// The fetch went on for everyone else, on the manager's own context.
		if got := mustToken(t, m).Value; got != "tok-1" || src.fetches() != 1 {
			t.Fatalf("Token() = %q after %d fetches; want tok-1 after 1", got, src.fetches())
		}
	})
}

func TestRefreshTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := counting(twoHours, time.Hour) // a token endpoint that hangs
		m := tokenmgr.New("wecom/ww1/1", src, tokenmgr.Options{RefreshTimeout: 10 * time.Second})
		defer m.Close()
		t0 := time.Now()
		_, err := m.Token(context.Background())
		if !errors.Is(err, context.DeadlineExceeded) || time.Since(t0) != 10*time.Second {
			t.Fatalf("Token() = %v after %v; want DeadlineExceeded after the 10s refresh timeout", err, time.Since(t0))
		}
	})
}

func TestCloseFailsWaitersAndLaterCalls(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := counting(twoHours, time.Hour)
		m := tokenmgr.New("wecom/ww1/1", src, tokenmgr.Options{RefreshTimeout: 2 * time.Hour})
		errc := make(chan error, 1)
		go func() {
			_, err := m.Token(context.Background())
			errc <- err
		}()
		synctest.Wait()
		m.Close()
		if err := <-errc; !errors.Is(err, tokenmgr.ErrClosed) {
			t.Fatalf("waiting Token() after Close = %v; want ErrClosed", err)
		}
		if _, err := m.Token(t.Context()); !errors.Is(err, tokenmgr.ErrClosed) {
			t.Fatalf("Token() after Close = %v; want ErrClosed", err)
		}
		if st := m.Status(); st.State != "closed" {
			t.Fatalf("Status().State = %q; want closed", st.State)
		}
		m.Close() // idempotent
	})
}

func TestOnEventHook(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var mu sync.Mutex
		var events []tokenmgr.Event
		src := &fakeSource{fn: func(ctx context.Context, n int) (tokenmgr.Token, error) {
			if n == 3 {
				return tokenmgr.Token{}, fmt.Errorf("%w: 503", tokenmgr.ErrTemporary)
			}
			return tokenmgr.Token{Value: fmt.Sprintf("tok-%d", n), ExpiresAt: time.Now().Add(twoHours)}, nil
		}}
		m := tokenmgr.New("wecom/ww1/1", src, tokenmgr.Options{Jitter: -1, OnEvent: func(e tokenmgr.Event) {
			mu.Lock()
			events = append(events, e)
			mu.Unlock()
		}})
		defer m.Close()
		mustToken(t, m)
		time.Sleep(time.Minute)
		m.Invalidate("tok-1")
		mustToken(t, m)
		time.Sleep(97 * time.Minute) // refresh-ahead of tok-2 fails once, then succeeds
		mu.Lock()
		defer mu.Unlock()
		var got []string
		for _, e := range events {
			got = append(got, e.Kind+"/"+e.Reason+"/"+e.Source+"/"+fmt.Sprint(e.Attempt))
			if e.Key != "wecom/ww1/1" || e.Platform != "wecom" {
				t.Errorf("event %+v: want key and platform set", e)
			}
		}
		want := "refresh/initial/upstream/1 invalidation/invalidated/upstream/0 refresh/invalidated/upstream/1 " +
			"failure/ahead//1 refresh/ahead/upstream/2"
		if strings.Join(got, " ") != want {
			t.Fatalf("events = %s\nwant     %s", strings.Join(got, " "), want)
		}
		if events[0].Fingerprint != tokenmgr.Fingerprint("tok-1") || events[0].ExpiresIn != twoHours {
			t.Errorf("first event = %+v; want fp of tok-1 and expires_in 2h", events[0])
		}
	})
}

func TestStatus(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := counting(twoHours, 0)
		m := tokenmgr.New("wecom/ww1/1000002", src, tokenmgr.Options{Jitter: -1})
		defer m.Close()
		if st := m.Status(); st.State != "empty" || st.Platform != "wecom" {
			t.Fatalf("Status() before any fetch = %+v; want empty, platform wecom", st)
		}
		tok := mustToken(t, m)
		st := m.Status()
		if st.State != "fresh" || st.Fingerprint != tokenmgr.Fingerprint(tok.Value) || st.Generation != 1 ||
			!st.ExpiresAt.Equal(tok.ExpiresAt) || st.RefreshAt.Sub(time.Now()) != 96*time.Minute || st.Fetches != 1 {
			t.Fatalf("Status() = %+v", st)
		}
		m.Invalidate(tok.Value)
		if st := m.Status(); st.State != "invalid" && st.State != "refreshing" {
			t.Fatalf("Status().State after Invalidate = %q; want invalid", st.State)
		}
	})
}

func TestFingerprint(t *testing.T) {
	// echo -n abc | sha256sum → ba7816bf...
	if got := tokenmgr.Fingerprint("abc"); got != "ba7816bf" {
		t.Errorf("Fingerprint(abc) = %q; want ba7816bf", got)
	}
	if got := tokenmgr.Fingerprint(""); got != "" {
		t.Errorf("Fingerprint(\"\") = %q; want empty", got)
	}
}

// A source that fails for a token lifetime of microseconds is still retried with a pause.
func TestBackoffFloor(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := &fakeSource{fn: func(ctx context.Context, n int) (tokenmgr.Token, error) {
			if n == 1 {
				return tokenmgr.Token{Value: "tok-1", ExpiresAt: time.Now().Add(10 * time.Microsecond)}, nil
			}
			return tokenmgr.Token{}, fmt.Errorf("%w: down", tokenmgr.ErrTemporary)
		}}
		m := tokenmgr.New("wecom/ww1/1", src, tokenmgr.Options{})
		defer m.Close()
		mustToken(t, m)
		time.Sleep(time.Second)
		// Waits are jittered in [d/2, d] with d >= 1 ms: at most 2,000 attempts a second.
		if n := src.fetches(); n > 2001 {
			t.Fatalf("%d fetches in a second; want the 1 ms backoff floor to hold them to 2,000", n)
		}
	})
}
