package main

import (
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/seed-a64d9e1f/chatwire/adapter"
	"github.com/seed-a64d9e1f/chatwire/adapter/wecom/aibot/aibottest"
	"github.com/seed-a64d9e1f/chatwire/internal/platforms"
)

// TestWeComAIBotThroughTheHost: a wecom_aibot bot configured in the host runs its long
// connection in the plugin (through Poll); a message pushed by the emulator reaches the SSE
// stream, and a reply sent with reply_to reaches the emulator on the callback's req_id.
func TestWeComAIBotThroughTheHost(t *testing.T) {
	emu := &aibottest.Server{}
	srv := httptest.NewServer(emu)
	defer srv.Close()
	cfg := &Config{
		Server: ServerConfig{Listen: "127.0.0.1:0", APIKeys: []string{testAPIKey}},
		Bots: []BotConfig{{Name: "hr", Platform: adapter.PlatformWeComAIBot,
			WeComAIBot: &platforms.WeComAIBot{BotID: "BOT1", Secret: "S1", WSURL: aibottest.WSURL(srv.URL)}}},
	}
	cfg.defaults()
	cerr := &ConfigError{}
	if cfg.validate(cerr); len(cerr.Problems) > 0 {
		t.Fatal(cerr)
	}
	logs := &syncBuffer{}
	h, err := startHost(t.Context(), cfg, hostOptions{Logger: slog.New(slog.NewJSONHandler(logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.shutdown() })
	e := &env{t: t, h: h, logs: logs}
	deadline := time.Now().Add(20 * time.Second)
	for emu.Connections() != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("the plugin did not connect; logs:\n%s", logs)
		}
		time.Sleep(5 * time.Millisecond)
	}
	events := e.subscribe("")
	p, err := emu.PushText(aibottest.Conv{User: "zhangsan"}, "hello host")
	if err != nil {
		t.Fatal(err)
	}
	ev := next(t, events).ev
	if ev.Text != "hello host" || ev.ID != "wecom_aibot:"+p.MsgID || ev.Platform != adapter.PlatformWeComAIBot {
		t.Fatalf("SSE event = %+v", ev)
	}
	// The host still wants a target beside reply_to; the adapter answers on the callback.
	status, _, body := e.do("POST", "/v1/bots/hr/messages", testAPIKey, map[string]any{"to": map[string]string{"user": "zhangsan"}, "reply_to": ev.ID, "markdown": "**hi** back"})
	if status != 200 {
		t.Fatalf("reply = %d %s", status, body)
	}
	sent := emu.Sent()
	if len(sent) != 1 || sent[0].Cmd != "aibot_respond_msg" || sent[0].ReqID != p.ReqID || sent[0].Content != "**hi** back" {
		t.Errorf("emulator got %+v", sent)
	}
	if strings.Contains(logs.String(), `"S1"`) {
		t.Error("logs hold the secret")
	}
}

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
			cfg := &Config{Server: ServerConfig{Listen: "127.0.0.1:0", APIKeys: []string{testAPIKey}}, Bots: []BotConfig{tc.bot}}
			cfg.defaults()
			cerr := &ConfigError{}
			cfg.validate(cerr)
			got := strings.Join(cerr.Problems, "; ")
			if tc.want == "" && got != "" || tc.want != "" && !strings.HasPrefix(got, tc.want+":") && !strings.Contains(got, "; "+tc.want+":") {
				t.Errorf("problems = %q; want one at %q", got, tc.want)
			}
		})
	}
}
