package filestore

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
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
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if len(names) != 2 || names[0] != FileName || names[1] != LockName {
		t.Errorf("dir holds %v; want only the state and lock files (temporary files removed)", names)
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

// TestConcurrentWritersKeepEachOthersKeys runs two Stores on one directory, as a host and
// graph login (or check) would, writing different keys at once: none is lost.
func TestConcurrentWritersKeepEachOthersKeys(t *testing.T) {
	dir := t.TempDir()
	a, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	b, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	const n = 20
	var wg sync.WaitGroup
	for i := range n {
		for name, s := range map[string]*Store{"a": a, "b": b} {
			wg.Go(func() {
				if err := s.SetState(fmt.Sprintf("%s/%d", name, i), []byte(name)); err != nil {
					t.Error(err)
				}
			})
		}
	}
	wg.Wait()
	c, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		for _, name := range []string{"a", "b"} {
			if got := string(c.State(fmt.Sprintf("%s/%d", name, i))); got != name {
				t.Errorf("key %s/%d = %q after concurrent writes; want %q", name, i, got, name)
			}
		}
	}
}

// TestRefreshRedeemsStateWrittenByAnother is a running host (a) and graph login (b) on one
// directory: the host's next refresh redeems the new sign-in, not the refresh token it held,
// and its write keeps b's other keys.
func TestRefreshRedeemsStateWrittenByAnother(t *testing.T) {
	dir := t.TempDir()
	const key = "graph/t/c/u"
	a, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	var redeemed []string
	fetch := func(ctx context.Context, prev tokenmgr.Entry) (tokenmgr.Entry, error) {
		redeemed = append(redeemed, string(prev.State))
		return tokenmgr.Entry{Token: tokenmgr.Token{Value: "access", ExpiresAt: time.Now().Add(time.Hour)},
			State: append(append([]byte(nil), prev.State...), '+')}, nil
	}
	if _, _, err := a.Refresh(t.Context(), key, 0, fetch); err != nil {
		t.Fatal(err)
	}
	b, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.SetState(key, []byte("new-sign-in")); err != nil {
		t.Fatal(err)
	}
	if err := b.SetState("graph/t/c/other", []byte("other")); err != nil {
		t.Fatal(err)
	}
	if _, _, err := a.Refresh(t.Context(), key, 1, fetch); err != nil {
		t.Fatal(err)
	}
	if len(redeemed) != 2 || redeemed[1] != "new-sign-in" {
		t.Errorf("refreshes redeemed %q; want the second to redeem the new sign-in", redeemed)
	}
	c, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got := string(c.State(key)); got != "new-sign-in+" {
		t.Errorf("state of %s = %q; want the rotation of the new sign-in", key, got)
	}
	if got := string(c.State("graph/t/c/other")); got != "other" {
		t.Errorf("other key = %q; the host's write dropped it", got)
	}
	// A third refresh goes on from what the host wrote itself.
	if _, _, err := a.Refresh(t.Context(), key, 2, fetch); err != nil || redeemed[2] != "new-sign-in+" {
		t.Errorf("third refresh redeemed %q, %v; want new-sign-in+", redeemed[len(redeemed)-1], err)
	}
}

// TestSignInDuringRefreshIsKept is graph login (b) storing a new sign-in while the host (a)
// is redeeming the old refresh token: the rotation of the old one must not overwrite the new
// sign-in, in the file or in a's memory, and a's next refresh redeems the new sign-in.
func TestSignInDuringRefreshIsKept(t *testing.T) {
	dir := t.TempDir()
	const key = "graph/t/c/u"
	b, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.SetState(key, []byte("old")); err != nil {
		t.Fatal(err)
	}
	a, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	var redeemed []string
	signIn := func() error { return nil }
	fetch := func(ctx context.Context, prev tokenmgr.Entry) (tokenmgr.Entry, error) {
		redeemed = append(redeemed, string(prev.State))
		if err := signIn(); err != nil { // b writes while the fetch is on the network
			return tokenmgr.Entry{}, err
		}
		return tokenmgr.Entry{Token: tokenmgr.Token{Value: "access", ExpiresAt: time.Now().Add(time.Hour)},
			State: append(append([]byte(nil), prev.State...), '+')}, nil
	}
	loaded, err := a.Load(t.Context(), key)
	if err != nil {
		t.Fatal(err)
	}
	signIn = func() error { return b.SetState(key, []byte("new-sign-in")) }
	e, fetched, err := a.Refresh(t.Context(), key, loaded.Gen, fetch)
	if err != nil || !fetched {
		t.Fatalf("Refresh = %v, %v; want a fetch", fetched, err)
	}
	if string(e.State) != "new-sign-in" {
		t.Errorf("refreshed entry holds state %q; want the newer new-sign-in", e.State)
	}
	c, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got := string(c.State(key)); got != "new-sign-in" {
		t.Errorf("state in the file = %q after a sign-in during a refresh; want new-sign-in", got)
	}
	if got := string(a.State(key)); got != "new-sign-in" {
		t.Errorf("a.State = %q; want new-sign-in", got)
	}
	signIn = func() error { return nil }
	if _, _, err := a.Refresh(t.Context(), key, e.Gen, fetch); err != nil {
		t.Fatal(err)
	}
	if len(redeemed) != 2 || redeemed[0] != "old" || redeemed[1] != "new-sign-in" {
		t.Errorf("refreshes redeemed %q; want old, then new-sign-in", redeemed)
	}
	if c, err := Open(dir); err != nil || string(c.State(key)) != "new-sign-in+" {
		t.Errorf("state in the file after the next refresh = %q, %v; want new-sign-in+", c.State(key), err)
	}
}

// TestRefreshSurvivesCorruptFile: a state file corrupted while the host runs does not stop
// its refreshes: the refresh redeems the state held in memory, saves the rotation, and keeps
// a copy of the corrupt file. Open still refuses a corrupt file.
func TestRefreshSurvivesCorruptFile(t *testing.T) {
	dir := t.TempDir()
	const key = "graph/t/c/u"
	b, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.SetState(key, []byte("old")); err != nil {
		t.Fatal(err)
	}
	a, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(a.Path(), []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(dir); err == nil || !strings.Contains(err.Error(), "corrupt") {
		t.Errorf("Open of a corrupt file = %v; want an error saying it is corrupt", err)
	}
	var redeemed []string
	fetch := func(ctx context.Context, prev tokenmgr.Entry) (tokenmgr.Entry, error) {
		redeemed = append(redeemed, string(prev.State))
		return tokenmgr.Entry{Token: tokenmgr.Token{Value: "access", ExpiresAt: time.Now().Add(time.Hour)},
			State: append(append([]byte(nil), prev.State...), '+')}, nil
	}
	loaded, err := a.Load(t.Context(), key)
	if err != nil {
		t.Fatal(err)
	}
	if _, fetched, err := a.Refresh(t.Context(), key, loaded.Gen, fetch); err != nil || !fetched {
		t.Fatalf("Refresh with a corrupt file = %v, %v; want a fetch and no error", fetched, err)
	}
	if len(redeemed) != 1 || redeemed[0] != "old" {
		t.Errorf("refresh redeemed %q; want the state in memory, old", redeemed)
	}
	c, err := Open(dir)
	if err != nil {
		t.Fatalf("Open after the refresh: %v; want the file rewritten", err)
	}
	if got := string(c.State(key)); got != "old+" {
		t.Errorf("state in the file = %q; want old+", got)
	}
	if data, err := os.ReadFile(a.Path() + ".corrupt"); err != nil || string(data) != "{" {
		t.Errorf("copy of the corrupt file = %q, %v; want {", data, err)
	}
}

// TestRefreshHonoursContextWhileWaiting: a refresh waiting for this process's turn at the
// file returns when its context ends instead of blocking.
func TestRefreshHonoursContextWhileWaiting(t *testing.T) {
	s, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if err := s.files.Acquire(t.Context(), 1); err != nil { // another goroutine of this process is using the file
		t.Fatal(err)
	}
	defer s.files.Release(1)
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	fetch := func(ctx context.Context, prev tokenmgr.Entry) (tokenmgr.Entry, error) {
		t.Error("fetch ran without the lock")
		return tokenmgr.Entry{}, nil
	}
	if _, _, err := s.Refresh(ctx, "graph/t/c/u", 0, fetch); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Refresh while the file is busy = %v; want the context's deadline", err)
	}
}
