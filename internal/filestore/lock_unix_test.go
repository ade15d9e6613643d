//go:build unix

package filestore

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/seed-a64d9e1f/chatwire/tokenmgr"
)

// TestRefreshHonoursContextWhileLocked: a refresh waiting for the file lock another process
// holds (here another Store on the directory, whose flock conflicts all the same) returns
// when its context ends, and gets the lock once it is released.
func TestRefreshHonoursContextWhileLocked(t *testing.T) {
	dir := t.TempDir()
	a, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	b, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	held, release, done := make(chan struct{}), make(chan struct{}), make(chan error)
	go func() {
		done <- b.locked(context.Background(), func() error { close(held); <-release; return nil })
	}()
	<-held
	fetch := func(ctx context.Context, prev tokenmgr.Entry) (tokenmgr.Entry, error) {
		return tokenmgr.Entry{Token: tokenmgr.Token{Value: "access", ExpiresAt: time.Now().Add(time.Hour)},
			State: []byte("s")}, nil
	}
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	if _, _, err := a.Refresh(ctx, "graph/t/c/u", 0, fetch); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Refresh while another process holds the lock = %v; want the context's deadline", err)
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if _, _, err := a.Refresh(t.Context(), "graph/t/c/u", 0, fetch); err != nil {
		t.Errorf("Refresh after the lock was released = %v", err)
	}
}
