package graph

import (
	"context"
	"encoding/base64"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/seed-a64d9e1f/chatwire/adapter"
	"github.com/seed-a64d9e1f/chatwire/adapter/graph/graphtest"
	"github.com/seed-a64d9e1f/chatwire/tokenmgr"
)

func post(t *testing.T, c *Client, chat, text string) (*ChatMessage, error) {
	t.Helper()
	return c.PostChatMessage(t.Context(), chat, &NewChatMessage{Body: ChatBody{ContentType: "text", Content: text}})
}

func TestTokenRevokedMidStream(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t)
		_, c := e.delegated(t, nil)
		for i := range 3 {
			if _, err := post(t, c, "chat-1", "before"); err != nil {
				t.Fatalf("send %d: %v", i, err)
			}
		}
		e.srv.RevokeTokens()
		var wg sync.WaitGroup
		errs := make(chan error, 20)
		for range 20 {
			wg.Go(func() {
				_, err := post(t, c, "chat-1", "after")
				errs <- err
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Errorf("send after revocation: %v", err)
			}
		}
		if n := countGrant(e.srv.TokenRequests(), "refresh_token"); n != 2 {
			t.Errorf("refresh_token grants = %d; want 2 (initial + one refresh for 20 rejected sends)", n)
		}
		if got := len(e.srv.Sent()); got != 23 {
			t.Errorf("Sent() = %d messages; want 23", got)
		}
	})
}

func TestSecondRejectionIsReturned(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t)
		e.srv.TokenLifetime = time.Hour
		// A provider that keeps handing out a token Graph does not know.
		p := &fakeProvider{tok: "at-unknown"}
		c := NewClient(p, nil, ClientOptions{GraphBase: base, HTTPClient: e.hc})
		_, err := post(t, c, "chat-1", "x")
		var ae *APIError
		if !errors.As(err, &ae) || ae.StatusCode != 401 || !errors.Is(err, tokenmgr.ErrInvalid) {
			t.Fatalf("error = %v; want 401 InvalidAuthenticationToken", err)
		}
		if p.invalidated != 1 || len(e.srv.Requests()) != 2 {
			t.Errorf("invalidated %d, requests %d; want 1 and 2 (retry exactly once)", p.invalidated, len(e.srv.Requests()))
		}
		if k := adapter.KindOf(toAdapterError(err, "")); k != adapter.KindTokenExpired {
			t.Errorf("kind = %s; want token_expired", k)
		}
	})
}

type fakeProvider struct {
	mu          sync.Mutex
	tok         string
	invalidated int
}

func (p *fakeProvider) Token(context.Context) (tokenmgr.Token, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return tokenmgr.Token{Value: p.tok, ExpiresAt: time.Now().Add(time.Hour)}, nil
}

func (p *fakeProvider) Invalidate(string) {
	p.mu.Lock()
	p.invalidated++
	p.mu.Unlock()
}

func TestEmptyTokenIsNeverSent(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t)
		c := NewClient(&fakeProvider{}, nil, ClientOptions{GraphBase: base, HTTPClient: e.hc})
		_, err := post(t, c, "chat-1", "x")
		if !errors.Is(err, ErrNoToken) {
			t.Errorf("error = %v; want ErrNoToken", err)
		}
		if n := len(e.srv.Requests()); n != 0 {
			t.Errorf("Graph saw %d requests; want 0", n)
		}
		// What Graph says when a proxy drops the header: the hint names the cause.
		req, _ := http.NewRequest("GET", base+"/v1.0/me", nil)
		resp, _ := e.hc.Do(req)
		ae := parseAPIError(resp, readAll(resp), time.Now())
		if !strings.Contains(ae.Message, "Access token is empty") || !strings.Contains(ae.Hint, "Authorization header") {
			t.Errorf("empty-token 401 = %v; want the hint about a dropped header", ae)
		}
	})
}

func TestCAEClaimsChallenge(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t)
		e.srv.CAE = true
		e.cfg.CAE = true
		_, c := e.delegated(t, nil)
		if _, err := post(t, c, "chat-1", "before"); err != nil {
			t.Fatal(err)
		}
		e.srv.RevokeTokens()
		if _, err := post(t, c, "chat-1", "after"); err != nil {
			t.Fatalf("send after CAE revocation: %v", err)
		}
		reqs := e.srv.TokenRequests()
		last := reqs[len(reqs)-1]
		if len(reqs) != 2 || !strings.Contains(last.Claims, `"nbf"`) || !strings.Contains(last.Claims, `"cp1"`) {
			t.Errorf("token requests = %d, last claims %q; want a second request carrying the challenge and cp1", len(reqs), last.Claims)
		}
		if !strings.Contains(reqs[0].Claims, "cp1") || strings.Contains(reqs[0].Claims, "nbf") {
			t.Errorf("first token request claims = %q; want only the cp1 capability", reqs[0].Claims)
		}
	})
}

func TestThrottling(t *testing.T) {
	tests := []struct {
		name      string
		inject    func(e *env)
		wantErr   bool
		wantKind  adapter.Kind
		wantWait  time.Duration // minimum fake time spent inside
		wantRetry time.Duration
		requests  int
	}{
		{"429 with Retry-After waited out", func(e *env) { e.srv.InjectThrottle(2, 3*time.Second) }, false, "", 6 * time.Second, 0, 3},
		{"503 without Retry-After: backoff", func(e *env) { e.srv.InjectStatus(2, 503, 0) }, false, "", 500 * time.Millisecond, 0, 3},
		{"504 then success", func(e *env) { e.srv.InjectStatus(1, 504, 0) }, false, "", 0, 0, 2},
		{"Retry-After as HTTP date", func(e *env) {
			e.srv.InjectRetryAfterHeader(429, time.Now().Add(4*time.Second).UTC().Format(http.TimeFormat))
		}, false, "", 3 * time.Second, 0, 2},
		{"long Retry-After returned at once", func(e *env) { e.srv.InjectThrottle(1, 60*time.Second) }, true, adapter.KindRateLimited, 0, 60 * time.Second, 1},
		{"persistent 503 gives up", func(e *env) { e.srv.InjectStatus(10, 503, time.Second) }, true, adapter.KindUnavailable, 4 * time.Second, time.Second, 5},
		{"500 is not retried", func(e *env) { e.srv.InjectStatus(1, 500, 0) }, true, adapter.KindUnavailable, 0, 0, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				e := newEnv(t)
				_, c := e.delegated(t, nil)
				if _, err := c.GetUser(t.Context(), "me"); err != nil { // warm the token
					t.Fatal(err)
				}
				before := len(e.srv.Requests())
				tc.inject(e)
				start := time.Now()
				_, err := post(t, c, "chat-1", "x")
				took := time.Since(start)
				if (err != nil) != tc.wantErr {
					t.Fatalf("error = %v; want error %v", err, tc.wantErr)
				}
				if err != nil {
					ae := toAdapterError(err, "send")
					if adapter.KindOf(ae) != tc.wantKind || adapter.RetryAfter(ae) != tc.wantRetry {
						t.Errorf("error = %v: kind %s retry %v; want %s %v", ae, adapter.KindOf(ae), adapter.RetryAfter(ae), tc.wantKind, tc.wantRetry)
					}
				}
				if took < tc.wantWait || took > 20*time.Second {
					t.Errorf("took %v; want at least %v and within the 10 s bound per wait", took, tc.wantWait)
				}
				if n := len(e.srv.Requests()) - before; n != tc.requests {
					t.Errorf("requests = %d; want %d", n, tc.requests)
				}
			})
		})
	}
}

func TestThrottleRespectsDeadline(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t)
		_, c := e.delegated(t, nil)
		e.srv.InjectThrottle(1, 5*time.Second)
		ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
		defer cancel()
		start := time.Now()
		_, err := c.PostChatMessage(ctx, "chat-1", &NewChatMessage{Body: ChatBody{Content: "x"}})
		if !errors.Is(toAdapterError(err, ""), adapter.ErrRateLimited) || time.Since(start) > 0 {
			t.Errorf("error = %v after %v; want rate_limited at once (5 s does not fit a 2 s deadline)", err, time.Since(start))
		}
	})
}

func TestNoRetryOnOther4xx(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t)
		_, c := e.delegated(t, nil)
		_, err := c.PostChatMessage(t.Context(), "chat-1", &NewChatMessage{Body: ChatBody{ContentType: "markdown", Content: "x"}})
		var ae *APIError
		if !errors.As(err, &ae) || ae.StatusCode != 400 || len(e.srv.Requests()) != 1 {
			t.Errorf("error = %v after %d requests; want one 400", err, len(e.srv.Requests()))
		}
		if !errors.Is(err, adapter.ErrInvalidRequest) {
			t.Errorf("errors.Is(%v, ErrInvalidRequest) = false", err)
		}
	})
}

func TestTeamsNeedsDelegatedToken(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t)
		m := tokenmgr.New(e.cfg.Key(""), e.cfg.ClientCredentials(), tokenmgr.Options{})
		defer m.Close()
		c := NewClient(m, nil, ClientOptions{GraphBase: base, HTTPClient: e.hc})
		_, err := post(t, c, "chat-1", "x")
		var ae *APIError
		if !errors.As(err, &ae) || ae.StatusCode != 401 || !strings.Contains(ae.Hint, "delegated") {
			t.Errorf("error = %v; want 401 with the delegated-auth hint", err)
		}
	})
}

func TestDroppedConnectionRetriedOnlyWhenIdempotent(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t)
		_, c := e.delegated(t, nil)
		if _, err := c.GetUser(t.Context(), "me"); err != nil {
			t.Fatal(err)
		}
		e.srv.DropRequests(2)
		if _, err := c.GetUser(t.Context(), "me"); err != nil {
			t.Errorf("GET after two dropped connections: %v", err)
		}
		e.srv.DropRequests(1)
		_, err := post(t, c, "chat-1", "x")
		if !errors.Is(toAdapterError(err, ""), adapter.ErrUnavailable) {
			t.Errorf("POST over a dropped connection = %v; want unavailable, not a blind resend", err)
		}
		if n := len(e.srv.Sent()); n != 0 {
			t.Errorf("Sent() = %d; want 0", n)
		}
	})
}

// TestCAEClaimsChallengeOn403: under Conditional Access Graph may send the claims challenge
// on a 403 (spec §2); it is answered like the 401 one: a token with the claims, one retry.
func TestCAEClaimsChallengeOn403(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t)
		e.cfg.CAE = true
		challenged := false
		h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if strings.HasPrefix(r.URL.Path, "/v1.0/chats/") && !challenged {
				challenged = true
				claims := base64.StdEncoding.EncodeToString([]byte(`{"access_token":{"acrs":{"essential":true,"value":"c1"}}}`))
				w.Header().Set("WWW-Authenticate", `Bearer realm="", authorization_uri="https://login.microsoftonline.com/common/oauth2/authorize", error="insufficient_claims", claims="`+claims+`"`)
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(http.StatusForbidden)
				io.WriteString(w, `{"error":{"code":"Forbidden","message":"Conditional Access requires step-up."}}`)
				return
			}
			e.srv.ServeHTTP(w, r)
		})
		store := new(tokenmgr.MemoryStore)
		e.seed(store)
		src := e.cfg.RefreshSource()
		m := tokenmgr.New(e.cfg.Key(botUser), src, tokenmgr.Options{Store: store})
		defer m.Close()
		c := NewClient(m, src, ClientOptions{GraphBase: base, HTTPClient: &http.Client{Transport: graphtest.HandlerTransport(h)}})
		if _, err := post(t, c, "chat-1", "step-up"); err != nil {
			t.Fatalf("send after a 403 claims challenge: %v", err)
		}
		reqs := e.srv.TokenRequests()
		if len(reqs) != 2 || !strings.Contains(reqs[1].Claims, `"acrs"`) || !challenged {
			t.Errorf("token requests = %+v; want a second one carrying the challenge's claims", reqs)
		}
	})
}

func TestParseRetryAfterBadValues(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	tests := []struct {
		v    string
		want time.Duration
	}{
		{"7", 7 * time.Second},
		{"1.5", 1500 * time.Millisecond},
		{"", 0}, {"soon", 0}, {"0", 0}, {"-5", 0}, {"NaN", 0}, {"nan", 0}, {"Inf", 0}, {"-Inf", 0}, {"-1e400", 0},
		{"315", 315 * time.Second},
		{"100000", time.Hour}, {"1e12", time.Hour}, {"1e400", time.Hour},
		{now.Add(30 * time.Second).Format(http.TimeFormat), 30 * time.Second},
		{now.Add(-time.Minute).Format(http.TimeFormat), 0},
		{now.Add(1000 * time.Hour).Format(http.TimeFormat), time.Hour},
	}
	for _, tc := range tests {
		if got := parseRetryAfter(tc.v, now); got != tc.want {
			t.Errorf("parseRetryAfter(%q) = %v; want %v", tc.v, got, tc.want)
		}
	}
}

// TestThrottleWaitStopsWhenCancelled: a cancelled ctx ends the wait for a Retry-After at once.
func TestThrottleWaitStopsWhenCancelled(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t)
		_, c := e.delegated(t, nil)
		e.srv.InjectThrottle(1, 5*time.Second)
		ctx, cancel := context.WithCancel(t.Context())
		go func() { time.Sleep(time.Second); cancel() }()
		start := time.Now()
		_, err := c.PostChatMessage(ctx, "chat-1", &NewChatMessage{Body: ChatBody{Content: "x"}})
		if err == nil {
			t.Fatal("PostChatMessage succeeded; want the throttle's error after the cancel")
		}
		if got := time.Since(start); got != time.Second {
			t.Errorf("PostChatMessage returned after %v; want 1s (when ctx was cancelled, not the 5 s Retry-After)", got)
		}
	})
}
