//go:build unix

package plugin

import (
	"os/exec"
	"syscall"
)

// ownProcessGroup puts the plugin in a process group of its own. The kernel sends SIGHUP and
// SIGCONT to a stopped member of a group that becomes orphaned; in the host's group, that
// could resume a plugin the supervisor is dealing with as hung, or hang up a healthy one
// when the host runs detached. In its own group, whose parent is the host, it is orphaned
// only once the host is gone (and then it exits by itself, see Serve). Signals a terminal
// sends to the foreground group (Ctrl-C) reach only the host, which stops the plugin.
func ownProcessGroup(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
}
