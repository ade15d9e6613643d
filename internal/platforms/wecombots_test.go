package platforms

import (
	"context"
	"encoding/json"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/seed-a64d9e1f/chatwire/adapter"
	"github.com/seed-a64d9e1f/chatwire/adapter/wecom/aibot/aibottest"
	"github.com/seed-a64d9e1f/chatwire/adapter/wecom/robot/robottest"
	"github.com/seed-a64d9e1f/chatwire/internal/redistest"
	"github.com/seed-a64d9e1f/chatwire/plugin"
)

func TestOpenWeComAIBotFleet(t *testing.T) {
	rs := redistest.Start(t)
	s := &aibottest.Server{}
	srv := httptest.NewServer(s)
	defer srv.Close()
	cfg, _ := json.Marshal(WeComAIBot{BotID: "BOT1", Secret: "S1", WSURL: aibottest.WSURL(srv.URL)})
	sc := plugin.StoreConfig{RedisURL: "redis://" + rs.Addr(), KeyPrefix: "cw"}
	// Two "hosts" (two Openers) open the same bot on the same Redis: one connection.
	var bots []adapter.Adapter
	for i := 0; i < 2; i++ {
		a, err := New(nil, nil).Open(t.Context(), sc, plugin.BotConfig{Name: "ai", Platform: adapter.PlatformWeComAIBot, Config: cfg})
		if err != nil {
			t.Fatal(err)
		}
		defer a.Close()
		bots = append(bots, a)
		p, ok := a.(adapter.Poller)
		if !ok {
			t.Fatalf("%T is not a Poller", a)
		}
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Millisecond)
		p.Poll(ctx) // starts the connection loop
		cancel()
	}
	deadline := time.Now().Add(20 * time.Second)
	for s.Connections() != 1 {
		if time.Now().After(deadline) {
			t.Fatal("no connection")
		}
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond) // a negative check: a second host must not connect
	if m := s.MaxConnections(); m != 1 || s.Subscribes() != 1 {
		t.Errorf("%d connections at once, %d subscribes; want 1 and 1 (the lease)", m, s.Subscribes())
	}
	if _, ok := bots[0].(adapter.Streamer); !ok {
		t.Error("the AI bot is not a Streamer")
	}
}

func TestOpenWeComRobot(t *testing.T) {
	s := &robottest.Server{}
	srv := httptest.NewServer(s)
	defer srv.Close()
	cfg, _ := json.Marshal(WeComRobot{WebhookKey: "KEY1", APIBase: srv.URL})
	a, err := New(nil, nil).Open(t.Context(), plugin.StoreConfig{}, plugin.BotConfig{Name: "r", Platform: adapter.PlatformWeComRobot, Config: cfg})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if _, err := a.Send(t.Context(), adapter.Message{Markdown: "**hi**"}); err != nil {
		t.Fatal(err)
	}
	if sent := s.Sent(); len(sent) != 1 || sent[0].Content != "**hi**" {
		t.Errorf("Sent = %+v", sent)
	}
}
