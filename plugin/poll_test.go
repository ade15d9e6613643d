package plugin

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	goplugin "github.com/hashicorp/go-plugin"

	"github.com/seed-a64d9e1f/chatwire/adapter"
	"github.com/seed-a64d9e1f/chatwire/adapter/wecom/aibot"
	"github.com/seed-a64d9e1f/chatwire/adapter/wecom/aibot/aibottest"
	pb "github.com/seed-a64d9e1f/chatwire/plugin/proto"
)

// serveAdapter serves a as bot "hr" over an in-process gRPC connection and returns the client.
func serveAdapter(t *testing.T, a adapter.Adapter) *Client {
	t.Helper()
	srv := NewServer(ServerOptions{
		Platforms: []string{"wecom_aibot"},
		Open: func(ctx context.Context, store StoreConfig, bot BotConfig) (adapter.Adapter, error) {
			return a, nil
		},
	})
	client, _ := goplugin.TestPluginGRPCConn(t, false, PluginMap(srv))
	t.Cleanup(func() { client.Close() })
	raw, err := client.Dispense(PluginName)
	if err != nil {
		t.Fatal(err)
	}
	c := raw.(*Client)
	if _, err := c.Configure(t.Context(), StoreConfig{}, []BotConfig{{Name: "hr", Platform: "wecom_aibot", Config: json.RawMessage(`{}`)}}); err != nil {
		t.Fatal(err)
	}
	return c
}

// lateAnswer is a real AI bot whose first non-empty Poll answers only once the caller has
// given up: the answer is lost on the way back, as when the host's call times out just as
// the plugin returns.
type lateAnswer struct {
	*aibot.Bot
	once sync.Once
	lost chan struct{} // closed when the lost answer is being returned
}

func (l *lateAnswer) Poll(ctx context.Context) ([]adapter.Event, error) {
	evs, err := l.Bot.Poll(ctx)
	if len(evs) > 0 {
		first := false
		l.once.Do(func() { first = true })
		if first {
			close(l.lost)
			<-ctx.Done()
		}
	}
	return evs, err
}

// TestPollAnswerLostIsPolledAgain: an AI Bot batch whose Poll answer never reached the host
// (its call ended as the plugin answered) is returned by the next Poll, so every message that
// reached the long connection reaches the host (adapter.Poller's at-least-once promise across
// the plugin boundary; WeCom does not redeliver over the long connection).
func TestPollAnswerLostIsPolledAgain(t *testing.T) {
	s := &aibottest.Server{}
	hs := httptest.NewServer(s)
	defer hs.Close()
	bot, err := aibot.New(aibot.Options{Name: "hr", BotID: "BOT1", Secret: "S1", WSURL: aibottest.WSURL(hs.URL)})
	if err != nil {
		t.Fatal(err)
	}
	la := &lateAnswer{Bot: bot, lost: make(chan struct{})}
	c := serveAdapter(t, la)
	p := c.Bot("hr")

	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	if evs, err := p.Poll(ctx); len(evs) != 0 { // starts the connection
		t.Fatalf("first Poll = %v, %v", evs, err)
	}
	cancel()
	eventually(t, 10*time.Second, "the connection", func() bool { return s.Connections() == 1 })
	for _, text := range []string{"m0", "m1"} {
		if _, err := s.PushText(aibottest.Conv{User: "u"}, text); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel = context.WithCancel(t.Context())
	go func() { <-la.lost; cancel() }()
	if evs, err := p.Poll(ctx); err == nil {
		t.Fatalf("the Poll whose answer is lost = %v, nil; want its cancellation", evs)
	}
	if _, err := s.PushText(aibottest.Conv{User: "u"}, "m2"); err != nil {
		t.Fatal(err)
	}
	var got []string
	for !strings.HasSuffix(strings.Join(got, ","), "m2") {
		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
		evs, err := p.Poll(ctx)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		if len(evs) == 0 {
			t.Fatalf("Poll returned nothing; got %q so far, want m0,m1,m2", got)
		}
		for _, ev := range evs {
			got = append(got, ev.Text)
		}
	}
	if strings.Join(got, ",") != "m0,m1,m2" {
		t.Errorf("the host got %q; want m0,m1,m2 (the lost answer's events again, once, in order)", got)
	}
}

// TestPollBatchQueuedIsNotRepeated: batches the host got are not returned again, and an old
// host that does not acknowledge batches gets each batch once, as before.
func TestPollBatchQueuedIsNotRepeated(t *testing.T) {
	var mu sync.Mutex
	n := 0
	fake := &fakeAdapter{PollFn: func(ctx context.Context) ([]adapter.Event, error) {
		mu.Lock()
		defer mu.Unlock()
		n++
		return []adapter.Event{{ID: fmt.Sprint("e", n)}}, nil
	}}
	c := setup(t, fake)
	for i := 1; i <= 3; i++ {
		evs, err := c.Bot("hr").Poll(t.Context())
		if err != nil || len(evs) != 1 || evs[0].ID != fmt.Sprint("e", i) {
			t.Fatalf("Poll %d = %v, %v; want e%d", i, evs, err, i)
		}
	}
	for i := 4; i <= 5; i++ { // a host before PollRequest.acks
		r, err := c.rpc.Poll(t.Context(), &pb.PollRequest{Bot: "hr"})
		if err != nil || len(r.Events) != 1 || r.Events[0].Id != fmt.Sprint("e", i) || r.Batch != "" {
			t.Fatalf("Poll without acks = %v, %v; want e%d and no batch kept", r, err, i)
		}
	}
}
