package pacing

import (
	"testing"
	"time"

	"github.com/seed-a64d9e1f/chatwire/adapter"
	"github.com/seed-a64d9e1f/chatwire/adapter/teams"
)

// TestTeamsThreadLimits: a Teams bot's sends are paced per conversation by Teams'
// per-thread limits (issue 16; specs/botconnector.md §3.5): 7/1s, 8/2s, 60/30s, 1800/1h,
// each conversation on its own counter, as Graph's chats are.
func TestTeamsThreadLimits(t *testing.T) {
	clock := newManual()
	sc := schedulers(t, memoryStores(t, 1), adapter.PlatformTeams, clock, nil)[0]
	t0 := clock.Now()
	conv := adapter.Message{To: adapter.Target{Chat: "19:abc@thread.v2"}, Text: "x"}
	var times []time.Time
	for i := range 1801 {
		r, err := sc.Reserve(t.Context(), conv, -1)
		if err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
		times = append(times, r.At)
	}
	for i, want := range []time.Duration{0, 0, 0, 0, 0, 0, 0, m(time.Second), m(2 * time.Second)} {
		if got := times[i].Sub(t0); got != want {
			t.Errorf("send %d at %v; want %v (7 a second, 8 per 2 s, with the margin)", i, got, want)
		}
	}
	for _, l := range teams.ThreadLimits {
		checkWindows(t, times, Limit{l.N, l.Per})
	}
	if got := times[60].Sub(t0); got < m(30*time.Second) {
		t.Errorf("61st send at %v; want ≥ %v (60 per 30 s)", got, m(30*time.Second))
	}
	if got := times[1800].Sub(t0); got < m(time.Hour) {
		t.Errorf("1801st send at %v; want ≥ %v (1800 an hour)", got, m(time.Hour))
	}
	// Another conversation has its own counters: it goes now.
	for _, other := range []adapter.Target{{Chat: "a:1on1"}, {User: "29:user"}, {Channel: &adapter.Channel{Team: "T", Channel: "19:chan@thread.skype"}}} {
		if r, err := sc.Reserve(t.Context(), adapter.Message{To: other, Text: "x"}, 0); err != nil || !r.At.Equal(t0) {
			t.Errorf("to %s: At %v, %v; want now", other, r.At.Sub(t0), err)
		}
	}
	// A reply in a thread of the conversation is the conversation's: it waits behind it.
	reply := adapter.Message{To: adapter.Target{Chat: "19:abc@thread.v2;messageid=1700000000000"}, Text: "x"}
	if _, err := sc.Reserve(t.Context(), reply, time.Second); adapter.KindOf(err) != adapter.KindRateLimited {
		t.Errorf("reply in the paced conversation: %v; want rate_limited", err)
	}
	bare := adapter.Message{ReplyTo: teams.EventID("19:abc@thread.v2", "1700000000000"), Text: "x"}
	if got := Plan(adapter.PlatformTeams, bare); len(got) != 1 || got[0] != (Slot{ScopeConversation, "19:abc@thread.v2", 1}) {
		t.Errorf("Plan(reply with no target) = %v; want the conversation of reply_to", got)
	}
}

// TestTeamsRetryAfterPausesTheConversation: a Teams 429 with Retry-After pauses that
// conversation's sends, not the others'.
func TestTeamsRetryAfterPausesTheConversation(t *testing.T) {
	clock := newManual()
	sc := schedulers(t, memoryStores(t, 1), adapter.PlatformTeams, clock, nil)[0]
	t0 := clock.Now()
	a := adapter.Message{To: adapter.Target{Chat: "19:a@thread.v2"}, Text: "x"}
	sc.Report(t.Context(), Plan(adapter.PlatformTeams, a), &adapter.Error{Kind: adapter.KindRateLimited, Platform: "teams", RetryAfter: 5 * time.Second})
	if r, err := sc.Reserve(t.Context(), a, -1); err != nil || r.At.Sub(t0) != 5*time.Second {
		t.Errorf("conversation A after its 429: At %v, %v; want 5s", r.At.Sub(t0), err)
	}
	if r, err := sc.Reserve(t.Context(), adapter.Message{To: adapter.Target{Chat: "19:b@thread.v2"}, Text: "x"}, 0); err != nil || !r.At.Equal(t0) {
		t.Errorf("conversation B: At %v, %v; want now", r.At.Sub(t0), err)
	}
}
