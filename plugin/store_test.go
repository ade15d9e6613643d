package plugin

import (
	"context"
	"encoding/json"
	"reflect"
	"testing"

	goplugin "github.com/hashicorp/go-plugin"

	"github.com/seed-a64d9e1f/chatwire/adapter"
)

// TestConfigureStoreRoundTrip sends every StoreConfig field through the Configure RPC and
// checks the plugin's Open receives them unchanged, keys as bytes.
func TestConfigureStoreRoundTrip(t *testing.T) {
	var got StoreConfig
	srv := NewServer(ServerOptions{Open: func(ctx context.Context, store StoreConfig, bot BotConfig) (adapter.Adapter, error) {
		got = store
		return &fakeAdapter{}, nil
	}})
	client, _ := goplugin.TestPluginGRPCConn(t, false, PluginMap(srv))
	t.Cleanup(func() { client.Close() })
	raw, err := client.Dispense(PluginName)
	if err != nil {
		t.Fatal(err)
	}
	key, old := make([]byte, 32), make([]byte, 32)
	for i := range key {
		key[i], old[i] = byte(i), byte(255-i)
	}
	want := StoreConfig{KeyPrefix: "fleet", RedisAddrs: []string{"10.0.0.1:26379", "10.0.0.2:26379"},
		RedisMasterName: "mymaster", RedisUsername: "u", RedisPassword: "pw", RedisSentinelPassword: "spw",
		RedisDB: 3, RedisTLS: true, EncryptionKey: key, PreviousEncryptionKeys: [][]byte{old}, AcceptPlaintext: true}
	if _, err := raw.(*Client).Configure(t.Context(), want, []BotConfig{{Name: "hr", Platform: "wecom", Config: json.RawMessage(`{}`)}}); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("plugin received store %+v; want %+v", got, want)
	}
	if !want.UsesRedis() || !(StoreConfig{RedisURL: "redis://x"}).UsesRedis() || (StoreConfig{Dir: "d"}).UsesRedis() {
		t.Error("UsesRedis is wrong")
	}
}
