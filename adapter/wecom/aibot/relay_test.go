package aibot_test

import (
	"context"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/seed-a64d9e1f/chatwire/adapter"
	"github.com/seed-a64d9e1f/chatwire/adapter/wecom/aibot"
	"github.com/seed-a64d9e1f/chatwire/adapter/wecom/aibot/aibottest"
	"github.com/seed-a64d9e1f/chatwire/internal/lease"
	"github.com/seed-a64d9e1f/chatwire/internal/redistest"
)

// TestFleetRelay: two hosts, one connection (the lease). Replies, streams and sends
// accepted by the host without the connection reach the one socket, on the callback's
// req_id.
func TestFleetRelay(t *testing.T) {
	rs := redistest.Start(t)
	s := &aibottest.Server{}
	srv := httptest.NewServer(s)
	defer srv.Close()
	rdb := redis.NewClient(&redis.Options{Addr: rs.Addr()})
	defer rdb.Close()
	events := make(chan adapter.Event, 10)
	newHost := func(receive bool) *aibot.Bot {
		b, err := aibot.New(aibot.Options{BotID: "BOT1", Secret: "S1", WSURL: aibottest.WSURL(srv.URL), StreamPace: time.Millisecond,
			Lease: &lease.Redis{Client: rdb, Key: "cw:aibot:BOT1:lease"}, Redis: rdb, RedisKeyPrefix: "cw"})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { b.Close() })
		if receive {
			ctx, cancel := context.WithCancel(context.Background())
			t.Cleanup(cancel)
			go b.Receive(ctx, func(_ context.Context, evs []adapter.Event) error {
				for _, ev := range evs {
					events <- ev
				}
				return nil
			})
		}
		return b
	}
	holder := newHost(true)
	_ = holder
	eventually(t, "the holder's connection", func() bool { return s.Connections() == 1 })
	other := newHost(false) // never connects: it holds no lease and runs no Receive
	p, _ := s.PushText(aibottest.Conv{User: "u"}, "hi")
	var ev adapter.Event
	select {
	case ev = <-events:
	case <-time.After(20 * time.Second):
		t.Fatal("no event")
	}
	ctx := t.Context()
	// The callback record reaches Redis in the background.
	eventually(t, "the callback record", func() bool { n, _ := rdb.Exists(ctx, "cw:aibot:BOT1:call:"+ev.ID).Result(); return n == 1 })
	if _, err := other.Send(ctx, adapter.Message{ReplyTo: ev.ID, Markdown: "from the other host"}); err != nil {
		t.Fatalf("relayed reply: %v", err)
	}
	st, err := other.OpenStream(ctx, adapter.Message{ReplyTo: ev.ID})
	if err != nil {
		t.Fatal(err)
	}
	text := strings.Repeat("relayed stream ", 2000) // 30 KB: two bubbles
	streamText(t, st, text, 50)
	if _, err := st.Finish(ctx); err != nil {
		t.Fatalf("relayed stream: %v", err)
	}
	if _, err := other.Send(ctx, adapter.Message{To: adapter.Target{User: "u"}, Text: "proactive"}); err != nil {
		t.Fatalf("relayed send: %v", err)
	}
	noRefused(t, s)
	shown := s.Shown("u")
	if len(shown) < 4 || shown[0] != "from the other host" || strings.Join(shown[1:len(shown)-1], "") != text || shown[len(shown)-1] != "proactive" {
		t.Errorf("Shown = %d items; want the reply, the stream's bubbles, the send", len(shown))
	}
	for _, m := range s.Sent() {
		if m.Cmd == "aibot_respond_msg" && m.ReqID != p.ReqID {
			t.Errorf("reply on req_id %s; want the callback's %s", m.ReqID, p.ReqID)
		}
	}
	if s.Subscribes() != 1 {
		t.Errorf("%d subscribes; want 1", s.Subscribes())
	}
}
