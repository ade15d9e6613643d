package graphtest

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"fmt"
	"html"
	"net/http"
	"net/url"
	"strings"
	"time"
)

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
	client, user, redirect, challenge, method, scope string
	expires                                          time.Time
	used                                             bool
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

func (s *Server) serveIdentity(w http.ResponseWriter, r *http.Request) {
	tenant, op, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/"), "/oauth2/v2.0/")
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
		method: method, scope: q.Get("scope"), expires: time.Now().Add(10 * time.Minute)}
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
	if tenant == "" || strings.Contains(tenant, "/") {
		fail(400, "invalid_request", 90002, fmt.Sprintf("Tenant '%s' not found.", tenant))
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
		case !c.public && secret == "" && grant != "urn:ietf:params:oauth:grant-type:device_code":
			fail(401, "invalid_client", 7000218, "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.")
			return
		case !c.public && secret != "" && subtle.ConstantTimeCompare([]byte(secret), []byte(c.secret)) != 1:
			fail(401, "invalid_client", 7000215, fmt.Sprintf("Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '%s'.", id))
			return
		}
	}
	var user, scope string
	var issueRT bool
	now := time.Now()
	switch grant {
	case "client_credentials":
		scope = f.Get("scope")
		if !strings.HasSuffix(scope, "/.default") || strings.Contains(scope, " ") {
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
		user, scope = code.user, code.scope
		issueRT = strings.Contains(" "+scope+" ", " offline_access ")
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
	case "urn:ietf:params:oauth:grant-type:device_code":
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
		issueRT = strings.Contains(" "+scope+" ", " offline_access ")
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
