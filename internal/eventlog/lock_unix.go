//go:build unix

package eventlog

import (
	"errors"
	"fmt"
	"os"
	"syscall"
)

// lockPath takes an exclusive lock on path (created if missing) without waiting; closing
// the file, or the process ending, releases it.
func lockPath(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("eventlog: %w", err)
	}
	for {
		err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if !errors.Is(err, syscall.EINTR) {
			break
		}
	}
	if errors.Is(err, syscall.EWOULDBLOCK) {
		f.Close()
		return nil, fmt.Errorf("eventlog: %s is in use by another process (a store directory serves one host)", path)
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("eventlog: locking %s: %w", path, err)
	}
	return f, nil
}
