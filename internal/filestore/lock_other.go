//go:build !unix

package filestore

import (
	"context"
	"os"
)

// lockFile takes no lock on systems without flock: only the Store's in-process mutex
// serializes access, so on other systems, only one process may use a state dir at a time
// (a running host and graph login must not share one).
func lockFile(context.Context, *os.File) error { return nil }
