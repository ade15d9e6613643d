package config

import (
	"strings"
	"testing"

	"github.com/seed-a64d9e1f/chatwire/internal/platforms"
)

func TestWeComBotConfigValidation(t *testing.T) {
	tests := []struct {
		name string
		bot  BotConfig
		want string // a problem's path; "" for none
	}{
		{"long connection", BotConfig{Name: "a", Platform: "wecom_aibot", WeComAIBot: &platforms.WeComAIBot{BotID: "B", Secret: "s"}}, ""},
		{"webhook", BotConfig{Name: "a", Platform: "wecom_aibot", WeComAIBot: &platforms.WeComAIBot{Token: "t", EncodingAESKey: strings.Repeat("k", 43)}}, ""},
		{"both modes", BotConfig{Name: "a", Platform: "wecom_aibot", WeComAIBot: &platforms.WeComAIBot{BotID: "B", Secret: "s", Token: "t", EncodingAESKey: strings.Repeat("k", 43)}}, "bots[0].wecom_aibot"},
		{"no section", BotConfig{Name: "a", Platform: "wecom_aibot"}, "bots[0].wecom_aibot"},
		{"short key", BotConfig{Name: "a", Platform: "wecom_aibot", WeComAIBot: &platforms.WeComAIBot{Token: "t", EncodingAESKey: "short"}}, "bots[0].wecom_aibot.encoding_aes_key"},
		{"http ws_url", BotConfig{Name: "a", Platform: "wecom_aibot", WeComAIBot: &platforms.WeComAIBot{BotID: "B", Secret: "s", WSURL: "http://x"}}, "bots[0].wecom_aibot.ws_url"},
		{"robot", BotConfig{Name: "r", Platform: "wecom_robot", WeComRobot: &platforms.WeComRobot{WebhookKey: "k"}}, ""},
		{"robot without key", BotConfig{Name: "r", Platform: "wecom_robot", WeComRobot: &platforms.WeComRobot{}}, "bots[0].wecom_robot.webhook_key"},
		{"aibot section on a robot", BotConfig{Name: "r", Platform: "wecom_robot", WeComRobot: &platforms.WeComRobot{WebhookKey: "k"}, WeComAIBot: &platforms.WeComAIBot{}}, "bots[0].wecom_aibot"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := &Config{Server: ServerConfig{Listen: "127.0.0.1:0", APIKeys: []string{"api-key-0123456789abcdef"}}, Bots: []BotConfig{tc.bot}}
			cfg.Defaults()
			cerr := &ConfigError{}
			cfg.validate(cerr)
			got := strings.Join(cerr.Problems, "; ")
			if tc.want == "" && got != "" || tc.want != "" && !strings.HasPrefix(got, tc.want+":") && !strings.Contains(got, "; "+tc.want+":") {
				t.Errorf("problems = %q; want one at %q", got, tc.want)
			}
		})
	}
}
