package aibot_test

import (
	"context"
	"errors"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/seed-a64d9e1f/chatwire/adapter"
	"github.com/seed-a64d9e1f/chatwire/adapter/wecom/aibot"
	"github.com/seed-a64d9e1f/chatwire/adapter/wecom/aibot/aibottest"
	"github.com/seed-a64d9e1f/chatwire/internal/lease"
	"github.com/seed-a64d9e1f/chatwire/internal/redistest"
)

// TestFleetOneConnection: three hosts run the same bot with a Redis lease: one connection
// at any time; when the holder dies without releasing, another connects within about a TTL
// and nobody kicks anybody.
func TestFleetOneConnection(t *testing.T) {
	rs := redistest.Start(t)
	s := &aibottest.Server{}
	srv := httptest.NewServer(s)
	defer srv.Close()
	const ttl = 400 * time.Millisecond
	type host struct {
		bot    *aibot.Bot
		rdb    *redis.Client
		events chan adapter.Event
		done   chan error
	}
	hosts := make([]*host, 3)
	for i := range hosts {
		h := &host{rdb: redis.NewClient(&redis.Options{Addr: rs.Addr()}), events: make(chan adapter.Event, 10), done: make(chan error, 1)}
		defer h.rdb.Close()
		h.bot, _ = aibot.New(aibot.Options{BotID: "BOT1", Secret: "S1", WSURL: aibottest.WSURL(srv.URL), ReconnectBase: 10 * time.Millisecond,
			Lease: &lease.Redis{Client: h.rdb, Key: "chatwire:aibot:BOT1:lease", TTL: ttl}})
		defer h.bot.Close()
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		go func() {
			h.done <- h.bot.Receive(ctx, func(_ context.Context, evs []adapter.Event) error {
				for _, ev := range evs {
					h.events <- ev
				}
				return nil
			})
		}()
		hosts[i] = h
	}
	eventually(t, "one connection", func() bool { return s.Connections() == 1 })
	s.PushText(aibottest.Conv{User: "u"}, "one")
	holder := -1
	select {
	case ev := <-hosts[0].events:
		holder, _ = 0, ev
	case ev := <-hosts[1].events:
		holder, _ = 1, ev
	case ev := <-hosts[2].events:
		holder, _ = 2, ev
	case <-time.After(20 * time.Second):
		t.Fatal("no host got the message")
	}
	// The holder dies: its Redis connection and its socket go away, nothing is released.
	died := time.Now()
	hosts[holder].rdb.Close()
	hosts[holder].bot.Close()
	eventually(t, "a second connection", func() bool { return s.Subscribes() == 2 && s.Connections() == 1 })
	// Messages WeCom pushes in this window reach no connection (it does not redeliver).
	t.Logf("no connection for %s after the holder died (lease TTL %s)", time.Since(died).Round(time.Millisecond), ttl)
	s.PushText(aibottest.Conv{User: "u"}, "two")
	got := false
	for i, h := range hosts {
		if i == holder {
			continue
		}
		select {
		case ev := <-h.events:
			got = ev.Text == "two"
		case <-time.After(100 * time.Millisecond):
		}
		if got {
			break
		}
	}
	if !got {
		t.Error("no surviving host got the message after the takeover")
	}
	if m := s.MaxConnections(); m != 1 {
		t.Errorf("%d connections at once; want 1", m)
	}
	if n := s.Subscribes(); n != 2 {
		t.Errorf("%d subscribes; want 2 (no kick loop)", n)
	}
	select {
	case err := <-hosts[holder].done:
		if !errors.Is(err, adapter.ErrUnavailable) {
			t.Errorf("dead holder's Receive = %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Error("dead holder's Receive did not return")
	}
}

// TestFleetOutsiderKickStops: a kick while this host still holds the lease comes from outside
// the fleet: Receive stops with ErrKicked instead of fighting.
func TestFleetOutsiderKickStops(t *testing.T) {
	rs := redistest.Start(t)
	rdb := redis.NewClient(&redis.Options{Addr: rs.Addr()})
	defer rdb.Close()
	h := start(t, &aibottest.Server{}, aibot.Options{KickGrace: 50 * time.Millisecond,
		Lease: &lease.Redis{Client: rdb, Key: "lease:outsider", TTL: time.Second}})
	h.s.Kick()
	select {
	case err := <-h.done:
		if !errors.Is(err, aibot.ErrKicked) {
			t.Fatalf("Receive = %v; want ErrKicked", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Receive did not return")
	}
	if n, _ := rdb.Exists(t.Context(), "lease:outsider").Result(); n != 0 {
		t.Error("the lease was not released")
	}
}
