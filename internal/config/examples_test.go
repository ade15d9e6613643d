package config

import (
	"os"
	"path/filepath"
	"testing"
)

// TestExampleConfigs keeps the commented example configs valid.
func TestExampleConfigs(t *testing.T) {
	env := map[string]string{"CHATWIRE_API_KEY": "0123456789abcdef0123", "WECOM_SECRET": "s", "WECOM_TOKEN": "t",
		"WECOM_AES_KEY": "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG", "HOOK_SECRET": "h", "GRAPH_SECRET": "g", "GRAPH_CLIENT_STATE": "cs", "TEAMS_PASSWORD": "p",
		"AIBOT_SECRET": "a", "ROBOT_KEY": "r"}
	files, _ := filepath.Glob("../../examples/configs/*.yaml")
	if len(files) == 0 {
		t.Fatal("no example configs found")
	}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := Parse(f, data, envOf(env)); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
}
