package plugin

import (
	"context"
	"io"
	"testing"

	"github.com/hashicorp/go-hclog"
	goplugin "github.com/hashicorp/go-plugin"

	"github.com/seed-a64d9e1f/chatwire/adapter"
)

// BenchmarkSend compares one Send called in process, over an in-process gRPC connection, and
// through a real plugin subprocess (AutoMTLS, unix socket): the difference is the plugin
// boundary's overhead per call.
func BenchmarkSend(b *testing.B) {
	msg := adapter.Message{To: adapter.Target{User: "zhangsan"}, Text: "hello from the benchmark"}
	run := func(b *testing.B, a adapter.Adapter) {
		ctx := context.Background()
		b.ReportAllocs()
		for b.Loop() {
			if _, err := a.Send(ctx, msg); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.Run("in-process", func(b *testing.B) { run(b, testAdapter()) })
	b.Run("grpc-conn", func(b *testing.B) {
		srv := NewServer(ServerOptions{Open: func(context.Context, StoreConfig, BotConfig) (adapter.Adapter, error) { return testAdapter(), nil }})
		// TestPluginGRPCConn logs at debug level to hclog.DefaultOutput (stderr), and its lines
		// would land inside the benchmark's result lines: make bench's output unparseable.
		defer func(w io.Writer) { hclog.DefaultOutput = w }(hclog.DefaultOutput)
		hclog.DefaultOutput = io.Discard
		client, _ := goplugin.TestPluginGRPCConn(b, false, PluginMap(srv))
		defer client.Close()
		raw, err := client.Dispense(PluginName)
		if err != nil {
			b.Fatal(err)
		}
		c := raw.(*Client)
		if _, err := c.Configure(context.Background(), StoreConfig{}, []BotConfig{{Name: "hr"}}); err != nil {
			b.Fatal(err)
		}
		run(b, c.Bot("hr"))
	})
	b.Run("subprocess", func(b *testing.B) {
		p, err := Launch(context.Background(), testLaunchOptions(nil))
		if err != nil {
			b.Fatal(err)
		}
		defer p.Close()
		run(b, p.Bot("hr"))
	})
	b.Run("subprocess-parallel", func(b *testing.B) {
		p, err := Launch(context.Background(), testLaunchOptions(nil))
		if err != nil {
			b.Fatal(err)
		}
		defer p.Close()
		bot := p.Bot("hr")
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := bot.Send(context.Background(), msg); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}
