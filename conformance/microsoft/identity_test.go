// Package microsoft pits chatwire's Microsoft Graph emulator (adapter/graph/graphtest) and
// its Graph adapter against code and data Microsoft publishes: MSAL Go, azidentity and
// golang.org/x/oauth2 as token clients of the emulator, and the payloads Microsoft's docs
// publish as input to the adapter's parsers.
package microsoft

import (
	"context"
	"crypto"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/cloud"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/runtime"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/AzureAD/microsoft-authentication-library-for-go/apps/confidential"
	"github.com/AzureAD/microsoft-authentication-library-for-go/apps/public"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"

	"github.com/seed-a64d9e1f/chatwire/adapter/graph/graphtest"
)

const (
	tenant       = "contoso.onmicrosoft.com"
	tenantGUID   = "72f988bf-86f1-41af-91ab-2d7cd011db47"
	confClientID = "11111111-2222-3333-4444-555555555555"
	confSecret   = "s3cr3t~Value.NeverLogged"
	pubClientID  = "66666666-7777-8888-9999-000000000000"
	graphDefault = "https://graph.microsoft.com/.default"
	loginUser    = "c3a6e4bd-0d1e-4f7a-9c1c-0e6d1f0a1b2c"
)

// emulator is graphtest behind a TLS listener on 127.0.0.1, as MSAL insists on https
// authorities. The test certificate is trusted only by the clients the tests build from
// ts.Client(); nothing else about the vendor libraries is changed.
type emulator struct {
	srv *graphtest.Server
	ts  *httptest.Server

	mu      sync.Mutex
	pending chan struct{} // signalled when a device code poll was answered authorization_pending
	paths   []string      // every path requested, in order
}

func newEmulator(t *testing.T) *emulator {
	t.Helper()
	e := &emulator{srv: &graphtest.Server{LoginUser: loginUser}, pending: make(chan struct{}, 16)}
	e.srv.AddClient(confClientID, confSecret)
	e.srv.AddClient(pubClientID, "")
	e.ts = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		e.mu.Lock()
		e.paths = append(e.paths, r.URL.Path)
		e.mu.Unlock()
		rec := &statusRecorder{ResponseWriter: w}
		e.srv.ServeHTTP(rec, r)
		if strings.HasSuffix(r.URL.Path, "/oauth2/v2.0/token") && rec.status == http.StatusBadRequest {
			reqs := e.srv.TokenRequests()
			if len(reqs) > 0 && reqs[len(reqs)-1].Error == "authorization_pending" {
				select {
				case e.pending <- struct{}{}:
				default:
				}
			}
		}
	}))
	t.Cleanup(e.ts.Close)
	return e
}

type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (r *statusRecorder) WriteHeader(code int) {
	r.status = code
	r.ResponseWriter.WriteHeader(code)
}

func (e *emulator) authority(tenant string) string { return e.ts.URL + "/" + tenant }

func (e *emulator) requested(path string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, p := range e.paths {
		if p == path {
			return true
		}
	}
	return false
}

// graphMe calls GET /v1.0/me with a user's token, proving the emulator's Graph accepts what
// its token endpoint issued to a vendor client.
func (e *emulator) graphMe(t *testing.T, token string) map[string]any {
	t.Helper()
	return e.graphGet(t, "/v1.0/me", token)
}

// graphApp calls GET /v1.0/users/{id} with an app token (/me needs a user).
func (e *emulator) graphApp(t *testing.T, token string) map[string]any {
	t.Helper()
	return e.graphGet(t, "/v1.0/users/"+loginUser, token)
}

func (e *emulator) graphGet(t *testing.T, path, token string) map[string]any {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, e.ts.URL+path, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := e.ts.Client().Do(req)
	if err != nil {
		t.Fatalf("GET /v1.0/me: %v", err)
	}
	defer resp.Body.Close()
	var me map[string]any
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s with the issued token: status %d", path, resp.StatusCode)
	}
	if err := json.NewDecoder(resp.Body).Decode(&me); err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	return me
}

// jwtClaims decodes the payload of a JWT without verifying it.
func jwtClaims(t *testing.T, raw string) map[string]any {
	t.Helper()
	parts := strings.Split(raw, ".")
	if len(parts) != 3 {
		t.Fatalf("id_token is not a JWS compact serialization: %d parts", len(parts))
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatalf("id_token payload: %v", err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("id_token payload: %v", err)
	}
	return m
}

// TestMSALConfidentialClientSecret: MSAL Go's confidential client, authority pointed at the
// emulator with instance discovery disabled (WithInstanceDiscovery(false), the documented
// option for clouds MSAL does not know: "to support private cloud scenarios"), gets an app
// token with a client secret. MSAL reads /{tenant}/v2.0/.well-known/openid-configuration
// for the token endpoint, and sends scope "https://graph.microsoft.com/.default openid
// offline_access profile".
func TestMSALConfidentialClientSecret(t *testing.T) {
	e := newEmulator(t)
	cred, err := confidential.NewCredFromSecret(confSecret)
	if err != nil {
		t.Fatal(err)
	}
	c, err := confidential.New(e.authority(tenant), confClientID, cred,
		confidential.WithHTTPClient(e.ts.Client()), confidential.WithInstanceDiscovery(false))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	res, err := c.AcquireTokenByCredential(ctx, []string{graphDefault})
	if err != nil {
		t.Fatalf("AcquireTokenByCredential: %v", err)
	}
	if res.AccessToken == "" || time.Until(res.ExpiresOn) < 50*time.Minute {
		t.Fatalf("token: empty or expires too soon (%v)", res.ExpiresOn)
	}
	if !e.requested("/" + tenant + "/v2.0/.well-known/openid-configuration") {
		t.Error("MSAL did not read the tenant's openid-configuration")
	}
	e.graphApp(t, res.AccessToken)
	// The second call is served from MSAL's cache: no second token request.
	res2, err := c.AcquireTokenByCredential(ctx, []string{graphDefault})
	if err != nil || res2.AccessToken != res.AccessToken || res2.Metadata.TokenSource != confidential.TokenSourceCache {
		t.Fatalf("second AcquireTokenByCredential: %v (same token: %v, source %v)", err, res2.AccessToken == res.AccessToken, res2.Metadata.TokenSource)
	}
	if n := len(e.srv.TokenRequests()); n != 1 {
		t.Fatalf("token requests: %d, want 1", n)
	}
	// A wrong secret: MSAL surfaces the AADSTS error, not a parse failure.
	bad, _ := confidential.NewCredFromSecret("wrong")
	c2, _ := confidential.New(e.authority(tenant), confClientID, bad,
		confidential.WithHTTPClient(e.ts.Client()), confidential.WithInstanceDiscovery(false))
	_, err = c2.AcquireTokenByCredential(ctx, []string{graphDefault})
	if err == nil || !strings.Contains(err.Error(), "AADSTS7000215") {
		t.Fatalf("wrong secret: %v, want AADSTS7000215", err)
	}
}

// TestMSALPublicDeviceCode: MSAL Go's public client signs a user in with the device code
// flow (grant_type=device_code, as MSAL Go sends it), polls through authorization_pending,
// gets an id_token naming the user and a refresh token, and later refreshes silently.
func TestMSALPublicDeviceCode(t *testing.T) {
	e := newEmulator(t)
	e.srv.TokenLifetime = 2 * time.Minute // inside MSAL's 5-minute expiry margin: silent calls refresh
	c, err := public.New(pubClientID, public.WithAuthority(e.authority("organizations")),
		public.WithHTTPClient(e.ts.Client()), public.WithInstanceDiscovery(false))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	scopes := []string{"https://graph.microsoft.com/ChatMessage.Send", "https://graph.microsoft.com/Mail.Send"}
	dc, err := c.AcquireTokenByDeviceCode(ctx, scopes)
	if err != nil {
		t.Fatalf("AcquireTokenByDeviceCode: %v", err)
	}
	if dc.Result.UserCode == "" || dc.Result.VerificationURL == "" || !strings.Contains(dc.Result.Message, dc.Result.UserCode) {
		t.Fatalf("device code result: %+v", dc.Result)
	}
	type out struct {
		res public.AuthResult
		err error
	}
	done := make(chan out, 1)
	go func() {
		res, err := dc.AuthenticationResult(ctx)
		done <- out{res, err}
	}()
	select { // MSAL polls; the first poll is answered authorization_pending
	case <-e.pending:
	case o := <-done:
		t.Fatalf("device flow ended before approval: %v", o.err)
	case <-ctx.Done():
		t.Fatal("no device code poll")
	}
	if !e.srv.ApproveDevice(dc.Result.UserCode) {
		t.Fatal("user code not pending")
	}
	o := <-done
	if o.err != nil {
		t.Fatalf("AuthenticationResult: %v", o.err)
	}
	res := o.res
	if res.AccessToken == "" {
		t.Fatal("no access token")
	}
	if res.IDToken.Oid != loginUser || res.IDToken.Audience != pubClientID || res.IDToken.PreferredUsername == "" {
		t.Fatalf("id_token claims: oid %q aud %q preferred_username %q", res.IDToken.Oid, res.IDToken.Audience, res.IDToken.PreferredUsername)
	}
	if res.Account.HomeAccountID == "" || !strings.HasPrefix(res.Account.HomeAccountID, loginUser+".") {
		t.Fatalf("account home id %q: want %s.<tenant id> (from client_info)", res.Account.HomeAccountID, loginUser)
	}
	e.graphMe(t, res.AccessToken)
	// The cached account refreshes silently with its refresh token (the access token is within
	// MSAL's expiry margin), and the emulator rotates the refresh token.
	accts, err := c.Accounts(ctx)
	if err != nil || len(accts) != 1 {
		t.Fatalf("Accounts: %v %d", err, len(accts))
	}
	res2, err := c.AcquireTokenSilent(ctx, scopes, public.WithSilentAccount(accts[0]))
	if err != nil {
		t.Fatalf("AcquireTokenSilent: %v", err)
	}
	if res2.AccessToken == res.AccessToken {
		t.Fatal("silent call did not refresh")
	}
	var grants []string
	for _, r := range e.srv.TokenRequests() {
		if r.Error == "" {
			grants = append(grants, r.GrantType)
		}
	}
	if strings.Join(grants, ",") != "device_code,refresh_token" {
		t.Fatalf("successful grants: %v", grants)
	}
	e.graphMe(t, res2.AccessToken)
}

// TestMSALPublicDeviceCodeDeclined: a declined sign-in ends MSAL's polling with the error.
func TestMSALPublicDeviceCodeDeclined(t *testing.T) {
	e := newEmulator(t)
	c, err := public.New(pubClientID, public.WithAuthority(e.authority(tenant)),
		public.WithHTTPClient(e.ts.Client()), public.WithInstanceDiscovery(false))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dc, err := c.AcquireTokenByDeviceCode(ctx, []string{"https://graph.microsoft.com/Mail.Send"})
	if err != nil {
		t.Fatalf("AcquireTokenByDeviceCode: %v", err)
	}
	if !e.srv.DenyDevice(dc.Result.UserCode) {
		t.Fatal("user code not pending")
	}
	_, err = dc.AuthenticationResult(ctx)
	if err == nil || !strings.Contains(err.Error(), "authorization_declined") {
		t.Fatalf("declined: %v", err)
	}
}

// TestOpenIDConfiguration checks the discovery document against what MSAL needs and what the
// identity platform publishes (https://login.microsoftonline.com/{tenant}/v2.0/.well-known/openid-configuration,
// documented at learn.microsoft.com/entra/identity-platform/v2-protocols-oidc "Find your app's
// OpenID configuration document URI"): endpoints under the emulator's own origin, the issuer
// with the tenant id, and a JWKS whose keys verify the id_token.
func TestOpenIDConfiguration(t *testing.T) {
	e := newEmulator(t)
	get := func(u string, v any) {
		t.Helper()
		resp, err := e.ts.Client().Get(u)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
			t.Fatalf("GET %s: %d %s", u, resp.StatusCode, resp.Header.Get("Content-Type"))
		}
		if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
			t.Fatal(err)
		}
	}
	var doc struct {
		Issuer, AuthorizationEndpoint, TokenEndpoint, DeviceAuthorizationEndpoint, JWKSURI string
		ScopesSupported                                                                    []string
	}
	var raw map[string]any
	u := e.authority(tenantGUID) + "/v2.0/.well-known/openid-configuration"
	get(u, &raw)
	b, _ := json.Marshal(raw)
	json.Unmarshal(b, &struct {
		Issuer                      *string   `json:"issuer"`
		AuthorizationEndpoint       *string   `json:"authorization_endpoint"`
		TokenEndpoint               *string   `json:"token_endpoint"`
		DeviceAuthorizationEndpoint *string   `json:"device_authorization_endpoint"`
		JWKSURI                     *string   `json:"jwks_uri"`
		ScopesSupported             *[]string `json:"scopes_supported"`
	}{&doc.Issuer, &doc.AuthorizationEndpoint, &doc.TokenEndpoint, &doc.DeviceAuthorizationEndpoint, &doc.JWKSURI, &doc.ScopesSupported})
	base := e.authority(tenantGUID)
	want := map[string]string{
		"issuer": base + "/v2.0", "authorization_endpoint": base + "/oauth2/v2.0/authorize",
		"token_endpoint": base + "/oauth2/v2.0/token", "device_authorization_endpoint": base + "/oauth2/v2.0/devicecode",
		"jwks_uri": base + "/discovery/v2.0/keys",
	}
	got := map[string]string{"issuer": doc.Issuer, "authorization_endpoint": doc.AuthorizationEndpoint, "token_endpoint": doc.TokenEndpoint,
		"device_authorization_endpoint": doc.DeviceAuthorizationEndpoint, "jwks_uri": doc.JWKSURI}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %q, want %q", k, got[k], v)
		}
	}
	for _, s := range []string{"openid", "profile", "email", "offline_access"} {
		if !strings.Contains(" "+strings.Join(doc.ScopesSupported, " ")+" ", " "+s+" ") {
			t.Errorf("scopes_supported %v lacks %s", doc.ScopesSupported, s)
		}
	}
	// The multi-tenant endpoints publish the issuer as a template, as the real ones do.
	var org map[string]any
	get(e.authority("organizations")+"/v2.0/.well-known/openid-configuration", &org)
	if org["issuer"] != e.ts.URL+"/{tenantid}/v2.0" {
		t.Errorf("organizations issuer = %v", org["issuer"])
	}
	var jwks struct {
		Keys []struct{ Kty, Use, Kid, N, E string } `json:"keys"`
	}
	get(doc.JWKSURI, &jwks)
	if len(jwks.Keys) == 0 || jwks.Keys[0].Kty != "RSA" || jwks.Keys[0].Kid == "" || jwks.Keys[0].N == "" {
		t.Fatalf("jwks: %+v", jwks)
	}
}

// TestIDTokenVerifies: the id_token the emulator issues with the openid scope is an RS256 JWT
// signed by a key in its JWKS, with the claims the platform documents (aud, iss, tid, oid,
// sub, preferred_username, iat/nbf/exp, ver "2.0").
func TestIDTokenVerifies(t *testing.T) {
	e := newEmulator(t)
	c, err := public.New(pubClientID, public.WithAuthority(e.authority(tenantGUID)),
		public.WithHTTPClient(e.ts.Client()), public.WithInstanceDiscovery(false))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	dc, err := c.AcquireTokenByDeviceCode(ctx, []string{"https://graph.microsoft.com/Mail.Send"})
	if err != nil {
		t.Fatal(err)
	}
	e.srv.ApproveDevice(dc.Result.UserCode)
	res, err := dc.AuthenticationResult(ctx)
	if err != nil {
		t.Fatal(err)
	}
	verifyJWT(t, e, res.IDToken.RawToken)
	cl := jwtClaims(t, res.IDToken.RawToken)
	wantStr := map[string]string{"aud": pubClientID, "iss": e.authority(tenantGUID) + "/v2.0", "tid": tenantGUID,
		"oid": loginUser, "ver": "2.0"}
	for k, v := range wantStr {
		if cl[k] != v {
			t.Errorf("id_token %s = %v, want %s", k, cl[k], v)
		}
	}
	for _, k := range []string{"sub", "preferred_username", "name"} {
		if s, _ := cl[k].(string); s == "" {
			t.Errorf("id_token has no %s", k)
		}
	}
	iat, _ := cl["iat"].(float64)
	exp, _ := cl["exp"].(float64)
	if now := float64(time.Now().Unix()); iat > now+5 || exp <= now {
		t.Errorf("id_token iat %v exp %v (now %v)", iat, exp, now)
	}
}

// TestAzidentityClientSecretCredential: azidentity (built on MSAL) gets a Graph app token from
// the emulator through its documented options: Cloud.ActiveDirectoryAuthorityHost set to the
// emulator, DisableInstanceDiscovery ("Applications authenticating in disconnected clouds, or
// private clouds such as Azure Stack, should set this to true"), and a transport trusting the
// test certificate. EnableCAE declares the cp1 capability, which the emulator records.
func TestAzidentityClientSecretCredential(t *testing.T) {
	e := newEmulator(t)
	opts := &azidentity.ClientSecretCredentialOptions{ClientOptions: e.azClientOptions(), DisableInstanceDiscovery: true}
	cred, err := azidentity.NewClientSecretCredential(tenant, confClientID, confSecret, opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	tok, err := cred.GetToken(ctx, policy.TokenRequestOptions{Scopes: []string{graphDefault}, EnableCAE: true})
	if err != nil {
		t.Fatalf("GetToken: %v", err)
	}
	if tok.Token == "" || time.Until(tok.ExpiresOn) < 50*time.Minute {
		t.Fatalf("token: empty or expires too soon (%v)", tok.ExpiresOn)
	}
	e.graphApp(t, tok.Token)
	reqs := e.srv.TokenRequests()
	if len(reqs) != 1 || reqs[0].GrantType != "client_credentials" || !strings.Contains(strings.ToLower(reqs[0].Claims), "cp1") {
		t.Fatalf("token requests: %+v", reqs)
	}
	// A wrong secret is an authentication failure carrying the AADSTS code.
	bad, _ := azidentity.NewClientSecretCredential(tenant, confClientID, "wrong", opts)
	_, err = bad.GetToken(ctx, policy.TokenRequestOptions{Scopes: []string{graphDefault}})
	var afe *azidentity.AuthenticationFailedError
	if !errors.As(err, &afe) || afe.RawResponse == nil || afe.RawResponse.StatusCode != 401 || !strings.Contains(err.Error(), "AADSTS7000215") {
		t.Fatalf("wrong secret: %v", err)
	}
}

// TestAzidentityDeviceCodeCredential: azidentity's device code credential signs a user in.
func TestAzidentityDeviceCodeCredential(t *testing.T) {
	e := newEmulator(t)
	var shown string
	cred, err := azidentity.NewDeviceCodeCredential(&azidentity.DeviceCodeCredentialOptions{
		ClientOptions: e.azClientOptions(), DisableInstanceDiscovery: true, TenantID: tenant, ClientID: pubClientID,
		UserPrompt: func(ctx context.Context, m azidentity.DeviceCodeMessage) error {
			shown = m.Message
			if !e.srv.ApproveDevice(m.UserCode) {
				return errors.New("user code not pending")
			}
			return nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	tok, err := cred.GetToken(ctx, policy.TokenRequestOptions{Scopes: []string{"https://graph.microsoft.com/Mail.Send"}})
	if err != nil {
		t.Fatalf("GetToken: %v", err)
	}
	if tok.Token == "" || shown == "" {
		t.Fatalf("token empty %v, prompt %q", tok.Token == "", shown)
	}
	e.graphMe(t, tok.Token)
}

func (e *emulator) azClientOptions() azcore.ClientOptions {
	return azcore.ClientOptions{
		Cloud:     cloud.Configuration{ActiveDirectoryAuthorityHost: e.ts.URL + "/"},
		Transport: e.ts.Client(),
	}
}

// TestOAuth2ClientCredentials: golang.org/x/oauth2/clientcredentials with its default
// AuthStyle (it probes HTTP Basic first, then the body) gets an app token.
func TestOAuth2ClientCredentials(t *testing.T) {
	e := newEmulator(t)
	for _, style := range []oauth2.AuthStyle{oauth2.AuthStyleAutoDetect, oauth2.AuthStyleInHeader, oauth2.AuthStyleInParams} {
		cc := clientcredentials.Config{ClientID: confClientID, ClientSecret: confSecret, AuthStyle: style,
			TokenURL: e.authority(tenant) + "/oauth2/v2.0/token", Scopes: []string{graphDefault}}
		ctx := context.WithValue(context.Background(), oauth2.HTTPClient, e.ts.Client())
		tok, err := cc.Token(ctx)
		if err != nil {
			t.Fatalf("style %d: %v", style, err)
		}
		if tok.AccessToken == "" || tok.TokenType != "Bearer" || time.Until(tok.Expiry) < 50*time.Minute {
			t.Fatalf("style %d: token set %v type %q expiry %v", style, tok.AccessToken != "", tok.TokenType, tok.Expiry)
		}
		if ext, _ := tok.Extra("ext_expires_in").(float64); ext < 3000 {
			t.Errorf("style %d: ext_expires_in = %v", style, tok.Extra("ext_expires_in"))
		}
		e.graphApp(t, tok.AccessToken)
	}
	// A scope without /.default is refused as the platform refuses it (AADSTS1002012), and
	// x/oauth2 parses the error body.
	cc := clientcredentials.Config{ClientID: confClientID, ClientSecret: confSecret, AuthStyle: oauth2.AuthStyleInParams,
		TokenURL: e.authority(tenant) + "/oauth2/v2.0/token", Scopes: []string{"https://graph.microsoft.com/Mail.Send"}}
	_, err := cc.Token(context.WithValue(context.Background(), oauth2.HTTPClient, e.ts.Client()))
	var re *oauth2.RetrieveError
	if !errors.As(err, &re) || re.ErrorCode != "invalid_scope" || !strings.Contains(re.ErrorDescription, "AADSTS1002012") {
		t.Fatalf("bad scope: %v", err)
	}
}

// TestOAuth2DeviceFlow: golang.org/x/oauth2's RFC 8628 client (grant_type
// urn:ietf:params:oauth:grant-type:device_code) against the same endpoints.
func TestOAuth2DeviceFlow(t *testing.T) {
	e := newEmulator(t)
	base := e.authority(tenant) + "/oauth2/v2.0/"
	oc := &oauth2.Config{ClientID: pubClientID, Scopes: []string{"https://graph.microsoft.com/Mail.Send", "offline_access"},
		Endpoint: oauth2.Endpoint{TokenURL: base + "token", DeviceAuthURL: base + "devicecode", AuthStyle: oauth2.AuthStyleInParams}}
	ctx, cancel := context.WithTimeout(context.WithValue(context.Background(), oauth2.HTTPClient, e.ts.Client()), time.Minute)
	defer cancel()
	da, err := oc.DeviceAuth(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if da.Interval <= 0 || da.VerificationURI == "" || da.Expiry.IsZero() {
		t.Fatalf("device auth: %+v", da)
	}
	e.srv.ApproveDevice(da.UserCode)
	da.Interval = 1 // x/oauth2 waits Interval (0 means 5 s) before its first poll; the user already approved
	tok, err := oc.DeviceAccessToken(ctx, da)
	if err != nil {
		t.Fatal(err)
	}
	if tok.AccessToken == "" || tok.RefreshToken == "" {
		t.Fatal("device flow: no access or refresh token")
	}
	e.graphMe(t, tok.AccessToken)
}

// verifyJWT checks an RS256 JWT against the emulator's published JWKS, found through its
// openid-configuration, with the standard library only.
func verifyJWT(t *testing.T, e *emulator, raw string) {
	t.Helper()
	parts := strings.Split(raw, ".")
	if len(parts) != 3 {
		t.Fatalf("JWT: %d parts", len(parts))
	}
	hb, _ := base64.RawURLEncoding.DecodeString(parts[0])
	var hdr struct{ Alg, Kid, Typ string }
	if err := json.Unmarshal(hb, &hdr); err != nil || hdr.Alg != "RS256" || hdr.Kid == "" {
		t.Fatalf("JWT header %s: %v", hb, err)
	}
	iss, _ := jwtClaims(t, raw)["iss"].(string)
	var doc struct {
		JWKSURI string `json:"jwks_uri"`
	}
	getJSON(t, e, iss+"/.well-known/openid-configuration", &doc)
	var jwks struct {
		Keys []struct{ Kid, N, E string } `json:"keys"`
	}
	getJSON(t, e, doc.JWKSURI, &jwks)
	for _, k := range jwks.Keys {
		if k.Kid != hdr.Kid {
			continue
		}
		nb, err1 := base64.RawURLEncoding.DecodeString(k.N)
		eb, err2 := base64.RawURLEncoding.DecodeString(k.E)
		if err1 != nil || err2 != nil {
			t.Fatalf("JWK %s: bad n or e", k.Kid)
		}
		pub := &rsa.PublicKey{N: new(big.Int).SetBytes(nb), E: int(new(big.Int).SetBytes(eb).Int64())}
		sig, err := base64.RawURLEncoding.DecodeString(parts[2])
		if err != nil {
			t.Fatalf("JWT signature: %v", err)
		}
		sum := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
		if err := rsa.VerifyPKCS1v15(pub, crypto.SHA256, sum[:], sig); err != nil {
			t.Fatalf("JWT signature does not verify with the JWKS key %s: %v", k.Kid, err)
		}
		return
	}
	t.Fatalf("JWT kid %s is not in the JWKS", hdr.Kid)
}

func getJSON(t *testing.T, e *emulator, u string, v any) {
	t.Helper()
	resp, err := e.ts.Client().Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s: %d", u, resp.StatusCode)
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
}

// TestAzcoreCAEChallenge: the Azure SDK's own bearer-token pipeline (azcore
// runtime.NewBearerTokenPolicy over azidentity, which declares the "CP1" capability when CAE
// is enabled, as it always is in that policy) meets the emulator's Graph after a revocation:
// Graph answers with the claims challenge of spec §2, the policy asks for a new token with
// the challenge's claims and retries once, and the retry succeeds. Proves the emulator's
// challenge is one the vendor's client understands, and that it recognises the capability as
// the vendor spells it ("CP1"; MSAL docs and Graph docs spell it "cp1").
func TestAzcoreCAEChallenge(t *testing.T) {
	e := newEmulator(t)
	e.srv.CAE = true
	copts := e.azClientOptions()
	cred, err := azidentity.NewClientSecretCredential(tenant, confClientID, confSecret,
		&azidentity.ClientSecretCredentialOptions{ClientOptions: copts, DisableInstanceDiscovery: true})
	if err != nil {
		t.Fatal(err)
	}
	bearer := runtime.NewBearerTokenPolicy(cred, []string{graphDefault}, nil)
	pl := runtime.NewPipeline("conformance", "v0.0.0", runtime.PipelineOptions{PerRetry: []policy.Policy{bearer}}, &copts)
	ctx := context.Background()
	get := func() int {
		t.Helper()
		req, err := runtime.NewRequest(ctx, http.MethodGet, e.ts.URL+"/v1.0/users/"+loginUser)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := pl.Do(req)
		if err != nil {
			t.Fatalf("pipeline: %v", err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if st := get(); st != 200 {
		t.Fatalf("first call: %d", st)
	}
	e.srv.RevokeTokens()
	if st := get(); st != 200 {
		t.Fatalf("call after revocation: %d, want 200 after the claims challenge was answered", st)
	}
	var statuses []int
	for _, r := range e.srv.Requests() {
		statuses = append(statuses, r.Status)
	}
	if fmt.Sprint(statuses) != "[200 401 200]" {
		t.Fatalf("Graph statuses %v, want [200 401 200] (a challenge, then the retry)", statuses)
	}
	reqs := e.srv.TokenRequests()
	if len(reqs) != 2 || !strings.Contains(reqs[1].Claims, `"nbf"`) {
		t.Fatalf("token requests %+v: the second must carry the challenge's claims", reqs)
	}
}
