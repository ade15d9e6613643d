package config

import (
	"github.com/seed-a64d9e1f/chatwire/adapter"
)

// validateWeComBot checks a wecom_aibot or wecom_robot bot's section.
func (c *Config) validateWeComBot(at string, b BotConfig, p func(string, string, ...any)) {
	if b.WeCom != nil {
		p(at+".wecom", "not allowed on a %s bot", b.Platform)
	}
	if b.Graph != nil {
		p(at+".graph", "not allowed on a %s bot", b.Platform)
	}
	if b.Platform == adapter.PlatformWeComRobot {
		r := b.WeComRobot
		if r == nil {
			p(at+".wecom_robot", "required for platform wecom_robot")
			return
		}
		if r.WebhookKey == "" {
			p(at+".wecom_robot.webhook_key", "required: the key= of the robot's webhook URL")
		}
		c.checkBase(at+".wecom_robot.api_base", r.APIBase, p)
		return
	}
	a := b.WeComAIBot
	if a == nil {
		p(at+".wecom_aibot", "required for platform wecom_aibot")
		return
	}
	at += ".wecom_aibot"
	long, hook := a.Secret != "", a.Token != "" || a.EncodingAESKey != ""
	switch {
	case long && hook:
		p(at, "set secret (long connection) or token and encoding_aes_key (webhook), not both")
	case long && a.BotID == "":
		p(at+".bot_id", "required with secret")
	case hook && (a.Token == "" || a.EncodingAESKey == ""):
		p(at, "set both token and encoding_aes_key (webhook mode)")
	case !long && !hook:
		p(at, "set bot_id and secret (long connection) or token and encoding_aes_key (webhook)")
	}
	if a.EncodingAESKey != "" && len(a.EncodingAESKey) != 43 {
		p(at+".encoding_aes_key", "must be 43 characters (as shown in the WeCom admin console)")
	}
	if a.WSURL != "" {
		if u := a.WSURL; !(len(u) > 5 && (u[:5] == "ws://" || len(u) > 6 && u[:6] == "wss://")) {
			p(at+".ws_url", "want a ws:// or wss:// URL, got %s", c.show(at+".ws_url", a.WSURL))
		}
	}
}
