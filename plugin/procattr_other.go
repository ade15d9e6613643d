//go:build !unix

package plugin

import "os/exec"

// ownProcessGroup does nothing where there are no POSIX process groups.
func ownProcessGroup(*exec.Cmd) {}
