package host

import (
	"encoding/json"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/seed-a64d9e1f/chatwire/adapter"
	"github.com/seed-a64d9e1f/chatwire/adapter/graph/graphtest"
	"github.com/seed-a64d9e1f/chatwire/adapter/wecom/wecomtest"
	"github.com/seed-a64d9e1f/chatwire/internal/config"
	"github.com/seed-a64d9e1f/chatwire/internal/platforms"
	"github.com/seed-a64d9e1f/chatwire/internal/redistest"
)

// readyz fetches /readyz and decodes its JSON body.
func (e *env) readyz() (int, readyBody) {
	e.t.Helper()
	status, hdr, data := e.do("GET", "/readyz", "", nil)
	if ct := hdr.Get("Content-Type"); ct != "application/json" {
		e.t.Errorf("/readyz Content-Type = %q; want application/json (%d %s)", ct, status, data)
	}
	var body readyBody
	if err := json.Unmarshal(data, &body); err != nil {
		e.t.Fatalf("/readyz body %q: %v", data, err)
	}
	return status, body
}

// waitReadyz polls /readyz until cond holds for its answer (the checks follow live state:
// a token fetch, a Redis outage); it fails the test after 20s.
func (e *env) waitReadyz(what string, cond func(status int, body readyBody) bool) (int, readyBody) {
	e.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		status, body := e.readyz()
		if cond(status, body) {
			return status, body
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("/readyz never %s; last %d %+v", what, status, body)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func hasPrefixed(list []string, prefix string) bool {
	return slices.ContainsFunc(list, func(s string) bool { return strings.HasPrefix(s, prefix) })
}

func TestReadyzStoreDown(t *testing.T) {
	rs := redistest.Start(t)
	e := setup(t, setupOpts{redisURL: "redis://" + rs.Addr() + "/0"})
	if status, body := e.waitReadyz("ready", func(s int, _ readyBody) bool { return s == 200 }); body.Status != "ready" || len(body.Failing) != 0 {
		t.Errorf("/readyz with everything up = %d %+v; want 200 ready", status, body)
	}
	rs.Kill()
	status, body := e.readyz()
	if status != 503 || body.Status != "not ready" || !hasPrefixed(body.Failing, "store: ") {
		t.Errorf("/readyz with Redis down = %d %+v; want 503 naming the store", status, body)
	}
	if hasPrefixed(body.Failing, "plugin") || hasPrefixed(body.Failing, "bot ") {
		t.Errorf("/readyz with Redis down blames more than the store: %+v", body)
	}
	// Liveness is not readiness: the process is alive.
	if status, _, body := e.do("GET", "/healthz", "", nil); status != 200 {
		t.Errorf("/healthz with Redis down = %d %s; want 200", status, body)
	}
	rs.Restart()
	e.waitReadyz("ready again after Redis came back", func(s int, b readyBody) bool { return s == 200 && b.Status == "ready" })
}

func TestReadyzPluginDown(t *testing.T) {
	e := setup(t, setupOpts{})
	e.waitReadyz("ready", func(s int, _ readyBody) bool { return s == 200 })
	srv := e.h.srv
	ready := srv.ready
	srv.ready = func() bool { return false }
	defer func() { srv.ready = ready }()
	status, body := e.readyz()
	if status != 503 || !slices.Equal(body.Failing, []string{"plugin: not running or not answering (starting, restarting or hung)"}) {
		t.Errorf("/readyz with the plugin down = %d %+v; want 503 naming only the plugin", status, body)
	}
}

// A wrong secret shows within seconds of the start, without any send: in /readyz, /v1/tokens,
// the log and the metrics.
func TestReadyzCredentialsRejected(t *testing.T) {
	emu := &wecomtest.Server{PushRetries: -1}
	emu.AddApp(testCorp, "the-secret-the-platform-knows", testAgent) // not testSecret
	ws := httptest.NewServer(emu)
	t.Cleanup(ws.Close)
	e := setup(t, setupOpts{emu: emu, apiBase: ws.URL})
	status, body := e.waitReadyz("names the bot", func(s int, b readyBody) bool { return s == 503 && len(b.Failing) > 0 })
	if body.Status != "not ready" || !slices.Equal(body.Failing, []string{"bot hr: credentials rejected (40001)"}) {
		t.Errorf("/readyz = %d %+v; want 503 failing [bot hr: credentials rejected (40001)]", status, body)
	}
	if len(emu.Sent()) != 0 {
		t.Errorf("something was sent: %+v", emu.Sent())
	}
	if _, _, data := e.do("GET", "/v1/tokens", testAPIKey, nil); !strings.Contains(string(data), `"healthy":false`) || !strings.Contains(string(data), "errcode 40001") {
		t.Errorf("/v1/tokens does not show the rejected credential: %s", data)
	}
	_, _, data := e.do("GET", "/metrics", "", nil)
	if want := `chatwire_bot_healthy{bot="hr",platform="wecom",reason="credentials rejected (40001)"} 0`; !strings.Contains(string(data), want) {
		t.Errorf("/metrics lacks %s", want)
	}
	if !strings.Contains(e.logs.String(), "credentials rejected (40001)") {
		t.Errorf("log does not say the credentials were rejected:\n%s", e.logs)
	}
}

// A Graph bot whose client secret Entra ID rejects is named with the AADSTS code.
func TestReadyzGraphCredentialsRejected(t *testing.T) {
	gemu := &graphtest.Server{}
	gemu.AddClient("mail-client", "the-secret-entra-knows")
	gs := httptest.NewServer(gemu)
	t.Cleanup(gs.Close)
	cfg := &config.Config{
		Server: config.ServerConfig{Listen: "127.0.0.1:0", APIKeys: []string{testAPIKey}},
		Bots: []config.BotConfig{{Name: "mail", Platform: adapter.PlatformGraph, Graph: &platforms.Graph{
			TenantID: "contoso", ClientID: "mail-client", ClientSecret: "not-the-secret", Auth: "client_credentials",
			User: "bot@contoso.example", LoginBase: gs.URL, GraphBase: gs.URL}}},
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	h, err := Start(t.Context(), cfg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Shutdown() })
	e := &env{t: t, h: h, logs: &syncBuffer{}}
	_, body := e.waitReadyz("names the bot", func(s int, b readyBody) bool { return s == 503 && len(b.Failing) > 0 })
	if !slices.Equal(body.Failing, []string{"bot mail: credentials rejected (AADSTS7000215)"}) {
		t.Errorf("/readyz failing = %q; want [bot mail: credentials rejected (AADSTS7000215)]", body.Failing)
	}
}
