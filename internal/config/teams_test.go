package config

import (
	"fmt"
	"strings"
	"testing"

	"github.com/seed-a64d9e1f/chatwire/adapter/teams"
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
	cfg, err := Parse("c.yaml", []byte(teamsConfig), envOf(env))
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
		_, err := Parse("c.yaml", []byte(strings.Replace(teamsConfig, tc.from, tc.to, 1)), envOf(env))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v; want it to contain %q", tc.name, err, tc.want)
		}
		if err != nil && strings.Contains(err.Error(), "pw: #1") {
			t.Errorf("%s: the error quotes the password", tc.name)
		}
	}
	msi := strings.Replace(strings.Replace(teamsConfig, `app_password: "${TEAMS_PASSWORD}", `, "", 1), "tenant_id: t1", "tenant_id: t1, app_type: UserAssignedMSI", 1)
	cfg, err = Parse("c.yaml", []byte(msi), envOf(env))
	if err != nil {
		t.Fatalf("managed identity bot: %v", err)
	}
	t.Setenv("IDENTITY_ENDPOINT", "http://127.0.0.1:41999/msi/token")
	t.Setenv("IDENTITY_HEADER", "hdr")
	if s := cfg.Bots[0].PluginSection().(interface{}); !strings.Contains(fmt.Sprintf("%+v", s), "http://127.0.0.1:41999/msi/token") {
		t.Errorf("the plugin section of a managed identity bot lacks IDENTITY_ENDPOINT: %+v", s)
	}
}
