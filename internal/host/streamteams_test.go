package host

import (
	"context"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/seed-a64d9e1f/chatwire/adapter"
	"github.com/seed-a64d9e1f/chatwire/internal/pacing"
)

// TestTeamsStreamCountsItsRequests: a Teams streamed reply counts against the conversation's
// limit as the requests Teams gets. In a 1:1 chat the stream's opening request and its final
// message are two; in a group chat or a channel (Teams does not stream there: the text goes
// as one message at the end) it is one, not two. With a limit of 2 an hour, an ordinary send
// with no wait after the stream goes after a group-chat stream and is refused after a 1:1
// one.
func TestTeamsStreamCountsItsRequests(t *testing.T) {
	for _, tc := range []struct {
		name   string
		header adapter.Message
		counts int
	}{
		{"group chat", adapter.Message{To: adapter.Target{Chat: "19:abc@thread.v2"}}, 1},
		{"group chat reply", adapter.Message{ReplyTo: "teams:19:abc@thread.v2|1700000000000"}, 1},
		{"older group chat", adapter.Message{To: adapter.Target{Chat: "19:abc@thread.skype"}}, 1},
		{"channel thread", adapter.Message{To: adapter.Target{Chat: "19:abc@thread.tacv2;messageid=17"}}, 1},
		{"channel", adapter.Message{To: adapter.Target{Channel: &adapter.Channel{Team: "t", Channel: "19:abc@thread.tacv2"}}}, 1},
		{"1:1 chat", adapter.Message{To: adapter.Target{Chat: "a:1xyz"}}, 2},
		{"1:1 reply", adapter.Message{ReplyTo: "teams:a:1xyz|1700000000000"}, 2},
		{"user", adapter.Message{To: adapter.Target{User: "29:1abc"}}, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sc, err := pacing.New(pacing.NewMemory(), "tb", adapter.PlatformTeams,
				pacing.Options{Limits: map[string][]pacing.Limit{pacing.ScopeConversation: {{N: 2, Per: time.Hour}}}})
			if err != nil {
				t.Fatal(err)
			}
			g := &sendGate{pace: map[string]*pacing.Scheduler{"tb": sc}, maxWait: map[string]time.Duration{"tb": 0}}
			b := newBot("tb", adapter.PlatformTeams, nil, nil)
			p := newStreamPacing(g, httptest.NewRequest("POST", "/v1/bots/tb/messages", nil), b)
			ctx := context.Background()
			if err := p.open(ctx, tc.header, func(context.Context) error { return nil }); err != nil {
				t.Fatalf("open: %v", err)
			}
			whole := tc.header
			whole.Text = "the whole reply"
			if err := p.finish(ctx, whole, func(context.Context) error { return nil }); err != nil {
				t.Fatalf("finish: %v", err)
			}
			_, err = sc.Reserve(ctx, whole, 0) // a third request to the conversation, at once
			switch tc.counts {
			case 1:
				if err != nil {
					t.Errorf("a send after the stream: %v; want it to go (the stream made one request of 2 an hour)", err)
				}
			case 2:
				if adapter.KindOf(err) != adapter.KindRateLimited {
					t.Errorf("a send after the stream: %v; want rate_limited (the stream made two requests of 2 an hour)", err)
				}
			}
		})
	}
}
