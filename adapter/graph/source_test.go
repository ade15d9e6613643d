package graph

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/seed-a64d9e1f/chatwire/adapter"
	"github.com/seed-a64d9e1f/chatwire/adapter/graph/graphtest"
	"github.com/seed-a64d9e1f/chatwire/tokenmgr"
)

func TestClientCredentials(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t)
		tok, err := e.cfg.ClientCredentials().Token(t.Context())
		if err != nil {
			t.Fatalf("Token() error = %v", err)
		}
		if tok.Value == "" || time.Until(tok.ExpiresAt) != 3599*time.Second {
			t.Errorf("Token() = fp %s expiring in %v; want a token for 3599s", tokenmgr.Fingerprint(tok.Value), time.Until(tok.ExpiresAt))
		}
		reqs := e.srv.TokenRequests()
		if len(reqs) != 1 || reqs[0].Scope != GraphDefaultScope || reqs[0].Tenant != testTenant || reqs[0].GrantType != "client_credentials" {
			t.Errorf("TokenRequests() = %+v; want one client_credentials request for %s on tenant %s", reqs, GraphDefaultScope, testTenant)
		}
	})
}

func TestClientCredentialsErrors(t *testing.T) {
	tests := []struct {
		name     string
		mutate   func(*Config)
		wantCode int
		wantErr  error
		wantSent bool
	}{
		{"secret id instead of value", func(c *Config) { c.ClientSecret = "9f1c2d3e-secret-id" }, 7000215, tokenmgr.ErrCredentials, true},
		{"unknown app", func(c *Config) { c.ClientID = "nope" }, 700016, tokenmgr.ErrCredentials, true},
		{"common tenant", func(c *Config) { c.Tenant = "common" }, 9001023, tokenmgr.ErrCredentials, false},
		{"no secret", func(c *Config) { c.ClientSecret = "" }, 7000218, tokenmgr.ErrCredentials, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				e := newEnv(t)
				cfg := e.cfg
				tc.mutate(&cfg)
				_, err := cfg.ClientCredentials().Token(t.Context())
				var ae *AuthError
				if !errors.As(err, &ae) || ae.Code != tc.wantCode || ae.Hint == "" {
					t.Fatalf("Token() error = %v; want AADSTS%d with a hint", err, tc.wantCode)
				}
				if !errors.Is(err, tc.wantErr) {
					t.Errorf("errors.Is(%v, %v) = false", err, tc.wantErr)
				}
				if adapter.KindOf(toAdapterError(err, "")) != adapter.KindUnauthorized || adapter.Code(toAdapterError(err, "")) != fmt.Sprintf("AADSTS%d", tc.wantCode) {
					t.Errorf("adapter error of %v = kind %s code %s", err, adapter.KindOf(toAdapterError(err, "")), adapter.Code(toAdapterError(err, "")))
				}
				if sent := len(e.srv.TokenRequests()) > 0; sent != tc.wantSent {
					t.Errorf("token endpoint called = %v; want %v", sent, tc.wantSent)
				}
				if strings.Contains(err.Error(), testSecret) {
					t.Errorf("error %q contains the secret", err)
				}
			})
		})
	}
}

// aadBody builds a token endpoint error body in the exact shape of spec §1.5.
func aadBody(errName string, codes ...int) []byte {
	cs := make([]string, len(codes))
	for i, c := range codes {
		cs[i] = fmt.Sprint(c)
	}
	return fmt.Appendf(nil, `{"error":%q,"error_description":"AADSTS%d: Something went wrong.\r\nTrace ID: 0000\r\nCorrelation ID: 1111\r\nTimestamp: 2023-05-06 06:03:00Z","error_codes":[%s],"timestamp":"2023-05-06 06:03:00Z","trace_id":"0000","correlation_id":"1111","error_uri":"https://login.microsoftonline.com/error?code=%d"}`,
		errName, codes[0], strings.Join(cs, ","), codes[0])
}

func TestEveryAADSTSCodeHasItsHint(t *testing.T) {
	// Every code of spec §1.6.
	table := []int{50011, 7000215, 7000222, 7000218, 700016, 90002, 900144, 70011, 1002012, 70008, 70000, 54005,
		501481, 700082, 700084, 50173, 50076, 50079, 50078, 65001, 53003, 50058, 50034, 50126, 50057, 90094, 90095, 50196}
	for _, code := range table {
		t.Run(fmt.Sprint(code), func(t *testing.T) {
			status := 400
			if code == 7000215 {
				status = 401
			}
			for _, body := range [][]byte{
				aadBody("invalid_grant", code),
				fmt.Appendf(nil, "<html><body><p>Sorry, but we're having trouble signing you in.</p><p>AADSTS%d: Some text.</p></body></html>", code),
			} {
				e := ParseAuthError(status, http.Header{}, body)
				if e.Code != code || e.Hint == "" || e.Hint != HintFor(code) {
					t.Errorf("ParseAuthError(%s) = code %d hint %q; want code %d with its hint", body[:20], e.Code, e.Hint, code)
				}
				if !strings.Contains(e.Error(), e.Hint) || !strings.Contains(e.Error(), fmt.Sprint(code)) {
					t.Errorf("Error() = %q; want the code and the hint", e.Error())
				}
				if strings.Contains(e.Error(), "Trace ID") {
					t.Errorf("Error() = %q; want no trace lines", e.Error())
				}
				if !errors.Is(e, tokenmgr.ErrCredentials) {
					t.Errorf("errors.Is(%v, ErrCredentials) = false", e)
				}
			}
		})
	}
}

func TestParseAuthErrorShapes(t *testing.T) {
	tests := []struct {
		name     string
		status   int
		header   http.Header
		body     string
		wantErr  string
		wantCode int
		temp     bool
		wait     time.Duration
	}{
		{"several codes: the known one wins", 400, nil, string(aadBody("invalid_grant", 70002, 54005)), "invalid_grant", 54005, false, 0},
		{"empty body 503", 503, http.Header{"Retry-After": {"7"}}, "", "", 0, true, 7 * time.Second},
		{"empty body 400", 400, nil, "", "", 0, false, 0},
		{"html page", 400, nil, "<html><body>AADSTS50011: The redirect URI 'x' does not match</body></html>", "", 50011, false, 0},
		{"temporarily unavailable", 400, nil, `{"error":"temporarily_unavailable","error_description":"busy"}`, "temporarily_unavailable", 0, true, 0},
		{"429 with date", 429, http.Header{"Retry-After": {time.Now().Add(30 * time.Second).UTC().Format(http.TimeFormat)}}, "", "", 0, true, 30 * time.Second},
		{"garbage", 500, nil, "\x00\xff{{{", "", 0, true, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := tc.header
			if h == nil {
				h = http.Header{}
			}
			e := ParseAuthError(tc.status, h, []byte(tc.body))
			if e.ErrorCode != tc.wantErr || e.Code != tc.wantCode || e.Temporary() != tc.temp {
				t.Errorf("ParseAuthError = {error %q code %d temporary %v}; want {%q %d %v}", e.ErrorCode, e.Code, e.Temporary(), tc.wantErr, tc.wantCode, tc.temp)
			}
			if d := e.RetryAfter(); d < tc.wait-time.Second || d > tc.wait {
				t.Errorf("RetryAfter() = %v; want about %v", d, tc.wait)
			}
			if errors.Is(e, tokenmgr.ErrTemporary) == errors.Is(e, tokenmgr.ErrCredentials) {
				t.Errorf("%v is both or neither temporary and credentials", e)
			}
		})
	}
}

func TestRefreshTokenRotationSurvivesRestart(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t)
		e.srv.StrictRefresh = true // a redeemed refresh token is dead: only the rotated one works
		store := new(tokenmgr.MemoryStore)
		e.seed(store)
		key := e.cfg.Key(botUser)
		first, _ := store.Load(t.Context(), key)

		m1 := tokenmgr.New(key, e.cfg.RefreshSource(), tokenmgr.Options{Store: store})
		tok1, err := m1.Token(t.Context())
		if err != nil {
			t.Fatalf("Token() error = %v", err)
		}
		after, _ := store.Load(t.Context(), key)
		if string(after.State) == string(first.State) || len(after.State) == 0 {
			t.Fatalf("refresh token was not rotated in the store")
		}
		m1.Close() // the adapter stops ("restart")

		m2 := tokenmgr.New(key, e.cfg.RefreshSource(), tokenmgr.Options{Store: store})
		defer m2.Close()
		tok2, err := m2.Token(t.Context())
		if err != nil || tok2.Value != tok1.Value {
			t.Fatalf("new Manager Token() = %v; want the stored token", err)
		}
		// Force a redemption: only the rotated refresh token in the store can succeed.
		m2.Invalidate(tok2.Value)
		tok3, err := m2.Token(t.Context())
		if err != nil {
			t.Fatalf("Token() after restart and invalidation error = %v; the rotated refresh token was lost", err)
		}
		if tok3.Value == tok2.Value {
			t.Errorf("Token() returned the invalidated token")
		}
		if n := countGrant(e.srv.TokenRequests(), "refresh_token"); n != 2 {
			t.Errorf("refresh_token grants = %d; want 2", n)
		}
		// The first refresh token is dead in strict mode: redeeming it again fails with 70008.
		_, _, err = e.cfg.RefreshSource().TokenState(t.Context(), first.State)
		var ae *AuthError
		if !errors.As(err, &ae) || ae.Code != 70008 || !errors.Is(err, tokenmgr.ErrCredentials) {
			t.Errorf("redeeming the old refresh token: %v; want AADSTS70008", err)
		}
	})
}

func TestRefreshErrors(t *testing.T) {
	tests := []struct {
		name   string
		before func(*graphtest.Server)
		code   int
	}{
		{"revoked", (*graphtest.Server).RevokeRefreshTokens, 50173},
		{"inactive 90 days", (*graphtest.Server).ExpireRefreshTokens, 700082},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				e := newEnv(t)
				rt := e.srv.IssueRefreshToken(testClient, botUser, "offline_access")
				tc.before(e.srv)
				_, _, err := e.cfg.RefreshSource().TokenState(t.Context(), []byte(rt))
				var ae *AuthError
				if !errors.As(err, &ae) || ae.Code != tc.code || ae.Hint != HintFor(tc.code) {
					t.Fatalf("TokenState() error = %v; want AADSTS%d", err, tc.code)
				}
				if strings.Contains(err.Error(), rt) {
					t.Errorf("error contains the refresh token")
				}
			})
		})
		_, _, err := (Config{}).RefreshSource().TokenState(context.Background(), nil)
		if !errors.Is(err, ErrNoRefreshToken) || !errors.Is(err, tokenmgr.ErrCredentials) {
			t.Errorf("TokenState(nil) error = %v; want ErrNoRefreshToken", err)
		}
	}
}

// TestLoginPKCE runs the loopback auth code + PKCE login against the emulator on 127.0.0.1.
func TestLoginPKCE(t *testing.T) {
	srv := &graphtest.Server{LoginUser: botUser}
	ts := httptest.NewServer(srv)
	defer ts.Close()
	ln := httptest.NewUnstartedServer(nil) // only to find a free loopback port
	port := ln.Listener.Addr().(interface{ String() string }).String()
	ln.Listener.Close()
	_, port, _ = strings.Cut(port, ":")
	redirect := "http://127.0.0.1:" + port + "/callback"
	srv.AddClient(testClient, testSecret, redirect)
	cfg := Config{Tenant: testTenant, ClientID: testClient, ClientSecret: testSecret, LoginBase: ts.URL}

	browser := &http.Client{}
	var forged int
	open := func(authURL string) error {
		u, _ := url.Parse(authURL)
		q := u.Query()
		if q.Get("code_challenge_method") != "S256" || q.Get("code_challenge") == "" || q.Get("state") == "" || !strings.HasPrefix(q.Get("redirect_uri"), redirect) {
			return fmt.Errorf("authorize URL lacks PKCE S256, state or the exact redirect: %s", authURL)
		}
		// Forged redirects with the wrong or no state, code or error alike, are refused and
		// the login keeps waiting.
		for _, q := range []string{"?code=forged&state=wrong", "?error=access_denied&error_description=forged&state=wrong",
			"?error=access_denied"} {
			resp, err := browser.Get(redirect + q)
			if err != nil {
				return err
			}
			resp.Body.Close()
			if resp.StatusCode == http.StatusBadRequest {
				forged++
			}
		}
		resp, err := browser.Get(authURL)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			b, _ := io.ReadAll(resp.Body)
			return ParseAuthError(resp.StatusCode, resp.Header, b)
		}
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := cfg.Login(ctx, LoginOptions{RedirectURL: redirect, Open: open})
	if err != nil {
		t.Fatalf("Login() error = %v", err)
	}
	if res.RefreshToken == "" || res.AccessToken == "" || forged != 3 {
		t.Errorf("Login() = rt %v at %v, forged refused %d; want tokens and the 3 forged redirects refused", res.RefreshToken != "", res.AccessToken != "", forged)
	}
	var codes []string
	for _, r := range srv.TokenRequests() {
		codes = append(codes, r.GrantType+":"+r.Error)
	}
	if len(codes) != 1 || codes[0] != "authorization_code:" {
		t.Errorf("token requests = %v; want one successful authorization_code", codes)
	}

	// A redirect URI one slash off is refused by the platform with AADSTS50011.
	_, err = cfg.Login(ctx, LoginOptions{RedirectURL: redirect + "/", Open: open})
	var ae *AuthError
	if !errors.As(err, &ae) || ae.Code != 50011 || !strings.Contains(ae.Hint, "redirect") {
		t.Errorf("Login(redirect + /) error = %v; want AADSTS50011 with a hint", err)
	}
	// An error redirect (consent not given) is explained.
	srv.AuthorizeError = "consent_required"
	_, err = cfg.Login(ctx, LoginOptions{RedirectURL: redirect, Open: open})
	if !errors.As(err, &ae) || ae.Code != 65001 || ae.ErrorCode != "consent_required" || ae.Hint != HintFor(65001) ||
		strings.Contains(ae.Error(), "Trace ID") {
		t.Errorf("Login(consent_required) error = %v; want AADSTS65001 with its hint", err)
	}
	srv.AuthorizeError = ""
	// Non-loopback redirects are refused locally.
	if _, err := cfg.Login(ctx, LoginOptions{RedirectURL: "https://example.com/cb", Open: open}); err == nil {
		t.Errorf("Login(non-loopback) error = nil")
	}
}

func TestAuthCodeRules(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t)
		redirect := "http://localhost:8400/callback"
		verifier := "verifier-0123456789-0123456789-0123456789-abc"
		authorize := func(challenge string) string {
			q := url.Values{"client_id": {testClient}, "redirect_uri": {redirect}, "response_type": {"code"}, "state": {"s"},
				"scope": {"offline_access"}, "code_challenge": {challenge}, "code_challenge_method": {"S256"}}
			req, _ := http.NewRequest("GET", base+"/"+testTenant+"/oauth2/v2.0/authorize?"+q.Encode(), nil)
			resp, err := graphtest.HandlerTransport(e.srv).RoundTrip(req)
			if err != nil || resp.StatusCode != http.StatusFound {
				t.Fatalf("authorize: %v %v", resp, err)
			}
			loc, _ := url.Parse(resp.Header.Get("Location"))
			return loc.Query().Get("code")
		}
		redeem := func(code, v string) error {
			form := url.Values{"client_id": {testClient}, "client_secret": {testSecret}, "grant_type": {"authorization_code"},
				"code": {code}, "redirect_uri": {redirect}, "code_verifier": {v}}
			_, err := postToken(t.Context(), e.hc, base+"/"+testTenant+"/oauth2/v2.0/token", form)
			return err
		}
		code := authorize(s256(verifier))
		if err := redeem(code, verifier); err != nil {
			t.Fatalf("redeem: %v", err)
		}
		for _, tc := range []struct {
			name string
			code string
			v    string
			want int
		}{
			{"code reuse", code, verifier, 54005},
			{"verifier mismatch", authorize(s256(verifier)), "another-verifier-0123456789-0123456789-0123", 501481},
			{"unknown code", "nope", verifier, 70000},
		} {
			err := redeem(tc.code, tc.v)
			var ae *AuthError
			if !errors.As(err, &ae) || ae.Code != tc.want {
				t.Errorf("%s: error = %v; want AADSTS%d", tc.name, err, tc.want)
			}
		}
		expired := authorize(s256(verifier))
		time.Sleep(11 * time.Minute)
		if err := redeem(expired, verifier); !strings.Contains(fmt.Sprint(err), "70008") {
			t.Errorf("expired code: error = %v; want AADSTS70008", err)
		}
	})
}

func TestDeviceLogin(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t)
		cfg := e.cfg
		cfg.ClientSecret = "" // public client flow
		e.srv.AddClient("public-app", "")
		cfg.ClientID = "public-app"
		var shown DeviceCode
		res, err := cfg.DeviceLogin(t.Context(), func(dc DeviceCode) error {
			shown = dc
			go func() {
				time.Sleep(12 * time.Second) // the user takes a while
				e.srv.ApproveDevice(dc.UserCode)
			}()
			return nil
		})
		if err != nil {
			t.Fatalf("DeviceLogin() error = %v", err)
		}
		if shown.UserCode == "" || shown.VerificationURI == "" || res.RefreshToken == "" {
			t.Errorf("DeviceLogin() showed %+v, refresh token %v", shown, res.RefreshToken != "")
		}
		pending := 0
		for _, r := range e.srv.TokenRequests() {
			if r.Error == "authorization_pending" {
				pending++
			}
		}
		if pending != 2 {
			t.Errorf("authorization_pending polls = %d; want 2 (every 5 s for 12 s)", pending)
		}
		_, err = cfg.DeviceLogin(t.Context(), func(dc DeviceCode) error {
			e.srv.DenyDevice(dc.UserCode)
			return nil
		})
		if !errors.Is(err, tokenmgr.ErrCredentials) || !strings.Contains(err.Error(), "authorization_declined") {
			t.Errorf("denied DeviceLogin() error = %v; want authorization_declined", err)
		}
	})
}
