package main

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/seed-a64d9e1f/chatwire/adapter"
	"github.com/seed-a64d9e1f/chatwire/internal/check"
	"github.com/seed-a64d9e1f/chatwire/internal/config"
	"github.com/seed-a64d9e1f/chatwire/internal/demo"
	"github.com/seed-a64d9e1f/chatwire/internal/host"
	"github.com/seed-a64d9e1f/chatwire/internal/sse"
)

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// emulate writes a bots.yaml that check accepts and a host runs with: sends reach the
// emulators, and users "saying" something arrive as events.
func TestEmulate(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	listen := freeAddr(t)
	var stdout, stderr syncBuffer
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"emulate", "--dir", t.TempDir(), "--listen", listen, "--wecom", "127.0.0.1:0", "--graph", "127.0.0.1:0", "--teams", "127.0.0.1:0"}, &stdout, &stderr)
	}()
	wrote := regexp.MustCompile(`Wrote (\S+bots\.yaml)`)
	var cfgPath string
	for deadline := time.Now().Add(30 * time.Second); cfgPath == ""; time.Sleep(20 * time.Millisecond) {
		if m := wrote.FindStringSubmatch(stdout.String()); m != nil {
			cfgPath = m[1]
		}
		select {
		case err := <-done:
			t.Fatalf("emulate ended: %v\n%s%s", err, stdout.String(), stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("emulate wrote no config:\n%s%s", stdout.String(), stderr.String())
		}
	}
	out := stdout.String()
	for _, want := range []string{"check --config " + cfgPath, "run --config " + cfgPath, "graph login --config " + cfgPath + " --bot teams",
		"send --config " + cfgPath + " --bot hr", "curl -N", "echo_bot.py hr", "echo_bot.py teams",
		"send --config " + cfgPath + " --bot helpdesk --to user:ID", "echo_bot.py helpdesk", "tenant_id (AADSTS90002"} {
		if !strings.Contains(out, want) {
			t.Errorf("emulate does not print %q:\n%s", want, out)
		}
	}
	var checkOut, checkErr syncBuffer
	if err := run(ctx, []string{"check", "--config", cfgPath}, &checkOut, &checkErr); err != nil {
		t.Fatalf("check of the written config: %v\n%s%s", err, checkOut.String(), checkErr.String())
	}
	if !strings.Contains(checkOut.String(), "bot helpdesk (teams): ok") {
		t.Errorf("check does not pass the teams bot:\n%s", checkOut.String())
	}
	// A wrong tenant_id is rehearsed: the emulated identity platform answers AADSTS90002.
	written, err := os.ReadFile(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	wrongTenant := filepath.Join(filepath.Dir(cfgPath), "wrong-tenant.yaml")
	os.WriteFile(wrongTenant, []byte(strings.Replace(string(written), "graph: {tenant_id: "+demo.EmuTenant, "graph: {tenant_id: contoso-typo", 1)), 0o600)
	var wrongOut syncBuffer
	if err := run(ctx, []string{"check", "--config", wrongTenant}, &wrongOut, &checkErr); err == nil ||
		!strings.Contains(wrongOut.String(), "bot teams (graph): FAILED") || !strings.Contains(wrongOut.String(), "AADSTS90002") ||
		!strings.Contains(wrongOut.String(), "what it means: "+check.Explain("AADSTS90002")) {
		t.Errorf("check with a wrong tenant_id = %v\n%s", err, wrongOut.String())
	}

	cfg, err := config.Load(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	h, err := host.Start(ctx, cfg, host.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Shutdown()
	key := cfg.Server.APIKeys[0]
	post := func(path, body string) {
		t.Helper()
		req, _ := http.NewRequestWithContext(ctx, "POST", h.URL()+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+key)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Errorf("POST %s %s = %d", path, body, resp.StatusCode)
		}
	}
	post("/v1/bots/hr/messages", `{"to":{"user":"alice"},"text":"hi alice"}`)
	post("/v1/bots/teams/messages", `{"to":{"chat":"`+demo.EmuChatID+`"},"text":"hi chat"}`)

	// Erin writes to the helpdesk bot on the emulated Teams; the bot then writes to her.
	teamsURL := regexp.MustCompile(`curl -d user=Erin -d text=hi (\S+)`).FindStringSubmatch(out)
	if teamsURL == nil {
		t.Fatalf("no Teams say command in:\n%s", out)
	}
	resp, err := http.PostForm(teamsURL[1], url.Values{"user": {"Erin"}, "text": {"hello helpdesk"}})
	if err != nil {
		t.Fatal(err)
	}
	said, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	oid := regexp.MustCompile(`Entra object id ([^)\s]+)\) wrote in .*: host answered 200`).FindStringSubmatch(string(said))
	if resp.StatusCode != 200 || oid == nil {
		t.Fatalf("Teams say = %d %s", resp.StatusCode, said)
	}
	post("/v1/bots/helpdesk/messages", `{"to":{"user":"`+oid[1]+`"},"text":"hi Erin"}`)

	// alice writes to hr through the emulator; the event reaches a bot on SSE.
	wecomURL := regexp.MustCompile(`curl -d user=alice -d text=hi (\S+)`).FindStringSubmatch(out)
	if wecomURL == nil {
		t.Fatalf("no WeCom say command in:\n%s", out)
	}
	got := make(chan adapter.Event, 1)
	sctx, stop := context.WithCancel(ctx)
	defer stop()
	connected := make(chan struct{})
	go sse.ReadWithHook(sctx, h.URL()+"/v1/bots/hr/events", key, "", func() { close(connected) }, func(id, kind string, data []byte) error {
		var ev adapter.Event
		json.Unmarshal(data, &ev)
		got <- ev
		return errors.New("done")
	})
	<-connected
	resp, err = http.PostForm(wecomURL[1], url.Values{"user": {"alice"}, "text": {"hello hr"}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("say = %d", resp.StatusCode)
	}
	select {
	case ev := <-got:
		if ev.Text != "hello hr" || ev.Sender.ID != "alice" {
			t.Errorf("event = %+v", ev)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("no event for alice's message")
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("emulate: %v", err)
	}
}
