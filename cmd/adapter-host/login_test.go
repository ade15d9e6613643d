package main

import (
	"bytes"
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/seed-a64d9e1f/chatwire/adapter/graph/graphtest"
	"github.com/seed-a64d9e1f/chatwire/internal/filestore"
	"github.com/seed-a64d9e1f/chatwire/internal/platforms"
)

func TestGraphLoginDevice(t *testing.T) {
	emu := &graphtest.Server{LoginUser: "bot-user"}
	emu.AddClient("client-1", "graph-secret-value")
	gs := httptest.NewServer(emu)
	defer gs.Close()
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "c.yaml")
	state := filepath.Join(dir, "state")
	os.WriteFile(cfgPath, []byte(fmt.Sprintf(`
store: {dir: %q}
bots:
  - name: teams
    platform: graph
    graph: {tenant_id: t1, client_id: client-1, client_secret: graph-secret-value, auth: delegated, user: bot@contoso.com,
            login_base: %q, graph_base: %q}
`, state, gs.URL, gs.URL)), 0o600)

	var out, errb bytes.Buffer
	done := make(chan error, 1)
	go func() {
		done <- run(t.Context(), []string{"graph", "login", "--config", cfgPath, "--bot", "teams", "--device"}, &out, &errb)
	}()
	deadline := time.Now().Add(10 * time.Second)
	for len(emu.PendingDeviceCodes()) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no device code requested")
		}
		time.Sleep(20 * time.Millisecond)
	}
	emu.ApproveDevice(emu.PendingDeviceCodes()[0])
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("graph login = %v\n%s", err, out.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("graph login did not finish")
	}
	if !strings.Contains(out.String(), "enter the code") || !strings.Contains(out.String(), "signed in") {
		t.Errorf("output:\n%s", out.String())
	}
	s, err := filestore.Open(state)
	if err != nil {
		t.Fatal(err)
	}
	key := platforms.GraphKey(platforms.Graph{TenantID: "t1", ClientID: "client-1", Auth: "delegated", User: "bot@contoso.com"})
	rt := string(s.State(key))
	if rt == "" {
		t.Fatalf("no refresh token stored under %s", key)
	}
	if strings.Contains(out.String(), rt) || strings.Contains(errb.String(), rt) {
		t.Error("the refresh token was printed")
	}
}
