package plugin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	goplugin "github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/seed-a64d9e1f/chatwire/adapter"
	pb "github.com/seed-a64d9e1f/chatwire/plugin/proto"
)

// countingServer serves a Server and counts how the host reaches it: the wires and Calls
// streams it opens and the unary Send and HandleWebhook RPCs. With old set it is a plugin of
// an older protocol minor: Info reports minor, and the Calls stream (minor 3) and OpenWire
// (minor 4) are unimplemented, as in a plugin built before they existed.
type countingServer struct {
	*Server
	old   bool
	minor int32
	// asMinor, if set, makes it a plugin of that minor: Info reports it, and what came after
	// it (the Calls stream, OpenWire) is unimplemented.
	asMinor int32
	calls   *atomic.Int32 // Calls streams the host opened
	wires   *atomic.Int32 // OpenWire calls
	unary   *atomic.Int32 // unary Send and HandleWebhook RPCs
	// failFirst makes the first Calls stream fail as unavailable once its first call arrived,
	// unanswered, like a plugin connection that broke.
	failFirst bool
	// openWire, if set, answers OpenWire instead of the Server.
	openWire func(context.Context, *pb.OpenWireRequest) (*pb.OpenWireResponse, error)
}

func (o countingServer) Info(ctx context.Context, req *pb.InfoRequest) (*pb.InfoResponse, error) {
	r, err := o.Server.Info(ctx, req)
	if err == nil && o.old {
		r.ProtocolMinor = o.minor
	}
	if err == nil && o.asMinor != 0 {
		r.ProtocolMinor = o.asMinor
	}
	return r, err
}

func (o countingServer) Calls(st pb.AdapterService_CallsServer) error {
	n := o.calls.Add(1)
	if o.failFirst && n == 1 {
		st.Recv()
		return status.Error(codes.Unavailable, "connection broke")
	}
	if o.old || (o.asMinor != 0 && o.asMinor < minorCalls) {
		return status.Error(codes.Unimplemented, "method Calls not implemented")
	}
	return o.Server.Calls(st)
}

func (o countingServer) OpenWire(ctx context.Context, req *pb.OpenWireRequest) (*pb.OpenWireResponse, error) {
	o.wires.Add(1)
	if o.old || (o.asMinor != 0 && o.asMinor < minorWire) {
		return nil, status.Error(codes.Unimplemented, "method OpenWire not implemented")
	}
	if o.openWire != nil {
		return o.openWire(ctx, req)
	}
	return o.Server.OpenWire(ctx, req)
}

func (o countingServer) Send(ctx context.Context, req *pb.SendRequest) (*pb.SendResponse, error) {
	o.unary.Add(1)
	return o.Server.Send(ctx, req)
}

func (o countingServer) HandleWebhook(ctx context.Context, req *pb.HandleWebhookRequest) (*pb.HandleWebhookResponse, error) {
	o.unary.Add(1)
	return o.Server.HandleWebhook(ctx, req)
}

// countingPlugin serves a countingServer; the host side is the usual one.
type countingPlugin struct {
	grpcPlugin
	srv countingServer
}

func (p *countingPlugin) GRPCServer(_ *goplugin.GRPCBroker, s *grpc.Server) error {
	pb.RegisterAdapterServiceServer(s, p.srv)
	return nil
}

// served is a plugin served over an in-process gRPC connection, with its counters.
type served struct {
	c                   *Client
	srv                 *Server
	calls, wires, unary *atomic.Int32
}

// serveCounting serves the bots in process through a countingServer (old: reporting
// protocol minor) and returns the host's Client, its bots configured.
func serveCounting(t *testing.T, bots map[string]adapter.Adapter, old bool, minor int32) served {
	return serveCountingServer(t, bots, countingServer{old: old, minor: minor})
}

// serveCountingServer is serveCounting with cs's settings. When the test ends it closes the
// Client's wire or stream and checks that both sides let go of it: the host's receive
// goroutine ended and the plugin serves no wire any more (no goroutine left behind).
func serveCountingServer(t *testing.T, bots map[string]adapter.Adapter, cs countingServer) served {
	t.Helper()
	srv := NewServer(ServerOptions{Platforms: []string{"wecom"}, Open: func(_ context.Context, _ StoreConfig, b BotConfig) (adapter.Adapter, error) {
		if b.Name == "broken" {
			return nil, &adapter.Error{Kind: adapter.KindUnauthorized, Platform: "wecom", Code: "40001", Message: "invalid corp_secret"}
		}
		return bots[b.Name], nil
	}})
	sv := served{srv: srv, calls: new(atomic.Int32), wires: new(atomic.Int32), unary: new(atomic.Int32)}
	cs.Server, cs.calls, cs.wires, cs.unary = srv, sv.calls, sv.wires, sv.unary
	client, _ := goplugin.TestPluginGRPCConn(t, false, map[string]goplugin.Plugin{PluginName: &countingPlugin{srv: cs}})
	t.Cleanup(func() { client.Close() })
	raw, err := client.Dispense(PluginName)
	if err != nil {
		t.Fatal(err)
	}
	sv.c = raw.(*Client)
	servedByClient.Store(sv.c, sv)
	t.Cleanup(func() { closeAndCheck(t, sv); servedByClient.Delete(sv.c) })
	var cfg []BotConfig
	for name := range bots {
		cfg = append(cfg, BotConfig{Name: name, Platform: "wecom", Config: json.RawMessage(`{}`)})
	}
	if _, err := sv.c.Configure(t.Context(), StoreConfig{}, cfg); err != nil {
		t.Fatal(err)
	}
	return sv
}

// closeAndCheck closes sv's Client's calls and checks that no goroutine of its wire or stream
// is left on either side.
func closeAndCheck(t *testing.T, sv served) {
	t.Helper()
	sv.c.callsMu.Lock()
	cs, gs := sv.c.cs, sv.c.gs
	sv.c.callsMu.Unlock()
	sv.c.closeCalls()
	for _, cs := range []*callStream{cs, gs} {
		if cs == nil {
			continue
		}
		select {
		case <-cs.done:
		case <-time.After(10 * time.Second):
			t.Error("the host's wire or stream still open 10s after the Client closed")
		}
	}
	for deadline := time.Now().Add(10 * time.Second); sv.srv.wires.Load() != 0; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Errorf("the plugin still serves %d wires 10s after the Client closed", sv.srv.wires.Load())
			break
		}
	}
}

// setupOld serves fake as bot "hr" from a plugin reporting protocol minor; calls counts the
// Calls streams the host opens.
func setupOld(t *testing.T, fake *fakeAdapter, minor int32) (c *Client, calls *atomic.Int32) {
	t.Helper()
	sv := serveCounting(t, map[string]adapter.Adapter{"hr": fake}, true, minor)
	return sv.c, sv.calls
}

// hop is a way a host calls Send and HandleWebhook.
type hop string

const (
	hopWire   hop = "wire"   // the wire, to a plugin of minor 4 whose Info it asked and wire it opened (as Launch does)
	hopStream hop = "stream" // the Calls stream, as to a plugin whose wire did not open
	hopUnary  hop = "unary"  // unary RPCs: the Client has not asked the plugin's minor
)

// hops are the ways a host calls Send and HandleWebhook.
var hops = []hop{hopWire, hopStream, hopUnary}

// setupHop serves fake as bot "hr" in process and returns the host's Client, which makes
// its Send and HandleWebhook calls on hop h; the test fails if they went another way (the
// plugin counts the calls it got on each).
func setupHop(t *testing.T, fake adapter.Adapter, h hop) *Client {
	t.Helper()
	return setupHopCalls(t, fake, h, true)
}

// setupHopCalls is setupHop for a test that makes Send or HandleWebhook calls (called) or
// may make none: then only calls that went another way fail it.
func setupHopCalls(t *testing.T, fake adapter.Adapter, h hop, called bool) *Client {
	t.Helper()
	sv := serveCounting(t, map[string]adapter.Adapter{"hr": fake}, false, 0)
	if h != hopUnary {
		if info, err := sv.c.Info(t.Context()); err != nil || info.ProtocolMinor != ProtocolMinor {
			t.Fatalf("Info = %+v, %v; want minor %d", info, err, ProtocolMinor)
		}
	}
	switch h {
	case hopStream:
		sv.c.noWire.Store(true)
	case hopWire:
		sv.c.openCalls(t.Context()) // as Launch does
	}
	t.Cleanup(func() {
		calls, wires, wireCalls, unary := sv.calls.Load(), sv.wires.Load(), sv.srv.wireCalls.Load(), sv.unary.Load()
		switch h {
		case hopWire:
			if unary != 0 || calls != 0 || (called || wireCalls != 0) && (wires == 0 || wireCalls == 0) {
				t.Errorf("%d unary calls, %d Calls streams, %d wires, %d calls on the wire; want all calls on the wire", unary, calls, wires, wireCalls)
			}
		case hopStream:
			if unary != 0 || wires != 0 || called && calls == 0 {
				t.Errorf("%d unary calls, %d wires, %d Calls streams; want all calls on the Calls stream", unary, wires, calls)
			}
		case hopUnary:
			if calls != 0 || wires != 0 {
				t.Errorf("the host opened %d Calls streams and %d wires; want unary calls only", calls, wires)
			}
		}
	})
	return sv.c
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

// echo is an adapter whose Send answers the text it got as the receipt id and whose
// HandleWebhook answers the body with one event.
func echo() *fakeAdapter {
	return &fakeAdapter{
		SendFn: func(_ context.Context, msg adapter.Message) (adapter.Receipt, error) {
			return adapter.Receipt{ID: msg.Text}, nil
		},
		WebhookFn: func(_ context.Context, req *adapter.WebhookRequest) (*adapter.WebhookResponse, []adapter.Event, error) {
			return &adapter.WebhookResponse{Status: 200, Body: req.Body}, []adapter.Event{{ID: "e"}}, nil
		},
	}
}

// roundTrip checks one Send and one HandleWebhook through c's bot "hr".
func roundTrip(t *testing.T, c *Client, what string) {
	t.Helper()
	if r, err := c.Bot("hr").Send(t.Context(), adapter.Message{Text: "hi"}); err != nil || r.ID != "hi" {
		t.Errorf("%s: Send = %+v, %v; want hi", what, r, err)
	}
	resp, evs, err := c.Bot("hr").HandleWebhook(t.Context(), &adapter.WebhookRequest{Method: "POST", Body: []byte("b")})
	if err != nil || resp.Status != 200 || string(resp.Body) != "b" || len(evs) != 1 {
		t.Errorf("%s: HandleWebhook = %+v, %v, %v; want 200 b and one event", what, resp, evs, err)
	}
}

// TestCallsOldPluginGetsUnary: a plugin older than minor 3 has no Calls stream: the host
// never opens one and makes unary calls, which work as before.
func TestCallsOldPluginGetsUnary(t *testing.T) {
	sv := serveCounting(t, map[string]adapter.Adapter{"hr": echo()}, true, 2)
	if _, err := sv.c.Info(t.Context()); err != nil {
		t.Fatal(err)
	}
	roundTrip(t, sv.c, "minor-2 plugin")
	roundTrip(t, sv.c, "minor-2 plugin, again")
	if w, n, u := sv.wires.Load(), sv.calls.Load(), sv.unary.Load(); w != 0 || n != 0 || u != 4 {
		t.Errorf("%d wires and %d Calls streams opened, %d unary calls; want 0, 0 and 4", w, n, u)
	}
}

// TestCallsRefusedFallsBackToUnary: a plugin that reports minor 3 but refuses the stream
// (Unimplemented) still gets every call, as unary RPCs, and is not asked again.
func TestCallsRefusedFallsBackToUnary(t *testing.T) {
	sv := serveCounting(t, map[string]adapter.Adapter{"hr": echo()}, true, 3)
	if _, err := sv.c.Info(t.Context()); err != nil {
		t.Fatal(err)
	}
	roundTrip(t, sv.c, "refusing plugin")
	roundTrip(t, sv.c, "refusing plugin, again")
	if w, n, u := sv.wires.Load(), sv.calls.Load(), sv.unary.Load(); w != 0 || n != 1 || u != 4 {
		t.Errorf("%d wires and %d Calls streams opened, %d unary calls; want 0, 1 and 4", w, n, u)
	}
}

// TestCallsStreamBrokenFailsCallsThenReopens: when the stream breaks, the calls in flight
// fail as unavailable (their outcome unknown, as with a unary call on a broken connection)
// and the next call opens a new stream.
func TestCallsStreamBrokenFailsCallsThenReopens(t *testing.T) {
	sv := serveCountingServer(t, map[string]adapter.Adapter{"hr": echo()}, countingServer{failFirst: true})
	if _, err := sv.c.Info(t.Context()); err != nil {
		t.Fatal(err)
	}
	sv.c.noWire.Store(true)
	if _, err := sv.c.Bot("hr").Send(t.Context(), adapter.Message{Text: "hi"}); !errors.Is(err, adapter.ErrUnavailable) {
		t.Errorf("Send on a stream that broke = %v; want unavailable", err)
	}
	roundTrip(t, sv.c, "after the stream broke")
	if n, u := sv.calls.Load(), sv.unary.Load(); n != 2 || u != 0 {
		t.Errorf("%d Calls streams opened, %d unary calls; want 2 and 0", n, u)
	}
}

// TestCallsBigCallGoesUnary: a call bigger than maxStreamedCall is a unary RPC, so it never
// holds up the small calls behind it on the wire; smaller ones take the wire.
func TestCallsBigCallGoesUnary(t *testing.T) {
	fake := echo()
	fake.SendFn = func(_ context.Context, msg adapter.Message) (adapter.Receipt, error) {
		return adapter.Receipt{ID: strconv.Itoa(len(msg.Attachments[0].Data))}, nil
	}
	sv := serveCounting(t, map[string]adapter.Adapter{"hr": fake}, false, 0)
	if _, err := sv.c.Info(t.Context()); err != nil {
		t.Fatal(err)
	}
	sv.c.openCalls(t.Context())
	for _, size := range []int{1000, maxStreamedCall + 1} {
		msg := adapter.Message{Attachments: []adapter.Attachment{{Name: "f", Data: make([]byte, size)}}}
		if r, err := sv.c.Bot("hr").Send(t.Context(), msg); err != nil || r.ID != strconv.Itoa(size) {
			t.Errorf("Send of %d bytes = %+v, %v", size, r, err)
		}
	}
	for _, size := range []int{1000, maxStreamedCall + 1} {
		body := make([]byte, size)
		if resp, _, err := sv.c.Bot("hr").HandleWebhook(t.Context(), &adapter.WebhookRequest{Method: "POST", Body: body}); err != nil || len(resp.Body) != size {
			t.Errorf("webhook of %d bytes = %v", size, err)
		}
	}
	if w, n, u := sv.wires.Load(), sv.calls.Load(), sv.unary.Load(); w != 1 || n != 0 || u != 2 {
		t.Errorf("%d wires and %d Calls streams opened, %d unary calls; want 1, 0 and 2", w, n, u)
	}
}

// TestCallerCancelReachesPlugin: a caller that gives up (its ctx cancelled, no deadline)
// cancels the call's ctx in the plugin, on either hop.
func TestCallerCancelReachesPlugin(t *testing.T) { forHops(t, testCallerCancelReachesPlugin) }

func testCallerCancelReachesPlugin(t *testing.T, h hop) {
	started, cancelled := make(chan struct{}), make(chan struct{})
	fake := &fakeAdapter{SendFn: func(ctx context.Context, msg adapter.Message) (adapter.Receipt, error) {
		close(started)
		select {
		case <-ctx.Done():
			close(cancelled)
			return adapter.Receipt{}, ctx.Err()
		case <-time.After(time.Minute):
			return adapter.Receipt{}, errors.New("plugin ctx never cancelled")
		}
	}}
	c := setupHop(t, fake, h)
	ctx, cancel := context.WithCancel(t.Context())
	errc := make(chan error, 1)
	go func() { _, err := c.Bot("hr").Send(ctx, adapter.Message{Text: "x"}); errc <- err }()
	<-started
	cancel()
	if err := <-errc; !errors.Is(err, adapter.ErrUnavailable) || !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled Send = %v; want unavailable, context canceled", err)
	}
	select {
	case <-cancelled:
	case <-time.After(30 * time.Second):
		t.Error("the plugin's ctx was not cancelled within 30s of the caller's")
	}
}

// TestCallsConcurrentNoMixups: many callers at once on one stream or wire, some giving up
// before the plugin answers, each get their own call's answer or their own ctx's error, never
// another call's response.
func TestCallsConcurrentNoMixups(t *testing.T) {
	for _, h := range []hop{hopWire, hopStream} {
		t.Run(string(h), func(t *testing.T) { testCallsConcurrentNoMixups(t, h) })
	}
}

func testCallsConcurrentNoMixups(t *testing.T, h hop) {
	fake := &fakeAdapter{
		SendFn: func(ctx context.Context, msg adapter.Message) (adapter.Receipt, error) {
			if msg.Subject == "slow" {
				<-ctx.Done()
				return adapter.Receipt{}, &adapter.Error{Kind: adapter.KindUnavailable, Err: ctx.Err()}
			}
			return adapter.Receipt{ID: msg.Text}, nil
		},
		WebhookFn: func(_ context.Context, req *adapter.WebhookRequest) (*adapter.WebhookResponse, []adapter.Event, error) {
			return &adapter.WebhookResponse{Status: 200, Body: req.Body}, []adapter.Event{{ID: string(req.Body)}}, nil
		},
	}
	c := setupHop(t, fake, h)
	bot := c.Bot("hr")
	var wg sync.WaitGroup
	for g := range 16 {
		wg.Go(func() {
			for i := range 100 {
				id := fmt.Sprintf("%d-%d", g, i)
				switch i % 4 {
				case 0: // gives up: the plugin waits for its deadline or the cancel, whichever comes first
					ctx, cancel := context.WithTimeout(t.Context(), time.Millisecond)
					r, err := bot.Send(ctx, adapter.Message{Text: id, Subject: "slow"})
					cancel()
					if !errors.Is(err, adapter.ErrUnavailable) {
						t.Errorf("send %s past its deadline = %+v, %v; want unavailable", id, r, err)
					}
				case 1, 2:
					if r, err := bot.Send(t.Context(), adapter.Message{Text: id}); err != nil || r.ID != id {
						t.Errorf("send %s = %+v, %v", id, r, err)
					}
				case 3:
					resp, evs, err := bot.HandleWebhook(t.Context(), &adapter.WebhookRequest{Method: "POST", Body: []byte(id)})
					if err != nil || string(resp.Body) != id || len(evs) != 1 || evs[0].ID != id {
						t.Errorf("webhook %s = %+v, %+v, %v", id, resp, evs, err)
					}
				}
			}
		})
	}
	wg.Wait()
}
