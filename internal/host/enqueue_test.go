package host

import (
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"github.com/seed-a64d9e1f/chatwire/adapter"
	"github.com/seed-a64d9e1f/chatwire/internal/eventlog"
)

func events(ids ...string) []adapter.Event {
	var out []adapter.Event
	for _, id := range ids {
		out = append(out, adapter.Event{ID: id, Kind: adapter.EventMessage, Chat: adapter.Chat{ID: "chat-" + id}})
	}
	return out
}

func TestSign(t *testing.T) {
	body := []byte(`{"id":"x"}`)
	// echo -n '{"id":"x"}' | openssl dgst -sha256 -hmac secret
	const want = "sha256=ebf5302b9c8bc5e255e0d2135c1a75138c004e631d57c70e6081aa366c1de3b9"
	got := sign("secret", body)
	if got != want {
		t.Errorf("Sign = %q; want %q", got, want)
	}
	if !verify("secret", body, got) || verify("other", body, got) || verify("secret", append(body, ' '), got) {
		t.Error("Verify does not match Sign")
	}
}

// TestEnqueueConcurrentRedeliveries delivers the same event from many webhooks at once on one
// host: every delivery is answered OK and the log holds the event once, with its chat as key.
func TestEnqueueConcurrentRedeliveries(t *testing.T) {
	l := eventlog.NewMemory(eventlog.Options{})
	defer l.Close()
	s := &server{log: slog.New(slog.DiscardHandler), m: newMetrics()}
	b := newBot("hr", adapter.PlatformWeCom, nil, l)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			if err := s.enqueue(t.Context(), b, events("wecom:1")); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	got, err := l.Read(t.Context(), eventlog.ID{}, 10)
	if err != nil || len(got) != 1 || got[0].Key != "chat-wecom:1" || !strings.Contains(string(got[0].Data), `"wecom:1"`) {
		t.Fatalf("log holds %+v, %v; want event wecom:1 once, keyed by its chat", got, err)
	}
}

// TestEnqueueFullLogForgetsID fills a memory log: the webhook's append fails, and the
// redelivery after a consumer made room is appended, not dropped as a duplicate.
func TestEnqueueFullLogForgetsID(t *testing.T) {
	l := eventlog.NewMemory(eventlog.Options{MaxLen: 1})
	defer l.Close()
	s := &server{log: slog.New(slog.DiscardHandler), m: newMetrics()}
	b := newBot("hr", adapter.PlatformWeCom, nil, l)
	if err := s.enqueue(t.Context(), b, events("wecom:1")); err != nil {
		t.Fatal(err)
	}
	if err := s.enqueue(t.Context(), b, events("wecom:2")); !errors.Is(err, eventlog.ErrFull) {
		t.Fatalf("enqueue into a full log = %v; want ErrFull", err)
	}
	first, _ := l.Read(t.Context(), eventlog.ID{}, 1)
	l.Consumed(t.Context(), first[0].ID)
	if err := s.enqueue(t.Context(), b, events("wecom:2")); err != nil {
		t.Fatal(err)
	}
	if got, _ := l.Read(t.Context(), first[0].ID, 10); len(got) != 1 || !strings.Contains(string(got[0].Data), `"wecom:2"`) {
		t.Errorf("after the redelivery the log holds %+v; want event wecom:2", got)
	}
}
