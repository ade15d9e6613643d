package graph

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"

	"github.com/seed-a64d9e1f/chatwire/tokenmgr"
)

// Defaults for [Config].
const (
	DefaultLoginBase = "https://login.microsoftonline.com"
	DefaultGraphBase = "https://graph.microsoft.com"
	// GraphDefaultScope is the scope of client credentials: every application permission
	// granted to the app.
	GraphDefaultScope = "https://graph.microsoft.com/.default"
)

// DefaultDelegatedScopes are the scopes a delegated sign-in asks for when Config.Scopes is nil.
var DefaultDelegatedScopes = []string{
	"https://graph.microsoft.com/ChatMessage.Send", "https://graph.microsoft.com/Chat.ReadWrite",
	"https://graph.microsoft.com/ChannelMessage.Send", "https://graph.microsoft.com/Mail.Send",
	"https://graph.microsoft.com/Mail.ReadWrite", "https://graph.microsoft.com/Files.ReadWrite",
	"offline_access",
}

// Config identifies an app registration and where its identity platform is. A Config is
// plain data; the sources made from it are safe for concurrent use.
type Config struct {
	// Tenant is the tenant GUID or domain. Client credentials need a specific tenant (not
	// "common" or "consumers"). Empty means "organizations" for delegated flows.
	Tenant string
	// ClientID is the app (client) id.
	ClientID string
	// ClientSecret is the secret's value (not its id). Empty means a public client.
	ClientSecret string
	// LoginBase is the identity platform's base URL. Empty means DefaultLoginBase.
	LoginBase string
	// Scopes are the delegated scopes. Nil means DefaultDelegatedScopes. "offline_access" is
	// added if missing: without it there is no refresh token.
	Scopes []string
	// HTTPClient makes the token requests. Nil means http.DefaultClient.
	HTTPClient *http.Client
	// CAE declares the "cp1" client capability, so Graph may answer a revoked token with a
	// claims challenge, which [Client] handles. False means no capability is declared.
	CAE bool
}

func (c Config) loginBase() string {
	if c.LoginBase != "" {
		return strings.TrimRight(c.LoginBase, "/")
	}
	return DefaultLoginBase
}

func (c Config) tenant() string {
	if c.Tenant != "" {
		return c.Tenant
	}
	return "organizations"
}

func (c Config) endpoint() oauth2.Endpoint {
	b := c.loginBase() + "/" + url.PathEscape(c.tenant()) + "/oauth2/v2.0/"
	return oauth2.Endpoint{AuthURL: b + "authorize", TokenURL: b + "token", DeviceAuthURL: b + "devicecode",
		AuthStyle: oauth2.AuthStyleInParams}
}

func (c Config) scopes() []string {
	s := c.Scopes
	if s == nil {
		s = DefaultDelegatedScopes
	}
	for _, x := range s {
		if x == "offline_access" {
			return s
		}
	}
	return append(append([]string(nil), s...), "offline_access")
}

func (c Config) oauth2() *oauth2.Config {
	return &oauth2.Config{ClientID: c.ClientID, ClientSecret: c.ClientSecret, Endpoint: c.endpoint(), Scopes: c.scopes()}
}

// httpClient returns a copy of the configured client that never follows a redirect. Every
// token request carries a secret in its body (the client secret, a refresh token, an auth
// code): a 307/308 would re-POST it to the redirect's target, and Entra's token endpoint does
// not redirect, so a 3xx is answered as the error it is.
func (c Config) httpClient() *http.Client {
	hc := http.DefaultClient
	if c.HTTPClient != nil {
		hc = c.HTTPClient
	}
	cp := *hc
	cp.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return &cp
}

func (c Config) ctx(ctx context.Context) context.Context {
	return context.WithValue(ctx, oauth2.HTTPClient, c.httpClient())
}

// Key returns the tokenmgr key for this app and user ("" or "app" for the app itself):
// graph/<tenant>/<client>/<user-or-app>.
func (c Config) Key(user string) string {
	if user == "" {
		user = "app"
	}
	return "graph/" + c.tenant() + "/" + c.ClientID + "/" + user
}

// claims holds a claims challenge for the next token request of a source (spec §2: CAE).
type claims struct {
	mu      sync.Mutex // guards pending
	pending string
}

// SetClaims asks the next token request to carry the claims challenge (decoded JSON).
func (c *claims) SetClaims(challenge string) {
	c.mu.Lock()
	c.pending = challenge
	c.mu.Unlock()
}

// take returns the claims parameter for a token request and clears a pending challenge.
func (c *claims) take(cae bool) string {
	c.mu.Lock()
	ch := c.pending
	c.pending = ""
	c.mu.Unlock()
	return mergeClaims(ch, cae)
}

// mergeClaims builds the claims request parameter: the challenge, plus the cp1 capability.
func mergeClaims(challenge string, cae bool) string {
	if challenge == "" && !cae {
		return ""
	}
	m := map[string]any{}
	if challenge != "" {
		if err := json.Unmarshal([]byte(challenge), &m); err != nil {
			return challenge
		}
	}
	if cae {
		at, _ := m["access_token"].(map[string]any)
		if at == nil {
			at = map[string]any{}
		}
		at["xms_cc"] = map[string]any{"values": []string{"cp1"}}
		m["access_token"] = at
	}
	b, _ := json.Marshal(m)
	return string(b)
}

// ClaimsSetter is implemented by sources that can send a claims challenge with their next
// token request. [Client] uses it to answer a CAE challenge.
type ClaimsSetter interface{ SetClaims(challenge string) }

// ClientCredentials is a [tokenmgr.Source] for the app's own (application) token, fetched with
// the client credentials grant and the /.default scope. Safe for concurrent use.
type ClientCredentials struct {
	cfg Config
	claims
}

var (
	_ tokenmgr.Source         = (*ClientCredentials)(nil)
	_ tokenmgr.StatefulSource = (*RefreshSource)(nil)
	_ ClaimsSetter            = (*ClientCredentials)(nil)
	_ ClaimsSetter            = (*RefreshSource)(nil)
)

// ClientCredentials returns a source of application tokens.
func (c Config) ClientCredentials() *ClientCredentials { return &ClientCredentials{cfg: c} }

// Token fetches a new application token.
func (s *ClientCredentials) Token(ctx context.Context) (tokenmgr.Token, error) {
	c := s.cfg
	switch strings.ToLower(c.Tenant) {
	case "", "common", "consumers":
		return tokenmgr.Token{}, &AuthError{ErrorCode: "invalid_request", Code: 9001023, Codes: []int{9001023},
			Description: fmt.Sprintf("tenant %q cannot be used with client credentials", c.Tenant), Hint: aadHints[9001023]}
	}
	if c.ClientSecret == "" {
		return tokenmgr.Token{}, &AuthError{ErrorCode: "invalid_client", Code: 7000218, Codes: []int{7000218},
			Description: "client credentials need a client secret", Hint: aadHints[7000218]}
	}
	cc := clientcredentials.Config{ClientID: c.ClientID, ClientSecret: c.ClientSecret, TokenURL: c.endpoint().TokenURL,
		Scopes: []string{GraphDefaultScope}, AuthStyle: oauth2.AuthStyleInParams}
	if cl := s.take(c.CAE); cl != "" {
		cc.EndpointParams = url.Values{"claims": {cl}}
	}
	now := time.Now()
	t, err := cc.Token(c.ctx(ctx))
	if err != nil {
		return tokenmgr.Token{}, tokenError(err)
	}
	return tokenmgr.Token{Value: t.AccessToken, ExpiresAt: t.Expiry, RefreshAt: refreshAt(now, t.Extra("refresh_in"), t.Expiry)}, nil
}

// refreshAt turns Entra's optional refresh_in (seconds, a number or a numeric string; sent
// for long-lived tokens) into the time to refresh at, as MSAL does
// (microsoft-authentication-library-for-go apps/internal/oauth/ops/accesstokens/tokens.go,
// RefreshIn → RefreshOn = now + refresh_in). now is when the request was sent, so the hint
// is never late. Zero if absent, not positive, or not before the expiry.
func refreshAt(now time.Time, v any, expires time.Time) time.Time {
	var n float64
	switch x := v.(type) {
	case float64:
		n = x
	case json.Number:
		n, _ = x.Float64()
	case string:
		n, _ = strconv.ParseFloat(x, 64)
	}
	if !(n > 0 && n < 1e9) {
		return time.Time{}
	}
	at := now.Add(time.Duration(n * float64(time.Second)))
	if !expires.IsZero() && !at.Before(expires) {
		return time.Time{}
	}
	return at
}

// tokenError turns an oauth2 error into an *AuthError (platform answers) or an ErrTemporary
// error (transport failures). Neither holds a secret: oauth2 sends secrets in the body.
func tokenError(err error) error {
	var re *oauth2.RetrieveError
	if errors.As(err, &re) && re.Response != nil {
		if err := refusedRedirect(re.Response.StatusCode, re.Response.Header); err != nil {
			return err
		}
		return ParseAuthError(re.Response.StatusCode, re.Response.Header, re.Body)
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return fmt.Errorf("graph: token request: %w: %v", tokenmgr.ErrTemporary, err)
}

// refusedRedirect explains a 3xx from the token endpoint, which is never followed (see
// [Config.httpClient]): it names the redirect's scheme and host, never its path or query.
func refusedRedirect(status int, header http.Header) error {
	if status < 300 || status > 399 {
		return nil
	}
	where := "another location"
	if u, err := url.Parse(header.Get("Location")); err == nil && u.Host != "" {
		where = u.Scheme + "://" + u.Host
	}
	return fmt.Errorf("graph: identity platform: HTTP %d: redirect to %s refused (token requests carry secrets; check login_base and any proxy): %w",
		status, where, tokenmgr.ErrTemporary)
}

// RefreshSource is a [tokenmgr.StatefulSource] for a user's delegated token: it redeems the
// refresh token held as the Manager's state and returns the rotated one as the new state, so
// the Manager persists it in the same Store write as the access token. Seed the state with
// the refresh token a login returned (tokenmgr.MemoryStore.Put, Entry.State = []byte(rt)).
// Safe for concurrent use.
type RefreshSource struct {
	cfg Config
	claims
}

// RefreshSource returns a delegated source redeeming the refresh token in the Manager state.
func (c Config) RefreshSource() *RefreshSource { return &RefreshSource{cfg: c} }

// ErrNoRefreshToken is returned when a delegated source has no refresh token to redeem.
var ErrNoRefreshToken = fmt.Errorf("graph: no refresh token stored: sign in first (adapter-host graph login): %w", tokenmgr.ErrCredentials)

// Token implements tokenmgr.Source; it always fails: the refresh token is Manager state.
func (s *RefreshSource) Token(ctx context.Context) (tokenmgr.Token, error) {
	return tokenmgr.Token{}, ErrNoRefreshToken
}

// TokenState redeems the refresh token in state and returns the new access token and the
// rotated refresh token.
func (s *RefreshSource) TokenState(ctx context.Context, state []byte) (tokenmgr.Token, []byte, error) {
	rt := string(state)
	if rt == "" {
		return tokenmgr.Token{}, nil, ErrNoRefreshToken
	}
	c := s.cfg
	form := url.Values{"client_id": {c.ClientID}, "grant_type": {"refresh_token"}, "refresh_token": {rt},
		"scope": {strings.Join(c.scopes(), " ")}}
	if c.ClientSecret != "" {
		form.Set("client_secret", c.ClientSecret)
	}
	if cl := s.take(c.CAE); cl != "" {
		form.Set("claims", cl)
	}
	now := time.Now()
	tr, err := postToken(ctx, c.httpClient(), c.endpoint().TokenURL, form)
	if err != nil {
		return tokenmgr.Token{}, nil, err
	}
	next := []byte(tr.RefreshToken)
	if tr.RefreshToken == "" {
		next = nil // keep the one we have
	}
	return tr.token(now), next, nil
}

// TokenResponse is a successful token endpoint response.
type TokenResponse struct {
	AccessToken  string `json:"access_token"`
	TokenType    string `json:"token_type"`
	RefreshToken string `json:"refresh_token"`
	Scope        string `json:"scope"`
	// ExpiresIn is in seconds; Microsoft sends a number, some proxies a string.
	ExpiresIn json.Number `json:"expires_in"`
	// RefreshIn is Entra's optional refresh hint in seconds (long-lived tokens): refresh
	// then, though the token stays valid until ExpiresIn.
	RefreshIn json.Number `json:"refresh_in"`
}

func (tr *TokenResponse) token(now time.Time) tokenmgr.Token {
	t := tokenmgr.Token{Value: tr.AccessToken}
	if n, err := strconv.ParseFloat(string(tr.ExpiresIn), 64); err == nil && n > 0 && n < 1e9 {
		t.ExpiresAt = now.Add(time.Duration(n * float64(time.Second)))
	}
	if tr.RefreshIn != "" {
		t.RefreshAt = refreshAt(now, tr.RefreshIn, t.ExpiresAt)
	}
	return t
}

// ParseTokenResponse parses a token endpoint answer: on 2xx a [TokenResponse] with a
// non-empty access token, otherwise an *AuthError. It accepts any body without panicking.
func ParseTokenResponse(status int, header http.Header, body []byte) (*TokenResponse, error) {
	if err := refusedRedirect(status, header); err != nil {
		return nil, err
	}
	if status < 200 || status > 299 {
		return nil, ParseAuthError(status, header, body)
	}
	var tr TokenResponse
	d := json.NewDecoder(strings.NewReader(string(body)))
	d.UseNumber()
	if err := d.Decode(&tr); err != nil {
		return nil, fmt.Errorf("graph: token response is not JSON: %w", tokenmgr.ErrTemporary)
	}
	if tr.AccessToken == "" {
		return nil, fmt.Errorf("graph: token response has no access_token: %w", tokenmgr.ErrTemporary)
	}
	if tt := strings.ToLower(tr.TokenType); tt != "" && tt != "bearer" {
		return nil, fmt.Errorf("graph: token response has token_type %q, want Bearer: %w", tr.TokenType, tokenmgr.ErrTemporary)
	}
	return &tr, nil
}

func postToken(ctx context.Context, hc *http.Client, tokenURL string, form url.Values) (*TokenResponse, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, tokenURL, strings.NewReader(form.Encode()))
	if err != nil {
		return nil, fmt.Errorf("graph: token request: %w", err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("graph: token request: %w: %v", tokenmgr.ErrTemporary, redactURLError(err))
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("graph: reading token response: %w: %v", tokenmgr.ErrTemporary, err)
	}
	return ParseTokenResponse(resp.StatusCode, resp.Header, body)
}

// redactURLError drops the URL from a *url.Error (a token URL holds no secret, but other URLs
// might), keeping the cause.
func redactURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return fmt.Errorf("%s %s: %w", ue.Op, redactURL(ue.URL), ue.Err)
	}
	return err
}

func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(url)"
	}
	u.RawQuery = ""
	u.User = nil
	return u.String()
}
