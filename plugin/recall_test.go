package plugin

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"testing"

	goplugin "github.com/hashicorp/go-plugin"

	"github.com/seed-a64d9e1f/chatwire/adapter"
)

// recaller is an adapter with Recall; plain is one without any optional capability.
type recaller struct {
	adapter.Adapter
	fn func(ctx context.Context, id string) error
}

func (r recaller) Recall(ctx context.Context, id string) error { return r.fn(ctx, id) }

type plain struct{ adapter.Adapter }

// setupBots serves bots over an in-process gRPC connection and returns the client and what
// Configure reported.
func setupBots(t *testing.T, bots map[string]adapter.Adapter) (*Client, []BotInfo) {
	t.Helper()
	srv := NewServer(ServerOptions{Platforms: []string{"wecom"},
		Open: func(ctx context.Context, store StoreConfig, bot BotConfig) (adapter.Adapter, error) {
			return bots[bot.Name], nil
		}})
	client, _ := goplugin.TestPluginGRPCConn(t, false, PluginMap(srv))
	t.Cleanup(func() { client.Close() })
	raw, err := client.Dispense(PluginName)
	if err != nil {
		t.Fatal(err)
	}
	c := raw.(*Client)
	var cfgs []BotConfig
	for name := range bots {
		cfgs = append(cfgs, BotConfig{Name: name, Platform: "wecom", Config: json.RawMessage(`{}`)})
	}
	infos, err := c.Configure(t.Context(), StoreConfig{}, cfgs)
	if err != nil {
		t.Fatal(err)
	}
	return c, infos
}

func TestRecallRPC(t *testing.T) {
	var got []string
	rc := recaller{Adapter: &fakeAdapter{}, fn: func(ctx context.Context, id string) error {
		got = append(got, id)
		if id == "old" {
			return &adapter.Error{Kind: adapter.KindInvalidRequest, Platform: "wecom", Code: "301059", Message: "message too old to recall"}
		}
		return nil
	}}
	c, infos := setupBots(t, map[string]adapter.Adapter{"r": rc, "p": plain{&fakeAdapter{}}})
	for _, b := range infos {
		if want := b.Name == "r"; slices.Contains(b.Capabilities, CapRecall) != want {
			t.Errorf("bot %s capabilities %q; want recall %v", b.Name, b.Capabilities, want)
		}
	}
	if err := c.Bot("r").Recall(t.Context(), "m1"); err != nil {
		t.Errorf("Recall(m1) = %v", err)
	}
	err := c.Bot("r").Recall(t.Context(), "old")
	if !errors.Is(err, adapter.ErrInvalidRequest) || adapter.Code(err) != "301059" {
		t.Errorf("Recall(old) = %v; want invalid_request with WeCom's code 301059", err)
	}
	if !slices.Equal(got, []string{"m1", "old"}) {
		t.Errorf("plugin side recalled %q; want [m1 old]", got)
	}
	if err := c.Bot("p").Recall(t.Context(), "m1"); !errors.Is(err, adapter.ErrInvalidRequest) {
		t.Errorf("Recall on a bot without it = %v; want invalid_request", err)
	}
}
