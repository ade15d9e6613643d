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

// TestCheckGraphDelegatedDoesNotRedeem checks a delegated bot whose sign-in a running host
// uses: check tries the client secret, sees the stored sign-in, and never redeems it.
func TestCheckGraphDelegatedDoesNotRedeem(t *testing.T) {
	emu := &graphtest.Server{}
	emu.AddClient("client-1", "graph-secret-value")
	gs := httptest.NewServer(emu)
	defer gs.Close()
	dir := t.TempDir()
	state := filepath.Join(dir, "state")
	write := func(secret string) string {
		p := filepath.Join(dir, "c.yaml")
		os.WriteFile(p, []byte(fmt.Sprintf(`
store: {dir: %q}
bots:
  - name: teams
    platform: graph
    graph: {tenant_id: t1, client_id: client-1, client_secret: %q, auth: delegated, user: bot@contoso.com,
            login_base: %q, graph_base: %q}
`, state, secret, gs.URL, gs.URL)), 0o600)
		return p
	}
	var out, errb bytes.Buffer
	err := run(t.Context(), []string{"check", "--config", write("graph-secret-value")}, &out, &errb)
	if err == nil || !strings.Contains(out.String(), "no sign-in stored") || !strings.Contains(out.String(), "graph login") {
		t.Errorf("check without a sign-in = %v\n%s", err, out.String())
	}

	s, err := filestore.Open(state)
	if err != nil {
		t.Fatal(err)
	}
	key := platforms.GraphKey(platforms.Graph{TenantID: "t1", ClientID: "client-1", Auth: "delegated", User: "bot@contoso.com"})
	rt := emu.IssueRefreshToken("client-1", "bot-user", "offline_access")
	if err := s.SetState(key, []byte(rt)); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	err = run(t.Context(), []string{"check", "--config", write("graph-secret-value")}, &out, &errb)
	if err != nil || !strings.Contains(out.String(), "bot teams (graph): ok, client secret accepted; a sign-in is stored (check does not redeem it") {
		t.Errorf("check with a sign-in = %v\n%s", err, out.String())
	}
	for _, r := range emu.TokenRequests() {
		if r.GrantType == "refresh_token" {
			t.Errorf("check redeemed the stored refresh token: %+v", r)
		}
	}
	if s2, err := filestore.Open(state); err != nil {
		t.Errorf("reopening the store: %v", err)
	} else if string(s2.State(key)) != rt {
		t.Error("check changed the stored sign-in")
	}
	out.Reset()
	err = run(t.Context(), []string{"check", "--config", write("wrong-secret")}, &out, &errb)
	if err == nil || !strings.Contains(out.String(), "AADSTS7000215") || !strings.Contains(out.String(), "what it means:") {
		t.Errorf("check with a wrong secret = %v\n%s", err, out.String())
	}
	if strings.Contains(out.String(), rt) || strings.Contains(out.String(), "wrong-secret") {
		t.Error("check printed a secret")
	}
}

// TestCheckGraphDelegatedMultiTenant checks a personal-account delegated bot (tenant
// consumers): client credentials are refused for that tenant (AADSTS9001023), so check
// must not try the secret that way, and must say it did not.
func TestCheckGraphDelegatedMultiTenant(t *testing.T) {
	emu := &graphtest.Server{}
	emu.AddClient("client-1", "graph-secret-value")
	gs := httptest.NewServer(emu)
	defer gs.Close()
	dir := t.TempDir()
	state := filepath.Join(dir, "state")
	p := filepath.Join(dir, "c.yaml")
	if err := os.WriteFile(p, []byte(fmt.Sprintf(`
store: {dir: %q}
bots:
  - name: personal
    platform: graph
    graph: {tenant_id: consumers, client_id: client-1, client_secret: graph-secret-value, auth: delegated, user: bot@outlook.com,
            login_base: %q, graph_base: %q}
`, state, gs.URL, gs.URL)), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := filestore.Open(state)
	if err != nil {
		t.Fatal(err)
	}
	key := platforms.GraphKey(platforms.Graph{TenantID: "consumers", ClientID: "client-1", Auth: "delegated", User: "bot@outlook.com"})
	if err := s.SetState(key, []byte(emu.IssueRefreshToken("client-1", "bot-user", "offline_access"))); err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	err = run(t.Context(), []string{"check", "--config", p}, &out, &errb)
	if err != nil || !strings.Contains(out.String(), `bot personal (graph): ok, client secret not tried (tenant "consumers"`) {
		t.Errorf("check of a consumers delegated bot = %v\n%s", err, out.String())
	}
	if strings.Contains(out.String(), "FAILED") {
		t.Errorf("check tried client credentials for tenant consumers:\n%s", out.String())
	}
	if n := len(emu.TokenRequests()); n != 0 {
		t.Errorf("check made %d token requests, want 0", n)
	}
}
