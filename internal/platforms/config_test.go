package platforms

import (
	"strings"
	"testing"

	"github.com/seed-a64d9e1f/chatwire/plugin"
)

// TestOpenRejectsUnknownKeys: a bot config with a key the platform does not have is refused,
// and the error names the expected keys (before, the key was silently ignored).
func TestOpenRejectsUnknownKeys(t *testing.T) {
	tests := []struct {
		name, platform, config, want string
	}{
		{"wecom", "wecom", `{"corp_id":"ww1","corp_secret":"s","agent_id":1,"agentid":2}`,
			`wecom config: unknown key "agentid"; expected corp_id, corp_secret, agent_id,`},
		{"graph", "graph", `{"tenant_id":"t","client_id":"c","client_secret":"s","auth":"client_credentials","user":"bot@example.com","notify_url":"https://x"}`,
			`graph config: unknown key "notify_url"; expected tenant_id, client_id,`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o := New(nil, nil)
			o.NoStart = true
			a, err := o.Open(t.Context(), plugin.StoreConfig{}, plugin.BotConfig{Name: "b", Platform: tc.platform, Config: []byte(tc.config)})
			if err == nil {
				a.Close()
				t.Fatalf("Open(%s) succeeded; want an unknown-key error", tc.config)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Open(%s) error = %v; want it to contain %q", tc.config, err, tc.want)
			}
		})
	}
}
