//go:build unix

package filestore

import (
	"context"
	"errors"
	"os"
	"syscall"
	"time"

	"github.com/seed-a64d9e1f/chatwire/internal/backoff"
)

// lockFile takes an exclusive flock on f, released when f is closed. It polls with LOCK_NB
// so that waiting for a process holding the lock ends when ctx does.
func lockFile(ctx context.Context, f *os.File) error {
	poll := backoff.Backoff{Base: time.Millisecond, Max: 50 * time.Millisecond}
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		switch {
		case err == nil:
			return nil
		case errors.Is(err, syscall.EINTR):
			continue
		case !errors.Is(err, syscall.EWOULDBLOCK):
			return err
		}
		if err := backoff.Sleep(ctx, poll.Next()); err != nil {
			return err
		}
	}
}
