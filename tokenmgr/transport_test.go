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
	"testing/synctest"
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

// handlerTransport is a base RoundTripper that serves requests with a handler in memory, so
// the tests run inside a synctest bubble (no network listener).
type handlerTransport struct{ h http.Handler }

func (tr handlerTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	sr := r.Clone(r.Context())
	if sr.Body == nil {
		sr.Body = http.NoBody
	}
	rec := httptest.NewRecorder()
	tr.h.ServeHTTP(rec, sr)
	if r.Body != nil {
		r.Body.Close() // as a RoundTripper must
	}
	resp := rec.Result()
	resp.Request = r
	return resp, nil
}

const apiURL = "http://api.test"

// setupTransport must be called inside the synctest bubble.
func setupTransport(t *testing.T, valid string) (*http.Client, *apiServer, *tokenmgr.Manager, string) {
	t.Helper()
	api := &apiServer{valid: valid}
	src := counting(time.Hour, 0)
	m := tokenmgr.New("graph/t/c/app", src, tokenmgr.Options{MinInterval: time.Nanosecond})
	t.Cleanup(func() { m.Close() })
	client := &http.Client{Transport: &tokenmgr.Transport{Source: m, Base: handlerTransport{api}}}
	return client, api, m, apiURL
}

func TestTransportRetriesOnceWithReplayedBody(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
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
	})
}

func TestTransportSecondRejectionIsReturned(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		client, api, _, url := setupTransport(t, "never")
		resp, err := client.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if auths, _ := api.seen(); resp.StatusCode != 401 || len(auths) != 2 {
			t.Fatalf("status %d after %d attempts; want 401 after exactly 2", resp.StatusCode, len(auths))
		}
	})
}

func TestTransportDoesNotReplayUnrewindableBody(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
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
	})
}

func TestTransportRefusesEmptyToken(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		api := &apiServer{}
		empty := providerFunc(func(context.Context) (tokenmgr.Token, error) { return tokenmgr.Token{}, nil })
		client := &http.Client{Transport: &tokenmgr.Transport{Source: empty, Base: handlerTransport{api}}}
		body := &closeRecorder{Reader: bytes.NewReader([]byte("x"))}
		req, _ := http.NewRequest("POST", apiURL+"/v1.0/me?access_token=leak", body)
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
	})
}

func TestTransportRejectedSeesTheBody(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		// Graph-style: only a 401 whose code is InvalidAuthenticationToken rejects the token.
		var calls int
		api := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			calls++
			w.WriteHeader(http.StatusUnauthorized)
			if r.URL.Path == "/token" && r.Header.Get("Authorization") == "Bearer tok-1" {
				io.WriteString(w, `{"error":{"code":"InvalidAuthenticationToken"}}`)
				return
			}
			io.WriteString(w, `{"error":{"code":"Unauthorized","message":"import purposes only"}}`)
		})
		m := tokenmgr.New("graph/t/c/app", counting(time.Hour, 0), tokenmgr.Options{})
		defer m.Close()
		client := &http.Client{Transport: &tokenmgr.Transport{Source: m, Base: handlerTransport{api},
			Rejected: func(r *http.Response, body []byte) bool {
				return strings.Contains(string(body), `"InvalidAuthenticationToken"`)
			}}}

		resp, err := client.Get(apiURL + "/import")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if calls != 1 || !strings.Contains(string(body), "import purposes") || mustToken(t, m).Value != "tok-1" {
			t.Fatalf("calls = %d, body %q, token %s; want one call, the whole body, tok-1 kept", calls, body, mustToken(t, m).Value)
		}

		resp, err = client.Get(apiURL + "/token")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if calls != 3 || mustToken(t, m).Value != "tok-2" {
			t.Fatalf("calls = %d, token %s; want a retry and tok-2", calls, mustToken(t, m).Value)
		}
	})
}

type providerFunc func(context.Context) (tokenmgr.Token, error)

func (f providerFunc) Token(ctx context.Context) (tokenmgr.Token, error) { return f(ctx) }
func (f providerFunc) Invalidate(string)                                 {}

type closeRecorder struct {
	io.Reader
	closed bool
}

func (c *closeRecorder) Close() error { c.closed = true; return nil }
