package graph

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// sink records every request it gets: where a redirect must not lead, or must not carry the token.
type sink struct {
	mu   sync.Mutex
	reqs []*http.Request
	body []string
}

func (s *sink) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b := new(strings.Builder)
	if r.Body != nil {
		buf := make([]byte, 4096)
		for {
			n, err := r.Body.Read(buf)
			b.Write(buf[:n])
			if err != nil {
				break
			}
		}
	}
	s.mu.Lock()
	s.reqs = append(s.reqs, r.Clone(context.Background()))
	s.body = append(s.body, b.String())
	s.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	w.Write([]byte(`{"value":[]}`))
}

func (s *sink) snapshot() ([]*http.Request, []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*http.Request(nil), s.reqs...), append([]string(nil), s.body...)
}

func redirector(to string, code int) *httptest.Server {
	return httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, to+r.URL.Path+"?"+r.URL.RawQuery, code)
	}))
}

// A token request carries the client secret (or a refresh token) in its body; a redirect would
// re-POST it to the redirect's target (307/308). The token endpoint is never followed.
func TestTokenEndpointRedirectRefused(t *testing.T) {
	for _, code := range []int{301, 302, 303, 307, 308} {
		t.Run(http.StatusText(code), func(t *testing.T) {
			var target sink
			ts := httptest.NewServer(&target)
			defer ts.Close()
			rs := redirector(ts.URL, code)
			defer rs.Close()
			cfg := Config{Tenant: "contoso", ClientID: "cid", ClientSecret: "SECRET-cs-1", LoginBase: rs.URL}
			_, err := cfg.ClientCredentials().Token(t.Context())
			if err == nil {
				t.Fatal("a redirected token request succeeded")
			}
			if strings.Contains(err.Error(), "SECRET-") {
				t.Errorf("error holds the secret: %v", err)
			}
			if !strings.Contains(err.Error(), "redirect") || !strings.Contains(err.Error(), "login_base") {
				t.Errorf("error does not say a redirect was refused and what to check: %v", err)
			}
			if _, _, err := cfg.RefreshSource().TokenState(t.Context(), []byte("SECRET-rt-1")); err == nil {
				t.Fatal("a redirected refresh succeeded")
			} else if strings.Contains(err.Error(), "SECRET-") || !strings.Contains(err.Error(), "redirect") {
				t.Errorf("error holds the refresh token, or does not name the redirect: %v", err)
			}
			if reqs, _ := target.snapshot(); len(reqs) != 0 {
				t.Errorf("the redirect target got %d requests (%s %s)", len(reqs), reqs[0].Method, reqs[0].URL)
			}
		})
	}
}

// A Graph call that redirects to another origin (another host, port or scheme) goes there
// without the bearer token: Go's client keeps Authorization for the same host on another
// port, which is another server.
func TestGraphRedirectDropsBearerOffOrigin(t *testing.T) {
	var target sink
	ts := httptest.NewServer(&target)
	defer ts.Close()
	rs := redirector(ts.URL, http.StatusTemporaryRedirect)
	defer rs.Close()
	p := &fakeProvider{tok: "SECRET-access-1"}
	c := NewClient(p, nil, ClientOptions{GraphBase: rs.URL, HTTPClient: &http.Client{Timeout: 10 * time.Second}})
	if err := c.Do(t.Context(), http.MethodGet, "/me/chats", nil, nil); err != nil {
		t.Fatalf("Do: %v", err)
	}
	reqs, _ := target.snapshot()
	if len(reqs) != 1 {
		t.Fatalf("target got %d requests, want the redirected one", len(reqs))
	}
	if a := reqs[0].Header.Get("Authorization"); a != "" {
		t.Errorf("the bearer token went to another origin: Authorization %q", a)
	}
	// Same origin: the redirect keeps the token (Graph's own relative redirects).
	var same sink
	var ss *httptest.Server
	ss = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v1.0/me/chats" {
			http.Redirect(w, r, "/v1.0/me/chats2", http.StatusFound)
			return
		}
		same.ServeHTTP(w, r)
	}))
	defer ss.Close()
	c = NewClient(p, nil, ClientOptions{GraphBase: ss.URL})
	if err := c.Do(t.Context(), http.MethodGet, "/me/chats", nil, nil); err != nil {
		t.Fatalf("Do: %v", err)
	}
	if reqs, _ := same.snapshot(); len(reqs) != 1 || reqs[0].Header.Get("Authorization") != "Bearer SECRET-access-1" {
		t.Errorf("a same-origin redirect lost the token: %d requests", len(reqs))
	}
}
