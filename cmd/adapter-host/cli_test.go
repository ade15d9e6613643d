package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/seed-a64d9e1f/chatwire/plugin"
)

// Every command answers --help with its usage on stdout and exit status 0, and the usage
// names every flag the command takes.
func TestHelpEveryCommand(t *testing.T) {
	flagRe := regexp.MustCompile(`(?m)^  --([a-z0-9-]+)`)
	for _, args := range [][]string{
		{"--help"}, {"run", "--help"}, {"demo", "--help"}, {"check", "--help"},
		{"token", "--help"}, {"token", "status", "--help"}, {"token", "status", "-h"},
		{"send", "--help"}, {"graph", "--help"}, {"graph", "login", "--help"},
		{"version", "--help"}, {"plugin", "--help"}, {"emulate", "--help"},
	} {
		var stdout, stderr bytes.Buffer
		var fs *flagSet
		onFlagSet = func(f *flagSet) { fs = f }
		err := run(t.Context(), args, &stdout, &stderr)
		onFlagSet = nil
		if code := exitCode(err); code != 0 {
			t.Errorf("%v: exit %d (%v); stderr %q", args, code, err, stderr.String())
		}
		if !strings.Contains(stdout.String(), "Usage:") || !strings.Contains(stdout.String(), "adapter-host") {
			t.Errorf("%v: stdout %q holds no usage", args, stdout.String())
		}
		if stderr.Len() != 0 {
			t.Errorf("%v: wrote to stderr: %q", args, stderr.String())
		}
		// A command with flags lists each of them: compare with the flags Parse knew.
		if fs != nil && len(args) > 1 && (args[len(args)-1] == "--help" || args[len(args)-1] == "-h") && fs.synopsis != "" &&
			strings.HasPrefix(fs.synopsis, strings.Join(args[:len(args)-1], " ")) {
			listed := map[string]bool{}
			for _, m := range flagRe.FindAllStringSubmatch(stdout.String(), -1) {
				listed[m[1]] = true
			}
			fs.VisitAll(func(f *flag.Flag) {
				if !listed[f.Name] {
					t.Errorf("%v: usage does not list --%s:\n%s", args, f.Name, stdout.String())
				}
			})
		}
	}
	// A bad flag is still an error, with the usage on stderr.
	var stdout, stderr bytes.Buffer
	if err := run(t.Context(), []string{"send", "--bogus"}, &stdout, &stderr); err == nil || errors.Is(err, flag.ErrHelp) {
		t.Errorf("send --bogus = %v; want an error", err)
	}
	if !strings.Contains(stderr.String(), "-bogus") || !strings.Contains(stderr.String(), "Usage: adapter-host send") || stdout.Len() != 0 {
		t.Errorf("send --bogus: stdout %q, stderr %q", stdout.String(), stderr.String())
	}
}

// buildFromCheckout copies this module's files into a new git repository in dir, commits
// them and builds adapter-host there with VCS stamping on, as `go build` from a clone does
// (the environment may set -buildvcs=false, and Go does not stamp in a git worktree).
func buildFromCheckout(t *testing.T, dir string) (bin, rev string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	git := func(args ...string) string {
		t.Helper()
		cmd := exec.CommandContext(ctx, "git", args...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@example.com",
			"GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@example.com")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
		return strings.TrimSpace(string(out))
	}
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	// The tracked and untracked (not ignored) files of this checkout, as they are now.
	cmd := exec.CommandContext(ctx, "git", "ls-files", "--cached", "--others", "--exclude-standard", "-z")
	cmd.Dir = root
	list, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range strings.Split(strings.TrimRight(string(list), "\x00"), "\x00") {
		data, err := os.ReadFile(filepath.Join(root, f))
		if errors.Is(err, os.ErrNotExist) {
			continue // deleted, not yet committed
		}
		if err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Dir(filepath.Join(dir, f)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, f), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	git("init", "-q")
	git("add", "-A")
	git("commit", "-q", "-m", "test")
	rev = git("rev-parse", "HEAD")
	bin = filepath.Join(dir, "adapter-host")
	build := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/adapter-host")
	build.Dir = dir
	build.Env = append(os.Environ(), "GOFLAGS=-buildvcs=true")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin, rev
}

// A binary built from a checkout says its module version and VCS revision, never "dev"; a
// Go framework that launches it without Args: ["plugin"] is told so.
func TestBuiltBinary(t *testing.T) {
	bin, rev := buildFromCheckout(t, t.TempDir())
	t.Run("version", func(t *testing.T) {
		out, err := exec.Command(bin, "version").CombinedOutput()
		if err != nil {
			t.Fatalf("version: %v\n%s", err, out)
		}
		line := string(out)
		if !strings.Contains(line, "revision "+rev+",") || strings.Contains(line, "dev ") || strings.Contains(line, "(devel)") ||
			!strings.Contains(line, "v0.0.0-") || !strings.Contains(line, rev[:12]) {
			t.Errorf("version = %q; want the module version and revision %s", line, rev)
		}
	})
	t.Run("launch without the plugin argument", func(t *testing.T) {
		_, err := plugin.Launch(t.Context(), plugin.LaunchOptions{Path: bin, StartTimeout: time.Minute})
		if !errors.Is(err, plugin.ErrMissingPluginArg) {
			t.Fatalf("Launch without Args = %v; want ErrMissingPluginArg", err)
		}
		if msg := err.Error(); !strings.Contains(msg, `Args to []string{"plugin"}`) || strings.Contains(msg, "architecture") {
			t.Errorf("Launch error = %q", msg)
		}
	})
}
