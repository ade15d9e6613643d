package plugin

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	goplugin "github.com/hashicorp/go-plugin"

	"github.com/seed-a64d9e1f/chatwire/adapter"
)

// recStream records what reaches a plugin-side stream.
type recStream struct {
	mu      sync.Mutex
	header  adapter.Message
	deltas  []string
	done    chan string // "finish" or "abort:<reason>"
	failAt  int         // Append number that fails (0: none)
	receipt adapter.Receipt
}

type streamingFake struct {
	fakeAdapter
	rec *recStream
}

func (f *streamingFake) OpenStream(ctx context.Context, msg adapter.Message) (adapter.Stream, error) {
	f.rec.header = msg
	return f.rec, nil
}

func (r *recStream) Append(ctx context.Context, d string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.deltas = append(r.deltas, d)
	if r.failAt > 0 && len(r.deltas) == r.failAt {
		return &adapter.Error{Kind: adapter.KindTooLarge, Message: "reply too long"}
	}
	return nil
}
func (r *recStream) Finish(ctx context.Context) (adapter.Receipt, error) {
	r.done <- "finish"
	return r.receipt, nil
}
func (r *recStream) Abort(ctx context.Context, reason string) error {
	r.done <- "abort:" + reason
	return nil
}

func setupAdapter(t *testing.T, a adapter.Adapter) *Client {
	t.Helper()
	srv := NewServer(ServerOptions{Platforms: []string{"wecom"},
		Open: func(ctx context.Context, store StoreConfig, bot BotConfig) (adapter.Adapter, error) { return a, nil }})
	client, _ := goplugin.TestPluginGRPCConn(t, false, PluginMap(srv))
	t.Cleanup(func() { client.Close() })
	raw, err := client.Dispense(PluginName)
	if err != nil {
		t.Fatal(err)
	}
	c := raw.(*Client)
	if _, err := c.Configure(t.Context(), StoreConfig{}, []BotConfig{{Name: "hr", Platform: "wecom", Config: json.RawMessage(`{}`)}}); err != nil {
		t.Fatal(err)
	}
	return c
}

func TestStreamRoundTrip(t *testing.T) {
	rec := &recStream{done: make(chan string, 1), receipt: adapter.Receipt{ID: "s1", IDs: []string{"s1", "s2"}}}
	c := setupAdapter(t, &streamingFake{rec: rec})
	st, err := c.Bot("hr").OpenStream(t.Context(), adapter.Message{ReplyTo: "wecom_aibot:M1"})
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"he", "llo", " 字"} {
		if err := st.Append(t.Context(), d); err != nil {
			t.Fatal(err)
		}
	}
	r, err := st.Finish(t.Context())
	if err != nil || r.ID != "s1" || len(r.IDs) != 2 {
		t.Fatalf("Finish = %+v, %v", r, err)
	}
	if <-rec.done != "finish" || strings.Join(rec.deltas, "") != "hello 字" || rec.header.ReplyTo != "wecom_aibot:M1" {
		t.Errorf("plugin side got header %+v, deltas %q", rec.header, rec.deltas)
	}
}

func TestStreamAbortAndErrors(t *testing.T) {
	rec := &recStream{done: make(chan string, 1), failAt: 2}
	c := setupAdapter(t, &streamingFake{rec: rec})
	st, _ := c.Bot("hr").OpenStream(t.Context(), adapter.Message{ReplyTo: "e"})
	st.Append(t.Context(), "a")
	if err := st.Abort(t.Context(), "client gone"); err != nil {
		t.Fatal(err)
	}
	if got := <-rec.done; got != "abort:client gone" {
		t.Errorf("plugin side saw %q; want the abort with its reason", got)
	}
	// An Append the plugin refuses: the error keeps its kind across the boundary.
	st, _ = c.Bot("hr").OpenStream(t.Context(), adapter.Message{ReplyTo: "e"})
	rec.deltas = nil
	st.Append(t.Context(), "a")
	st.Append(t.Context(), "b") // refused in the plugin; gRPC reports it on a later call
	var err error
	deadline := time.Now().Add(10 * time.Second)
	for err == nil && time.Now().Before(deadline) {
		err = st.Append(t.Context(), "c")
		if err == nil {
			_, err = st.Finish(t.Context())
		}
	}
	if !errors.Is(err, adapter.ErrTooLarge) {
		t.Errorf("error after a refused delta = %v; want too large", err)
	}
	if _, err := c.Bot("hr").OpenStream(t.Context(), adapter.Message{ReplyTo: "e", Text: "content"}); !errors.Is(err, adapter.ErrInvalidRequest) {
		t.Errorf("header with content = %v; want invalid request", err)
	}
}

func TestStreamToABotThatCannotStream(t *testing.T) {
	var sent []adapter.Message
	fake := &fakeAdapter{SendFn: func(ctx context.Context, msg adapter.Message) (adapter.Receipt, error) {
		sent = append(sent, msg)
		return adapter.Receipt{ID: "m1"}, nil
	}}
	c := setup(t, fake)
	st, err := c.Bot("hr").OpenMarkdownStream(t.Context(), adapter.Message{To: adapter.Target{User: "alice"}})
	if err != nil {
		t.Fatal(err)
	}
	st.Append(t.Context(), "**a**")
	st.Append(t.Context(), " b")
	r, err := st.Finish(t.Context())
	if err != nil || r.ID != "m1" || len(sent) != 1 || sent[0].Markdown != "**a** b" || sent[0].To.User != "alice" {
		t.Errorf("Finish = %+v, %v; sent %+v", r, err, sent)
	}
}
