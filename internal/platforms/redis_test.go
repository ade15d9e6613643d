package platforms

import (
	"bytes"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/seed-a64d9e1f/chatwire/plugin"
)

func TestRedisClientModes(t *testing.T) {
	if c, err := RedisClient(plugin.StoreConfig{Dir: "d"}); c != nil || err != nil {
		t.Errorf("no Redis = %v, %v; want nil, nil", c, err)
	}
	one, err := RedisClient(plugin.StoreConfig{RedisAddrs: []string{"127.0.0.1:1"}, RedisDB: 3})
	if _, ok := one.(*redis.Client); !ok || err != nil {
		t.Errorf("one address = %T, %v; want *redis.Client", one, err)
	} else {
		if db := one.(*redis.Client).Options().DB; db != 3 {
			t.Errorf("db = %d; want 3", db)
		}
		one.Close()
	}
	cl, err := RedisClient(plugin.StoreConfig{RedisAddrs: []string{"127.0.0.1:1", "127.0.0.1:2"}})
	if _, ok := cl.(*redis.ClusterClient); !ok || err != nil {
		t.Errorf("two addresses = %T, %v; want *redis.ClusterClient", cl, err)
	} else {
		cl.Close()
	}
	if _, err := RedisClient(plugin.StoreConfig{RedisAddrs: []string{"127.0.0.1:1", "127.0.0.1:2"}, RedisDB: 1}); err == nil {
		t.Error("Cluster with db 1 accepted")
	}
	uo := RedisOptions(plugin.StoreConfig{RedisAddrs: []string{"s1:26379", "s2:26379"}, RedisMasterName: "m", RedisUsername: "u",
		RedisPassword: "p", RedisSentinelPassword: "sp", RedisDB: 2, RedisTLS: true})
	if uo.MasterName != "m" || uo.Username != "u" || uo.Password != "p" || uo.SentinelPassword != "sp" || uo.DB != 2 || uo.TLSConfig == nil || len(uo.Addrs) != 2 {
		t.Errorf("Sentinel options wrong: master %q db %d tls %v addrs %v", uo.MasterName, uo.DB, uo.TLSConfig != nil, uo.Addrs)
	}
	if uo := RedisOptions(plugin.StoreConfig{RedisAddrs: []string{"a:1"}}); uo.TLSConfig != nil {
		t.Error("TLS on without tls")
	}
	// A URL that does not parse: the error never quotes it (it may hold a password).
	_, err = RedisClient(plugin.StoreConfig{RedisURL: "redis://user:MARKERPW@127.0.0.1:6379/%zz"})
	if err == nil || strings.Contains(err.Error(), "MARKERPW") {
		t.Errorf("bad URL error = %v; want one without the password", err)
	}
}

func TestRedisStoreOptions(t *testing.T) {
	key, old := bytes.Repeat([]byte{1}, 32), bytes.Repeat([]byte{2}, 32)
	o := RedisStoreOptions(plugin.StoreConfig{KeyPrefix: "fleet", EncryptionKey: key, PreviousEncryptionKeys: [][]byte{old}, AcceptPlaintext: true}, nil)
	if o.KeyPrefix != "fleet:tok:" || !bytes.Equal(o.EncryptionKey, key) || len(o.PreviousKeys) != 1 || !bytes.Equal(o.PreviousKeys[0], old) || !o.AcceptPlaintext {
		t.Errorf("redisstore options: prefix %q, %d previous keys, accept plaintext %v", o.KeyPrefix, len(o.PreviousKeys), o.AcceptPlaintext)
	}
	if storeID(plugin.StoreConfig{RedisURL: "redis://x", EncryptionKey: key}) == storeID(plugin.StoreConfig{RedisURL: "redis://x", EncryptionKey: old}) {
		t.Error("stores with different keys share an id")
	}
}
