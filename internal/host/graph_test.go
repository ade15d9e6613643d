package host

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/seed-a64d9e1f/chatwire/adapter"
	"github.com/seed-a64d9e1f/chatwire/adapter/graph/graphtest"
	"github.com/seed-a64d9e1f/chatwire/internal/config"
	"github.com/seed-a64d9e1f/chatwire/internal/platforms"
	"github.com/seed-a64d9e1f/chatwire/internal/sse"
)

// TestGraphMailPolling runs an app-only Graph mail bot with no public URL: the host polls
// through the plugin, and mail arriving in the mailbox comes out of the SSE stream.
func TestGraphMailPolling(t *testing.T) {
	emu := &graphtest.Server{}
	emu.AddClient("client-1", "graph-secret-value")
	gs := httptest.NewServer(emu)
	defer gs.Close()
	cfg := &config.Config{
		Server: config.ServerConfig{Listen: "127.0.0.1:0", APIKeys: []string{testAPIKey}},
		Bots: []config.BotConfig{{Name: "mail", Platform: adapter.PlatformGraph, Graph: &platforms.Graph{
			TenantID: "t1", ClientID: "client-1", ClientSecret: "graph-secret-value", Auth: "client_credentials",
			User: "bot@contoso.com", PollInterval: "100ms", LoginBase: gs.URL, GraphBase: gs.URL}}},
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	var logs syncBuffer
	h, err := Start(t.Context(), cfg, Options{Logger: slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Shutdown()

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	got := make(chan adapter.Event, 10)
	go sse.Read(ctx, h.URL()+"/v1/bots/mail/events", testAPIKey, "", func(id, kind string, data []byte) error {
		var ev adapter.Event
		json.Unmarshal(data, &ev)
		got <- ev
		return nil
	})
	// Mail that arrives before polling has set its cursor is not news; keep sending until
	// one comes through.
	deadline := time.Now().Add(20 * time.Second)
	for {
		emu.DeliverMail("bot@contoso.com", "boss@contoso.com", "status", "how is it going?")
		select {
		case ev := <-got:
			if ev.Platform != "graph" || ev.Bot != "mail" || ev.Chat.Type != adapter.ChatMail || !strings.Contains(ev.Text, "how is it going?") {
				t.Errorf("mail event = %+v", ev)
			}
			if strings.Contains(logs.String(), "graph-secret-value") {
				t.Error("log holds the client secret")
			}
			return
		case <-time.After(500 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("no mail event within 20s; log:\n%s", logs.String())
		}
	}
}
