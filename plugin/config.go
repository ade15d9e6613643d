package plugin

import (
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"strings"

	"github.com/seed-a64d9e1f/chatwire/adapter"
)

// WeComConfig is the platform section of a WeCom bot: [BotConfig.Config] as JSON, and the
// "wecom" section of adapter-host's YAML. CorpSecret, Token and EncodingAESKey are secrets.
// Decoding JSON rejects unknown keys, naming the expected ones.
type WeComConfig struct {
	CorpID         string `yaml:"corp_id" json:"corp_id"`
	CorpSecret     string `yaml:"corp_secret" json:"corp_secret"`
	AgentID        int64  `yaml:"agent_id" json:"agent_id"`
	Token          string `yaml:"token" json:"token,omitempty"`
	EncodingAESKey string `yaml:"encoding_aes_key" json:"encoding_aes_key,omitempty"`
	// APIBase is WeCom's API base URL. Empty means the public one.
	APIBase string `yaml:"api_base" json:"api_base,omitempty"`
	// DuplicateCheck turns on WeCom's enable_duplicate_check with this interval, as a Go
	// duration ("30m", at most 4h): a message/send identical to one WeCom accepted within
	// it is accepted but not shown again (see wecom.Options.DuplicateCheck). Empty: off.
	DuplicateCheck string `yaml:"duplicate_check" json:"duplicate_check,omitempty"`
}

// GraphConfig is the platform section of a Microsoft Graph bot: [BotConfig.Config] as JSON,
// and the "graph" section of adapter-host's YAML. ClientSecret and ClientState are secrets.
// Decoding JSON rejects unknown keys, naming the expected ones.
type GraphConfig struct {
	TenantID     string `yaml:"tenant_id" json:"tenant_id"`
	ClientID     string `yaml:"client_id" json:"client_id"`
	ClientSecret string `yaml:"client_secret" json:"client_secret"`
	// Auth is "delegated" (a user signed in with graph login) or "client_credentials".
	Auth string `yaml:"auth" json:"auth"`
	// User is the mailbox or user the bot acts as. Empty means the signed-in user ("me").
	User string `yaml:"user" json:"user,omitempty"`
	// NotificationURL is where Graph posts change notifications. Empty: the bot polls.
	NotificationURL string   `yaml:"notification_url" json:"notification_url,omitempty"`
	ClientState     string   `yaml:"client_state" json:"client_state,omitempty"`
	Subscribe       []string `yaml:"subscribe" json:"subscribe,omitempty"`
	LoginBase       string   `yaml:"login_base" json:"login_base,omitempty"`
	GraphBase       string   `yaml:"graph_base" json:"graph_base,omitempty"`
	// Chats limits chat subscriptions to these chat ids, and names the chats polled when
	// there is no notification URL. Empty: every chat of the user (subscriptions only).
	Chats []string `yaml:"chats" json:"chats,omitempty"`
	// PollInterval is how often a bot without a notification URL looks for new mail and
	// chat messages, as a Go duration ("30s"). Empty means 30s.
	PollInterval string `yaml:"poll_interval" json:"poll_interval,omitempty"`
}

// UnmarshalJSON decodes c strictly: an unknown key is an error that names the expected ones.
func (c *WeComConfig) UnmarshalJSON(data []byte) error {
	type plain WeComConfig
	return decodeStrict(adapter.PlatformWeCom, data, (*plain)(c))
}

// UnmarshalJSON decodes c strictly: an unknown key is an error that names the expected ones.
func (c *GraphConfig) UnmarshalJSON(data []byte) error {
	type plain GraphConfig
	return decodeStrict(adapter.PlatformGraph, data, (*plain)(c))
}

// WeComBot returns the BotConfig of a WeCom bot named name.
func WeComBot(name string, c WeComConfig) BotConfig {
	data, _ := json.Marshal(c) // strings and a number: cannot fail
	return BotConfig{Name: name, Platform: adapter.PlatformWeCom, Config: data}
}

// GraphBot returns the BotConfig of a Microsoft Graph bot named name.
func GraphBot(name string, c GraphConfig) BotConfig {
	data, _ := json.Marshal(c) // strings and string slices: cannot fail
	return BotConfig{Name: name, Platform: adapter.PlatformGraph, Config: data}
}

// decodeStrict decodes the JSON object data into v (a pointer to a struct), refusing keys
// that are not v's and data after the object.
func decodeStrict(platform string, data []byte, v any) error {
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(data, &obj); err != nil {
		return fmt.Errorf("%s config: %w", platform, err)
	}
	known := jsonKeys(v)
	var unknown []string
	for k := range obj {
		if !slices.Contains(known, k) {
			unknown = append(unknown, strconv.Quote(k))
		}
	}
	if len(unknown) > 0 {
		slices.Sort(unknown)
		noun := "key"
		if len(unknown) > 1 {
			noun = "keys"
		}
		return fmt.Errorf("%s config: unknown %s %s; expected %s", platform, noun, strings.Join(unknown, ", "), strings.Join(known, ", "))
	}
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("%s config: %w", platform, err)
	}
	return nil
}

// jsonKeys lists the JSON keys of the struct v points to, in field order.
func jsonKeys(v any) []string {
	t := reflect.TypeOf(v).Elem()
	keys := make([]string, 0, t.NumField())
	for i := range t.NumField() {
		name, _, _ := strings.Cut(t.Field(i).Tag.Get("json"), ",")
		if name != "" && name != "-" {
			keys = append(keys, name)
		}
	}
	return keys
}
