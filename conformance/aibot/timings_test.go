package aibot_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/seed-a64d9e1f/chatwire/adapter"
	"github.com/seed-a64d9e1f/chatwire/adapter/wecom/aibot"
	"github.com/seed-a64d9e1f/chatwire/adapter/wecom/aibot/aibottest"
)

// The §6 timings, measured on the emulator's side: the official SDK and chatwire's adapter
// must show the same backoff, heartbeat and kick behaviour. Only lower bounds are asserted
// (a loaded machine can only make things slower).

const base = 100 * time.Millisecond

// checkBackoff asserts the handshakes after hs[from] (the connection dropped at dropped)
// are at least base, 2·base, 4·base, 8·base apart.
func checkBackoff(t *testing.T, who string, dropped time.Time, hs []time.Time) {
	t.Helper()
	if len(hs) != 5 {
		t.Fatalf("%s: %d handshakes; want 5 (first, 3 refused, 1 accepted)", who, len(hs))
	}
	prev := dropped
	var gaps []string
	for k := 1; k < 5; k++ {
		gap := hs[k].Sub(prev)
		gaps = append(gaps, gap.Round(time.Millisecond).String())
		if want := base << (k - 1); gap < want {
			t.Errorf("%s: attempt %d came %s after the previous; want ≥ %s", who, k, gap, want)
		}
		prev = hs[k]
	}
	t.Logf("%s reconnect gaps (base %s): %s", who, base, strings.Join(gaps, ", "))
}

func TestBackoffSDKAndAdapter(t *testing.T) {
	t.Run("sdk", func(t *testing.T) {
		s := &aibottest.Server{}
		c := startSDK(t, map[string]any{"botId": "BOT1", "secret": "S1", "wsUrl": emulator(t, s), "reconnectInterval": base.Milliseconds()})
		c.wait("authenticated")
		s.RefuseConnections(3)
		dropped := time.Now()
		s.Drop()
		c.wait("authenticated")
		checkBackoff(t, "SDK", dropped, s.Handshakes())
	})
	t.Run("adapter", func(t *testing.T) {
		s := &aibottest.Server{}
		runBot(t, s, aibot.Options{ReconnectBase: base})
		waitFor(t, "subscribe", func() bool { return s.Connections() == 1 })
		s.RefuseConnections(3)
		dropped := time.Now()
		s.Drop()
		waitFor(t, "resubscribe", func() bool { return s.Subscribes() == 2 && s.Connections() == 1 })
		checkBackoff(t, "adapter", dropped, s.Handshakes())
	})
}

// TestMissedPingsSDK: with pings unanswered, the SDK sends two pings and drops the socket at
// the third tick (≈ 3 intervals); the adapter's unit test TestMissedPingsDropTheConnection
// asserts the same two pings.
func TestMissedPingsSDK(t *testing.T) {
	s := &aibottest.Server{}
	c := startSDK(t, map[string]any{"botId": "BOT1", "secret": "S1", "wsUrl": emulator(t, s), "heartbeatInterval": base.Milliseconds(), "reconnectInterval": 50})
	s.IgnorePings(true)
	auth := c.wait("authenticated")
	dis := c.wait("disconnected")
	c.wait("authenticated")
	if d := dis.time().Sub(auth.time()); d < 3*base {
		t.Errorf("dropped %s after authenticating; want ≥ 3 heartbeat intervals (%s)", d, 3*base)
	}
	fs := s.Frames()
	pings := 0
	for _, f := range fs[1:] {
		if f.Cmd == "aibot_subscribe" {
			break
		}
		if f.Cmd == "ping" {
			pings++
		}
	}
	if pings != 2 {
		t.Errorf("SDK sent %d unanswered pings before dropping; want 2", pings)
	}
}

// TestAckTimeoutSDK: a reply whose ack never comes fails after 5 s, and the next frame on
// the same req_id is sent only then (the adapter's default AckTimeout is the same 5 s).
func TestAckTimeoutSDK(t *testing.T) {
	s := &aibottest.Server{}
	c := startSDK(t, vectorAOpts(emulator(t, s)))
	c.wait("authenticated")
	p, _ := s.PushText(aibottest.Conv{User: "u"}, "q")
	c.wait("message")
	s.DropAcks("aibot_respond_msg")
	id1 := c.do(map[string]any{"op": "replyStream", "reqId": p.ReqID, "streamId": "s", "content": "a", "finish": false})
	id2 := c.do(map[string]any{"op": "replyStream", "reqId": p.ReqID, "streamId": "s", "content": "ab", "finish": true})
	r1 := c.result(id1)
	if r1.OK || !strings.Contains(r1.Error, "Reply ack timeout (5000ms)") {
		t.Errorf("first reply: ok %v, %q; want the 5000 ms ack timeout", r1.OK, r1.Error)
	}
	c.result(id2)
	fs := frames(s, "aibot_respond_msg")
	if len(fs) != 2 {
		t.Fatalf("%d reply frames; want 2", len(fs))
	}
	if gap := fs[1].At.Sub(fs[0].At); gap < 5*time.Second {
		t.Errorf("second frame %s after the unacked first; want ≥ 5 s", gap)
	}
}

// TestKickSDKAndAdapter: after disconnected_event neither the SDK nor the adapter dials again.
func TestKickSDKAndAdapter(t *testing.T) {
	t.Run("sdk", func(t *testing.T) {
		s := &aibottest.Server{}
		c := startSDK(t, map[string]any{"botId": "BOT1", "secret": "S1", "wsUrl": emulator(t, s), "reconnectInterval": 50})
		c.wait("authenticated")
		s.Kick()
		c.wait("disconnected")
		// Ten reconnect intervals without a dial. (A negative check: it can only pass wrongly.)
		time.Sleep(500 * time.Millisecond)
		if n := len(s.Handshakes()); n != 1 {
			t.Errorf("SDK dialled %d times; want 1 (no reconnect after disconnected_event)", n)
		}
	})
	t.Run("adapter", func(t *testing.T) {
		s := &aibottest.Server{}
		done := make(chan error, 1)
		srvURL := emulator(t, s)
		bot, _ := aibot.New(aibot.Options{BotID: "BOT1", Secret: "S1", WSURL: srvURL, ReconnectBase: 50 * time.Millisecond})
		defer bot.Close()
		go func() {
			done <- bot.Receive(context.Background(), func(context.Context, []adapter.Event) error { return nil })
		}()
		waitFor(t, "subscribe", func() bool { return s.Connections() == 1 })
		s.Kick()
		select {
		case err := <-done:
			if !errors.Is(err, aibot.ErrKicked) {
				t.Errorf("Receive = %v; want ErrKicked", err)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("Receive did not return after disconnected_event")
		}
		if n := len(s.Handshakes()); n != 1 {
			t.Errorf("adapter dialled %d times; want 1", n)
		}
	})
}

func runBot(t *testing.T, s *aibottest.Server, opts aibot.Options) *aibot.Bot {
	t.Helper()
	opts.BotID, opts.Secret, opts.WSURL = "BOT1", "S1", emulator(t, s)
	bot, err := aibot.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(func() { cancel(); bot.Close() })
	go bot.Receive(ctx, func(context.Context, []adapter.Event) error { return nil })
	return bot
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}
