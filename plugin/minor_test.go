package plugin

import (
	"context"
	"encoding/json"
	"errors"
	"sync/atomic"
	"testing"

	goplugin "github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"

	"github.com/seed-a64d9e1f/chatwire/adapter"
	pb "github.com/seed-a64d9e1f/chatwire/plugin/proto"
)

// oldServer is a plugin of an older protocol minor: Info reports minor, and the Calls
// stream (minor 3) is unimplemented, as in a plugin built before it existed.
type oldServer struct {
	*Server
	minor int32
	calls *atomic.Int32 // Calls streams the host tried to open
}

func (o oldServer) Info(ctx context.Context, req *pb.InfoRequest) (*pb.InfoResponse, error) {
	r, err := o.Server.Info(ctx, req)
	if err == nil {
		r.ProtocolMinor = o.minor
	}
	return r, err
}

// oldPlugin serves an oldServer; the host side is the usual one.
type oldPlugin struct {
	grpcPlugin
	old oldServer
}

func (p *oldPlugin) GRPCServer(_ *goplugin.GRPCBroker, s *grpc.Server) error {
	pb.RegisterAdapterServiceServer(s, p.old)
	return nil
}

// setupOld serves fake as bot "hr" from a plugin reporting protocol minor; calls counts the
// Calls streams the host opens.
func setupOld(t *testing.T, fake *fakeAdapter, minor int32) (c *Client, calls *atomic.Int32) {
	t.Helper()
	srv := NewServer(ServerOptions{Open: func(context.Context, StoreConfig, BotConfig) (adapter.Adapter, error) { return fake, nil }})
	calls = new(atomic.Int32)
	client, _ := goplugin.TestPluginGRPCConn(t, false, map[string]goplugin.Plugin{
		PluginName: &oldPlugin{old: oldServer{Server: srv, minor: minor, calls: calls}}})
	t.Cleanup(func() { client.Close() })
	raw, err := client.Dispense(PluginName)
	if err != nil {
		t.Fatal(err)
	}
	c = raw.(*Client)
	if _, err := c.Configure(t.Context(), StoreConfig{}, []BotConfig{{Name: "hr", Config: json.RawMessage(`{}`)}}); err != nil {
		t.Fatal(err)
	}
	return c, calls
}

// TestSendKeyRefusedByOldPlugin: a plugin older than protocol minor 2 ignores
// SendRequest.idempotency_key, so a keyed Send to it would break the key's promise (at most
// once): the host refuses it with a clear error and sends nothing, whether or not it asked
// the plugin's Info before. Sends without a key still work.
func TestSendKeyRefusedByOldPlugin(t *testing.T) {
	for _, askedInfo := range []bool{true, false} {
		var sent atomic.Int32
		fake := &fakeAdapter{SendFn: func(context.Context, adapter.Message) (adapter.Receipt, error) {
			sent.Add(1)
			return adapter.Receipt{ID: "m1"}, nil
		}}
		c, _ := setupOld(t, fake, 1)
		if askedInfo {
			if info, err := c.Info(t.Context()); err != nil || info.ProtocolMinor != 1 {
				t.Fatalf("Info = %+v, %v; want minor 1", info, err)
			}
		}
		_, err := c.Bot("hr").Send(WithIdempotencyKey(t.Context(), "k1"), adapter.Message{Text: "hi"})
		if !errors.Is(err, ErrIdempotencyUnsupported) || adapter.KindOf(err) != adapter.KindInvalidRequest {
			t.Errorf("asked info %v: keyed Send to a minor-1 plugin = %v; want invalid_request matching ErrIdempotencyUnsupported", askedInfo, err)
		}
		if n := sent.Load(); n != 0 {
			t.Errorf("asked info %v: the plugin sent %d times; want none", askedInfo, n)
		}
		if r, err := c.Bot("hr").Send(t.Context(), adapter.Message{Text: "hi"}); err != nil || r.ID != "m1" {
			t.Errorf("asked info %v: Send without a key = %+v, %v; want m1", askedInfo, r, err)
		}
	}
}

// TestSendKeyAcceptedByMinor2Plugin: a minor-2 plugin honours keys, so the host sends them.
func TestSendKeyAcceptedByMinor2Plugin(t *testing.T) {
	var sent atomic.Int32
	fake := &fakeAdapter{SendFn: func(context.Context, adapter.Message) (adapter.Receipt, error) {
		sent.Add(1)
		return adapter.Receipt{ID: "m1"}, nil
	}}
	c, _ := setupOld(t, fake, 2)
	for range 2 {
		if r, err := c.Bot("hr").Send(WithIdempotencyKey(t.Context(), "k1"), adapter.Message{Text: "hi"}); err != nil || r.ID != "m1" {
			t.Errorf("keyed Send = %+v, %v; want m1", r, err)
		}
	}
	if n := sent.Load(); n != 1 {
		t.Errorf("the plugin sent %d times for one key; want 1", n)
	}
}
