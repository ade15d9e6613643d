package host

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
)

// raw makes a request with the given headers (Host included) and returns status and body.
func (e *env) raw(method, path, body string, hdr map[string]string) (int, []byte) {
	e.t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, _ := http.NewRequestWithContext(e.t.Context(), method, e.h.URL()+path, r)
	for k, v := range hdr {
		if k == "Host" {
			req.Host = v
			continue
		}
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		return resp.StatusCode, nil // a stream that ends only with the host
	}
	data, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, data
}

// TestKeylessHostRefusesBrowsers: a host without API keys trusts its loopback listener, so
// it refuses what a web page can make a browser send there: a cross-origin POST (text/plain
// needs no CORS preflight) and a request to a foreign Host name (DNS rebinding). Webhooks are
// platform callbacks and are not subject to this (issue 11 item 11).
func TestKeylessHostRefusesBrowsers(t *testing.T) {
	e := setup(t, setupOpts{noKeys: true})
	_, port, _ := net.SplitHostPort(e.h.ln.Addr().String())
	send := `{"to":{"user":"alice"},"text":"from a web page"}`
	refused := []struct {
		name, method, path, body string
		hdr                      map[string]string
		status                   int
	}{
		{"cross-origin text/plain POST", "POST", "/v1/bots/hr/messages", send, map[string]string{"Origin": "http://evil", "Content-Type": "text/plain"}, 403},
		{"cross-origin JSON POST", "POST", "/v1/bots/hr/messages", send, map[string]string{"Origin": "http://evil", "Content-Type": "application/json"}, 403},
		{"null origin", "POST", "/v1/bots/hr/messages", send, map[string]string{"Origin": "null", "Content-Type": "application/json"}, 403},
		{"origin localhost-lookalike", "POST", "/v1/bots/hr/messages", send, map[string]string{"Origin": "http://localhost.evil.example", "Content-Type": "application/json"}, 403},
		{"text/plain POST without Origin", "POST", "/v1/bots/hr/messages", send, map[string]string{"Content-Type": "text/plain"}, 415},
		{"form POST", "POST", "/v1/bots/hr/messages", send, map[string]string{"Content-Type": "application/x-www-form-urlencoded"}, 415},
		{"no Content-Type", "POST", "/v1/bots/hr/messages", send, nil, 415},
		{"DNS rebinding: tokens", "GET", "/v1/tokens", "", map[string]string{"Host": "evil.example:" + port}, 403},
		{"DNS rebinding: events", "GET", "/v1/bots/hr/events", "", map[string]string{"Host": "evil.example"}, 403},
		{"DNS rebinding: send", "POST", "/v1/bots/hr/messages", send, map[string]string{"Host": "rebind.evil.example:" + port, "Content-Type": "application/json"}, 403},
	}
	for _, tc := range refused {
		status, body := e.raw(tc.method, tc.path, tc.body, tc.hdr)
		var eb errorBody
		if status != tc.status || json.Unmarshal(body, &eb) != nil || eb.Error.Kind == "" || eb.Error.Message == "" {
			t.Errorf("%s: %s %s = %d %s; want %d with an error body", tc.name, tc.method, tc.path, status, body, tc.status)
		}
	}
	if sent := e.emu.Sent(); len(sent) != 0 {
		t.Errorf("refused requests sent %d messages", len(sent))
	}
	allowed := []struct {
		name, method, path, body string
		hdr                      map[string]string
	}{
		{"127.0.0.1 with port", "GET", "/v1/tokens", "", map[string]string{"Host": "127.0.0.1:" + port}},
		{"localhost with port", "GET", "/v1/tokens", "", map[string]string{"Host": "localhost:" + port}},
		{"LOCALHOST without port", "GET", "/v1/bots", "", map[string]string{"Host": "LOCALHOST"}},
		{"[::1] with port", "GET", "/v1/tokens", "", map[string]string{"Host": "[::1]:" + port}},
		{"loopback origin", "POST", "/v1/bots/hr/messages", send, map[string]string{"Origin": "http://localhost:3000", "Content-Type": "application/json; charset=utf-8"}},
		{"no origin", "POST", "/v1/bots/hr/messages", send, map[string]string{"Content-Type": "application/json"}},
	}
	for _, tc := range allowed {
		if status, body := e.raw(tc.method, tc.path, tc.body, tc.hdr); status != 200 {
			t.Errorf("%s: %s %s = %d %s; want 200", tc.name, tc.method, tc.path, status, body)
		}
	}
	// A webhook from the platform, addressed to a public name, is answered as usual (here:
	// a forged one, refused by the adapter's signature check, not by the host's browser rules).
	local, _ := e.raw("POST", "/webhook/hr", "<xml/>", map[string]string{"Content-Type": "text/xml"})
	foreign, _ := e.raw("POST", "/webhook/hr", "<xml/>", map[string]string{"Content-Type": "text/xml", "Host": "bot.example.com", "Origin": "http://evil"})
	if foreign != local || foreign == 403 || foreign == 415 {
		t.Errorf("webhook with a foreign Host and Origin = %d; want %d, as with a loopback Host", foreign, local)
	}
}

// TestSendNeedsJSONContentType: with API keys the Host and Origin do not matter (the host
// may be behind a proxy, and a browser cannot send the key cross-site), but the API still
// takes JSON only.
func TestSendNeedsJSONContentType(t *testing.T) {
	e := setup(t, setupOpts{})
	send := `{"to":{"user":"alice"},"text":"hi"}`
	auth := "Bearer " + testAPIKey
	for _, ct := range []string{"", "text/plain", "application/x-www-form-urlencoded", "application/jsonx"} {
		if status, body := e.raw("POST", "/v1/bots/hr/messages", send, map[string]string{"Authorization": auth, "Content-Type": ct}); status != 415 || !strings.Contains(string(body), "Content-Type: application/json") {
			t.Errorf("Content-Type %q: %d %s; want 415 naming application/json", ct, status, body)
		}
	}
	if sent := e.emu.Sent(); len(sent) != 0 {
		t.Errorf("refused requests sent %d messages", len(sent))
	}
	if status, body := e.raw("POST", "/v1/bots/hr/messages", send, map[string]string{"Authorization": auth, "Content-Type": "application/json",
		"Host": "bot.example.com", "Origin": "https://console.example.com"}); status != 200 {
		t.Errorf("keyed send with a public Host and Origin = %d %s; want 200", status, body)
	}
	// A wrong key is told about the key, whatever the Content-Type.
	if status, _ := e.raw("POST", "/v1/bots/hr/messages", send, map[string]string{"Authorization": "Bearer nope-nope-nope-nope", "Content-Type": "text/plain"}); status != 401 {
		t.Errorf("wrong key with text/plain = %d; want 401", status)
	}
}
