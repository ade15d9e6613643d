package teams

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/seed-a64d9e1f/chatwire/tokenmgr"
)

// AppUserAssignedMSI is the app type of a bot whose identity is a user-assigned managed
// identity (spec §1.4): no password; tokens come from the Azure host's identity endpoint.
const AppUserAssignedMSI = "UserAssignedMSI"

// DefaultIMDSEndpoint is the Azure Instance Metadata Service's token endpoint (VMs, AKS).
const DefaultIMDSEndpoint = "http://169.254.169.254/metadata/identity/oauth2/token"

// ConnectorResource is the resource a managed identity token is asked for (spec §3.1).
const ConnectorResource = "https://api.botframework.com"

// ManagedIdentity is a [tokenmgr.Source] of connector tokens for a user-assigned managed
// identity: App Service and Container Apps' IDENTITY_ENDPOINT (with its IDENTITY_HEADER),
// or the Instance Metadata Service when no header is given.
type ManagedIdentity struct {
	// ClientID is the managed identity's client id (the bot's Microsoft App ID).
	ClientID string
	// Endpoint is the identity endpoint. Empty means DefaultIMDSEndpoint.
	Endpoint string
	// Header is the App Service IDENTITY_HEADER value (a secret); empty means the IMDS
	// protocol ("Metadata: true").
	Header string
	// HTTPClient makes the requests. Nil means http.DefaultClient.
	HTTPClient *http.Client
}

var _ tokenmgr.Source = (*ManagedIdentity)(nil)

// Token fetches a new connector token from the identity endpoint.
func (m *ManagedIdentity) Token(ctx context.Context) (tokenmgr.Token, error) {
	endpoint := m.Endpoint
	if endpoint == "" {
		endpoint = DefaultIMDSEndpoint
	}
	q := url.Values{"resource": {ConnectorResource}, "client_id": {m.ClientID}}
	if m.Header != "" {
		q.Set("api-version", "2019-08-01")
	} else {
		q.Set("api-version", "2018-02-01")
	}
	sep := "?"
	if strings.Contains(endpoint, "?") {
		sep = "&"
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, endpoint+sep+q.Encode(), nil)
	if err != nil {
		return tokenmgr.Token{}, fmt.Errorf("teams: managed identity endpoint: %w", err)
	}
	if m.Header != "" {
		req.Header.Set("X-IDENTITY-HEADER", m.Header)
	} else {
		req.Header.Set("Metadata", "true")
	}
	hc := m.HTTPClient
	if hc == nil {
		hc = http.DefaultClient
	}
	now := time.Now()
	resp, err := hc.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return tokenmgr.Token{}, ctx.Err()
		}
		return tokenmgr.Token{}, fmt.Errorf("teams: managed identity endpoint %s: %w: %v (is this running on Azure with the identity assigned?)",
			endpoint, tokenmgr.ErrTemporary, unwrapURLError(err))
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	var out struct {
		AccessToken string          `json:"access_token"`
		ExpiresIn   json.RawMessage `json:"expires_in"`
		ExpiresOn   json.RawMessage `json:"expires_on"`
		Error       string          `json:"error"`
		Description string          `json:"error_description"`
		Message     string          `json:"message"`
	}
	json.Unmarshal(body, &out)
	if resp.StatusCode != http.StatusOK || out.AccessToken == "" {
		msg := strings.TrimSpace(out.Error + " " + out.Description + " " + out.Message)
		if msg == "" {
			msg = clip(strings.TrimSpace(string(body)), 200)
		}
		wrap := tokenmgr.ErrTemporary
		if resp.StatusCode == http.StatusBadRequest || resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden || resp.StatusCode == http.StatusNotFound {
			wrap = tokenmgr.ErrCredentials
		}
		return tokenmgr.Token{}, fmt.Errorf("teams: managed identity endpoint answered %d: %s (check that the user-assigned identity %s is assigned to this resource and is the Azure Bot's app id): %w",
			resp.StatusCode, msg, m.ClientID, wrap)
	}
	t := tokenmgr.Token{Value: out.AccessToken}
	if n := jsonNumber(out.ExpiresIn); n > 0 && n < 1e9 {
		t.ExpiresAt = now.Add(time.Duration(n) * time.Second)
	} else if n := jsonNumber(out.ExpiresOn); n > 1e9 {
		t.ExpiresAt = time.Unix(n, 0)
	}
	return t, nil
}

// jsonNumber reads a number sent as a JSON number or a string (both occur), 0 if neither.
func jsonNumber(raw json.RawMessage) int64 {
	s := strings.Trim(strings.TrimSpace(string(raw)), `"`)
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0
	}
	return n
}
