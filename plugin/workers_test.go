package plugin

import (
	"context"
	"encoding/json"
	"net"
	"sync"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/seed-a64d9e1f/chatwire/adapter"
	pb "github.com/seed-a64d9e1f/chatwire/plugin/proto"
)

// TestGRPCServerCallsBeyondStreamWorkers: the plugin's gRPC server (newGRPCServer, with its
// streamWorkers), and its Calls stream, serve more calls at once than it has workers: 2×streamWorkers+1 sends that
// each wait in the adapter until all of them have arrived all complete. A worker pool that
// queued calls instead would never let the last one in.
func TestGRPCServerCallsBeyondStreamWorkers(t *testing.T) {
	forHops(t, testGRPCServerCallsBeyondStreamWorkers)
}

func testGRPCServerCallsBeyondStreamWorkers(t *testing.T, h hop) {
	const calls = 2*streamWorkers + 1
	var mu sync.Mutex
	arrived := 0
	all := make(chan struct{})
	fake := &fakeAdapter{SendFn: func(ctx context.Context, msg adapter.Message) (adapter.Receipt, error) {
		mu.Lock()
		arrived++
		if arrived == calls {
			close(all)
		}
		mu.Unlock()
		select {
		case <-all:
			return adapter.Receipt{ID: "m"}, nil
		case <-ctx.Done():
			return adapter.Receipt{}, ctx.Err()
		}
	}}
	srv := NewServer(ServerOptions{Platforms: []string{"wecom"},
		Open: func(context.Context, StoreConfig, BotConfig) (adapter.Adapter, error) { return fake, nil }})
	gs := srv.newGRPCServer(nil)
	pb.RegisterAdapterServiceServer(gs, srv)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go gs.Serve(ln)
	defer gs.Stop()
	cc, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	c := NewClient(pb.NewAdapterServiceClient(cc))
	defer c.closeCalls()
	if h != hopUnary { // the wire and the Calls stream have workers of their own, likewise
		if _, err := c.Info(t.Context()); err != nil {
			t.Fatal(err)
		}
		c.noWire.Store(h == hopStream)
	}
	if _, err := c.Configure(t.Context(), StoreConfig{}, []BotConfig{{Name: "hr", Platform: "wecom", Config: json.RawMessage(`{}`)}}); err != nil {
		t.Fatal(err)
	}
	if h == hopWire {
		c.openCalls(t.Context())
	}
	bot := c.Bot("hr")
	var wg sync.WaitGroup
	for range calls {
		wg.Go(func() {
			if _, err := bot.Send(t.Context(), adapter.Message{To: adapter.Target{User: "u"}, Text: "x"}); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if n := srv.wireCalls.Load(); (h == hopWire) != (n == calls) {
		t.Errorf("%d calls on the wire; want %d on hop %s", n, calls, h)
	}
}
