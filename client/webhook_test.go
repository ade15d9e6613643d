package client_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/seed-a64d9e1f/chatwire/client"
)

const hookSecret = "hook-secret-do-not-log"

// hostSign signs as the host's deliverer does (internal/host deliver.go), written out
// here so the test does not check Sign against itself.
func hostSign(secret, body string) string {
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte(body))
	return "sha256=" + hex.EncodeToString(mac.Sum(nil))
}

func TestVerifySignature(t *testing.T) {
	t.Parallel()
	body := `{"id":"wecom:1","bot":"hr","text":"hi"}`
	good := hostSign(hookSecret, body)
	tests := []struct {
		name   string
		header string
		secret string
		body   string
		ok     bool
		says   string
	}{
		{"good", good, hookSecret, body, true, ""},
		{"good, upper-case hex", "sha256=" + strings.ToUpper(strings.TrimPrefix(good, "sha256=")), hookSecret, body, true, ""},
		{"other body", good, hookSecret, body + " ", false, "does not match"},
		{"other secret", good, "another-secret", body, false, "does not match"},
		{"missing", "", hookSecret, body, false, "no X-Chatwire-Signature"},
		{"wrong prefix", "sha1=" + strings.TrimPrefix(good, "sha256="), hookSecret, body, false, "want sha256="},
		{"no prefix", strings.TrimPrefix(good, "sha256="), hookSecret, body, false, "want sha256="},
		{"not hex", "sha256=" + strings.Repeat("zz", 32), hookSecret, body, false, "64 hex digits"},
		{"short", good[:len(good)-2], hookSecret, body, false, "64 hex digits"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := client.VerifySignature(tc.secret, []byte(tc.body), tc.header)
			if (err == nil) != tc.ok {
				t.Fatalf("VerifySignature(%q) = %v; want ok %v", tc.header, err, tc.ok)
			}
			if err != nil && (!errors.Is(err, client.ErrSignature) || !strings.Contains(err.Error(), tc.says)) {
				t.Errorf("VerifySignature(%q) = %v; want ErrSignature saying %q", tc.header, err, tc.says)
			}
			if err != nil && (strings.Contains(err.Error(), tc.secret) || strings.Contains(err.Error(), strings.TrimPrefix(good, "sha256="))) {
				t.Errorf("error %q shows the secret or the expected signature", err)
			}
		})
	}
	if got := client.Sign(hookSecret, []byte(body)); got != good {
		t.Errorf("Sign() = %q; want %q", got, good)
	}
}

func TestWebhookHandler(t *testing.T) {
	t.Parallel()
	body := `{"id":"wecom:7","bot":"hr","platform":"wecom","kind":"message","chat":{"id":"alice","type":"direct"},"sender":{"id":"alice","name":""},"text":"hi","time":"2026-01-02T03:04:05Z"}`
	var got []client.Event
	fail := false
	h := client.WebhookHandler(hookSecret, func(ctx context.Context, ev client.Event) error {
		got = append(got, ev)
		if fail {
			return errors.New("busy")
		}
		return nil
	})
	post := func(method, sig, b string) int {
		r := httptest.NewRequest(method, "/events", strings.NewReader(b))
		if sig != "" {
			r.Header.Set("X-Chatwire-Signature", sig)
		}
		r.Header.Set("X-Chatwire-Event-Id", "1712-0")
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w.Code
	}
	if code := post("POST", hostSign(hookSecret, body), body); code != http.StatusNoContent {
		t.Errorf("good delivery = %d; want 204", code)
	}
	if len(got) != 1 || got[0].LogID != "1712-0" || got[0].ID != "wecom:7" || got[0].Text != "hi" || got[0].Chat.ID != "alice" {
		t.Fatalf("handled %+v; want the event with LogID 1712-0", got)
	}
	for _, tc := range []struct {
		name, method, sig, body string
		want                    int
	}{
		{"bad signature", "POST", hostSign("other", body), body, 401},
		{"no signature", "POST", "", body, 401},
		{"not event JSON", "POST", hostSign(hookSecret, "[1]"), "[1]", 400},
		{"GET", "GET", hostSign(hookSecret, body), body, 405},
	} {
		if code := post(tc.method, tc.sig, tc.body); code != tc.want {
			t.Errorf("%s = %d; want %d", tc.name, code, tc.want)
		}
	}
	if len(got) != 1 {
		t.Errorf("handler called %d times; want only for the good delivery", len(got))
	}
	fail = true
	if code := post("POST", hostSign(hookSecret, body), body); code != http.StatusInternalServerError {
		t.Errorf("delivery whose handling failed = %d; want 500 so the host delivers again", code)
	}
}
