package config

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

	"github.com/seed-a64d9e1f/chatwire/adapter/teams"
	"github.com/seed-a64d9e1f/chatwire/adapter/teams/teamstest"
)

const teamsConfig = `
server: {listen: "127.0.0.1:8080"}
bots:
  - name: tbot
    platform: teams
    teams: {app_id: "${TEAMS_APP}", app_password: "${TEAMS_PASSWORD}", tenant_id: t1}
`

// TestTeamsConfig: a teams bot parses with ${ENV} expansion and DESIGN's defaults; unknown
// keys are refused naming the expected ones; missing or contradictory fields name their path.
func TestTeamsConfig(t *testing.T) {
	env := map[string]string{"TEAMS_APP": "app-1", "TEAMS_PASSWORD": "pw: #1"}
	cfg, err := ParseConfig("c.yaml", []byte(teamsConfig), envOf(env))
	if err != nil {
		t.Fatal(err)
	}
	tc := cfg.Bots[0].Teams
	if tc.AppID != "app-1" || tc.AppPassword != "pw: #1" || tc.TenantID != "t1" {
		t.Errorf("teams section = %+v", tc)
	}
	if tc.AppType != teams.AppSingleTenant || tc.LoginBase != "https://login.microsoftonline.com" ||
		tc.OpenIDMetadataURL != "https://login.botframework.com/v1/.well-known/openidconfiguration" || tc.ChannelIssuer != "https://api.botframework.com" {
		t.Errorf("defaults = %+v; want DESIGN's", tc)
	}
	bad := []struct{ name, from, to, want string }{
		{"unknown key", "tenant_id: t1", "tenant: t1", `bots[0].teams: unknown key "tenant" (known keys: app_id, app_password, tenant_id, app_type, login_base, openid_metadata_url, channel_issuer, service_hosts, default_service_url)`},
		{"no tenant", ", tenant_id: t1", "", "bots[0].teams.tenant_id: required for app_type SingleTenant"},
		{"bad app type", "tenant_id: t1", "tenant_id: t1, app_type: Single", `bots[0].teams.app_type: "Single": want SingleTenant, MultiTenant or UserAssignedMSI`},
		{"no password", `app_password: "${TEAMS_PASSWORD}", `, "", "bots[0].teams.app_password: required"},
		{"msi with password", "tenant_id: t1", "tenant_id: t1, app_type: UserAssignedMSI", "bots[0].teams.app_password: not with app_type UserAssignedMSI"},
		{"bad metadata url", "tenant_id: t1", "tenant_id: t1, openid_metadata_url: nope", `bots[0].teams.openid_metadata_url: want an http or https URL, got "nope"`},
		{"section missing", "    teams: {", "    xteams: {", `bots[0]: unknown key "xteams"`},
		{"wrong section", "platform: teams", "platform: wecom", "bots[0].teams: not allowed on a wecom bot"},
	}
	for _, tc := range bad {
		_, err := ParseConfig("c.yaml", []byte(strings.Replace(teamsConfig, tc.from, tc.to, 1)), envOf(env))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v; want it to contain %q", tc.name, err, tc.want)
		}
		if err != nil && strings.Contains(err.Error(), "pw: #1") {
			t.Errorf("%s: the error quotes the password", tc.name)
		}
	}
	msi := strings.Replace(strings.Replace(teamsConfig, `app_password: "${TEAMS_PASSWORD}", `, "", 1), "tenant_id: t1", "tenant_id: t1, app_type: UserAssignedMSI", 1)
	cfg, err = ParseConfig("c.yaml", []byte(msi), envOf(env))
	if err != nil {
		t.Fatalf("managed identity bot: %v", err)
	}
	t.Setenv("IDENTITY_ENDPOINT", "http://127.0.0.1:41999/msi/token")
	t.Setenv("IDENTITY_HEADER", "hdr")
	if s := cfg.Bots[0].pluginSection().(interface{}); !strings.Contains(fmt.Sprintf("%+v", s), "http://127.0.0.1:41999/msi/token") {
		t.Errorf("the plugin section of a managed identity bot lacks IDENTITY_ENDPOINT: %+v", s)
	}
}

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
