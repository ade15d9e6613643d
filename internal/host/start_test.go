package host

import (
	"log/slog"
	"net"
	"strings"
	"testing"

	"github.com/seed-a64d9e1f/chatwire/adapter"
	"github.com/seed-a64d9e1f/chatwire/internal/config"
	"github.com/seed-a64d9e1f/chatwire/internal/platforms"
)

// TestFailedStartReleasesStore: a start that fails at its last step (server.listen taken)
// closes what it opened, the event logs under store.dir among them (they are locked while
// open), so the next start on the same directory works.
func TestFailedStartReleasesStore(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	cfg := &config.Config{
		Server: config.ServerConfig{Listen: taken.Addr().String(), APIKeys: []string{testAPIKey}},
		Store:  config.StoreConfig{Dir: t.TempDir()},
		Bots: []config.BotConfig{{Name: "hr", Platform: adapter.PlatformWeCom, WeCom: &platforms.WeCom{
			CorpID: testCorp, CorpSecret: testSecret, AgentID: testAgent, APIBase: "http://127.0.0.1:1"}}},
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	opts := Options{Logger: slog.New(slog.NewJSONHandler(logs, nil))}
	if h, err := Start(t.Context(), cfg, opts); err == nil || !strings.Contains(err.Error(), "server.listen") {
		if h != nil {
			h.Shutdown()
		}
		t.Fatalf("start on a taken address = %v; want a server.listen error", err)
	}
	cfg.Server.Listen = "127.0.0.1:0"
	h, err := Start(t.Context(), cfg, opts)
	if err != nil {
		t.Fatalf("start after a failed start on the same store.dir: %v", err)
	}
	if err := h.Shutdown(); err != nil {
		t.Error(err)
	}
}
