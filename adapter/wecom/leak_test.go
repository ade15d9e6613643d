package wecom_test

import (
	"bytes"
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"testing/synctest"

	"github.com/seed-a64d9e1f/chatwire/adapter"
	"github.com/seed-a64d9e1f/chatwire/adapter/wecom"
	"github.com/seed-a64d9e1f/chatwire/adapter/wecom/wecomtest"
	"github.com/seed-a64d9e1f/chatwire/tokenmgr"
)

// lockedBuffer is a bytes.Buffer safe for the concurrent writes of a logger.
type lockedBuffer struct {
	mu sync.Mutex
	b  *bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func slogJSON(buf *bytes.Buffer) *slog.Logger {
	return slog.New(slog.NewJSONHandler(&lockedBuffer{b: buf}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func assertNoSecrets(t *testing.T, text string, secrets ...string) {
	t.Helper()
	for _, s := range secrets {
		if s != "" && strings.Contains(text, s) {
			t.Errorf("secret %q (fp %s) leaked into: %s", s[:min(4, len(s))]+"…", tokenmgr.Fingerprint(s), text)
		}
	}
}

// TestNoSecretsInLogsOrErrors drives every failure path with debug logging on and checks
// that no corp secret, access token, callback token or AES key appears in a log line, an
// error, or Status — including transport errors, whose *url.Error carries the full URL with
// the access_token query parameter.
func TestNoSecretsInLogsOrErrors(t *testing.T) {
	synctest.Test(t, func(t *testing.T) { testNoSecrets(t) })
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func testNoSecrets(t *testing.T) {
	var logs bytes.Buffer
	emu := &wecomtest.Server{}
	emu.AddApp(testCorp, testSecret, testAgent)
	var tokens []string
	var mu sync.Mutex
	// A front that records the tokens in use and breaks connections on demand.
	var breakConn bool
	inner := emu.Client().Transport
	front := roundTripFunc(func(r *http.Request) (*http.Response, error) {
		mu.Lock()
		if tok := r.URL.Query().Get("access_token"); tok != "" {
			tokens = append(tokens, tok)
		}
		b := breakConn
		mu.Unlock()
		if b && r.URL.Query().Get("access_token") != "" {
			// http.Client wraps this in a *url.Error carrying the full URL, token included.
			return nil, errors.New("connection reset by peer")
		}
		return inner.RoundTrip(r)
	})
	cfg := testConfig()
	c, err := wecom.New(cfg, wecom.Options{HTTPClient: &http.Client{Transport: front}, Logger: slogJSON(&logs)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var errs []error
	send := func() {
		if _, err := c.Send(t.Context(), text(adapter.Target{User: "u"}, "x")); err != nil {
			errs = append(errs, err)
		}
	}
	send()
	emu.RevokeTokens(40014)
	send()
	emu.Fail("message/send", 45009, 1)
	send()
	emu.Fail("message/send", -1, 5)
	send()
	emu.ClearFailures()
	mu.Lock()
	breakConn = true
	mu.Unlock()
	send()
	mu.Lock()
	breakConn = false
	mu.Unlock()
	emu.RevokeTokens(42001)
	emu.Fail("gettoken", 40001, -1)
	send()
	emu.ClearFailures()
	_, err = c.Media(t.Context(), "nope")
	errs = append(errs, err)
	_, _, err = c.HandleWebhook(t.Context(), &adapter.WebhookRequest{Method: "POST", Body: []byte("<xml/>")})
	errs = append(errs, err)

	var all strings.Builder
	sawTransport := false
	for _, err := range errs {
		if err == nil {
			continue
		}
		all.WriteString(err.Error() + "\n")
		if strings.Contains(err.Error(), "REDACTED") && strings.Contains(err.Error(), "connection reset") {
			sawTransport = true
		}
	}
	st, _ := c.Status(t.Context())
	all.WriteString(st.Detail + st.Tokens[0].LastError)
	all.WriteString(logs.String())
	if len(tokens) < 2 {
		t.Fatalf("saw %d tokens; want several", len(tokens))
	}
	if !sawTransport {
		t.Errorf("no transport error was produced: %s", all.String())
	}
	t.Logf("errors, status and logs:\n%s", all.String())
	assertNoSecrets(t, all.String(), append(tokens, testSecret, testToken, testAESKey)...)
	if len(errs) < 5 {
		t.Errorf("only %d errors produced", len(errs))
	}
	for _, err := range errs {
		var ae *adapter.Error
		if err != nil && !errors.As(err, &ae) {
			t.Errorf("error %v is not an *adapter.Error", err)
		}
	}
}
