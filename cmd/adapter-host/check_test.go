package main

import (
	"bytes"
	"fmt"
	"io"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"
	"github.com/seed-a64d9e1f/chatwire/adapter/graph/graphtest"
	"github.com/seed-a64d9e1f/chatwire/adapter/wecom/wecomtest"
	"github.com/seed-a64d9e1f/chatwire/internal/check"
	"github.com/seed-a64d9e1f/chatwire/internal/redistest"
)

func writeConfig(t *testing.T, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "bots.yaml")
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestCheckAgentID checks a WeCom bot whose agent_id is not the corp_secret's app: gettoken
// accepts the secret, so only agent/get shows the mistake, and check must fail it.
func TestCheckAgentID(t *testing.T) {
	for _, otherCode := range []int{0, 40056} {
		emu := &wecomtest.Server{OtherAgentCode: otherCode}
		emu.AddApp(testCorp, testSecret, testAgent)
		ws := httptest.NewServer(emu)
		defer ws.Close()
		cfg := func(agent int64) string {
			return writeConfig(t, fmt.Sprintf("bots:\n  - name: hr\n    platform: wecom\n    wecom: {corp_id: %s, corp_secret: %q, agent_id: %d, api_base: %q}\n",
				testCorp, testSecret, agent, ws.URL))
		}
		var out bytes.Buffer
		if err := cmdCheck(t.Context(), []string{"--config", cfg(testAgent)}, &out, io.Discard); err != nil || !strings.Contains(out.String(), "bot hr (wecom): ok") {
			t.Errorf("check with the right agent_id = %v\n%s", err, out.String())
		}
		out.Reset()
		err := cmdCheck(t.Context(), []string{"--config", cfg(testAgent + 1)}, &out, io.Discard)
		want := cmpOr(otherCode, 301002)
		if err == nil || exitCode(err) != 2 || !strings.Contains(out.String(), "bot hr (wecom): FAILED") ||
			!strings.Contains(out.String(), fmt.Sprint(want)) || !strings.Contains(out.String(), "what it means: the agent_id") {
			t.Errorf("check with a wrong agent_id (WeCom answering %d) = %v\n%s", want, err, out.String())
		}
		if n := emu.Calls("agent/get"); n != 2 {
			t.Errorf("agent/get called %d times; want 2 (once per check)", n)
		}
	}
}

func cmpOr(a, b int) int {
	if a != 0 {
		return a
	}
	return b
}

// TestCheckMostSpecificExplanation checks a Graph app with a wrong client secret: the
// identity platform answers invalid_client with AADSTS7000215, and check must give that
// code's own explanation, once, not the generic invalid_client one.
func TestCheckMostSpecificExplanation(t *testing.T) {
	emu := &graphtest.Server{}
	emu.AddClient("client-1", "graph-secret-value")
	gs := httptest.NewServer(emu)
	defer gs.Close()
	p := writeConfig(t, fmt.Sprintf(`bots:
  - name: mail
    platform: graph
    graph: {tenant_id: t1, client_id: client-1, client_secret: wrong-secret, auth: client_credentials, user: bot@contoso.com,
            login_base: %q, graph_base: %q}
`, gs.URL, gs.URL))
	var out bytes.Buffer
	err := cmdCheck(t.Context(), []string{"--config", p}, &out, io.Discard)
	s := out.String()
	if err == nil || !strings.Contains(s, "what it means: "+check.Explain("AADSTS7000215")) {
		t.Errorf("check with a wrong client secret = %v\n%s\nwant AADSTS7000215's explanation", err, s)
	}
	if strings.Contains(s, check.Explain("invalid_client")) {
		t.Errorf("check gave the generic invalid_client explanation too:\n%s", s)
	}
	if n := strings.Count(s, "what it means:"); n != 1 {
		t.Errorf("%d explanations; want 1:\n%s", n, s)
	}
	if n := strings.Count(s, "Certificates & secrets"); n != 1 {
		t.Errorf("the fix is given %d times; want once:\n%s", n, s)
	}
}

// TestCheckNamesConfigFile checks that check's hints name the config file it was given,
// never a FILE placeholder.
func TestCheckNamesConfigFile(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "my bots.yaml")
	if err := os.WriteFile(p, []byte(fmt.Sprintf(`store: {dir: %q}
bots:
  - name: teams
    platform: graph
    graph: {tenant_id: t1, client_id: client-1, auth: delegated, user: bot@contoso.com, login_base: "http://127.0.0.1:1", graph_base: "http://127.0.0.1:1"}
`, filepath.Join(dir, "state"))), 0o600); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	err := cmdCheck(t.Context(), []string{"--config", p}, &out, io.Discard)
	if err == nil || !strings.Contains(out.String(), "graph login --config '"+p+"' --bot teams") || strings.Contains(out.String(), "FILE") {
		t.Errorf("check = %v\n%s\nwant the hint to name %s", err, out.String(), p)
	}
}

// TestCheckWritesNothingToRedis runs check on a config whose store is a shared Redis (a
// real redis-server): check fetches tokens to try the credentials, and must keep them to
// itself, so the Redis holds no key afterwards.
func TestCheckWritesNothingToRedis(t *testing.T) {
	rs := redistest.Start(t)
	admin := redis.NewClient(&redis.Options{Addr: rs.Addr()})
	defer admin.Close()
	wemu := &wecomtest.Server{}
	wemu.AddApp(testCorp, testSecret, testAgent)
	ws := httptest.NewServer(wemu)
	defer ws.Close()
	gemu := &graphtest.Server{}
	gemu.AddClient("client-1", "graph-secret-value")
	gs := httptest.NewServer(gemu)
	defer gs.Close()
	p := writeConfig(t, fmt.Sprintf(`store: {redis_url: "redis://%s/0"}
bots:
  - name: hr
    platform: wecom
    wecom: {corp_id: %s, corp_secret: %q, agent_id: %d, api_base: %q}
  - name: mail
    platform: graph
    graph: {tenant_id: t1, client_id: client-1, client_secret: graph-secret-value, auth: client_credentials, user: bot@contoso.com,
            login_base: %q, graph_base: %q}
`, rs.Addr(), testCorp, testSecret, testAgent, ws.URL, gs.URL, gs.URL))
	var out bytes.Buffer
	if err := cmdCheck(t.Context(), []string{"--config", p}, &out, io.Discard); err != nil {
		t.Fatalf("check = %v\n%s", err, out.String())
	}
	if wemu.TokensIssued() == 0 || len(gemu.TokenRequests()) == 0 {
		t.Fatalf("check fetched no token (WeCom %d, Graph %d): it tried nothing", wemu.TokensIssued(), len(gemu.TokenRequests()))
	}
	keys, err := admin.Keys(t.Context(), "*").Result()
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 0 {
		t.Errorf("check wrote %d keys into the shared Redis: %v", len(keys), keys)
	}
}
