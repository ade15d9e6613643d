package integration

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/seed-a64d9e1f/chatwire/adapter/wecom/wecomtest"
)

func singleHostConfig(apiBase, stateDir string) string {
	return fmt.Sprintf(`server:
  listen: "{{ADDR}}"
  api_keys: ["${CHATWIRE_API_KEY}"]
store:
  dir: %q
bots:
  - name: hr
    platform: wecom
    wecom:
      corp_id: %s
      corp_secret: "${WECOM_SECRET}"
      agent_id: %d
      token: "${WECOM_TOKEN}"
      encoding_aes_key: "${WECOM_AES_KEY}"
      api_base: %q
`, stateDir, corpID, agentID, apiBase)
}

// TestBadInput sends forged, stale, malformed and oversized callbacks and invalid API
// requests to a real host: each gets its 4xx, nothing crashes, the host stays ready, and
// nothing it answers or logs holds a secret.
func TestBadInput(t *testing.T) {
	emu := &wecomtest.Server{LenientAgentID: true}
	emu.AddApp(corpID, corpSecret, agentID)
	tap := &tokenTap{next: emu}
	api := httptest.NewServer(tap)
	defer api.Close()
	h := startHost(t, "host", singleHostConfig(api.URL, t.TempDir()), secretEnv()...)
	h.apiKey = apiKey

	cb := wecomtest.Callback{Token: cbToken, EncodingAESKey: aesKey, CorpID: corpID, AgentID: agentID}
	good, goodQuery, err := wecomtest.Encrypt(cb, textMessage(1), time.Now().Unix(), "n1")
	if err != nil {
		t.Fatal(err)
	}
	forged := url.Values{}
	for k, v := range goodQuery {
		forged[k] = v
	}
	forged.Set("msg_signature", strings.Repeat("0", 40))
	stale, staleQuery, _ := wecomtest.Encrypt(cb, textMessage(2), time.Now().Add(-time.Hour).Unix(), "n2")
	otherCorp := cb
	otherCorp.CorpID = "wwSomeOtherCorp"
	wrongCorp, wrongCorpQuery, _ := wecomtest.Encrypt(otherCorp, textMessage(3), time.Now().Unix(), "n3")

	var responses []string
	hook := func(name, method, query string, body []byte, want func(int) bool) {
		t.Helper()
		req, _ := http.NewRequest(method, "http://"+h.addr+"/webhook/"+name+"?"+query, bytes.NewReader(body))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("webhook %s: %v", query, err)
		}
		out, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		responses = append(responses, string(out))
		if !want(resp.StatusCode) {
			t.Errorf("webhook %s %s (%d bytes): status %d %q", method, abbreviate(query), len(body), resp.StatusCode, out)
		}
	}
	is := func(codes ...int) func(int) bool {
		return func(c int) bool {
			for _, w := range codes {
				if c == w {
					return true
				}
			}
			return false
		}
	}
	hook("hr", "POST", forged.Encode(), good, is(401))
	hook("hr", "POST", "", good, is(400))                   // no signature at all: malformed
	hook("hr", "POST", staleQuery.Encode(), stale, is(403)) // a replay from an hour ago
	hook("hr", "POST", wrongCorpQuery.Encode(), wrongCorp, is(403))
	hook("hr", "POST", goodQuery.Encode(), []byte("<xml><Encrypt>not base64"), is(400))
	hook("hr", "POST", goodQuery.Encode(), bytes.Repeat([]byte("A"), 8<<20), is(413))
	hook("nobody", "POST", goodQuery.Encode(), good, is(404))
	hook("hr", "POST", goodQuery.Encode(), good, is(200)) // still works after all that

	apiCases := []struct {
		name   string
		method string
		path   string
		key    string
		body   any
		status int
	}{
		{"no api key", "POST", "/v1/bots/hr/messages", "-", map[string]any{"to": map[string]any{"user": "a"}, "text": "hi"}, 401},
		{"wrong api key", "POST", "/v1/bots/hr/messages", "not-the-key", map[string]any{"to": map[string]any{"user": "a"}, "text": "hi"}, 401},
		{"unknown bot", "POST", "/v1/bots/nobody/messages", "", map[string]any{"to": map[string]any{"user": "a"}, "text": "hi"}, 404},
		{"not json", "POST", "/v1/bots/hr/messages", "", "{not json", 400},
		{"no recipient", "POST", "/v1/bots/hr/messages", "", map[string]any{"text": "hi"}, 400},
		{"no content", "POST", "/v1/bots/hr/messages", "", map[string]any{"to": map[string]any{"user": "a"}}, 400},
		{"two targets", "POST", "/v1/bots/hr/messages", "", map[string]any{"to": map[string]any{"user": "a", "party": "2"}, "text": "hi"}, 400},
		{"unknown field", "POST", "/v1/bots/hr/messages", "", map[string]any{"to": map[string]any{"user": "a"}, "text": "hi", "colour": "red"}, 400},
		{"bad base64 attachment", "POST", "/v1/bots/hr/messages", "", map[string]any{"to": map[string]any{"user": "a"},
			"attachments": []map[string]any{{"name": "a.txt", "data": "%%%"}}}, 400},
	}
	for _, tc := range apiCases {
		t.Run(tc.name, func(t *testing.T) {
			c := *h
			c.t = t
			switch tc.key {
			case "-":
				c.apiKey = ""
			case "":
			default:
				c.apiKey = tc.key
			}
			status, body, _ := c.do(tc.method, tc.path, tc.body)
			responses = append(responses, string(body))
			if status != tc.status {
				t.Errorf("%s %s: status %d %s; want %d", tc.method, tc.path, status, body, tc.status)
			}
			if status >= 400 && !strings.Contains(string(body), `"kind"`) {
				t.Errorf("error body %s: want {\"error\":{\"kind\",...}}", body)
			}
		})
	}

	// Still alive and ready.
	if status, body, _ := h.do("GET", "/readyz", nil); status != 200 {
		t.Fatalf("/readyz after bad input: %d %s", status, body)
	}
	if n := h.log.count("webhook refused"); n != 7 {
		t.Errorf("host logged %d \"webhook refused\" lines for 7 refused callbacks; want each logged once:\n%s", n, h.log)
	}
	for _, l := range []string{"panic", "goroutine "} {
		if h.log.count(l) > 0 {
			t.Errorf("host log mentions %q:\n%s", l, h.log)
		}
	}
	secretScan(t, "responses and logs", append(responses, h.log.String()),
		append([]string{corpSecret, cbToken, aesKey, apiKey}, tap.issued()...))
}

func abbreviate(s string) string {
	if len(s) > 40 {
		return s[:40] + "…"
	}
	return s
}

// TestConfigErrors: a config with errors stops the host at start with the field's path.
func TestConfigErrors(t *testing.T) {
	base := singleHostConfig("http://127.0.0.1:1", t.TempDir())
	cases := []struct {
		name, config, want string
	}{
		{"unknown key", strings.Replace(base, "  api_keys:", "  api_kyes:", 1), "api_kyes"},
		{"missing secret", base, "corp_secret"}, // WECOM_SECRET not set below
		{"bad platform", strings.Replace(base, "platform: wecom", "platform: wechat", 1), "platform"},
		{"bad agent id", strings.Replace(base, fmt.Sprintf("agent_id: %d", agentID), "agent_id: abc", 1), "agent_id"},
		{"not yaml", "server: [", "yaml"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := filepath.Join(t.TempDir(), "c.yaml")
			os.WriteFile(f, []byte(strings.ReplaceAll(tc.config, "{{ADDR}}", fmt.Sprintf("127.0.0.1:%d", freePort(t)))), 0o600)
			env := []string{"CHATWIRE_API_KEY=" + apiKey, "WECOM_TOKEN=" + cbToken, "WECOM_AES_KEY=" + aesKey}
			if tc.name != "missing secret" {
				env = append(env, "WECOM_SECRET="+corpSecret)
			}
			cmd := exec.Command(filepath.Join(binDir, "adapter-host"), "run", "--config", f)
			cmd.Env = append(os.Environ(), env...)
			done := make(chan struct{})
			var out []byte
			var err error
			go func() { out, err = cmd.CombinedOutput(); close(done) }()
			select {
			case <-done:
			case <-time.After(30 * time.Second):
				cmd.Process.Kill()
				t.Fatalf("adapter-host run with a bad config still running after 30s")
			}
			if err == nil {
				t.Fatalf("adapter-host run accepted a bad config:\n%s", out)
			}
			if !strings.Contains(string(out), tc.want) {
				t.Errorf("error output does not name %q:\n%s", tc.want, out)
			}
			secretScan(t, "error output", []string{string(out)}, []string{corpSecret, cbToken, aesKey, apiKey})
		})
	}
}
