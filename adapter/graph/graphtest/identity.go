package graphtest

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"html"
	"math/big"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
)

const grantDeviceCode = "urn:ietf:params:oauth:grant-type:device_code"

type accessToken struct {
	client, user string // user "" for an app-only token
	expires      time.Time
	revoked      bool
	claims       string
}

type refreshToken struct {
	client, user, scope string
	used, revoked       bool
	lastUsed            time.Time
}

type authCode struct {
	client, user, redirect, challenge, method, scope, nonce string
	expires                                                 time.Time
	used                                                    bool
}

type deviceCode struct {
	client, scope, userCode string
	expires                 time.Time
	approved, denied        bool
}

// ApproveDevice signs LoginUser in for the device code flow showing userCode, as a person
// entering the code would. It reports whether the code was pending.
func (s *Server) ApproveDevice(userCode string) bool { return s.decideDevice(userCode, true) }

// DenyDevice declines the device code flow showing userCode.
func (s *Server) DenyDevice(userCode string) bool { return s.decideDevice(userCode, false) }

func (s *Server) decideDevice(userCode string, ok bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, d := range s.devices {
		if d.userCode == userCode && !d.approved && !d.denied {
			d.approved, d.denied = ok, !ok
			return true
		}
	}
	return false
}

// PendingDeviceCodes returns the user codes of device flows waiting for a decision.
func (s *Server) PendingDeviceCodes() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, d := range s.devices {
		if !d.approved && !d.denied {
			out = append(out, d.userCode)
		}
	}
	return out
}

// ExpireRefreshTokens backdates the last use of every refresh token by 91 days, so the next
// redemption fails with AADSTS700082 (inactive for 90 days).
func (s *Server) ExpireRefreshTokens() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, t := range s.refresh {
		t.lastUsed = t.lastUsed.Add(-91 * 24 * time.Hour)
	}
}

// IssueRefreshToken mints a refresh token for user and client, as a completed login would,
// for tests that start from a stored refresh token.
func (s *Server) IssueRefreshToken(clientID, user, scope string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.initLocked()
	rt := "rt-" + randomString(24)
	s.refresh[rt] = &refreshToken{client: clientID, user: user, scope: scope, lastUsed: time.Now()}
	return rt
}

func (s *Server) loginUser() string {
	if s.LoginUser != "" {
		return s.LoginUser
	}
	return "user-1"
}

// aadError writes the identity platform's error JSON (spec §1.5).
func aadError(w http.ResponseWriter, status int, errName string, code int, desc string) {
	now := time.Now().UTC().Format("2006-01-02 15:04:05Z")
	trace, corr := newGUID(), newGUID()
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store, no-cache")
	w.WriteHeader(status)
	fmt.Fprintf(w, `{"error":%q,"error_description":%q,"error_codes":[%d],"timestamp":%q,"trace_id":%q,"correlation_id":%q,"error_uri":%q}`,
		errName, fmt.Sprintf("AADSTS%d: %s\r\nTrace ID: %s\r\nCorrelation ID: %s\r\nTimestamp: %s", code, desc, trace, corr, now),
		code, now, trace, corr, fmt.Sprintf("https://login.microsoftonline.com/error?code=%d", code))
}

// aadPage writes the HTML error page the sign-in UI shows (errors that are not redirected).
func aadPage(w http.ResponseWriter, code int, desc string) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(http.StatusBadRequest)
	fmt.Fprintf(w, "<html><body><h1>Sign in</h1><p>Sorry, but we're having trouble signing you in.</p><p>AADSTS%d: %s</p></body></html>",
		code, html.EscapeString(desc))
}

// isIdentityPath reports whether p is an identity platform path other than
// "/{tenant}/oauth2/v2.0/…": the OpenID Connect discovery document and the signing keys.
func isIdentityPath(p string) bool {
	return strings.HasSuffix(p, openIDConfigSuffix) || strings.HasSuffix(p, jwksSuffix)
}

const (
	openIDConfigSuffix = "/v2.0/.well-known/openid-configuration"
	jwksSuffix         = "/discovery/v2.0/keys"
)

func (s *Server) serveIdentity(w http.ResponseWriter, r *http.Request) {
	p := r.URL.Path
	if t, ok := strings.CutSuffix(p, openIDConfigSuffix); ok {
		serveOpenIDConfig(w, r, strings.TrimPrefix(t, "/"))
		return
	}
	if t, ok := strings.CutSuffix(p, jwksSuffix); ok && !strings.Contains(strings.TrimPrefix(t, "/"), "/") {
		serveJWKS(w, r)
		return
	}
	tenant, op, _ := strings.Cut(strings.TrimPrefix(p, "/"), "/oauth2/v2.0/")
	switch op {
	case "token":
		s.serveToken(w, r, tenant)
	case "authorize":
		s.serveAuthorize(w, r, tenant)
	case "devicecode":
		s.serveDeviceCode(w, r, tenant)
	default:
		http.NotFound(w, r)
	}
}

func (s *Server) serveAuthorize(w http.ResponseWriter, r *http.Request, tenant string) {
	q := r.URL.Query()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.initLocked()
	id := q.Get("client_id")
	if s.unknownTenantLocked(tenant) {
		aadPage(w, 90002, tenantNotFound(tenant))
		return
	}
	c := s.clients[id]
	if c == nil && len(s.clients) > 0 {
		aadPage(w, 700016, fmt.Sprintf("Application with identifier '%s' was not found in the directory '%s'.", id, tenant))
		return
	}
	redirect := q.Get("redirect_uri")
	if c != nil && !contains(c.redirects, redirect) {
		aadPage(w, 50011, fmt.Sprintf("The redirect URI '%s' specified in the request does not match the redirect URIs configured for the application '%s'.", redirect, id))
		return
	}
	u, err := url.Parse(redirect)
	if err != nil || redirect == "" {
		aadPage(w, 900144, "The request body must contain the following parameter: 'redirect_uri'.")
		return
	}
	method := q.Get("code_challenge_method")
	if q.Get("code_challenge") != "" && method == "" {
		method = "plain"
	}
	v := u.Query()
	if st := q.Get("state"); st != "" {
		v.Set("state", st)
	}
	if s.AuthorizeError != "" {
		desc := map[string]string{
			"access_denied":        "AADSTS65004: User declined to consent to access the app.",
			"consent_required":     "AADSTS65001: The user or administrator has not consented to use the application with ID '" + id + "'.",
			"interaction_required": "AADSTS50076: Due to a configuration change made by your administrator, you must use multi-factor authentication.",
		}[s.AuthorizeError]
		v.Set("error", s.AuthorizeError)
		v.Set("error_description", desc+"\r\nTrace ID: "+newGUID())
		u.RawQuery = v.Encode()
		http.Redirect(w, r, u.String(), http.StatusFound)
		return
	}
	code := "code-" + randomString(24)
	s.codes[code] = &authCode{client: id, user: s.loginUser(), redirect: redirect, challenge: q.Get("code_challenge"),
		method: method, scope: q.Get("scope"), nonce: q.Get("nonce"), expires: time.Now().Add(10 * time.Minute)}
	v.Set("code", code)
	u.RawQuery = v.Encode()
	http.Redirect(w, r, u.String(), http.StatusFound)
}

func (s *Server) serveDeviceCode(w http.ResponseWriter, r *http.Request, tenant string) {
	if err := r.ParseForm(); err != nil || r.Method != http.MethodPost {
		aadError(w, 400, "invalid_request", 900144, "The request body must contain the following parameter: 'client_id'.")
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.initLocked()
	id := r.PostForm.Get("client_id")
	if id == "" {
		aadError(w, 400, "invalid_request", 900144, "The request body must contain the following parameter: 'client_id'.")
		return
	}
	if s.unknownTenantLocked(tenant) {
		aadError(w, 400, "invalid_request", 90002, tenantNotFound(tenant))
		return
	}
	if s.clients[id] == nil && len(s.clients) > 0 {
		aadError(w, 400, "unauthorized_client", 700016, fmt.Sprintf("Application with identifier '%s' was not found in the directory '%s'.", id, tenant))
		return
	}
	dc := "dc-" + randomString(24)
	uc := strings.ToUpper(randomString(4))
	s.devices[dc] = &deviceCode{client: id, scope: r.PostForm.Get("scope"), userCode: uc, expires: time.Now().Add(15 * time.Minute)}
	writeJSON(w, http.StatusOK, map[string]any{
		"device_code": dc, "user_code": uc, "verification_uri": "https://microsoft.com/devicelogin",
		"expires_in": 900, "interval": 5,
		"message": fmt.Sprintf("To sign in, use a web browser to open the page https://microsoft.com/devicelogin and enter the code %s to authenticate.", uc),
	})
}

func (s *Server) serveToken(w http.ResponseWriter, r *http.Request, tenant string) {
	if r.Method != http.MethodPost {
		aadError(w, 400, "invalid_request", 900561, "The endpoint only accepts POST requests.")
		return
	}
	if err := r.ParseForm(); err != nil {
		aadError(w, 400, "invalid_request", 900144, "The request body must contain the following parameter: 'grant_type'.")
		return
	}
	f := r.PostForm
	id, secret := f.Get("client_id"), f.Get("client_secret")
	if u, p, ok := r.BasicAuth(); ok {
		id, _ = url.QueryUnescape(u)
		secret, _ = url.QueryUnescape(p)
	}
	grant := f.Get("grant_type")
	s.mu.Lock()
	defer s.mu.Unlock()
	s.initLocked()
	tr := TokenRequest{Tenant: tenant, GrantType: grant, ClientID: id, Scope: f.Get("scope"), Claims: f.Get("claims")}
	fail := func(status int, errName string, code int, desc string) {
		tr.Error = errName
		s.tokenReqs = append(s.tokenReqs, tr)
		aadError(w, status, errName, code, desc)
	}
	if id == "" {
		fail(400, "invalid_request", 900144, "The request body must contain the following parameter: 'client_id'.")
		return
	}
	if grant == "" {
		fail(400, "invalid_request", 900144, "The request body must contain the following parameter: 'grant_type'.")
		return
	}
	if tenant == "" || strings.Contains(tenant, "/") || s.unknownTenantLocked(tenant) {
		fail(400, "invalid_request", 90002, tenantNotFound(tenant))
		return
	}
	if grant == "client_credentials" && (tenant == "common" || tenant == "consumers") {
		fail(400, "invalid_request", 9001023, "The grant type isn't supported over the /common or /consumers endpoints. Please use the /organizations or tenant-specific endpoint.")
		return
	}
	c := s.clients[id]
	if c == nil && len(s.clients) > 0 {
		fail(400, "unauthorized_client", 700016, fmt.Sprintf("Application with identifier '%s' was not found in the directory '%s'.", id, tenant))
		return
	}
	if c != nil {
		switch {
		case c.public && secret != "":
			fail(401, "invalid_client", 700025, "Client is public so neither 'client_assertion' nor 'client_secret' should be presented.")
			return
		case !c.public && secret == "" && grant != grantDeviceCode && grant != "device_code":
			fail(401, "invalid_client", 7000218, "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.")
			return
		case !c.public && secret != "" && subtle.ConstantTimeCompare([]byte(secret), []byte(c.secret)) != 1:
			fail(401, "invalid_client", 7000215, fmt.Sprintf("Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '%s'.", id))
			return
		}
	}
	var user, scope, nonce string
	var issueRT bool
	now := time.Now()
	switch grant {
	case "client_credentials":
		// The OpenID Connect scopes MSAL adds to every request (openid offline_access
		// profile) are ignored; what remains must be one resource's /.default (AADSTS1002012
		// quotes the whole scope, "openid offline_access profile" when nothing remains).
		scope = resourceScopes(f.Get("scope"))
		if !strings.HasSuffix(scope, "/.default") || strings.Contains(scope, " ") {
			scope = f.Get("scope")
			fail(400, "invalid_scope", 1002012, fmt.Sprintf("The provided value for scope %s is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI).", scope))
			return
		}
	case "authorization_code":
		code := s.codes[f.Get("code")]
		switch {
		case code == nil || code.client != id:
			fail(400, "invalid_grant", 70000, "The provided value for the 'code' parameter is not valid.")
			return
		case code.used:
			fail(400, "invalid_grant", 54005, "OAuth2 Authorization code was already redeemed, please retry with a new valid code or use an existing refresh token.")
			return
		case now.After(code.expires):
			fail(400, "invalid_grant", 70008, "The provided authorization code or refresh token has expired due to inactivity. Send a new interactive authorization request for this user and resource.")
			return
		case f.Get("redirect_uri") != code.redirect:
			fail(400, "invalid_grant", 50011, fmt.Sprintf("The redirect URI '%s' specified in the request does not match the redirect URI used in the authorization request.", f.Get("redirect_uri")))
			return
		case code.challenge != "" && !pkceMatches(code.method, code.challenge, f.Get("code_verifier")):
			code.used = true
			fail(400, "invalid_grant", 501481, "The Code_Verifier does not match the code_challenge supplied in the authorization request.")
			return
		}
		code.used = true
		user, scope, nonce = code.user, code.scope, code.nonce
		issueRT = hasScope(scope, "offline_access")
	case "refresh_token":
		rt := s.refresh[f.Get("refresh_token")]
		switch {
		case rt == nil || rt.client != id:
			fail(400, "invalid_grant", 9002313, "Invalid request. Request is malformed or invalid.")
			return
		case rt.revoked:
			fail(400, "invalid_grant", 50173, "The provided grant has expired due to it being revoked, a fresh auth token is needed. The user might have changed or reset their password.")
			return
		case now.Sub(rt.lastUsed) > 90*24*time.Hour:
			fail(400, "invalid_grant", 700082, "The refresh token has expired due to inactivity. The token was issued on "+rt.lastUsed.UTC().Format(time.RFC3339)+" and was inactive for 90.00:00:00.")
			return
		case rt.used && s.StrictRefresh:
			fail(400, "invalid_grant", 70008, "The provided authorization code or refresh token has expired due to inactivity. Send a new interactive authorization request for this user and resource.")
			return
		}
		rt.used = true
		user, scope, issueRT = rt.user, rt.scope, true
		if sc := f.Get("scope"); sc != "" {
			scope = sc
		}
	case grantDeviceCode, "device_code":
		// RFC 8628 names the grant urn:ietf:params:oauth:grant-type:device_code; MSAL sends
		// the short "device_code", which the platform accepts as well.
		d := s.devices[f.Get("device_code")]
		switch {
		case d == nil || d.client != id:
			fail(400, "bad_verification_code", 70019, "Verification code not recognized.")
			return
		case now.After(d.expires):
			fail(400, "expired_token", 70020, "The provided value for the input parameter 'device_code' is not valid. This device code has expired.")
			return
		case d.denied:
			fail(400, "authorization_declined", 70016, "The user declined the authorization request.")
			return
		case !d.approved:
			fail(400, "authorization_pending", 70016, "OAuth 2.0 device flow error. Authorization is pending. Continue polling.")
			return
		}
		delete(s.devices, f.Get("device_code"))
		user, scope = s.loginUser(), d.scope
		issueRT = hasScope(scope, "offline_access")
	default:
		fail(400, "unsupported_grant_type", 70003, fmt.Sprintf("The app requested an unsupported grant type '%s'.", grant))
		return
	}
	s.tokenReqs = append(s.tokenReqs, tr)
	life := s.TokenLifetime
	if life <= 0 {
		life = 3599 * time.Second
	}
	at := "at-" + randomString(24)
	s.tokens[at] = &accessToken{client: id, user: user, expires: now.Add(life), claims: f.Get("claims")}
	secs := int((life + time.Second - 1) / time.Second)
	resp := map[string]any{"token_type": "Bearer", "expires_in": secs, "ext_expires_in": secs, "access_token": at}
	if scope != "" {
		resp["scope"] = scope
	}
	if issueRT {
		rt := "rt-" + randomString(24)
		s.refresh[rt] = &refreshToken{client: id, user: user, scope: scope, lastUsed: now}
		resp["refresh_token"] = rt
	}
	if user != "" && hasScope(scope, "openid") {
		// An id_token for the signed-in user, signed with the key published at jwks_uri
		// (OpenID Connect Core §2; the v2.0 claims of the platform's id token reference).
		tok, err := idToken(issuerBase(r), tenant, id, user, nonce, now)
		if err != nil {
			aadError(w, 500, "server_error", 50000, "signing the id_token: "+err.Error())
			return
		}
		resp["id_token"] = tok
	}
	if user != "" && f.Get("client_info") == "1" {
		// MSAL asks for client_info (base64url JSON of the user's object id and home tenant)
		// to key its account cache.
		ci, _ := json.Marshal(map[string]string{"uid": user, "utid": tenantID(tenant)})
		resp["client_info"] = base64.RawURLEncoding.EncodeToString(ci)
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, resp)
}

func pkceMatches(method, challenge, verifier string) bool {
	if verifier == "" {
		return false
	}
	want := verifier
	if method == "S256" {
		sum := sha256.Sum256([]byte(verifier))
		want = base64.RawURLEncoding.EncodeToString(sum[:])
	}
	return subtle.ConstantTimeCompare([]byte(want), []byte(challenge)) == 1
}

func contains(list []string, v string) bool {
	for _, x := range list {
		if x == v {
			return true
		}
	}
	return false
}

// hasScope reports whether the space-separated scope list has scope.
func hasScope(list, scope string) bool {
	for _, s := range strings.Fields(list) {
		if s == scope {
			return true
		}
	}
	return false
}

// oidcScopes are the OpenID Connect scopes, which name no resource.
var oidcScopes = map[string]bool{"openid": true, "profile": true, "email": true, "offline_access": true}

// resourceScopes returns the scope list without the OpenID Connect scopes.
func resourceScopes(list string) string {
	var out []string
	for _, s := range strings.Fields(list) {
		if !oidcScopes[s] {
			out = append(out, s)
		}
	}
	return strings.Join(out, " ")
}

// Tenant ids of the multi-tenant endpoints: a user signing in through /common or
// /organizations belongs to homeTenantID in the emulator; /consumers is the Microsoft
// account tenant, as on the real platform.
const (
	homeTenantID     = "5a1e0e11-7e57-4c0d-9a3e-6f1d2c3b4a59"
	consumerTenantID = "9188040d-6c67-4c5b-b112-36a304b66dad"
)

// tenantID returns the tenant GUID for a tenant path segment: a GUID as given, the home
// tenant for common and organizations, and for a domain a GUID derived from its name (stable
// for a name, as the platform's is).
func tenantID(tenant string) string {
	t := strings.ToLower(tenant)
	switch t {
	case "common", "organizations", "":
		return homeTenantID
	case "consumers":
		return consumerTenantID
	}
	if isGUID(t) {
		return t
	}
	h := sha256.Sum256([]byte("graphtest tenant " + t))
	h[6] = h[6]&0x0f | 0x80 // version 8 (RFC 9562: custom)
	h[8] = h[8]&0x3f | 0x80
	x := fmt.Sprintf("%x", h[:16])
	return x[:8] + "-" + x[8:12] + "-" + x[12:16] + "-" + x[16:20] + "-" + x[20:]
}

func isGUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i, c := range s {
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
				return false
			}
		}
	}
	return true
}

// issuerBase is the emulator's own origin as the client reached it: "https://host" behind TLS.
func issuerBase(r *http.Request) string {
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return scheme + "://" + r.Host
}

// serveOpenIDConfig answers GET /{tenant}/v2.0/.well-known/openid-configuration with the
// OpenID Connect discovery document the platform publishes for a tenant (documented under
// "Find your app's OpenID configuration document URI", learn.microsoft.com/entra/identity-platform/v2-protocols-oidc).
// Its endpoints are the emulator's own, so a client that discovers them (MSAL, azidentity)
// sends every later request here. For a specific tenant the endpoints and the issuer carry
// the tenant id; for common, organizations and consumers the issuer is the template
// "…/{tenantid}/v2.0", as the real documents have it.
func serveOpenIDConfig(w http.ResponseWriter, r *http.Request, tenant string) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	if tenant == "" || strings.Contains(tenant, "/") {
		aadError(w, 400, "invalid_tenant", 90002, fmt.Sprintf("Tenant '%s' not found.", tenant))
		return
	}
	base := issuerBase(r)
	seg, iss := tenantID(tenant), ""
	switch strings.ToLower(tenant) {
	case "common", "organizations", "consumers":
		seg = strings.ToLower(tenant)
		iss = base + "/{tenantid}/v2.0"
	default:
		iss = base + "/" + seg + "/v2.0"
	}
	if strings.ToLower(tenant) == "consumers" {
		iss = base + "/" + consumerTenantID + "/v2.0"
	}
	ep := base + "/" + seg
	w.Header().Set("Cache-Control", "max-age=86400, private")
	writeJSON(w, http.StatusOK, map[string]any{
		"token_endpoint":                        ep + "/oauth2/v2.0/token",
		"token_endpoint_auth_methods_supported": []string{"client_secret_post", "private_key_jwt", "client_secret_basic"},
		"jwks_uri":                              ep + jwksSuffix,
		"response_modes_supported":              []string{"query", "fragment", "form_post"},
		"subject_types_supported":               []string{"pairwise"},
		"id_token_signing_alg_values_supported": []string{"RS256"},
		"response_types_supported":              []string{"code", "id_token", "code id_token", "id_token token"},
		"scopes_supported":                      []string{"openid", "profile", "email", "offline_access"},
		"issuer":                                iss,
		"request_uri_parameter_supported":       false,
		"userinfo_endpoint":                     base + "/oidc/userinfo",
		"authorization_endpoint":                ep + "/oauth2/v2.0/authorize",
		"device_authorization_endpoint":         ep + "/oauth2/v2.0/devicecode",
		"http_logout_supported":                 true,
		"frontchannel_logout_supported":         true,
		"end_session_endpoint":                  ep + "/oauth2/v2.0/logout",
		"claims_supported": []string{"sub", "iss", "cloud_instance_name", "cloud_instance_host_name", "cloud_graph_host_name",
			"msgraph_host", "aud", "exp", "iat", "auth_time", "acr", "nonce", "preferred_username", "name", "tid", "ver",
			"at_hash", "c_hash", "email"},
		"kerberos_endpoint":     ep + "/kerberos",
		"tenant_region_scope":   "WW",
		"cloud_instance_name":   "microsoftonline.com",
		"cloud_graph_host_name": "graph.windows.net",
		"msgraph_host":          r.Host,
		"rbac_url":              "https://pas.windows.net",
	})
}

// signingKey is the emulator's id_token signing key, made on first use and shared by every
// Server in the process (the platform, too, signs for all tenants with the same keys).
var signingKey = sync.OnceValues(func() (*rsa.PrivateKey, error) { return rsa.GenerateKey(rand.Reader, 2048) })

// keyID is the "kid" of k: a thumbprint of its modulus, as stable as the key.
func keyID(k *rsa.PublicKey) string {
	h := sha256.Sum256(k.N.Bytes())
	return base64.RawURLEncoding.EncodeToString(h[:15])
}

// serveJWKS answers GET /{tenant}/discovery/v2.0/keys with the signing key as a JWK set.
func serveJWKS(w http.ResponseWriter, r *http.Request) {
	k, err := signingKey()
	if err != nil {
		aadError(w, 500, "server_error", 50000, "no signing key: "+err.Error())
		return
	}
	pub := &k.PublicKey
	writeJSON(w, http.StatusOK, map[string]any{"keys": []map[string]any{{
		"kty": "RSA", "use": "sig", "kid": keyID(pub),
		"n": base64.RawURLEncoding.EncodeToString(pub.N.Bytes()),
		"e": base64.RawURLEncoding.EncodeToString(big.NewInt(int64(pub.E)).Bytes()),
	}}})
}

// idToken returns a signed v2.0 id_token for user, issued by the tenant's issuer to client.
func idToken(base, tenant, client, user, nonce string, now time.Time) (string, error) {
	k, err := signingKey()
	if err != nil {
		return "", err
	}
	tid := tenantID(tenant)
	sub := sha256.Sum256([]byte(client + "\x00" + user)) // pairwise: per app and user
	claims := map[string]any{
		"aud": client, "iss": base + "/" + tid + "/v2.0", "iat": now.Unix(), "nbf": now.Unix(), "exp": now.Add(time.Hour).Unix(),
		"name": user, "oid": user, "preferred_username": user, "sub": base64.RawURLEncoding.EncodeToString(sub[:]),
		"tid": tid, "ver": "2.0", "uti": randomString(11),
	}
	if nonce != "" {
		claims["nonce"] = nonce
	}
	hb, _ := json.Marshal(map[string]string{"typ": "JWT", "alg": "RS256", "kid": keyID(&k.PublicKey)})
	cb, _ := json.Marshal(claims)
	signing := base64.RawURLEncoding.EncodeToString(hb) + "." + base64.RawURLEncoding.EncodeToString(cb)
	sum := sha256.Sum256([]byte(signing))
	sig, err := rsa.SignPKCS1v15(rand.Reader, k, crypto.SHA256, sum[:])
	if err != nil {
		return "", err
	}
	return signing + "." + base64.RawURLEncoding.EncodeToString(sig), nil
}
