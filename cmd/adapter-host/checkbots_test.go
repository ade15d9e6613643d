package main

import (
	"bytes"
	"fmt"
	"io"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/seed-a64d9e1f/chatwire/adapter/graph"
	"github.com/seed-a64d9e1f/chatwire/adapter/teams"
	"github.com/seed-a64d9e1f/chatwire/adapter/teams/teamstest"
	"github.com/seed-a64d9e1f/chatwire/adapter/wecom/aibot/aibottest"
	"github.com/seed-a64d9e1f/chatwire/internal/check"
	"github.com/seed-a64d9e1f/chatwire/internal/config"
	"github.com/seed-a64d9e1f/chatwire/internal/platforms"
	"github.com/seed-a64d9e1f/chatwire/internal/redistest"
)

// TestCheckTeams: check gets a connector token for a teams bot and says where to point the
// Azure Bot; a single-tenant app configured as MultiTenant fails with AADSTS700016 from the
// botframework.com authority, explained as spec §6's pitfall; a wrong password is explained.
func TestCheckTeams(t *testing.T) {
	emu := &teamstest.Server{}
	srv := httptest.NewServer(emu)
	defer srv.Close()
	emu.URL = srv.URL
	emu.AddBot(teamstest.Bot{AppID: "app-1", Password: "teams-pw-value", TenantID: "t1"})
	u, _ := url.Parse(srv.URL)
	write := func(extra string) string {
		path := filepath.Join(t.TempDir(), "c.yaml")
		cfg := fmt.Sprintf(`
server: {listen: "127.0.0.1:8080"}
bots:
  - name: tbot
    platform: teams
    teams: {app_id: app-1, tenant_id: t1, login_base: %q, openid_metadata_url: %q, service_hosts: [%q], %s}
`, srv.URL, emu.MetadataURL(), u.Host, extra)
		os.WriteFile(path, []byte(cfg), 0o600)
		return path
	}
	var out bytes.Buffer
	if err := cmdCheck(t.Context(), []string{"--config", write(`app_password: teams-pw-value`)}, &out, io.Discard); err != nil {
		t.Fatalf("check: %v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "bot tbot (teams): ok") || !strings.Contains(out.String(), "/webhook/tbot") {
		t.Errorf("check output:\n%s", out.String())
	}
	reqs := emu.TokenRequests()
	if len(reqs) != 1 || reqs[0].Tenant != "t1" || reqs[0].Scope != teams.ConnectorScope {
		t.Errorf("token requests %+v; want one at the tenant authority for the connector scope", reqs)
	}

	out.Reset()
	err := cmdCheck(t.Context(), []string{"--config", write(`app_password: teams-pw-value, app_type: MultiTenant`)}, &out, io.Discard)
	if err == nil || !strings.Contains(out.String(), "AADSTS700016") ||
		!strings.Contains(out.String(), "what it means: the app is not a multi-tenant app in the Bot Framework directory; bots created after July 2025 are single-tenant: set tenant_id and app_type SingleTenant") {
		t.Errorf("MultiTenant for a single-tenant app: %v\n%s", err, out.String())
	}
	out.Reset()
	err = cmdCheck(t.Context(), []string{"--config", write(`app_password: wrong-password`)}, &out, io.Discard)
	if err == nil || !strings.Contains(out.String(), "AADSTS7000215") || !strings.Contains(out.String(), "what it means: the app password is wrong") {
		t.Errorf("wrong password: %v\n%s", err, out.String())
	}
	if strings.Contains(out.String(), "teams-pw-value") || strings.Contains(out.String(), "wrong-password") {
		t.Error("check output quotes the password")
	}
}

func TestCheckWeComBots(t *testing.T) {
	emu := &aibottest.Server{}
	srv := httptest.NewServer(emu)
	defer srv.Close()
	dir := t.TempDir()
	write := func(secret string) string {
		p := filepath.Join(dir, "c.yaml")
		os.WriteFile(p, []byte(fmt.Sprintf("bots:\n"+
			"  - name: ai\n    platform: wecom_aibot\n    wecom_aibot: {bot_id: BOT1, secret: %q, ws_url: %q}\n"+
			"  - name: robot\n    platform: wecom_robot\n    wecom_robot: {webhook_key: k}\n", secret, aibottest.WSURL(srv.URL))), 0o600)
		return p
	}
	var out, errb bytes.Buffer
	if err := run(t.Context(), []string{"check", "--config", write("S1")}, &out, &errb); err != nil ||
		!strings.Contains(out.String(), "bot ai (wecom_aibot): ok") || !strings.Contains(out.String(), "bot robot (wecom_robot): not probed") {
		t.Errorf("check good = %v\n%s", err, out.String())
	}
	out.Reset()
	err := run(t.Context(), []string{"check", "--config", write("wrong-aibot-secret")}, &out, &errb)
	if err == nil || exitCode(err) != 2 || !strings.Contains(out.String(), "853000") || !strings.Contains(out.String(), "长连接专用密钥") {
		t.Errorf("check bad secret = %v (exit %d)\n%s", err, exitCode(err), out.String())
	}
	if strings.Contains(out.String(), "wrong-aibot-secret") {
		t.Error("check output holds the secret")
	}
	// check closes its connection; the emulator notices the close asynchronously.
	for deadline := time.Now().Add(5 * time.Second); emu.Connections() != 0 && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	if n := emu.Subscribes(); n != 2 || emu.Connections() != 0 {
		t.Errorf("%d subscribes, %d connections left; want 2, 0", n, emu.Connections())
	}
}

// TestCheckOfflineStoreSecrets runs check --offline on a config with Redis passwords and
// encryption keys: its output holds none of them.
func TestCheckOfflineStoreSecrets(t *testing.T) {
	key, prev := newStoreKey(t), newStoreKey(t)
	t.Setenv("STORE_KEY", key)
	t.Setenv("REDIS_PW", storeMarker)
	path := filepath.Join(t.TempDir(), "c.yaml")
	cfg := storeConfig(`  redis: {addrs: ["127.0.0.1:26379"], master_name: m, password: "${REDIS_PW}", sentinel_password: "${REDIS_PW}"}
  encryption_key: "${STORE_KEY}"
  previous_encryption_keys: ["` + prev + `"]`)
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := cmdCheck(t.Context(), []string{"--config", path, "--offline"}, &out, io.Discard); err != nil {
		t.Fatalf("check --offline = %v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "ok") || strings.Contains(out.String(), key) || strings.Contains(out.String(), prev) || strings.Contains(out.String(), storeMarker) {
		t.Errorf("check output:\n%s\nwant ok and no secret", out.String())
	}
}

// TestCheckDelegatedClosesRedis runs check on three delegated Graph bots whose sign-ins live
// in Redis: each probe opens the store, and once check returns none of their connections
// may be left open on the server.
func TestCheckDelegatedClosesRedis(t *testing.T) {
	rs := redistest.Start(t)
	admin := redis.NewClient(&redis.Options{Addr: rs.Addr()})
	defer admin.Close()
	sc := config.StoreConfig{RedisURL: "redis://" + rs.Addr() + "/0"}
	var bots strings.Builder
	for i := range 3 {
		g := platforms.Graph{TenantID: "t1", ClientID: "client-1", Auth: "delegated", User: fmt.Sprintf("bot%d@contoso.com", i)}
		fmt.Fprintf(&bots, "  - name: teams%d\n    platform: graph\n    graph: {tenant_id: t1, client_id: client-1, auth: delegated, user: %s, login_base: \"http://127.0.0.1:1\", graph_base: \"http://127.0.0.1:1\"}\n", i, g.User)
		store, _, closeStore, err := check.OpenStore(sc)
		if err != nil {
			t.Fatal(err)
		}
		err = check.Seed(t.Context(), store, platforms.GraphKey(g), &graph.LoginResult{RefreshToken: "rt"})
		closeStore()
		if err != nil {
			t.Fatal(err)
		}
	}
	path := filepath.Join(t.TempDir(), "c.yaml")
	if err := os.WriteFile(path, []byte("store: {redis_url: \""+sc.RedisURL+"\"}\nbots:\n"+bots.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := cmdCheck(t.Context(), []string{"--config", path}, &out, io.Discard); err != nil {
		t.Fatalf("check = %v\n%s", err, out.String())
	}
	if n := strings.Count(out.String(), "ok, public client"); n != 3 {
		t.Errorf("check passed %d bots; want 3\n%s", n, out.String())
	}
	// the server notices closed connections a moment later: only admin's may stay
	var list string
	deadline := time.Now().Add(5 * time.Second)
	for {
		var err error
		list, err = admin.ClientList(t.Context()).Result()
		if err != nil {
			t.Fatal(err)
		}
		if strings.Count(strings.TrimSpace(list), "\n") == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if n := strings.Count(strings.TrimSpace(list), "\n") + 1; n != 1 {
		t.Errorf("%d Redis connections open after check; want 1 (the test's own):\n%s", n, list)
	}
}
