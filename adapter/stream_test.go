package adapter_test

import (
	"context"
	"encoding/json"
	"errors"
	"testing"

	"github.com/seed-a64d9e1f/chatwire/adapter"
)

// sendOnly is an Adapter that records what it sends and cannot stream.
type sendOnly struct {
	sent []adapter.Message
}

var _ adapter.Adapter = (*sendOnly)(nil)

func (a *sendOnly) Send(ctx context.Context, msg adapter.Message) (adapter.Receipt, error) {
	a.sent = append(a.sent, msg)
	return adapter.Receipt{ID: "m1"}, nil
}
func (a *sendOnly) HandleWebhook(context.Context, *adapter.WebhookRequest) (*adapter.WebhookResponse, []adapter.Event, error) {
	return nil, nil, nil
}
func (a *sendOnly) Status(context.Context) (adapter.Status, error) { return adapter.Status{}, nil }
func (a *sendOnly) Close() error                                   { return nil }

// streaming is an Adapter that can stream; OpenStream records the header.
type streaming struct {
	sendOnly
	opened []adapter.Message
}

func (a *streaming) OpenStream(ctx context.Context, msg adapter.Message) (adapter.Stream, error) {
	a.opened = append(a.opened, msg)
	return nil, errors.New("opened")
}

func TestOpenStreamCollectsDeltasForAdaptersThatCannotStream(t *testing.T) {
	a := &sendOnly{}
	s, err := adapter.OpenStream(t.Context(), a, adapter.Message{ReplyTo: "ev1"}, true)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"he", "", "llo ", "wörld"} {
		if err := s.Append(t.Context(), d); err != nil {
			t.Fatal(err)
		}
	}
	if len(a.sent) != 0 {
		t.Fatalf("sent %d messages before Finish; want 0", len(a.sent))
	}
	r, err := s.Finish(t.Context())
	if err != nil || r.ID != "m1" {
		t.Fatalf("Finish() = %+v, %v; want m1, nil", r, err)
	}
	if len(a.sent) != 1 || a.sent[0].Markdown != "hello wörld" || a.sent[0].ReplyTo != "ev1" {
		b, _ := json.Marshal(a.sent)
		t.Fatalf("sent %s; want one markdown message \"hello wörld\" replying to ev1", b)
	}
	if err := s.Append(t.Context(), "x"); !errors.Is(err, adapter.ErrInvalidRequest) {
		t.Errorf("Append after Finish = %v; want invalid request", err)
	}
}

func TestOpenStreamEmptyFinishSendsNothing(t *testing.T) {
	a := &sendOnly{}
	s, err := adapter.OpenStream(t.Context(), a, adapter.Message{To: adapter.Target{User: "u"}}, false)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Finish(t.Context()); !errors.Is(err, adapter.ErrInvalidRequest) {
		t.Errorf("Finish() of an empty stream = %v; want invalid request", err)
	}
	if len(a.sent) != 0 {
		t.Errorf("sent %d messages; want 0", len(a.sent))
	}
}

func TestOpenStreamUsesTheAdaptersStreamer(t *testing.T) {
	a := &streaming{}
	_, err := adapter.OpenStream(t.Context(), a, adapter.Message{ReplyTo: "ev1"}, false)
	if err == nil || err.Error() != "opened" || len(a.opened) != 1 {
		t.Fatalf("OpenStream did not use the adapter's Streamer: err %v, opened %d", err, len(a.opened))
	}
}

func TestCheckStreamHeader(t *testing.T) {
	tests := []struct {
		name string
		msg  adapter.Message
		ok   bool
	}{
		{"reply", adapter.Message{ReplyTo: "e"}, true},
		{"target", adapter.Message{To: adapter.Target{Chat: "c"}}, true},
		{"no target", adapter.Message{}, false},
		{"content", adapter.Message{ReplyTo: "e", Text: "x"}, false},
		{"card", adapter.Message{ReplyTo: "e", Card: json.RawMessage(`{}`)}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := adapter.CheckStreamHeader(tc.msg)
			if (err == nil) != tc.ok || err != nil && !errors.Is(err, adapter.ErrInvalidRequest) {
				t.Errorf("CheckStreamHeader(%+v) = %v; want ok %v", tc.msg, err, tc.ok)
			}
		})
	}
}
