package platforms

import (
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

// TestUpstreamReusesConnectionsOfConcurrentCalls: rounds of 8 platform calls in flight at
// once (the server answers none before all 8 have arrived) go over 8 connections in total,
// not 8 new ones per round (http.DefaultTransport keeps 2 idle per host and dialed 6 per round).
func TestUpstreamReusesConnectionsOfConcurrentCalls(t *testing.T) {
	const callers, rounds = 8, 5
	var dialed atomic.Int32
	var mu sync.Mutex
	arrived := 0
	release := make(chan struct{})
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		arrived++
		if arrived == callers {
			arrived = 0
			close(release)
			release = make(chan struct{})
			mu.Unlock()
		} else {
			ch := release
			mu.Unlock()
			<-ch
		}
		io.WriteString(w, `{"errcode":0}`)
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			dialed.Add(1)
		}
	}
	srv.Start()
	defer srv.Close()

	o := New(nil, nil)
	hc := &http.Client{Transport: o.m.transport("wecom", o.upstream)}
	for range rounds {
		var wg sync.WaitGroup
		for range callers {
			wg.Go(func() {
				resp, err := hc.Get(srv.URL)
				if err != nil {
					t.Error(err)
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			})
		}
		wg.Wait()
	}
	if n := dialed.Load(); n != callers {
		t.Errorf("%d rounds of %d concurrent calls opened %d connections, want %d (one per caller, reused)", rounds, callers, n, callers)
	}
}

// TestPlatformCode: the error code of an upstream answer, and none for a success, also
// through isWeComOK's shortcut; the body stays readable for the adapter.
func TestPlatformCode(t *testing.T) {
	tests := []struct {
		platform string
		status   int
		body     string
		want     string
	}{
		{"wecom", 200, `{"errcode":0,"errmsg":"ok","msgid":"m1"}`, ""},
		{"wecom", 200, `{"errcode":0}`, ""},
		{"wecom", 200, `{"errcode":0 , "errmsg":"ok"}`, ""},
		{"wecom", 200, `{"errcode":40014,"errmsg":"invalid access_token"}`, "40014"},
		{"wecom", 200, `{"errcode":0123}`, ""}, // not the shortcut (and not JSON: no code)
		{"wecom", 200, `{"errmsg":"ok","errcode":60020}`, "60020"},
		{"graph", 401, `{"error":{"code":"InvalidAuthenticationToken"}}`, "InvalidAuthenticationToken"},
		{"graph", 200, `{"errcode":7}`, ""},
		{"teams", 400, `{"error":"invalid_client","error_codes":[7000215]}`, "AADSTS7000215"},
	}
	for _, tt := range tests {
		resp := &http.Response{StatusCode: tt.status, Header: http.Header{"Content-Type": {"application/json"}},
			ContentLength: int64(len(tt.body)), Body: io.NopCloser(strings.NewReader(tt.body))}
		if got := platformCode(tt.platform, resp); got != tt.want {
			t.Errorf("platformCode(%s, %d %s) = %q, want %q", tt.platform, tt.status, tt.body, got, tt.want)
		}
		if rest, _ := io.ReadAll(resp.Body); string(rest) != tt.body {
			t.Errorf("body after platformCode = %q, want %q", rest, tt.body)
		}
	}
}
