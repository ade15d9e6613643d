//go:build !unix

package eventlog

import (
	"fmt"
	"os"
)

// lockPath opens path; other systems get no lock (one host per store directory is then up to
// the operator).
func lockPath(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("eventlog: %w", err)
	}
	return f, nil
}
