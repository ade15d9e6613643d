package filestore

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/seed-a64d9e1f/chatwire/tokenmgr"
)

func TestStateSurvivesReopen(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	fetch := func(ctx context.Context, prev tokenmgr.Entry) (tokenmgr.Entry, error) {
		return tokenmgr.Entry{Token: tokenmgr.Token{Value: "access", ExpiresAt: time.Now().Add(time.Hour)},
			State: append(prev.State, 'x')}, nil
	}
	e, fetched, err := s.Refresh(t.Context(), "graph/t/c/u", 0, fetch)
	if err != nil || !fetched || string(e.State) != "x" {
		t.Fatalf("Refresh = %+v, %v, %v", e, fetched, err)
	}
	fi, err := os.Stat(s.Path())
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("state file mode = %v; want 0600", fi.Mode().Perm())
	}
	data, _ := os.ReadFile(s.Path())
	if contains(data, "access") {
		t.Errorf("state file holds the access token: %s", data)
	}

	s2, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	e, fetched, err = s2.Refresh(t.Context(), "graph/t/c/u", 1, fetch)
	if err != nil || !fetched || string(e.State) != "xx" {
		t.Errorf("Refresh after reopen = %+v, %v, %v; want state xx (the saved state was redeemed)", e, fetched, err)
	}
	if got := string(s2.State("graph/t/c/u")); got != "xx" {
		t.Errorf("State = %q; want xx", got)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("dir holds %d files; want only the state file (temporary files removed)", len(entries))
	}
}

func TestCorruptFile(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, FileName), []byte("{"), 0o600)
	if _, err := Open(dir); err == nil {
		t.Error("Open of a corrupt state file succeeded; want an error")
	}
}

func contains(b []byte, s string) bool { return strings.Contains(string(b), s) }
