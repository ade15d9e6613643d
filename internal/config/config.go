// Package config loads and validates adapter-host's config file (bots.yaml): ${VAR}
// expansion, unknown keys refused naming the expected ones, and errors that name the key and
// never quote a secret. The platform sections are the plugin's typed configs.
package config

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"net"
	"net/url"
	"os"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/seed-a64d9e1f/chatwire/adapter"
	"github.com/seed-a64d9e1f/chatwire/adapter/wecom"
	"github.com/seed-a64d9e1f/chatwire/internal/platforms"
	"github.com/seed-a64d9e1f/chatwire/plugin"
)

// Config is the host configuration file (YAML). ${VAR} anywhere in a value is replaced by
// the environment variable VAR; an unset variable is an error.
type Config struct {
	Server ServerConfig `yaml:"server"`
	Store  StoreConfig  `yaml:"store"`
	Plugin PluginConfig `yaml:"plugin"`
	Bots   []BotConfig  `yaml:"bots"`

	// raw maps the path of every value that came from ${VAR} expansion to its text before
	// expansion, so error messages quote "${WECOM_SECRET}", never the secret itself.
	raw map[string]expansion
}

// expansion is a value that came from ${VAR} expansion: the text as written and the result.
type expansion struct{ raw, value string }

// show quotes the value at path for an error message: the raw ${VAR} text if the value came
// from the environment, else v.
func (c *Config) show(path, v string) string {
	if r, ok := c.raw[path]; ok {
		return strconv.Quote(r.raw)
	}
	return strconv.Quote(v)
}

// ServerConfig is the HTTP listener.
type ServerConfig struct {
	// Listen is host:port. Empty means 127.0.0.1:8080.
	Listen string `yaml:"listen"`
	// APIKeys are accepted as "Authorization: Bearer <key>" on /v1. Empty is allowed only on
	// a loopback listener.
	APIKeys []string `yaml:"api_keys"`
	// ReadTimeout bounds reading a request, headers and body (a send with attachments is
	// up to 96 MiB). A duration such as "2m"; empty means 2m.
	ReadTimeout string `yaml:"read_timeout"`
	// IdleTimeout is how long a keep-alive connection may wait for its next request. Empty
	// means 2m.
	IdleTimeout string `yaml:"idle_timeout"`
	// WebhookTimeout bounds a platform callback, from reading its body to the plugin's
	// answer: past it the platform gets 503 and redelivers (WeCom and Graph give up after
	// about 5 s). Empty means 4s.
	WebhookTimeout string `yaml:"webhook_timeout"`
	// MaxProcs is how many CPUs run the host's Go code (GOMAXPROCS): empty or "auto" means one
	// while one is enough and every CPU once the host is busy (internal/procs), "0" means
	// every CPU always (Go's default), a number that many. A GOMAXPROCS set in the
	// environment wins over it.
	MaxProcs string `yaml:"max_procs"`
	// BodyMemoryMiB bounds the request bodies held in memory at once, in MiB: a request
	// whose body does not fit beside the others gets 503 with Retry-After, one larger than
	// the whole budget 413. 0 means 256 (a largest send is 96).
	BodyMemoryMiB int `yaml:"body_memory_mib"`
}

// Defaults of ServerConfig.
const (
	defaultReadTimeout    = 2 * time.Minute
	defaultIdleTimeout    = 2 * time.Minute
	DefaultWebhookTimeout = 4 * time.Second
	defaultBodyMemoryMiB  = 256
)

// Timeouts returns the server's timeouts, defaults resolved. It assumes validate passed.
func (s ServerConfig) Timeouts() (read, idle, webhook time.Duration) {
	parse := func(v string, def time.Duration) time.Duration {
		if d, err := time.ParseDuration(v); err == nil && d > 0 {
			return d
		}
		return def
	}
	return parse(s.ReadTimeout, defaultReadTimeout), parse(s.IdleTimeout, defaultIdleTimeout), parse(s.WebhookTimeout, DefaultWebhookTimeout)
}

// Procs returns server.max_procs: auto, or a fixed GOMAXPROCS (0: Go's default). It assumes
// validate passed.
func (s ServerConfig) Procs() (n int, auto bool) { return procsOf(s.MaxProcs) }

func procsOf(v string) (n int, auto bool) {
	if v == "" || v == "auto" {
		return 0, true
	}
	n, _ = strconv.Atoi(v)
	return n, false
}

// BodyMemory returns the body memory budget in bytes.
func (s ServerConfig) BodyMemory() int64 {
	if s.BodyMemoryMiB <= 0 {
		return defaultBodyMemoryMiB << 20
	}
	return int64(s.BodyMemoryMiB) << 20
}

// StoreConfig says where tokens and state live: Redis (shared by a fleet) or a directory
// (one host); neither means memory only. Redis is named by RedisURL (one node) or Redis (one
// node, Sentinel or Cluster), not both.
type StoreConfig struct {
	RedisURL  string       `yaml:"redis_url"`
	Redis     *RedisConfig `yaml:"redis"`
	KeyPrefix string       `yaml:"key_prefix"`
	Dir       string       `yaml:"dir"`
	// EncryptionKey, 32 bytes as base64 (standard or URL alphabet, padded or not) or 64 hex
	// digits, seals the tokens and refresh tokens stored in Redis with AES-256-GCM.
	// PreviousEncryptionKeys are still read, never written (key rotation). AcceptPlaintext
	// reads entries stored in the clear while encryption is being turned on. Secrets.
	EncryptionKey          string   `yaml:"encryption_key"`
	PreviousEncryptionKeys []string `yaml:"previous_encryption_keys"`
	AcceptPlaintext        bool     `yaml:"accept_plaintext"`
}

// RedisConfig names Redis nodes: Addrs with MasterName are Sentinel addresses; several Addrs
// without it are Cluster nodes; one is a single node. Password and SentinelPassword are
// secrets.
type RedisConfig struct {
	Addrs            []string `yaml:"addrs"`
	MasterName       string   `yaml:"master_name"`
	Username         string   `yaml:"username"`
	Password         string   `yaml:"password"`
	SentinelPassword string   `yaml:"sentinel_password"`
	DB               int      `yaml:"db"`
	TLS              bool     `yaml:"tls"`
}

// UsesRedis reports whether the store is on Redis.
func (s StoreConfig) UsesRedis() bool { return s.RedisURL != "" || s.Redis != nil }

// Plugin returns the store configuration sent to the plugin, keys decoded. It fails only on
// a key that validate rejects.
func (s StoreConfig) Plugin() (plugin.StoreConfig, error) {
	sc := plugin.StoreConfig{RedisURL: s.RedisURL, KeyPrefix: s.KeyPrefix, Dir: s.Dir, AcceptPlaintext: s.AcceptPlaintext}
	if r := s.Redis; r != nil {
		sc.RedisAddrs, sc.RedisMasterName, sc.RedisUsername, sc.RedisPassword = r.Addrs, r.MasterName, r.Username, r.Password
		sc.RedisSentinelPassword, sc.RedisDB, sc.RedisTLS = r.SentinelPassword, r.DB, r.TLS
	}
	if s.EncryptionKey != "" {
		k, err := parseStoreKey(s.EncryptionKey)
		if err != nil {
			return sc, fmt.Errorf("store.encryption_key: %w", err)
		}
		sc.EncryptionKey = k
	}
	for i, ks := range s.PreviousEncryptionKeys {
		k, err := parseStoreKey(ks)
		if err != nil {
			return sc, fmt.Errorf("store.previous_encryption_keys[%d]: %w", i, err)
		}
		sc.PreviousEncryptionKeys = append(sc.PreviousEncryptionKeys, k)
	}
	return sc, nil
}

// parseStoreKey decodes a 32-byte store encryption key written as 64 hex digits or as base64
// (standard or URL alphabet, padded or not). Its errors give lengths, never the text.
func parseStoreKey(s string) ([]byte, error) {
	s = strings.TrimSpace(s)
	if isHex(s) && len(s)%2 == 0 {
		if len(s) != 64 {
			return nil, fmt.Errorf("not a key: want 32 bytes as base64 or 64 hex digits, got %d bytes", len(s)/2)
		}
		return hex.DecodeString(s)
	}
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.URLEncoding, base64.RawStdEncoding, base64.RawURLEncoding} {
		if b, err := enc.DecodeString(s); err == nil {
			if len(b) != 32 {
				return nil, fmt.Errorf("not a key: want 32 bytes as base64 or 64 hex digits, got %d bytes", len(b))
			}
			return b, nil
		}
	}
	return nil, fmt.Errorf("want 32 bytes as base64 or 64 hex digits, got %d characters that are neither", len(s))
}

func isHex(s string) bool {
	for _, c := range s {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
			return false
		}
	}
	return s != ""
}

// PluginConfig names the plugin executable. Empty Path means this executable ("plugin"
// subcommand).
type PluginConfig struct {
	Path string `yaml:"path"`
	// MaxProcs is how many CPUs run the plugin process's Go code (its GOMAXPROCS): empty or
	// "auto" means one while one is enough and every CPU once it is busy (see
	// server.max_procs), "0" every CPU always (Go's default), a number that many.
	MaxProcs string `yaml:"max_procs"`
}

// Procs returns plugin.max_procs: auto, or a fixed GOMAXPROCS (0: Go's default). It assumes
// validate passed.
func (p PluginConfig) Procs() (n int, auto bool) { return procsOf(p.MaxProcs) }

// BotConfig is one bot.
type BotConfig struct {
	Name     string              `yaml:"name"`
	Platform string              `yaml:"platform"`
	WeCom    *plugin.WeComConfig `yaml:"wecom"`
	Graph    *plugin.GraphConfig `yaml:"graph"`
	Teams    *platforms.Teams    `yaml:"teams"`
	// WeComAIBot and WeComRobot are the sections of platforms wecom_aibot and wecom_robot.
	WeComAIBot *platforms.WeComAIBot `yaml:"wecom_aibot"`
	WeComRobot *platforms.WeComRobot `yaml:"wecom_robot"`
	Deliver    *DeliverConfig        `yaml:"deliver"`
	Pacing     *PacingConfig         `yaml:"pacing"`
}

// DeliverConfig makes the host POST every event to a URL, signed with the secret, and sets
// how events reach consumer groups.
type DeliverConfig struct {
	WebhookURL    string `yaml:"webhook_url"`
	WebhookSecret string `yaml:"webhook_secret"`
	// Concurrency is how many events may be POSTed at once, each for a different chat;
	// events of one chat always arrive one after the other, in order. 0 means 4; 1 delivers
	// every event of the bot in order.
	Concurrency int `yaml:"concurrency"`
	// AckTimeout is how long an event a consumer group handed to one consumer
	// (GET /v1/bots/{bot}/events?group=NAME) may stay unacknowledged before it goes to
	// another consumer of the group. Empty means 30s. A deliver block may hold only this.
	AckTimeout string `yaml:"ack_timeout"`
}

// AckTimeout returns deliver.ack_timeout, 0 (the log's default, 30 s) when unset.
func (b BotConfig) AckTimeout() time.Duration {
	if b.Deliver == nil {
		return 0
	}
	d, _ := time.ParseDuration(b.Deliver.AckTimeout)
	return d
}

// ConfigError lists every problem found in a config file, each prefixed with its field path.
type ConfigError struct {
	File     string
	Problems []string
}

func (e *ConfigError) Error() string {
	return fmt.Sprintf("config %s:\n  %s", e.File, strings.Join(e.Problems, "\n  "))
}

// Load reads, expands, checks and validates the config file at path.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return Parse(path, data, os.LookupEnv)
}

// Parse parses data as a config named name, expanding ${VAR} with lookup.
func Parse(name string, data []byte, lookup func(string) (string, bool)) (*Config, error) {
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return nil, &ConfigError{File: name, Problems: []string{strings.TrimPrefix(err.Error(), "yaml: ")}}
	}
	cerr := &ConfigError{File: name}
	if len(root.Content) == 0 {
		cerr.Problems = append(cerr.Problems, "the file is empty")
		return nil, cerr
	}
	doc := root.Content[0]
	raw := map[string]expansion{}
	check(doc, reflect.TypeFor[Config](), "", lookup, raw, cerr)
	if len(cerr.Problems) > 0 {
		return nil, cerr
	}
	// The tree is clean: decode it (KnownFields as a backstop).
	expanded, err := yaml.Marshal(doc)
	if err != nil {
		return nil, err
	}
	dec := yaml.NewDecoder(bytes.NewReader(expanded))
	dec.KnownFields(true)
	var cfg Config
	if err := dec.Decode(&cfg); err != nil {
		return nil, &ConfigError{File: name, Problems: decodeProblems(err, expanded, raw)}
	}
	cfg.raw = raw
	cfg.Defaults()
	cfg.validate(cerr)
	if len(cerr.Problems) > 0 {
		return nil, cerr
	}
	return &cfg, nil
}

// decodeProblems returns the problems to report for err, from decoding expanded. The decoder
// quotes values, shortened to their first 7 characters and "...", so an error about a value
// from the environment is replaced by one naming the field and the ${VAR}s, never quoting
// any of the value; the other errors are scrubbed of every expanded value all the same.
func decodeProblems(err error, expanded []byte, raw map[string]expansion) []string {
	var msgs []string
	if te := (*yaml.TypeError)(nil); errors.As(err, &te) {
		msgs = te.Errors // "line N: ..."
	} else {
		msgs = []string{err.Error()}
	}
	fromEnv := map[int]string{} // line of expanded → path of a value from the environment there
	if len(raw) > 0 {
		var root yaml.Node
		if yaml.Unmarshal(expanded, &root) == nil && len(root.Content) > 0 {
			valueLines(root.Content[0], "", raw, fromEnv)
		}
	}
	var out []string
	for _, m := range msgs {
		var line int
		if _, serr := fmt.Sscanf(m, "line %d:", &line); serr == nil {
			if path, ok := fromEnv[line]; ok {
				vars := strings.Join(envRef.FindAllString(raw[path].raw, -1), ", ")
				out = append(out, fmt.Sprintf("%s: the value set from %s is not one this field takes (the value is not shown)", path, vars))
				continue
			}
		} else if len(raw) > 0 {
			// No line to tell which value it is about: it may quote any of them.
			out = append(out, "the config cannot be decoded (the decoder's message is not shown: it may quote a value set from the environment)")
			continue
		}
		for _, x := range raw {
			if x.value != "" {
				m = strings.ReplaceAll(m, x.value, x.raw)
			}
		}
		out = append(out, m)
	}
	return out
}

// valueLines records in lines the line of every scalar value under n whose path (as check
// names it) is in raw.
func valueLines(n *yaml.Node, path string, raw map[string]expansion, lines map[int]string) {
	switch n.Kind {
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			valueLines(n.Content[i+1], join(path, n.Content[i].Value), raw, lines)
		}
	case yaml.SequenceNode:
		for i, c := range n.Content {
			valueLines(c, fmt.Sprintf("%s[%d]", path, i), raw, lines)
		}
	case yaml.ScalarNode:
		if _, ok := raw[path]; ok {
			lines[n.Line] = path
		}
	}
}

var envRef = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)\}`)

// check walks n against type t: unknown keys, scalars of the wrong type and unset ${VAR}s
// are reported with their path; ${VAR} references are expanded in place, and raw records the
// text before expansion by path. Problems never quote an expanded value: it may be a secret.
func check(n *yaml.Node, t reflect.Type, path string, lookup func(string) (string, bool), raw map[string]expansion, cerr *ConfigError) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	problem := func(format string, args ...any) {
		p := path
		if p == "" {
			p = "(top level)"
		}
		cerr.Problems = append(cerr.Problems, p+": "+fmt.Sprintf(format, args...))
	}
	if n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return // an empty section or value: the zero value
	}
	switch t.Kind() {
	case reflect.Struct:
		if n.Kind != yaml.MappingNode {
			problem("want a mapping (key: value lines), got %s", describe(n))
			return
		}
		fields := map[string]reflect.StructField{}
		var names []string
		for i := range t.NumField() {
			f := t.Field(i)
			tag := strings.Split(f.Tag.Get("yaml"), ",")[0]
			if tag == "" || tag == "-" {
				continue
			}
			fields[tag] = f
			names = append(names, tag)
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i].Value, n.Content[i+1]
			f, ok := fields[k]
			if !ok {
				problem("unknown key %q (known keys: %s)", k, strings.Join(names, ", "))
				continue
			}
			check(v, f.Type, join(path, k), lookup, raw, cerr)
		}
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			problem("want a list, got %s", describe(n))
			return
		}
		for i, c := range n.Content {
			check(c, t.Elem(), fmt.Sprintf("%s[%d]", path, i), lookup, raw, cerr)
		}
	default:
		if n.Kind != yaml.ScalarNode {
			problem("want a single value, got %s", describe(n))
			return
		}
		var missing []string
		expanded := envRef.ReplaceAllStringFunc(n.Value, func(ref string) string {
			name := envRef.FindStringSubmatch(ref)[1]
			v, ok := lookup(name)
			if !ok {
				missing = append(missing, name)
			}
			return v
		})
		if len(missing) > 0 {
			problem("environment variable %s is not set", strings.Join(missing, ", "))
			return
		}
		shown := n.Value // what problems quote: the text as written, ${VAR} unexpanded
		if expanded != n.Value {
			raw[path] = expansion{raw: n.Value, value: expanded}
			n.Value, n.Tag, n.Style = expanded, "!!str", yaml.DoubleQuotedStyle
			if t.Kind() != reflect.String {
				n.Tag = "" // let the decoder resolve the expanded number or bool
				n.Style = 0
			}
		}
		switch t.Kind() {
		case reflect.Int, reflect.Int64, reflect.Int32:
			if _, err := strconv.ParseInt(n.Value, 10, 64); err != nil {
				problem("want a whole number, got %q", shown)
			}
		case reflect.Bool:
			if _, err := strconv.ParseBool(n.Value); err != nil {
				problem("want true or false, got %q", shown)
			}
		case reflect.String:
			n.Tag = "!!str" // 1000002 or yes as a string field stays text
		}
	}
}

func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	}
	return fmt.Sprintf("%q", n.Value)
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// Validate fills the defaults of a Config built in code (as Parse does for a file) and
// checks it as Parse would: a *ConfigError lists every problem.
func (c *Config) Validate() error {
	c.Defaults()
	cerr := &ConfigError{}
	c.validate(cerr)
	if len(cerr.Problems) > 0 {
		return cerr
	}
	return nil
}

// Defaults fills the defaults of the values left empty (Parse and Validate call it).
func (c *Config) Defaults() {
	if c.Server.Listen == "" {
		c.Server.Listen = "127.0.0.1:8080"
	}
	if c.Store.KeyPrefix == "" {
		c.Store.KeyPrefix = "chatwire"
	}
	for i := range c.Bots {
		teamsDefaults(c.Bots[i].Teams)
		if g := c.Bots[i].Graph; g != nil {
			if g.Auth == "" {
				g.Auth = "delegated"
			}
			if len(g.Subscribe) == 0 && g.NotificationURL != "" {
				if g.Auth == "delegated" {
					g.Subscribe = []string{"chats", "mail"}
				} else {
					g.Subscribe = []string{"mail"}
				}
			}
		}
	}
}

var botName = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,62}$`)

func (c *Config) validate(cerr *ConfigError) {
	p := func(path, format string, args ...any) {
		cerr.Problems = append(cerr.Problems, path+": "+fmt.Sprintf(format, args...))
	}
	host, _, err := net.SplitHostPort(c.Server.Listen)
	if err != nil {
		p("server.listen", "want host:port, got %s", c.show("server.listen", c.Server.Listen))
	}
	for i, k := range c.Server.APIKeys {
		at := fmt.Sprintf("server.api_keys[%d]", i)
		switch {
		case strings.TrimSpace(k) == "":
			p(at, "empty key (is its environment variable set to something?)")
		case strings.TrimSpace(k) != k:
			// A Bearer token never carries it, so such a key could never match.
			from := ""
			if vars := c.vars(at); vars != "" {
				from = " (set from " + vars + ": a trailing newline from a file?)"
			}
			p(at, "surrounding whitespace (spaces, tabs or newlines) in the key%s: no request could ever match it; remove it", from)
		case len(k) < 16:
			p(at, "too short: use at least 16 random characters")
		}
	}
	for _, f := range []struct{ path, v string }{{"server.max_procs", c.Server.MaxProcs}, {"plugin.max_procs", c.Plugin.MaxProcs}} {
		if f.v == "" || f.v == "auto" {
			continue
		}
		if n, err := strconv.Atoi(f.v); err != nil || n < 0 {
			p(f.path, "want auto (one CPU while one is enough, every CPU when busy), 0 (every CPU) or a number of CPUs, got %s", c.show(f.path, f.v))
		}
	}
	for _, f := range []struct{ path, v string }{{"server.read_timeout", c.Server.ReadTimeout},
		{"server.idle_timeout", c.Server.IdleTimeout}, {"server.webhook_timeout", c.Server.WebhookTimeout}} {
		if f.v == "" {
			continue
		}
		if d, err := time.ParseDuration(f.v); err != nil || d < time.Millisecond {
			p(f.path, "want a duration such as 30s, got %s", c.show(f.path, f.v))
		}
	}
	if m := c.Server.BodyMemoryMiB; m < 0 || m > 1<<20 {
		p("server.body_memory_mib", "%d: want 1 to %d, or 0 for %d", m, 1<<20, defaultBodyMemoryMiB)
	}
	if err == nil && len(c.Server.APIKeys) == 0 && !IsLoopback(host) {
		p("server.api_keys", "required when server.listen is not a loopback address %s: without keys anyone who can reach it can send as your bots", c.show("server.listen", c.Server.Listen))
	}
	if c.Store.RedisURL != "" && c.Store.Dir != "" {
		p("store", "set redis_url or dir, not both")
	}
	if c.Store.RedisURL != "" {
		if u, err := url.Parse(c.Store.RedisURL); err != nil || (u.Scheme != "redis" && u.Scheme != "rediss") {
			p("store.redis_url", "want redis://host:port/db or rediss://…")
		}
	}
	c.validateStore(p)
	if len(c.Bots) == 0 {
		p("bots", "no bots configured")
	}
	seen := map[string]bool{}
	for i, b := range c.Bots {
		at := fmt.Sprintf("bots[%d]", i)
		switch {
		case b.Name == "":
			p(at+".name", "required")
		case !botName.MatchString(b.Name):
			p(at+".name", "%s: use lower-case letters, digits, - and _ (it appears in URLs)", c.show(at+".name", b.Name))
		case seen[b.Name]:
			p(at+".name", "%s is used by another bot", c.show(at+".name", b.Name))
		}
		seen[b.Name] = true
		switch b.Platform {
		case adapter.PlatformWeCom:
			if b.Graph != nil {
				p(at+".graph", "not allowed on a wecom bot")
			}
			if b.WeCom == nil {
				p(at+".wecom", "required for platform wecom")
			} else {
				c.validateWeCom(at+".wecom", b.WeCom, p)
			}
		case adapter.PlatformGraph:
			if b.WeCom != nil {
				p(at+".wecom", "not allowed on a graph bot")
			}
			if b.Graph == nil {
				p(at+".graph", "required for platform graph")
			} else {
				c.validateGraph(at+".graph", b.Graph, p)
			}
		case adapter.PlatformTeams:
			c.validateTeamsBot(at, b, p)
		case adapter.PlatformWeComAIBot, adapter.PlatformWeComRobot:
			c.validateWeComBot(at, b, p)
		case "":
			p(at+".platform", "required: wecom, graph, teams, wecom_aibot or wecom_robot")
		default:
			p(at+".platform", "%s: want wecom, graph, teams, wecom_aibot or wecom_robot", c.show(at+".platform", b.Platform))
		}
		if b.Teams != nil && b.Platform != adapter.PlatformTeams && b.Platform != "" {
			p(at+".teams", "not allowed on a %s bot", b.Platform)
		}
		if b.Platform != adapter.PlatformWeComAIBot && b.WeComAIBot != nil {
			p(at+".wecom_aibot", "only on a wecom_aibot bot")
		}
		if b.Platform != adapter.PlatformWeComRobot && b.WeComRobot != nil {
			p(at+".wecom_robot", "only on a wecom_robot bot")
		}
		if d := b.Deliver; d != nil {
			switch u, err := url.Parse(d.WebhookURL); {
			case d.WebhookURL == "" && (d.AckTimeout == "" || d.WebhookSecret != "" || d.Concurrency != 0):
				p(at+".deliver.webhook_url", "required")
			case d.WebhookURL == "": // only ack_timeout: events go to SSE consumers only
			case err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "":
				p(at+".deliver.webhook_url", "want an http or https URL")
			}
			if d.WebhookSecret == "" && d.WebhookURL != "" {
				p(at+".deliver.webhook_secret", "required: events are signed with it")
			}
			if d.AckTimeout != "" {
				if t, err := time.ParseDuration(d.AckTimeout); err != nil || t < 100*time.Millisecond {
					p(at+".deliver.ack_timeout", "want a duration of at least 100ms such as 30s, got %s", c.show(at+".deliver.ack_timeout", d.AckTimeout))
				}
			}
			if d.Concurrency < 0 || d.Concurrency > 64 {
				p(at+".deliver.concurrency", "%d: want 1 to 64 (0 means 4)", d.Concurrency)
			}
		}
		b.Pacing.validate(at+".pacing", b.Platform, p)
	}
}

// validateStore checks store.redis and the encryption keys. Its problems never quote a key or
// a password, only lengths and the ${VAR}s they came from.
func (c *Config) validateStore(p func(string, string, ...any)) {
	st := c.Store
	if st.RedisURL != "" && st.Redis != nil {
		p("store", "set redis_url or redis, not both")
	}
	if st.Dir != "" && st.Redis != nil {
		p("store", "set redis or dir, not both")
	}
	if r := st.Redis; r != nil {
		at := "store.redis"
		switch {
		case len(r.Addrs) == 0 && r.MasterName != "":
			p(at+".master_name", "needs %s.addrs: the addresses of the Sentinels that know this master", at)
		case len(r.Addrs) == 0:
			p(at+".addrs", "required: one host:port (a single node), the Sentinels' with master_name, or several Cluster nodes'")
		}
		for i, a := range r.Addrs {
			ap := fmt.Sprintf("%s.addrs[%d]", at, i)
			if h, port, err := net.SplitHostPort(a); err != nil || h == "" {
				p(ap, "want host:port, got %s", c.show(ap, a))
			} else if n, err := strconv.Atoi(port); err != nil || n <= 0 || n > 65535 {
				p(ap, "want host:port with a port number, got %s", c.show(ap, a))
			}
		}
		cluster := len(r.Addrs) > 1 && r.MasterName == ""
		switch {
		case r.DB < 0 || r.DB > math.MaxInt32:
			p(at+".db", "%d: want 0 to %d", r.DB, math.MaxInt32)
		case r.DB != 0 && cluster:
			p(at+".db", "not with Cluster (several addrs without master_name): a Redis Cluster has only database 0")
		}
		if r.SentinelPassword != "" && r.MasterName == "" {
			p(at+".sentinel_password", "only with master_name: it is the Sentinels' own password")
		}
	}
	keyProblem := func(path, v string) {
		if v == "" {
			if _, ok := c.raw[path]; ok {
				p(path, "empty (is %s set to something?)", c.vars(path))
			}
			return
		}
		if _, err := parseStoreKey(v); err != nil {
			if vars := c.vars(path); vars != "" {
				p(path, "%v (set from %s)", err, vars)
			} else {
				p(path, "%v", err)
			}
		}
	}
	keyProblem("store.encryption_key", st.EncryptionKey)
	for i, k := range st.PreviousEncryptionKeys {
		path := fmt.Sprintf("store.previous_encryption_keys[%d]", i)
		if k == "" {
			if _, ok := c.raw[path]; !ok {
				p(path, "empty")
				continue
			}
		}
		keyProblem(path, k)
	}
	encrypting := st.EncryptionKey != "" || len(st.PreviousEncryptionKeys) > 0 || st.AcceptPlaintext
	if encrypting && !st.UsesRedis() {
		p("store.encryption_key", "the encryption keys need a Redis store (store.redis_url or store.redis): they seal what is stored in Redis; store.dir and memory are not encrypted")
	}
	if st.EncryptionKey == "" {
		if len(st.PreviousEncryptionKeys) > 0 {
			p("store.previous_encryption_keys", "needs store.encryption_key: previous keys are only read, entries are written with the current key")
		}
		if st.AcceptPlaintext {
			p("store.accept_plaintext", "has no effect without store.encryption_key")
		}
	}
}

// vars names the ${VAR}s the value at path came from ("" if it was written in the file),
// never their values.
func (c *Config) vars(path string) string {
	r, ok := c.raw[path]
	if !ok {
		return ""
	}
	return strings.Join(envRef.FindAllString(r.raw, -1), ", ")
}

func (c *Config) validateWeCom(at string, w *platforms.WeCom, p func(string, string, ...any)) {
	if w.CorpID == "" {
		p(at+".corp_id", "required")
	}
	if w.CorpSecret == "" {
		p(at+".corp_secret", "required")
	}
	if w.AgentID <= 0 {
		p(at+".agent_id", "required: the app's AgentId, a positive number")
	}
	if (w.Token == "") != (w.EncodingAESKey == "") {
		p(at, "set both token and encoding_aes_key (to receive messages) or neither")
	}
	if w.EncodingAESKey != "" && len(w.EncodingAESKey) != 43 {
		p(at+".encoding_aes_key", "must be 43 characters (as shown in the WeCom admin console)")
	}
	if w.DuplicateCheck != "" {
		if d, err := time.ParseDuration(w.DuplicateCheck); err != nil || d < time.Second || d > wecom.MaxDuplicateCheck {
			p(at+".duplicate_check", "want a duration from 1s to 4h such as 30m (WeCom's duplicate_check_interval), got %s", c.show(at+".duplicate_check", w.DuplicateCheck))
		}
	}
	c.checkBase(at+".api_base", w.APIBase, p)
}

func (c *Config) validateGraph(at string, g *platforms.Graph, p func(string, string, ...any)) {
	store := c.Store
	if g.TenantID == "" {
		p(at+".tenant_id", "required")
	}
	if g.ClientID == "" {
		p(at+".client_id", "required")
	}
	switch g.Auth {
	case "delegated":
		if g.User == "" {
			p(at+".user", "required for delegated auth: the account the bot acts as")
		}
		if store.Dir == "" && !store.UsesRedis() {
			p("store", "a delegated graph bot (%s) needs store.dir or store.redis_url (or store.redis) to keep its refresh token", at)
		}
	case "client_credentials":
		if g.ClientSecret == "" {
			p(at+".client_secret", "required for client_credentials")
		}
		for _, s := range g.Subscribe {
			if s == "chats" {
				p(at+".subscribe", "chats needs delegated auth (Teams chat messages cannot be read with app-only tokens)")
			}
		}
	default:
		p(at+".auth", "%s: want delegated or client_credentials", c.show(at+".auth", g.Auth))
	}
	for i, s := range g.Subscribe {
		if s != "chats" && s != "mail" {
			sp := fmt.Sprintf("%s.subscribe[%d]", at, i)
			p(sp, "%s: want chats or mail", c.show(sp, s))
		}
	}
	if g.NotificationURL != "" {
		if g.ClientState == "" {
			p(at+".client_state", "required with notification_url: it proves notifications come from Microsoft")
		}
		if u, err := url.Parse(g.NotificationURL); err != nil || u.Scheme != "https" && !IsLoopback(u.Hostname()) {
			p(at+".notification_url", "want an https URL (Graph only calls https)")
		}
	}
	if g.PollInterval != "" {
		if d, err := time.ParseDuration(g.PollInterval); err != nil || d < 100*time.Millisecond {
			p(at+".poll_interval", "want a duration of at least 100ms such as 30s, got %s", c.show(at+".poll_interval", g.PollInterval))
		}
	}
	c.checkBase(at+".login_base", g.LoginBase, p)
	c.checkBase(at+".graph_base", g.GraphBase, p)
}

func (c *Config) checkBase(at, base string, p func(string, string, ...any)) {
	if base == "" {
		return
	}
	if u, err := url.Parse(base); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		p(at, "want an http or https URL, got %s", c.show(at, base))
	}
}

func IsLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
