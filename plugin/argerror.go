package plugin

import (
	"errors"
	"fmt"
	"strings"
)

// MissingPluginArg is the line a program that serves as a chatwire plugin only when given an
// argument (adapter-host: "plugin") writes on stdout when a launcher starts it without that
// argument. go-plugin reads stdout for its handshake, so Launch sees the line and reports
// what to fix instead of go-plugin's guesses (architecture, libraries, permissions).
const MissingPluginArg = "chatwire-plugin-error: started by a plugin launcher without its \"plugin\" argument"

// ErrMissingPluginArg is returned (wrapped) by Launch when the executable said
// [MissingPluginArg].
var ErrMissingPluginArg = errors.New(`plugin: the executable serves as a plugin only when started with the argument "plugin": set LaunchOptions.Args to []string{"plugin"}`)

// startError explains an error of starting the plugin at path.
func startError(path string, err error) error {
	if strings.Contains(err.Error(), MissingPluginArg) {
		return fmt.Errorf("plugin: starting %s: %w", path, ErrMissingPluginArg)
	}
	return fmt.Errorf("plugin: starting %s: %w", path, err)
}
