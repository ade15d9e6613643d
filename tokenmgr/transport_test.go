package tokenmgr_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/seed-a64d9e1f/chatwire/tokenmgr"
)

// apiServer accepts only the bearer token in valid and records what it saw.
type apiServer struct {
	mu     sync.Mutex
	valid  string
	auths  []string
	bodies []string
}

func (s *apiServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	s.mu.Lock()
	s.auths = append(s.auths, r.Header.Get("Authorization"))
	s.bodies = append(s.bodies, string(body))
	ok := r.Header.Get("Authorization") == "Bearer "+s.valid
	s.mu.Unlock()
	if !ok {
		w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
		http.Error(w, `{"error":{"code":"InvalidAuthenticationToken"}}`, http.StatusUnauthorized)
		return
	}
	io.WriteString(w, "ok")
}

func (s *apiServer) seen() ([]string, []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.auths...), append([]string(nil), s.bodies...)
}

func setupTransport(t *testing.T, valid string) (*http.Client, *apiServer, *tokenmgr.Manager, string) {
	t.Helper()
	api := &apiServer{valid: valid}
	srv := httptest.NewServer(api)
	t.Cleanup(srv.Close)
	src := counting(time.Hour, 0)
	m := tokenmgr.New("graph/t/c/app", src, tokenmgr.Options{MinInterval: time.Nanosecond})
	t.Cleanup(func() { m.Close() })
	client := &http.Client{Transport: &tokenmgr.Transport{Source: m}}
	return client, api, m, srv.URL
}

func TestTransportRetriesOnceWithReplayedBody(t *testing.T) {
	client, api, m, url := setupTransport(t, "tok-2")
	mustToken(t, m) // tok-1: the platform already revoked it
	resp, err := client.Post(url, "application/json", strings.NewReader(`{"text":"hi"}`))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("status = %d; want 200 after one retry", resp.StatusCode)
	}
	auths, bodies := api.seen()
	if strings.Join(auths, ",") != "Bearer tok-1,Bearer tok-2" || strings.Join(bodies, ",") != `{"text":"hi"},{"text":"hi"}` {
		t.Fatalf("server saw auth %v bodies %v; want tok-1 then tok-2 with the same body", auths, bodies)
	}
}

func TestTransportSecondRejectionIsReturned(t *testing.T) {
	client, api, _, url := setupTransport(t, "never")
	resp, err := client.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if auths, _ := api.seen(); resp.StatusCode != 401 || len(auths) != 2 {
		t.Fatalf("status %d after %d attempts; want 401 after exactly 2", resp.StatusCode, len(auths))
	}
}

func TestTransportDoesNotReplayUnrewindableBody(t *testing.T) {
	client, api, m, url := setupTransport(t, "tok-2")
	mustToken(t, m)
	req, _ := http.NewRequest("POST", url, io.NopCloser(strings.NewReader("stream"))) // no GetBody
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if auths, _ := api.seen(); resp.StatusCode != 401 || len(auths) != 1 {
		t.Fatalf("status %d after %d attempts; want the 401 without a retry", resp.StatusCode, len(auths))
	}
	// The rejected token was still invalidated: the next request uses a new one.
	if got := mustToken(t, m).Value; got != "tok-2" {
		t.Fatalf("Token() after rejection = %q; want tok-2", got)
	}
}

func TestTransportRefusesEmptyToken(t *testing.T) {
	api := &apiServer{}
	srv := httptest.NewServer(api)
	defer srv.Close()
	empty := providerFunc(func(context.Context) (tokenmgr.Token, error) { return tokenmgr.Token{}, nil })
	client := &http.Client{Transport: &tokenmgr.Transport{Source: empty}}
	body := &closeRecorder{Reader: bytes.NewReader([]byte("x"))}
	req, _ := http.NewRequest("POST", srv.URL+"/v1.0/me?access_token=leak", body)
	_, err := client.Do(req)
	if !errors.Is(err, tokenmgr.ErrNoToken) {
		t.Fatalf("Do() = %v; want ErrNoToken", err)
	}
	var uerr *url.Error // net/http adds the full URL itself; ours must not
	if !errors.As(err, &uerr) || strings.Contains(uerr.Err.Error(), "leak") || !strings.Contains(uerr.Err.Error(), "/v1.0/me") {
		t.Fatalf("error %q: want the path without the query string", err)
	}
	if auths, _ := api.seen(); len(auths) != 0 || !body.closed {
		t.Fatalf("%d requests sent, body closed %v; want none sent and the body closed", len(auths), body.closed)
	}
}

func TestTransportCustomRejected(t *testing.T) {
	// WeCom-style: HTTP 200 with an errcode in the body.
	var calls int
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls++
		if r.Header.Get("Authorization") == "Bearer tok-1" {
			w.Header().Set("X-Errcode", "42001")
		}
	}))
	defer srv.Close()
	m := tokenmgr.New("wecom/ww/1", counting(time.Hour, 0), tokenmgr.Options{MinInterval: time.Nanosecond})
	defer m.Close()
	client := &http.Client{Transport: &tokenmgr.Transport{Source: m,
		Rejected: func(r *http.Response) bool { return r.Header.Get("X-Errcode") == "42001" }}}
	resp, err := client.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if calls != 2 || resp.Header.Get("X-Errcode") != "" {
		t.Fatalf("calls = %d, final errcode %q; want 2 calls ending in success", calls, resp.Header.Get("X-Errcode"))
	}
}

type providerFunc func(context.Context) (tokenmgr.Token, error)

func (f providerFunc) Token(ctx context.Context) (tokenmgr.Token, error) { return f(ctx) }
func (f providerFunc) Invalidate(string)                                 {}

type closeRecorder struct {
	io.Reader
	closed bool
}

func (c *closeRecorder) Close() error { c.closed = true; return nil }
