package teamstest

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

func (s *Server) tokenLifetime() time.Duration {
	if s.TokenLifetime > 0 {
		return s.TokenLifetime
	}
	return 3599 * time.Second
}

// aadError writes an Entra error answer (graph.md §1.5 shape).
func aadError(w http.ResponseWriter, status int, errName string, code int, desc string) {
	trace := newGUID()
	writeJSON(w, status, map[string]any{
		"error": errName,
		"error_description": fmt.Sprintf("AADSTS%d: %s Trace ID: %s Correlation ID: %s Timestamp: %s",
			code, desc, trace, newGUID(), time.Now().UTC().Format("2006-01-02 15:04:05Z")),
		"error_codes":    []int{code},
		"timestamp":      time.Now().UTC().Format("2006-01-02 15:04:05Z"),
		"trace_id":       trace,
		"correlation_id": newGUID(),
		"error_uri":      "https://login.microsoftonline.com/error?code=" + fmt.Sprint(code),
	})
}

// serveToken is the Entra v2 token endpoint for the client credentials grant with the Bot
// Framework scope (spec §3.1), enforcing the single- vs multi-tenant authority (spec §6.1).
func (s *Server) serveToken(w http.ResponseWriter, r *http.Request, tenant string) {
	rec := TokenRequest{Tenant: tenant}
	defer func() {
		s.mu.Lock()
		s.tokenReqs = append(s.tokenReqs, rec)
		s.mu.Unlock()
	}()
	fail := func(status int, errName string, code int, desc string) {
		rec.Status, rec.Error = status, errName
		aadError(w, status, errName, code, desc)
	}
	if r.Method != http.MethodPost {
		fail(http.StatusMethodNotAllowed, "invalid_request", 900561, "The endpoint only accepts POST requests.")
		return
	}
	if err := r.ParseForm(); err != nil {
		fail(http.StatusBadRequest, "invalid_request", 900144, "The request body must contain the following parameter: 'grant_type'.")
		return
	}
	f := r.PostForm
	rec.GrantType, rec.ClientID, rec.Scope = f.Get("grant_type"), f.Get("client_id"), f.Get("scope")
	secret := f.Get("client_secret")
	if id, pw, ok := r.BasicAuth(); ok {
		id, _ = url.QueryUnescape(id)
		pw, _ = url.QueryUnescape(pw)
		rec.ClientID, secret = id, pw
	}
	if rec.GrantType == "" {
		fail(http.StatusBadRequest, "invalid_request", 900144, "The request body must contain the following parameter: 'grant_type'.")
		return
	}
	if rec.GrantType != "client_credentials" {
		fail(http.StatusBadRequest, "unsupported_grant_type", 70003, "The app requested an unsupported grant type '"+rec.GrantType+"'.")
		return
	}
	s.mu.Lock()
	s.initLocked()
	var bot *Bot
	if b := s.bots[rec.ClientID]; b != nil {
		c := *b
		bot = &c
	}
	s.mu.Unlock()
	directory := tenant
	if tenant == MultiTenantAuthority {
		directory = "Bot Framework"
	}
	if bot == nil || (tenant != bot.TenantID && !(bot.MultiTenant && tenant == MultiTenantAuthority)) {
		fail(http.StatusBadRequest, "unauthorized_client", 700016, fmt.Sprintf("Application with identifier '%s' was not found in the directory '%s'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You may have sent your authentication request to the wrong tenant.", rec.ClientID, directory))
		return
	}
	if secret == "" {
		fail(http.StatusUnauthorized, "invalid_client", 7000218, "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.")
		return
	}
	if secret != bot.Password {
		fail(http.StatusUnauthorized, "invalid_client", 7000215, "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '"+rec.ClientID+"'.")
		return
	}
	if rec.Scope != ConnectorScope {
		fail(http.StatusBadRequest, "invalid_scope", 1002012, "The provided value for scope "+rec.Scope+" is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI).")
		return
	}
	now := time.Now()
	life := s.tokenLifetime()
	tid := bot.TenantID
	if tenant == MultiTenantAuthority {
		tid = "d6d49420-f39b-4df7-a1dc-d59a935871db" // the Bot Framework tenant
	}
	claims := jwt.MapClaims{
		"aud": "https://api.botframework.com", "iss": "https://sts.windows.net/" + tid + "/",
		"iat": now.Unix(), "nbf": now.Unix(), "exp": now.Add(life).Unix(),
		"appid": bot.AppID, "appidacr": "1", "tid": tid, "ver": "1.0", "uti": randomHex(8),
	}
	tok := jwt.NewWithClaims(jwt.SigningMethodRS256, claims)
	tok.Header["kid"] = "entra-" + randomHex(4)
	s.mu.Lock()
	signed, err := tok.SignedString(s.entraKey)
	if err == nil {
		s.tokens[signed] = &issued{appID: bot.AppID, tenant: tid, exp: now.Add(life)}
	}
	s.mu.Unlock()
	if err != nil {
		fail(http.StatusInternalServerError, "server_error", 50000, "signing failed")
		return
	}
	rec.Status = http.StatusOK
	secs := int(life / time.Second)
	writeJSON(w, http.StatusOK, map[string]any{"token_type": "Bearer", "expires_in": secs, "ext_expires_in": secs, "access_token": signed})
}

// checkToken reports which app a connector request's bearer token belongs to.
func (s *Server) checkToken(r *http.Request) (appID string, ok bool) {
	h := r.Header.Get("Authorization")
	if !strings.HasPrefix(h, "Bearer ") {
		return "", false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.tokens[strings.TrimPrefix(h, "Bearer ")]
	if t == nil || t.revoked || time.Now().After(t.exp) {
		return "", false
	}
	return t.appID, true
}

// TokenClaims are the claims of a connector→bot token. Zero fields take the values Teams
// sends (see [Server.ChannelToken]).
type TokenClaims struct {
	Issuer     string
	Audience   string
	ServiceURL string
	NotBefore  time.Time
	Expires    time.Time
	NoExpiry   bool // omit exp
	// ServiceURLClaim is the claim name; empty means "serviceurl".
	ServiceURLClaim string
}

// ChannelToken signs a connector→bot JWT with key kid (empty: the current signing key):
// header {alg:RS256,kid,x5t,typ:JWT}, claims {serviceurl,nbf,exp,iss,aud} (spec §7 A2).
func (s *Server) ChannelToken(kid string, c TokenClaims) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.initLocked()
	return s.channelTokenLocked(kid, c)
}

func (s *Server) channelTokenLocked(kid string, c TokenClaims) (string, error) {
	if kid == "" {
		kid = s.signKid
	}
	var key *signingKey
	for _, k := range s.keys {
		if k.kid == kid {
			key = k
		}
	}
	if key == nil {
		key = s.hidden[kid]
	}
	if key == nil {
		return "", fmt.Errorf("teamstest: no key %q", kid)
	}
	now := time.Now()
	if c.Issuer == "" {
		c.Issuer = ChannelIssuer
	}
	if c.NotBefore.IsZero() {
		c.NotBefore = now.Add(-5 * time.Minute)
	}
	if c.Expires.IsZero() {
		life := s.ChannelTokenLifetime
		if life <= 0 {
			life = time.Hour
		}
		c.Expires = now.Add(life)
	}
	name := c.ServiceURLClaim
	if name == "" {
		name = "serviceurl"
	}
	claims := jwt.MapClaims{name: c.ServiceURL, "nbf": c.NotBefore.Unix(), "iss": c.Issuer, "aud": c.Audience}
	if !c.NoExpiry {
		claims["exp"] = c.Expires.Unix()
	}
	tok := jwt.NewWithClaims(jwt.SigningMethodRS256, claims)
	tok.Header["kid"] = key.kid
	tok.Header["x5t"] = key.x5t
	return tok.SignedString(key.key)
}
