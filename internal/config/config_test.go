package config

import (
	"strings"
	"testing"
)

const goodConfig = `
server: {listen: "127.0.0.1:8080", api_keys: ["${KEY}"]}
store: {dir: ./state}
bots:
  - name: hr
    platform: wecom
    wecom: {corp_id: ww1, corp_secret: "${WECOM_SECRET}", agent_id: 1000002,
            token: tok, encoding_aes_key: "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"}
    deliver: {webhook_url: "http://127.0.0.1:9000/events", webhook_secret: "${HOOK}"}
  - name: teams
    platform: graph
    graph: {tenant_id: t, client_id: c, client_secret: "${GRAPH_SECRET}", auth: delegated,
            user: bot@contoso.com, notification_url: "https://bot.example.com/webhook/teams",
            client_state: cs}
`

func envOf(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

var goodEnv = map[string]string{"KEY": "0123456789abcdef0123", "WECOM_SECRET": "s3cret: with # chars", "HOOK": "h", "GRAPH_SECRET": "g"}

func TestParseConfig(t *testing.T) {
	cfg, err := Parse("c.yaml", []byte(goodConfig), envOf(goodEnv))
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.Bots[0].WeCom.CorpSecret; got != "s3cret: with # chars" {
		t.Errorf("corp_secret = %q; want the env value verbatim", got)
	}
	if cfg.Bots[0].WeCom.AgentID != 1000002 {
		t.Errorf("agent_id = %d", cfg.Bots[0].WeCom.AgentID)
	}
	if g := cfg.Bots[1].Graph; len(g.Subscribe) != 2 {
		t.Errorf("subscribe default = %v; want [chats mail]", g.Subscribe)
	}
}

func TestParseConfigErrors(t *testing.T) {
	tests := []struct {
		name   string
		config string
		env    map[string]string
		want   string
	}{
		{"unknown top key", "bot: []", nil, `(top level): unknown key "bot"`},
		{"unknown nested key", strings.Replace(goodConfig, "corp_id: ww1", "corpid: ww1", 1), goodEnv, `bots[0].wecom: unknown key "corpid"`},
		{"missing env", goodConfig, map[string]string{"KEY": "0123456789abcdef0123", "HOOK": "h", "GRAPH_SECRET": "g"}, "bots[0].wecom.corp_secret: environment variable WECOM_SECRET is not set"},
		{"empty secret", goodConfig, map[string]string{"KEY": "0123456789abcdef0123", "WECOM_SECRET": "", "HOOK": "h", "GRAPH_SECRET": "g"}, "bots[0].wecom.corp_secret: required"},
		{"bad number", strings.Replace(goodConfig, "agent_id: 1000002", "agent_id: abc", 1), goodEnv, `bots[0].wecom.agent_id: want a whole number, got "abc"`},
		{"bad platform", strings.Replace(goodConfig, "platform: graph", "platform: slack", 1), goodEnv, `bots[1].platform: "slack": want wecom, graph, teams, wecom_aibot or wecom_robot`},
		{"duplicate name", strings.Replace(goodConfig, "name: teams", "name: hr", 1), goodEnv, `bots[1].name: "hr" is used by another bot`},
		{"no keys off loopback", strings.Replace(goodConfig, `api_keys: ["${KEY}"]`, "api_keys: []", 1) + "\n", goodEnv, ""},
		{"no keys public", strings.Replace(strings.Replace(goodConfig, `api_keys: ["${KEY}"]`, "api_keys: []", 1), "127.0.0.1:8080", "0.0.0.0:8080", 1), goodEnv, "server.api_keys: required when server.listen is not a loopback address"},
		{"bad aes key", strings.Replace(goodConfig, "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG", "short", 1), goodEnv, "bots[0].wecom.encoding_aes_key: must be 43 characters"},
		{"bad delivery concurrency", strings.Replace(goodConfig, `webhook_secret: "${HOOK}"}`, `webhook_secret: "${HOOK}", concurrency: 100}`, 1), goodEnv, "bots[0].deliver.concurrency: 100: want 1 to 64 (0 means 4)"},
		{"bad ack timeout", strings.Replace(goodConfig, `webhook_secret: "${HOOK}"}`, `webhook_secret: "${HOOK}", ack_timeout: 5}`, 1), goodEnv, "bots[0].deliver.ack_timeout: want a duration of at least 100ms"},
		{"ack timeout alone", strings.Replace(goodConfig, `{webhook_url: "http://127.0.0.1:9000/events", webhook_secret: "${HOOK}"}`, `{ack_timeout: 1m}`, 1), goodEnv, ""},
		{"secret without url", strings.Replace(goodConfig, `webhook_url: "http://127.0.0.1:9000/events", `, `ack_timeout: 1m, `, 1), goodEnv, "bots[0].deliver.webhook_url: required"},
		{"bad webhook url", strings.Replace(goodConfig, "http://127.0.0.1:9000/events", "ftp://x", 1), goodEnv, "bots[0].deliver.webhook_url: want an http or https URL"},
		{"app-only chats", strings.Replace(goodConfig, "auth: delegated", "auth: client_credentials, subscribe: [chats]", 1), goodEnv, "bots[1].graph.subscribe: chats needs delegated auth"},
		{"bad poll interval", strings.Replace(goodConfig, "client_state: cs}", "client_state: cs, poll_interval: soon}", 1), goodEnv, `bots[1].graph.poll_interval: want a duration`},
		{"bad webhook timeout", strings.Replace(goodConfig, `api_keys: ["${KEY}"]`, `api_keys: ["${KEY}"], webhook_timeout: soon`, 1), goodEnv, `server.webhook_timeout: want a duration such as 30s, got "soon"`},
		{"bad read timeout", strings.Replace(goodConfig, `api_keys: ["${KEY}"]`, `api_keys: ["${KEY}"], read_timeout: "-1s"`, 1), goodEnv, `server.read_timeout: want a duration`},
		{"bad body memory", strings.Replace(goodConfig, `api_keys: ["${KEY}"]`, `api_keys: ["${KEY}"], body_memory_mib: -5`, 1), goodEnv, `server.body_memory_mib: -5: want 1 to`},
		{"good server timeouts", strings.Replace(goodConfig, `api_keys: ["${KEY}"]`, `api_keys: ["${KEY}"], webhook_timeout: 3s, read_timeout: 1m, idle_timeout: 90s, body_memory_mib: 512`, 1), goodEnv, ""},
		{"negative max_procs", goodConfig + "plugin: {max_procs: -1}\n", goodEnv, `plugin.max_procs: want auto (one CPU while one is enough, every CPU when busy), 0 (every CPU) or a number of CPUs, got "-1"`},
		{"max_procs not a number", goodConfig + "plugin: {max_procs: all}\n", goodEnv, `plugin.max_procs: want auto (one CPU while one is enough, every CPU when busy), 0 (every CPU) or a number of CPUs, got "all"`},
		{"negative server max_procs", withServerProcs("-1"), goodEnv, `server.max_procs: want auto (one CPU while one is enough, every CPU when busy), 0 (every CPU) or a number of CPUs, got "-1"`},
		{"server max_procs a word", withServerProcs("all"), goodEnv, `server.max_procs: want auto (one CPU while one is enough, every CPU when busy), 0 (every CPU) or a number of CPUs, got "all"`},
		{"list expected", "bots: {name: x}", nil, "bots: want a list"},
		{"not yaml", "bots: [", nil, "did not find expected"},
		{"empty", "", nil, "the file is empty"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("c.yaml", []byte(tc.config), envOf(tc.env))
			if tc.want == "" {
				if err != nil {
					t.Errorf("ParseConfig = %v; want nil", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("ParseConfig error = %v; want it to contain %q", err, tc.want)
			}
			for _, v := range tc.env {
				if len(v) > 3 && strings.Contains(err.Error(), v) {
					t.Errorf("error %q contains a secret", err)
				}
			}
		})
	}
}

// TestConfigErrorsHideExpandedValues puts a secret where it does not belong: every problem
// quotes the ${VAR} text as written, never the value it expanded to.
func TestConfigErrorsHideExpandedValues(t *testing.T) {
	const marker = "MARKER-s3cr3t-do-not-print"
	env := map[string]string{"KEY": "0123456789abcdef0123", "WECOM_SECRET": marker, "HOOK": "h", "GRAPH_SECRET": "g"}
	tests := []struct {
		name, from, to, want string
	}{
		{"agent_id", "agent_id: 1000002", `agent_id: "${WECOM_SECRET}"`, `bots[0].wecom.agent_id: want a whole number, got "${WECOM_SECRET}"`},
		{"listen", `listen: "127.0.0.1:8080"`, `listen: "${WECOM_SECRET}"`, `server.listen: want host:port, got "${WECOM_SECRET}"`},
		{"name", "name: teams", "name: ${WECOM_SECRET}", `bots[1].name: "${WECOM_SECRET}": use lower-case`},
		{"platform", "platform: graph", "platform: ${WECOM_SECRET}", `bots[1].platform: "${WECOM_SECRET}": want wecom, graph, teams, wecom_aibot or wecom_robot`},
		{"auth", "auth: delegated", `auth: "${WECOM_SECRET}"`, `bots[1].graph.auth: "${WECOM_SECRET}": want delegated`},
		{"api_base", "token: tok,", "token: tok, api_base: \"x${WECOM_SECRET}\",", `bots[0].wecom.api_base: want an http or https URL, got "x${WECOM_SECRET}"`},
		{"poll_interval", "client_state: cs}", `client_state: cs, poll_interval: "${WECOM_SECRET}"}`, `bots[1].graph.poll_interval: want a duration of at least 100ms such as 30s, got "${WECOM_SECRET}"`},
		{"subscribe", "client_state: cs}", `client_state: cs, subscribe: ["${WECOM_SECRET}"]}`, `bots[1].graph.subscribe[0]: "${WECOM_SECRET}": want chats or mail`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			config := strings.Replace(goodConfig, tc.from, tc.to, 1)
			if config == goodConfig {
				t.Fatalf("%q not in the config", tc.from)
			}
			_, err := Parse("c.yaml", []byte(config), envOf(env))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("ParseConfig error = %v; want it to contain %q", err, tc.want)
			}
			if err != nil && strings.Contains(err.Error(), marker) {
				t.Errorf("error prints the secret: %v", err)
			}
		})
	}
}

// TestAPIKeyWhitespaceRejected: a key with surrounding whitespace (a newline from a file, a
// pasted space) could never match a Bearer token; it stops the host at start with the
// field's path, without quoting the key (issue 11 item 8).
func TestAPIKeyWhitespaceRejected(t *testing.T) {
	const key = "0123456789abcdef0123"
	for _, v := range []string{key + "\n", " " + key, "\t" + key + " ", key + "\r\n"} {
		env := map[string]string{"KEY": v, "WECOM_SECRET": "s", "HOOK": "h", "GRAPH_SECRET": "g"}
		_, err := Parse("c.yaml", []byte(goodConfig), envOf(env))
		want := "server.api_keys[0]: surrounding whitespace"
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("key %q: ParseConfig error = %v; want it to contain %q", v, err, want)
			continue
		}
		if strings.Contains(err.Error(), key) {
			t.Errorf("error quotes the key: %v", err)
		}
	}
	// Written in the file rather than from the environment, too.
	config := strings.Replace(goodConfig, `api_keys: ["${KEY}"]`, `api_keys: ["ok-key-0123456789abcdef", " `+key+`"]`, 1)
	if _, err := Parse("c.yaml", []byte(config), envOf(goodEnv)); err == nil || !strings.Contains(err.Error(), "server.api_keys[1]: surrounding whitespace") {
		t.Errorf("ParseConfig error = %v; want server.api_keys[1] refused", err)
	}
}

// withServerProcs is goodConfig with server.max_procs set to v.
func withServerProcs(v string) string {
	return strings.Replace(goodConfig, `api_keys: ["${KEY}"]}`, `api_keys: ["${KEY}"], max_procs: `+v+`}`, 1)
}

// TestServerMaxProcs: server.max_procs unset or auto is auto (internal/procs chooses by load);
// 0 and a number are fixed.
func TestServerMaxProcs(t *testing.T) {
	for _, tc := range []struct {
		v    string
		n    int
		auto bool
	}{{"", 0, true}, {"auto", 0, true}, {"0", 0, false}, {"3", 3, false}} {
		c := goodConfig
		if tc.v != "" {
			c = withServerProcs(tc.v)
		}
		cfg, err := Parse("c.yaml", []byte(c), envOf(goodEnv))
		if err != nil {
			t.Fatal(err)
		}
		if n, auto := cfg.Server.Procs(); n != tc.n || auto != tc.auto {
			t.Errorf("max_procs %q: Procs() = %d, %v; want %d, %v", tc.v, n, auto, tc.n, tc.auto)
		}
	}
}

// TestPluginMaxProcs: plugin.max_procs unset or auto is auto (the plugin chooses by load, as
// the host does); 0 (Go's default, every CPU) and a number are kept.
func TestPluginMaxProcs(t *testing.T) {
	for _, tc := range []struct {
		yaml string
		n    int
		auto bool
	}{{"", 0, true}, {"plugin: {max_procs: auto}\n", 0, true}, {"plugin: {max_procs: 0}\n", 0, false}, {"plugin: {max_procs: 3}\n", 3, false}} {
		cfg, err := Parse("c.yaml", []byte(goodConfig+tc.yaml), envOf(goodEnv))
		if err != nil {
			t.Fatal(err)
		}
		if n, auto := cfg.Plugin.Procs(); n != tc.n || auto != tc.auto {
			t.Errorf("%q: Procs() = %d, %v; want %d, %v", tc.yaml, n, auto, tc.n, tc.auto)
		}
	}
}
