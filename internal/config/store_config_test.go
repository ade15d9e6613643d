package config

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// storeMarker is in every secret of the store tests: no error may contain it.
const storeMarker = "MARKER-do-not-print"

// storeConfig is a valid config with store replaced by the given YAML lines.
func storeConfig(store string) string {
	return "server: {listen: \"127.0.0.1:8080\"}\nstore:\n" + store + `
bots:
  - name: hr
    platform: wecom
    wecom: {corp_id: ww1, corp_secret: s, agent_id: 1000002}
`
}

func TestParseConfigStore(t *testing.T) {
	key := bytes.Repeat([]byte{0xA5}, 32)
	old := bytes.Repeat([]byte{0x5A}, 32)
	for name, text := range map[string]string{
		"hex":            hex.EncodeToString(key),
		"base64 std":     base64.StdEncoding.EncodeToString(key),
		"base64 raw url": base64.RawURLEncoding.EncodeToString(key),
	} {
		t.Run(name, func(t *testing.T) {
			env := map[string]string{"KEY": text, "OLD": base64.URLEncoding.EncodeToString(old), "PW": storeMarker}
			cfg, err := Parse("c.yaml", []byte(storeConfig(`  redis:
    addrs: ["10.0.0.1:26379", "10.0.0.2:26379"]
    master_name: mymaster
    username: bot
    password: "${PW}"
    sentinel_password: "${PW}"
    db: 2
    tls: true
  encryption_key: "${KEY}"
  previous_encryption_keys: ["${OLD}"]
  accept_plaintext: true`)), envOf(env))
			if err != nil {
				t.Fatal(err)
			}
			sc, err := cfg.Store.Plugin()
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(sc.EncryptionKey, key) || len(sc.PreviousEncryptionKeys) != 1 || !bytes.Equal(sc.PreviousEncryptionKeys[0], old) {
				t.Errorf("keys decoded wrong")
			}
			if strings.Join(sc.RedisAddrs, ",") != "10.0.0.1:26379,10.0.0.2:26379" || sc.RedisMasterName != "mymaster" || sc.RedisUsername != "bot" ||
				sc.RedisPassword != storeMarker || sc.RedisSentinelPassword != storeMarker || sc.RedisDB != 2 || !sc.RedisTLS || !sc.AcceptPlaintext || sc.KeyPrefix != "chatwire" {
				t.Errorf("store sent to the plugin lacks fields: addrs %v master %q db %d tls %v", sc.RedisAddrs, sc.RedisMasterName, sc.RedisDB, sc.RedisTLS)
			}
		})
	}
	// The existing forms still parse, with no keys.
	for _, store := range []string{`  redis_url: "redis://127.0.0.1:6379/0"`, "  dir: ./state", `  redis: {addrs: ["127.0.0.1:6379"]}`, `  redis: {addrs: [a:1, b:2, c:3]}`} {
		cfg, err := Parse("c.yaml", []byte(storeConfig(store)), envOf(nil))
		if err != nil {
			t.Errorf("%s: %v", store, err)
			continue
		}
		if sc, err := cfg.Store.Plugin(); err != nil || sc.EncryptionKey != nil || sc.PreviousEncryptionKeys != nil {
			t.Errorf("%s: plugin store has keys or fails (%v)", store, err)
		}
	}
}

func TestParseConfigStoreErrors(t *testing.T) {
	good := base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{1}, 32))
	env := map[string]string{
		"SHORT": storeMarker + "!",                                      // 20 characters, not base64
		"B64":   base64.StdEncoding.EncodeToString([]byte(storeMarker)), // 19 bytes
		"HEX":   hex.EncodeToString([]byte(storeMarker[:16])),           // 16 bytes
		"EMPTY": "",
		"PW":    storeMarker,
		"KEY":   good,
		"ONE":   "1", // ParseBool takes it, the YAML decoder does not
	}
	redis := `  redis_url: "redis://127.0.0.1:6379/0"` + "\n"
	tests := []struct{ name, store, want string }{
		{"key not base64", redis + `  encryption_key: "${SHORT}"`, `store.encryption_key: want 32 bytes as base64 or 64 hex digits, got 20 characters that are neither (set from ${SHORT})`},
		{"key too short base64", redis + `  encryption_key: "${B64}"`, `store.encryption_key: not a key: want 32 bytes as base64 or 64 hex digits, got 19 bytes (set from ${B64})`},
		{"key too short hex", redis + `  encryption_key: "${HEX}"`, `store.encryption_key: not a key: want 32 bytes as base64 or 64 hex digits, got 16 bytes`},
		{"key literal", redis + `  encryption_key: "` + storeMarker + `"`, `store.encryption_key: not a key: want 32 bytes as base64 or 64 hex digits, got 14 bytes`},
		{"key empty env", redis + `  encryption_key: "${EMPTY}"`, `store.encryption_key: empty (is ${EMPTY} set to something?)`},
		{"previous key bad", redis + `  encryption_key: "${KEY}"` + "\n" + `  previous_encryption_keys: ["${KEY}", "${B64}"]`, `store.previous_encryption_keys[1]: not a key: want 32 bytes as base64 or 64 hex digits, got 19 bytes`},
		{"previous key empty", redis + `  encryption_key: "${KEY}"` + "\n" + `  previous_encryption_keys: [""]`, `store.previous_encryption_keys[0]: empty`},
		{"key without redis", `  dir: ./state` + "\n" + `  encryption_key: "${KEY}"`, `store.encryption_key: the encryption keys need a Redis store`},
		{"key without any store", `  encryption_key: "${KEY}"`, `store.encryption_key: the encryption keys need a Redis store`},
		{"previous without key", redis + `  previous_encryption_keys: ["${KEY}"]`, `store.previous_encryption_keys: needs store.encryption_key`},
		{"plaintext without key", redis + `  accept_plaintext: true`, `store.accept_plaintext: has no effect without store.encryption_key`},
		{"url and redis", redis + `  redis: {addrs: ["127.0.0.1:6379"], password: "${PW}"}`, `store: set redis_url or redis, not both`},
		{"dir and redis", `  dir: ./state` + "\n" + `  redis: {addrs: ["127.0.0.1:6379"], password: "${PW}"}`, `store: set redis or dir, not both`},
		{"master without addrs", `  redis: {master_name: mymaster, password: "${PW}"}`, `store.redis.master_name: needs store.redis.addrs`},
		{"no addrs", `  redis: {password: "${PW}"}`, `store.redis.addrs: required`},
		{"bad addr", `  redis: {addrs: ["10.0.0.1"], password: "${PW}"}`, `store.redis.addrs[0]: want host:port, got "10.0.0.1"`},
		{"bad port", `  redis: {addrs: ["10.0.0.1:x"], password: "${PW}"}`, `store.redis.addrs[0]: want host:port with a port number`},
		{"db with cluster", `  redis: {addrs: ["10.0.0.1:6379", "10.0.0.2:6379"], db: 1, password: "${PW}"}`, `store.redis.db: not with Cluster`},
		{"negative db", `  redis: {addrs: ["10.0.0.1:6379"], db: -1, password: "${PW}"}`, `store.redis.db: -1: want 0 to 2147483647`},
		{"db too large", `  redis: {addrs: ["10.0.0.1:6379"], db: 2147483648, password: "${PW}"}`, `store.redis.db: 2147483648: want 0 to 2147483647`},
		{"sentinel password without master", `  redis: {addrs: ["10.0.0.1:6379"], sentinel_password: "${PW}"}`, `store.redis.sentinel_password: only with master_name`},
		{"unknown redis key", `  redis: {addrs: ["10.0.0.1:6379"], pasword: "${PW}"}`, `store.redis: unknown key "pasword"`},
		{"plaintext from env not a yaml bool", redis + `  encryption_key: "${KEY}"` + "\n" + `  accept_plaintext: "${ONE}"`,
			`store.accept_plaintext: the value set from ${ONE} is not one this field takes (the value is not shown)`},
		{"plaintext not bool", redis + `  encryption_key: "${KEY}"` + "\n" + `  accept_plaintext: maybe`, `store.accept_plaintext: want true or false`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("c.yaml", []byte(storeConfig(tc.store)), envOf(env))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("ParseConfig = %v; want %q", err, tc.want)
			}
			for _, secret := range []string{storeMarker, env["B64"], env["HEX"], good} {
				if strings.Contains(err.Error(), secret) {
					t.Errorf("error quotes a secret value:\n%v", err)
				}
			}
		})
	}
}

func TestParseStoreKey(t *testing.T) {
	key := make([]byte, 32)
	for i := range key {
		key[i] = byte(i * 7)
	}
	for _, s := range []string{hex.EncodeToString(key), strings.ToUpper(hex.EncodeToString(key)),
		base64.StdEncoding.EncodeToString(key), base64.URLEncoding.EncodeToString(key),
		base64.RawStdEncoding.EncodeToString(key), base64.RawURLEncoding.EncodeToString(key) + "\n"} {
		got, err := parseStoreKey(s)
		if err != nil || !bytes.Equal(got, key) {
			t.Errorf("parseStoreKey(%d chars) = %x, %v; want the key", len(s), got, err)
		}
	}
	for _, s := range []string{"", hex.EncodeToString(key[:31]), base64.StdEncoding.EncodeToString(append(key, 0)), "!!!!"} {
		if _, err := parseStoreKey(s); err == nil {
			t.Errorf("parseStoreKey(%d chars) accepted a bad key", len(s))
		}
	}
}

// TestDecodeProblemsQuoteNoExpandedValue: the decoder quotes a value's first 7 characters and
// "..."; an error about a value from the environment names the field and the ${VAR} instead,
// and an error without a line says nothing of the values.
func TestDecodeProblemsQuoteNoExpandedValue(t *testing.T) {
	expanded := []byte("store:\n  redis_url: redis://x:6379/0\n  accept_plaintext: \"" + storeMarker + "\"\n")
	raw := map[string]expansion{"store.accept_plaintext": {raw: "${PLAIN}", value: storeMarker}}
	te := &yaml.TypeError{Errors: []string{
		"line 3: cannot unmarshal !!str `" + storeMarker[:7] + "...` into bool",
		"line 2: cannot unmarshal !!str `redis:/...` into int",
	}}
	got := decodeProblems(te, expanded, raw)
	want := []string{
		"store.accept_plaintext: the value set from ${PLAIN} is not one this field takes (the value is not shown)",
		"line 2: cannot unmarshal !!str `redis:/...` into int",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("decodeProblems = %q; want %q", got, want)
	}
	got = decodeProblems(errors.New("yaml: something about `"+storeMarker[:7]+"...`"), expanded, raw)
	if len(got) != 1 || strings.Contains(got[0], storeMarker[:7]) || !strings.Contains(got[0], "not shown") {
		t.Errorf("decodeProblems of an error without a line = %q; want a message quoting no value", got)
	}
}
