//go:build !unix

package procs

import "time"

// processCPUTime cannot be read here: the Controller does nothing.
func processCPUTime() (time.Duration, bool) { return 0, false }
