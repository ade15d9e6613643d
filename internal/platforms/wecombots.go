package platforms

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"sync"

	"github.com/redis/go-redis/v9"

	"github.com/seed-a64d9e1f/chatwire/adapter"
	"github.com/seed-a64d9e1f/chatwire/adapter/wecom/aibot"
	"github.com/seed-a64d9e1f/chatwire/adapter/wecom/robot"
	"github.com/seed-a64d9e1f/chatwire/internal/lease"
	"github.com/seed-a64d9e1f/chatwire/plugin"
)

// WeComAIBot is a WeCom AI bot's (智能机器人) configuration section: bot_id and secret for
// the long connection, or token and encoding_aes_key for the webhook. Secret, Token and
// EncodingAESKey are secrets.
type WeComAIBot struct {
	BotID          string `yaml:"bot_id" json:"bot_id"`
	Secret         string `yaml:"secret" json:"secret,omitempty"`
	Token          string `yaml:"token" json:"token,omitempty"`
	EncodingAESKey string `yaml:"encoding_aes_key" json:"encoding_aes_key,omitempty"`
	// WSURL is the long-connection endpoint. Empty means wss://openws.work.weixin.qq.com.
	WSURL string `yaml:"ws_url" json:"ws_url,omitempty"`
	// Welcome (webhook mode) is the text answered to enter_chat.
	Welcome string `yaml:"welcome" json:"welcome,omitempty"`
}

// WeComRobot is a WeCom group robot's (群机器人) section. WebhookKey is a secret.
type WeComRobot struct {
	WebhookKey string `yaml:"webhook_key" json:"webhook_key"`
	// APIBase is where the webhook API lives. Empty means https://qyapi.weixin.qq.com.
	APIBase string `yaml:"api_base" json:"api_base,omitempty"`
}

func randomID() string {
	b := make([]byte, 6)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// leaseClients are the Redis clients the AI bots' connection leases use, one per store.
var leaseClients sync.Map // storeID → redis.UniversalClient

func leaseClient(sc plugin.StoreConfig) (redis.UniversalClient, error) {
	id := storeID(sc)
	if c, ok := leaseClients.Load(id); ok {
		return c.(redis.UniversalClient), nil
	}
	c, err := RedisClient(sc)
	if err != nil {
		return nil, err
	}
	if prev, loaded := leaseClients.LoadOrStore(id, c); loaded {
		c.Close()
		return prev.(redis.UniversalClient), nil
	}
	return c, nil
}

// openWeComBot opens a wecom_aibot or wecom_robot bot; ok is false for other platforms.
func openWeComBot(sc plugin.StoreConfig, bot plugin.BotConfig, hc *http.Client, log *slog.Logger) (a adapter.Adapter, ok bool, err error) {
	switch bot.Platform {
	case adapter.PlatformWeComAIBot:
		var c WeComAIBot
		if err := json.Unmarshal(bot.Config, &c); err != nil {
			return nil, true, fmt.Errorf("wecom_aibot config: %w", err)
		}
		opts := aibot.Options{Name: bot.Name, BotID: c.BotID, Secret: c.Secret, Token: c.Token, EncodingAESKey: c.EncodingAESKey,
			WSURL: c.WSURL, Welcome: c.Welcome, HTTPClient: hc, Logger: log}
		if sc.UsesRedis() {
			rdb, err := leaseClient(sc)
			if err != nil {
				return nil, true, err
			}
			// Any host answers any callback: long-connection frames are relayed to the lease
			// holder, webhook streams live in Redis so any host answers WeCom's polls.
			opts.Redis, opts.RedisKeyPrefix = rdb, sc.KeyPrefix
			if c.Secret != "" {
				// One host at a time holds the bot's one long connection.
				prefix := sc.KeyPrefix
				if prefix != "" {
					prefix += ":"
				}
				// The owner names the process, for operators (and tests) reading the key.
				opts.Lease = &lease.Redis{Client: rdb, Key: prefix + "aibot:" + c.BotID + ":lease", Logger: log,
					Owner: fmt.Sprintf("pid%d-%s", os.Getpid(), randomID())}
			}
		}
		b, err := aibot.New(opts)
		if err != nil {
			return nil, true, err
		}
		mode := "webhook"
		if c.Secret != "" {
			mode = "long connection"
		}
		log.Info("bot opened", "platform", bot.Platform, "bot_id", c.BotID, "mode", mode, "fleet_lease", opts.Lease != nil)
		return b, true, nil
	case adapter.PlatformWeComRobot:
		var c WeComRobot
		if err := json.Unmarshal(bot.Config, &c); err != nil {
			return nil, true, fmt.Errorf("wecom_robot config: %w", err)
		}
		r, err := robot.New(robot.Options{Name: bot.Name, WebhookKey: c.WebhookKey, APIBase: c.APIBase, HTTPClient: hc, Logger: log})
		if err != nil {
			return nil, true, err
		}
		log.Info("bot opened", "platform", bot.Platform)
		return r, true, nil
	}
	return nil, false, nil
}
