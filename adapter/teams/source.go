package teams

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/seed-a64d9e1f/chatwire/adapter/graph"
	"github.com/seed-a64d9e1f/chatwire/tokenmgr"
)

// App types of [Options.AppType] (spec §1.4).
const (
	AppSingleTenant = "SingleTenant" // tokens from the bot's tenant authority (the default)
	AppMultiTenant  = "MultiTenant"  // legacy: tokens from the botframework.com authority
)

// Defaults of the Bot Framework public cloud (spec §0).
const (
	DefaultLoginBase   = "https://login.microsoftonline.com"
	DefaultMetadataURL = "https://login.botframework.com/v1/.well-known/openidconfiguration"
	DefaultIssuer      = "https://api.botframework.com"
	// ConnectorScope is the scope of the bot's client credentials token.
	ConnectorScope = "https://api.botframework.com/.default"
	// MultiTenantAuthority is the authority of legacy multi-tenant bots.
	MultiTenantAuthority = "botframework.com"
)

// ClientCredentials is a [tokenmgr.Source] of Bot Connector tokens: the client credentials
// grant with the scope https://api.botframework.com/.default, at the tenant authority for
// single-tenant bots or botframework.com for multi-tenant ones (spec §3.1). Safe for
// concurrent use.
type ClientCredentials struct {
	AppID    string
	Password string
	// Authority is the tenant segment of the token URL: the tenant id, or
	// MultiTenantAuthority.
	Authority string
	// LoginBase is the identity platform's base URL. Empty means DefaultLoginBase.
	LoginBase string
	// HTTPClient makes the requests. Nil means http.DefaultClient.
	HTTPClient *http.Client
}

var _ tokenmgr.Source = (*ClientCredentials)(nil)

// TokenURL returns the token endpoint.
func (s *ClientCredentials) TokenURL() string {
	base := s.LoginBase
	if base == "" {
		base = DefaultLoginBase
	}
	return strings.TrimRight(base, "/") + "/" + url.PathEscape(s.Authority) + "/oauth2/v2.0/token"
}

// Token fetches a new connector token.
func (s *ClientCredentials) Token(ctx context.Context) (tokenmgr.Token, error) {
	if s.Password == "" {
		return tokenmgr.Token{}, fmt.Errorf("teams: app_password is empty: set the Azure Bot's client secret value: %w", tokenmgr.ErrCredentials)
	}
	form := url.Values{"grant_type": {"client_credentials"}, "client_id": {s.AppID}, "client_secret": {s.Password},
		"scope": {ConnectorScope}}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.TokenURL(), strings.NewReader(form.Encode()))
	if err != nil {
		return tokenmgr.Token{}, fmt.Errorf("teams: token request: %w", err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	hc := s.HTTPClient
	if hc == nil {
		hc = http.DefaultClient
	}
	now := time.Now()
	resp, err := hc.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return tokenmgr.Token{}, ctx.Err()
		}
		return tokenmgr.Token{}, fmt.Errorf("teams: token request to %s: %w: %v", s.TokenURL(), tokenmgr.ErrTemporary, unwrapURLError(err))
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return tokenmgr.Token{}, fmt.Errorf("teams: reading token response: %w: %v", tokenmgr.ErrTemporary, err)
	}
	tr, err := graph.ParseTokenResponse(resp.StatusCode, resp.Header, body)
	if err != nil {
		var ae *graph.AuthError
		if errors.As(err, &ae) {
			return tokenmgr.Token{}, &AuthError{AuthError: ae, multiTenant: s.Authority == MultiTenantAuthority}
		}
		return tokenmgr.Token{}, fmt.Errorf("teams: %s", strings.TrimPrefix(err.Error(), "graph: "))
	}
	t := tokenmgr.Token{Value: tr.AccessToken}
	if secs, err := tr.ExpiresIn.Float64(); err == nil && secs > 0 && secs < 1e9 {
		t.ExpiresAt = now.Add(time.Duration(secs * float64(time.Second)))
	}
	return t, nil
}

func unwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// AuthError is an Entra error from the token endpoint, with a hint for the Bot Framework
// pitfalls of spec §6 (new bots are single-tenant). It never holds a secret.
type AuthError struct {
	*graph.AuthError
	multiTenant bool
}

// Error returns the Entra error and what to do about it.
func (e *AuthError) Error() string {
	msg := "teams: " + strings.TrimPrefix(e.AuthError.Error(), "graph: ")
	if h := e.TeamsHint(); h != "" {
		msg += " (teams: " + h + ")"
	}
	return msg
}

// TeamsHint says how to fix the error for a Teams bot, or "".
func (e *AuthError) TeamsHint() string {
	switch {
	case e.Code == 700016 && e.multiTenant:
		return "the app is not a multi-tenant app in the Bot Framework directory; bots created after July 2025 are single-tenant: set tenant_id and app_type SingleTenant"
	case e.Code == 700016:
		return "the app id was not found in this tenant: check app_id and tenant_id (the Azure Bot's Microsoft App ID and App Tenant ID)"
	case e.Code == 7000215:
		return "the app password is wrong: use the client secret's Value of the Azure Bot's app registration"
	case e.Code == 1002012 || e.Code == 70011:
		return "the scope must be https://api.botframework.com/.default"
	}
	return ""
}

// Unwrap returns the Entra error, so errors.Is sees tokenmgr.ErrCredentials and friends.
func (e *AuthError) Unwrap() error { return e.AuthError }
