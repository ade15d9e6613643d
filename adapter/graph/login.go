package graph

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"time"

	"golang.org/x/oauth2"

	"github.com/seed-a64d9e1f/chatwire/tokenmgr"
)

// LoginResult is what a completed sign-in returns. RefreshToken is a secret: store it (as the
// Manager state of a [RefreshSource]) and never log it.
type LoginResult struct {
	AccessToken  string
	ExpiresAt    time.Time
	RefreshToken string
	Scope        string
}

// State returns the refresh token as tokenmgr state, ready for a Store:
// store.Put(cfg.Key(user), tokenmgr.Entry{State: r.State()}).
func (r *LoginResult) State() []byte { return []byte(r.RefreshToken) }

// LoginOptions configure [Config.Login].
type LoginOptions struct {
	// RedirectURL is the loopback redirect URI registered for the app, matched exactly by the
	// platform: "http://localhost:8400/callback", "http://127.0.0.1:8400/". It must be http on
	// localhost, 127.0.0.1 or [::1]. Required.
	RedirectURL string
	// Open shows the sign-in URL to the user (opens a browser, prints it). Required.
	Open func(authURL string) error
	// Prompt is passed as prompt= (login, consent, select_account). Empty means none.
	Prompt string
	// LoginHint pre-fills the user name. Empty means none.
	LoginHint string
}

// Login signs a user in with the authorization code flow and PKCE (S256): it listens on the
// loopback RedirectURL, has opts.Open show the authorize URL, checks the returned state,
// and redeems the code with the verifier. It returns when the code was redeemed, the platform
// reported an error, or ctx is done.
func (c Config) Login(ctx context.Context, opts LoginOptions) (*LoginResult, error) {
	if opts.Open == nil {
		return nil, errors.New("graph: login: LoginOptions.Open is nil")
	}
	ru, err := url.Parse(opts.RedirectURL)
	if err != nil || ru.Scheme != "http" || ru.Port() == "" || !isLoopback(ru.Hostname()) {
		return nil, fmt.Errorf("graph: login: redirect URL %q must be http://localhost:PORT/… or http://127.0.0.1:PORT/…", opts.RedirectURL)
	}
	host := ru.Hostname()
	if host == "localhost" {
		host = "127.0.0.1"
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(host, ru.Port()))
	if err != nil {
		return nil, fmt.Errorf("graph: login: listening for the redirect: %w", err)
	}
	defer ln.Close()

	oc := c.oauth2()
	oc.RedirectURL = opts.RedirectURL
	state := randomToken()
	verifier := oauth2.GenerateVerifier()
	params := []oauth2.AuthCodeOption{oauth2.S256ChallengeOption(verifier), oauth2.SetAuthURLParam("response_mode", "query")}
	if opts.Prompt != "" {
		params = append(params, oauth2.SetAuthURLParam("prompt", opts.Prompt))
	}
	if opts.LoginHint != "" {
		params = append(params, oauth2.SetAuthURLParam("login_hint", opts.LoginHint))
	}
	authURL := oc.AuthCodeURL(state, params...)

	type result struct {
		code string
		err  error
	}
	done := make(chan result, 1)
	path := ru.Path
	if path == "" {
		path = "/"
	}
	mux := http.NewServeMux()
	mux.HandleFunc(path, func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		var res result
		switch {
		case subtle.ConstantTimeCompare([]byte(q.Get("state")), []byte(state)) != 1:
			// A forged or stale redirect, code or error alike (the platform echoes state on
			// both): refuse it and keep waiting for the real one.
			http.Error(w, "Sign-in failed: the state parameter does not match this login. Start the login again.", http.StatusBadRequest)
			return
		case q.Get("error") != "":
			res.err = redirectError(q)
		case q.Get("code") == "":
			res.err = errors.New("graph: login: the redirect carried neither a code nor an error")
		default:
			res.code = q.Get("code")
		}
		if res.err != nil {
			http.Error(w, "Sign-in failed: "+res.err.Error(), http.StatusBadRequest)
		} else {
			fmt.Fprintln(w, "Signed in. You can close this window.")
		}
		select {
		case done <- res:
		default:
		}
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	defer srv.Close()

	var res result
	if err := opts.Open(authURL); err != nil {
		select {
		case res = <-done: // the redirect arrived anyway: its answer says more
		default:
			return nil, fmt.Errorf("graph: login: opening the sign-in page: %w", err)
		}
	} else {
		select {
		case res = <-done:
		case <-ctx.Done():
			return nil, fmt.Errorf("graph: login: waiting for the sign-in redirect: %w", ctx.Err())
		}
	}
	if res.err != nil {
		return nil, res.err
	}
	t, err := oc.Exchange(c.ctx(ctx), res.code, oauth2.VerifierOption(verifier))
	if err != nil {
		return nil, tokenError(err)
	}
	return loginResult(t), nil
}

// redirectError explains an error redirect (error=access_denied&error_description=…) like a
// token error. The description is kept whatever it says: with an AADSTS code it also gives
// the code and its hint; without one ("the user canceled the authentication") it is the
// only explanation there is. StatusCode is 0: no HTTP status came with it.
func redirectError(q url.Values) *AuthError {
	desc := q.Get("error_description")
	ae := ParseAuthError(0, nil, []byte(desc))
	ae.ErrorCode = truncate(q.Get("error"), 100)
	ae.Description = cleanDescription(desc)
	if ae.Description == "" {
		ae.Description = "the sign-in redirect reported " + ae.ErrorCode + " without a description"
	}
	if ae.Hint == "" {
		ae.Hint = errorHints[ae.ErrorCode]
	}
	return ae
}

func loginResult(t *oauth2.Token) *LoginResult {
	r := &LoginResult{AccessToken: t.AccessToken, ExpiresAt: t.Expiry, RefreshToken: t.RefreshToken}
	if s, ok := t.Extra("scope").(string); ok {
		r.Scope = s
	}
	return r
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func randomToken() string {
	b := make([]byte, 24)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// DeviceCode is what a user needs to finish a device code sign-in on another device.
type DeviceCode struct {
	UserCode        string
	VerificationURI string
	ExpiresAt       time.Time
}

// DeviceLogin signs a user in with the device code flow (for servers without a browser):
// show is called once with the code to display, then the token endpoint is polled at the
// interval the platform asks for until the user finishes, declines, the code expires, or ctx
// is done. The app registration must allow public client flows.
func (c Config) DeviceLogin(ctx context.Context, show func(DeviceCode) error) (*LoginResult, error) {
	oc := c.oauth2()
	ctx = c.ctx(ctx)
	da, err := oc.DeviceAuth(ctx)
	if err != nil {
		return nil, tokenError(err)
	}
	if err := show(DeviceCode{UserCode: da.UserCode, VerificationURI: da.VerificationURI, ExpiresAt: da.Expiry}); err != nil {
		return nil, err
	}
	t, err := oc.DeviceAccessToken(ctx, da)
	if err != nil {
		return nil, tokenError(err)
	}
	return loginResult(t), nil
}

// Seed stores a login's refresh token for key in a store that can be seeded (such as
// *tokenmgr.MemoryStore), so a Manager over a [RefreshSource] starts from it.
func Seed(store interface {
	Put(string, tokenmgr.Entry) tokenmgr.Entry
}, key string, r *LoginResult) {
	store.Put(key, tokenmgr.Entry{Token: tokenmgr.Token{Value: r.AccessToken, ExpiresAt: r.ExpiresAt},
		State: r.State(), Issued: time.Now()})
}
