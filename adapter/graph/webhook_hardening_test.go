package graph

import (
	"errors"
	"net/http"
	"strings"
	"testing"
	"testing/synctest"

	"github.com/seed-a64d9e1f/chatwire/adapter"
)

// TestValidationTokenOnlyOnValidationRequest: the token is echoed only on Graph's validation
// request (POST ?validationToken=…), only up to maxValidationToken bytes, as text/plain
// with X-Content-Type-Options: nosniff.
func TestValidationTokenOnlyOnValidationRequest(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ae := newAdapter(t, nil)
		q := func(tok string) map[string][]string { return map[string][]string{"validationToken": {tok}} }
		tok := "Validation: Testing client application reachability for subscription Request-Id: 0b6b3c4e-7a1d-4f59-9f8e-1c2d3e4f5a6b"
		resp, _, err := ae.a.HandleWebhook(t.Context(), &adapter.WebhookRequest{Method: "POST", Query: q(tok)})
		if err != nil || resp.Status != 200 || string(resp.Body) != tok ||
			!strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") || resp.Header.Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("validation = %d %q %v %v; want 200, the token, text/plain, nosniff", resp.Status, resp.Body, resp.Header, err)
		}
		for _, m := range []string{"GET", "PUT", "HEAD", "DELETE"} {
			resp, _, err := ae.a.HandleWebhook(t.Context(), &adapter.WebhookRequest{Method: m, Query: q("<script>x</script>")})
			if resp.Status != http.StatusMethodNotAllowed || strings.Contains(string(resp.Body), "script") || !errors.Is(err, adapter.ErrInvalidRequest) {
				t.Errorf("%s with validationToken = %d %q %v; want 405 without the echo", m, resp.Status, resp.Body, err)
			}
		}
		long := strings.Repeat("A", maxValidationToken+1)
		resp, _, err = ae.a.HandleWebhook(t.Context(), &adapter.WebhookRequest{Method: "POST", Query: q(long)})
		if resp.Status != http.StatusBadRequest || strings.Contains(string(resp.Body), long) || !errors.Is(err, adapter.ErrInvalidRequest) {
			t.Errorf("%d-byte token = %d (%d bytes) %v; want 400 without the echo", len(long), resp.Status, len(resp.Body), err)
		}
		if resp.Header.Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("refusal headers = %v; want nosniff", resp.Header)
		}
	})
}
