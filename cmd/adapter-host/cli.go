package main

import (
	"bytes"
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"

	"github.com/seed-a64d9e1f/chatwire/plugin"
)

// flagSet is a command's flags. --help (-h) prints the usage, with every flag, on stdout and
// makes the command exit 0; a bad flag prints the error and the usage on stderr.
type flagSet struct {
	*flag.FlagSet
	synopsis       string
	stdout, stderr io.Writer
}

// onFlagSet, if not nil, is called with every flag set made (tests check the usage lists
// every flag).
var onFlagSet func(*flagSet)

// printUsage writes the synopsis and every flag, spelled --name as elsewhere in the usage.
func (f *flagSet) printUsage(w io.Writer) {
	fmt.Fprintf(w, "Usage: adapter-host %s\n\nFlags:\n", f.synopsis)
	var buf bytes.Buffer
	out := f.Output()
	f.SetOutput(&buf)
	f.PrintDefaults()
	f.SetOutput(out)
	for _, line := range strings.SplitAfter(buf.String(), "\n") {
		if rest, ok := strings.CutPrefix(line, "  -"); ok {
			line = "  --" + rest
		}
		io.WriteString(w, line)
	}
}

// Parse parses args; see flagSet.
func (f *flagSet) Parse(args []string) error {
	var buf bytes.Buffer
	f.SetOutput(&buf)
	f.FlagSet.Usage = func() {} // printed below, where it belongs
	err := f.FlagSet.Parse(args)
	f.SetOutput(f.stderr)
	f.FlagSet.Usage = func() { f.printUsage(f.Output()) }
	switch {
	case errors.Is(err, flag.ErrHelp):
		f.printUsage(f.stdout)
	case err != nil:
		io.Copy(f.stderr, &buf)
		f.printUsage(f.stderr)
	}
	return err
}

// isHelp reports whether args asks for help (the first argument).
func isHelp(args []string) bool {
	return len(args) > 0 && (args[0] == "-h" || args[0] == "-help" || args[0] == "--help" || args[0] == "help")
}

const tokenUsage = `Usage: adapter-host token COMMAND

Commands:
  status [--config FILE | --url URL --api-key KEY] [--json]
                token state of a running host (no secrets shown)

Run "adapter-host token status --help" for its flags.
`

const graphUsage = `Usage: adapter-host graph COMMAND

Commands:
  login --config FILE --bot NAME [--redirect URL | --device]
                sign a delegated Graph bot in (browser, PKCE) and store its refresh token

Run "adapter-host graph login --help" for its flags.
`

const versionUsage = `Usage: adapter-host version

Prints the module version, the VCS revision it was built from ("-dirty" when the checkout had
uncommitted changes) and the Go version. No flags.
`

const pluginUsage = `Usage: adapter-host plugin [--debug]

Serves as the chatwire adapter plugin over go-plugin's handshake on stdout. The host starts it
itself (plugin.path empty); a Go framework launching this executable with plugin.Launch must
pass LaunchOptions.Args = []string{"plugin"}. Not meant to be run by hand.

Flags:
  --debug   log at debug level
`

// printVersion writes the version line of `adapter-host version`.
func printVersion(w io.Writer) {
	v, rev := buildVersion()
	fmt.Fprintf(w, "adapter-host %s (revision %s, %s)\n", v, rev, runtime.Version())
}

// startedAsPluginWithoutArg reports whether a go-plugin launcher started this executable
// (its handshake cookie is set) without the "plugin" argument. The launcher reads stdout for
// its handshake: the line written there turns into a clear error in plugin.Launch.
func startedAsPluginWithoutArg(args []string, stdout io.Writer) bool {
	if os.Getenv(plugin.Handshake.MagicCookieKey) != plugin.Handshake.MagicCookieValue {
		return false
	}
	if len(args) > 0 && args[0] == "plugin" {
		return false
	}
	fmt.Fprintln(stdout, plugin.MissingPluginArg+`: pass LaunchOptions.Args = []string{"plugin"}`)
	return true
}

// instanceID names this host process in its log lines, so lines from several hosts on one
// Redis can be told apart: the host name and a random suffix (new on each start).
func instanceID() string {
	name, err := os.Hostname()
	if err != nil || name == "" {
		name = "host"
	}
	return name + "-" + randomText(4)
}

// randomText returns n random characters of crypto/rand.Text's alphabet (A-Z, 2-7: also
// valid base64, so it serves for a WeCom EncodingAESKey too).
func randomText(n int) string {
	var b strings.Builder
	for b.Len() < n {
		b.WriteString(rand.Text())
	}
	return b.String()[:n]
}
