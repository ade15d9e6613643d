package graph

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"
)

// TestLoginErrorRedirectKeepsDescription: an error redirect whose description has no AADSTS
// code ("the user canceled …") is reported with that description, not "HTTP 0 with no
// error details".
func TestLoginErrorRedirectKeepsDescription(t *testing.T) {
	ln := httptest.NewUnstartedServer(nil) // only to find a free loopback port
	_, port, _ := strings.Cut(ln.Listener.Addr().String(), ":")
	ln.Listener.Close()
	redirect := "http://127.0.0.1:" + port + "/callback"
	cfg := Config{Tenant: testTenant, ClientID: testClient, LoginBase: "http://login.invalid"}
	for _, tc := range []struct {
		query    url.Values
		wantCode string
		wantDesc string
	}{
		{url.Values{"error": {"access_denied"}, "error_description": {"the user canceled the authentication"}},
			"access_denied", "the user canceled the authentication"},
		{url.Values{"error": {"access_denied"}, "error_description": {"AADSTS65004: User declined to consent to access the app.\r\nTrace ID: 1"}},
			"access_denied", "AADSTS65004: User declined to consent to access the app."},
		{url.Values{"error": {"server_error"}}, "server_error", "server_error"},
	} {
		open := func(authURL string) error {
			u, _ := url.Parse(authURL)
			q := tc.query
			q.Set("state", u.Query().Get("state"))
			resp, err := http.Get(redirect + "?" + q.Encode())
			if err != nil {
				return err
			}
			resp.Body.Close()
			return nil
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err := cfg.Login(ctx, LoginOptions{RedirectURL: redirect, Open: open})
		cancel()
		var ae *AuthError
		if !errors.As(err, &ae) || ae.ErrorCode != tc.wantCode || !strings.Contains(ae.Description, tc.wantDesc) ||
			strings.Contains(err.Error(), "HTTP 0") || strings.Contains(err.Error(), "Trace ID") || !strings.Contains(err.Error(), tc.wantDesc) {
			t.Errorf("Login(%v) error = %v (%+v); want %s keeping %q", tc.query, err, ae, tc.wantCode, tc.wantDesc)
		}
		if tc.wantCode == "access_denied" && ae != nil && ae.Hint == "" {
			t.Errorf("Login(%v): no hint", tc.query)
		}
	}
}
