package graphtest_test

import (
	"encoding/base64"
	"encoding/json"
	"net/url"
	"strings"
	"testing"

	"github.com/seed-a64d9e1f/chatwire/adapter/graph/graphtest"
)

// The identity behaviour MSAL Go and azidentity need (proven against them in
// conformance/microsoft); these tests keep it in the main module's test run.

// TestClientCredentialsIgnoresOIDCScopes: MSAL adds "openid offline_access profile" to every
// request, client credentials too; the platform ignores them there, and refuses a scope with
// nothing but them (AADSTS1002012).
func TestClientCredentialsIgnoresOIDCScopes(t *testing.T) {
	var s graphtest.Server
	resp, m := form(t, &s, "contoso", url.Values{"client_id": {"app"}, "client_secret": {"x"}, "grant_type": {"client_credentials"},
		"scope": {"https://graph.microsoft.com/.default openid offline_access profile"}})
	if resp.StatusCode != 200 || m["access_token"] == nil || m["refresh_token"] != nil || m["id_token"] != nil {
		t.Fatalf("status %d, body %v", resp.StatusCode, m)
	}
	resp, m = form(t, &s, "contoso", url.Values{"client_id": {"app"}, "client_secret": {"x"}, "grant_type": {"client_credentials"},
		"scope": {"openid offline_access profile"}})
	if resp.StatusCode != 400 || m["error"] != "invalid_scope" || !strings.Contains(m["error_description"].(string), "AADSTS1002012") {
		t.Fatalf("status %d, body %v", resp.StatusCode, m)
	}
}

// TestDeviceCodeShortGrantAndIDToken: MSAL Go sends grant_type=device_code; the answer has an
// id_token for the openid scope and client_info when asked.
func TestDeviceCodeShortGrantAndIDToken(t *testing.T) {
	s := &graphtest.Server{LoginUser: "u-1"}
	resp, b := do(t, s, "POST", "http://login.test/contoso/oauth2/v2.0/devicecode", map[string]string{"Content-Type": "application/x-www-form-urlencoded"},
		[]byte(url.Values{"client_id": {"pub"}, "scope": {"Mail.Send openid offline_access profile"}}.Encode()))
	var dc struct {
		DeviceCode string `json:"device_code"`
		UserCode   string `json:"user_code"`
	}
	if resp.StatusCode != 200 || json.Unmarshal(b, &dc) != nil {
		t.Fatalf("devicecode: %d %s", resp.StatusCode, b)
	}
	s.ApproveDevice(dc.UserCode)
	resp, m := form(t, s, "contoso", url.Values{"client_id": {"pub"}, "grant_type": {"device_code"}, "device_code": {dc.DeviceCode}, "client_info": {"1"}})
	if resp.StatusCode != 200 || m["access_token"] == nil || m["refresh_token"] == nil {
		t.Fatalf("token: %d %v", resp.StatusCode, m)
	}
	idt, _ := m["id_token"].(string)
	parts := strings.Split(idt, ".")
	if len(parts) != 3 {
		t.Fatalf("id_token %q", idt)
	}
	var claims map[string]any
	p, _ := base64.RawURLEncoding.DecodeString(parts[1])
	if json.Unmarshal(p, &claims) != nil || claims["oid"] != "u-1" || claims["aud"] != "pub" || claims["iss"] != "http://login.test/"+claims["tid"].(string)+"/v2.0" {
		t.Fatalf("id_token claims %v", claims)
	}
	ci, _ := base64.RawURLEncoding.DecodeString(m["client_info"].(string))
	var info map[string]string
	if json.Unmarshal(ci, &info) != nil || info["uid"] != "u-1" || info["utid"] != claims["tid"] {
		t.Fatalf("client_info %s", ci)
	}
	if s.TokenRequests()[0].GrantType != "device_code" {
		t.Fatalf("grant recorded as %q", s.TokenRequests()[0].GrantType)
	}
}

// TestOpenIDConfigurationServed: the discovery document points at the emulator itself.
func TestOpenIDConfigurationServed(t *testing.T) {
	var s graphtest.Server
	resp, b := do(t, &s, "GET", "http://login.test/contoso.onmicrosoft.com/v2.0/.well-known/openid-configuration", nil, nil)
	var doc map[string]any
	if resp.StatusCode != 200 || json.Unmarshal(b, &doc) != nil {
		t.Fatalf("%d %s", resp.StatusCode, b)
	}
	te, _ := doc["token_endpoint"].(string)
	if !strings.HasPrefix(te, "http://login.test/") || !strings.HasSuffix(te, "/oauth2/v2.0/token") || doc["issuer"] == nil {
		t.Fatalf("doc %v", doc)
	}
	jwks := strings.TrimPrefix(doc["jwks_uri"].(string), "http://login.test")
	resp, b = do(t, &s, "GET", "http://login.test"+jwks, nil, nil)
	if resp.StatusCode != 200 || !strings.Contains(string(b), `"kty":"RSA"`) {
		t.Fatalf("jwks %d %s", resp.StatusCode, b)
	}
}

// TestUnknownTenant: with tenants registered, a wrong tenant_id gets AADSTS90002 from the
// token, device code and authorize endpoints, as from Entra; registered tenants, their
// GUIDs and the multi-tenant endpoints still work.
func TestUnknownTenant(t *testing.T) {
	s := &graphtest.Server{}
	s.AddClient("app", "x", "http://localhost/cb")
	s.AddTenant("contoso")
	cc := url.Values{"client_id": {"app"}, "client_secret": {"x"}, "grant_type": {"client_credentials"}, "scope": {"https://graph.microsoft.com/.default"}}
	for _, tenant := range []string{"contoso", "CONTOSO", "organizations"} {
		if resp, m := form(t, s, tenant, cc); resp.StatusCode != 200 {
			t.Errorf("tenant %s: status %d, body %v", tenant, resp.StatusCode, m)
		}
	}
	resp, m := form(t, s, "fabrikam", cc)
	if desc, _ := m["error_description"].(string); resp.StatusCode != 400 || m["error"] != "invalid_request" || !strings.HasPrefix(desc, "AADSTS90002: Tenant 'fabrikam' not found.") {
		t.Errorf("unknown tenant: status %d, body %v", resp.StatusCode, m)
	}
	resp, b := do(t, s, "POST", "http://login.test/fabrikam/oauth2/v2.0/devicecode", map[string]string{"Content-Type": "application/x-www-form-urlencoded"},
		[]byte(url.Values{"client_id": {"app"}, "scope": {"Mail.Send"}}.Encode()))
	if resp.StatusCode != 400 || !strings.Contains(string(b), "AADSTS90002") {
		t.Errorf("devicecode for an unknown tenant: %d %s", resp.StatusCode, b)
	}
	resp, b = do(t, s, "GET", "http://login.test/fabrikam/oauth2/v2.0/authorize?client_id=app&redirect_uri=http%3A%2F%2Flocalhost%2Fcb&response_type=code", nil, nil)
	if resp.StatusCode != 400 || !strings.Contains(string(b), "AADSTS90002") {
		t.Errorf("authorize for an unknown tenant: %d %s", resp.StatusCode, b)
	}
}
