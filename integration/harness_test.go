// Package integration drives chatwire from the outside: it builds the real adapter-host and
// adapter-plugin binaries, starts a real redis-server and the platform emulators, runs hosts
// as separate processes and talks to them over HTTP like a bot author or a platform would.
package integration

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/seed-a64d9e1f/chatwire/tokenmgr"
)

// binDir holds the binaries built once by TestMain.
var binDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "chatwire-integration-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	if err := installContractCheck(); err != nil {
		fmt.Fprintln(os.Stderr, "integration:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	for _, name := range []string{"adapter-host", "adapter-plugin"} {
		cmd := exec.Command("go", "build", "-o", filepath.Join(dir, name), "../cmd/"+name)
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			fmt.Fprintf(os.Stderr, "integration: building %s: %v\n", name, err)
			os.RemoveAll(dir)
			os.Exit(1)
		}
	}
	code := m.Run()
	if os.Getenv("CHATWIRE_CONTRACT_COVERAGE") != "" {
		contractCoverage(os.Stderr)
	}
	os.RemoveAll(dir)
	os.Exit(code)
}

// freePort returns a free TCP port on 127.0.0.1.
func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// logSink collects a process's output, line by line, for assertions and for the secret scan.
type logSink struct {
	mu    sync.Mutex
	lines []string
	name  string
	echo  bool
}

func (s *logSink) consume(r io.Reader) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		s.mu.Lock()
		s.lines = append(s.lines, sc.Text())
		s.mu.Unlock()
		if s.echo {
			fmt.Fprintf(os.Stderr, "[%s] %s\n", s.name, sc.Text())
		}
	}
}

func (s *logSink) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return strings.Join(s.lines, "\n")
}

// count returns how many lines contain all of subs.
func (s *logSink) count(subs ...string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
next:
	for _, l := range s.lines {
		for _, sub := range subs {
			if !strings.Contains(l, sub) {
				continue next
			}
		}
		n++
	}
	return n
}

// host is one adapter-host process.
type host struct {
	t      testing.TB
	name   string
	config string
	addr   string
	apiKey string
	cmd    *exec.Cmd
	log    *logSink
	done   chan struct{}
}

// startHost writes config (with {{ADDR}} replaced by a free loopback address) and runs
// `adapter-host run --config F`, waiting until /readyz answers 200.
func startHost(t testing.TB, name, config string, env ...string) *host {
	t.Helper()
	h := &host{t: t, name: name, addr: fmt.Sprintf("127.0.0.1:%d", freePort(t)), log: &logSink{name: name, echo: os.Getenv("CHATWIRE_ECHO_LOGS") != ""}}
	h.config = filepath.Join(t.TempDir(), name+".yaml")
	if err := os.WriteFile(h.config, []byte(strings.ReplaceAll(config, "{{ADDR}}", h.addr)), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(watchContract(t, h.addr)) // runs after h.stop: every exchange checked
	h.start(env...)
	t.Cleanup(h.stop)
	return h
}

func (h *host) start(env ...string) {
	h.t.Helper()
	h.cmd = exec.Command(filepath.Join(binDir, "adapter-host"), "run", "--config", h.config, "--log-format", "json")
	h.cmd.Env = append(os.Environ(), env...)
	h.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // kill the plugin with it
	stdout, _ := h.cmd.StdoutPipe()
	stderr, _ := h.cmd.StderrPipe()
	if err := h.cmd.Start(); err != nil {
		h.t.Fatal(err)
	}
	h.done = make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); h.log.consume(stdout) }()
	go func() { defer wg.Done(); h.log.consume(stderr) }()
	go func() { wg.Wait(); h.cmd.Wait(); close(h.done) }()
	h.waitReady(60 * time.Second)
}

func (h *host) waitReady(limit time.Duration) {
	h.t.Helper()
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		select {
		case <-h.done:
			h.t.Fatalf("%s exited before it was ready:\n%s", h.name, h.log)
		default:
		}
		resp, err := http.Get("http://" + h.addr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	h.t.Fatalf("%s not ready after %v:\n%s", h.name, limit, h.log)
}

// stop ends the host gracefully (SIGTERM), then kills its process group if it lingers.
func (h *host) stop() {
	if h.cmd == nil || h.cmd.Process == nil {
		return
	}
	select {
	case <-h.done:
		return
	default:
	}
	h.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-h.done:
	case <-time.After(15 * time.Second):
		syscall.Kill(-h.cmd.Process.Pid, syscall.SIGKILL)
		<-h.done
	}
}

// kill SIGKILLs the host process alone (its plugin must notice and exit by itself).
func (h *host) kill() {
	h.cmd.Process.Signal(syscall.SIGKILL)
	<-h.done
}

// do sends an API request and returns the status and body.
func (h *host) do(method, path string, body any) (int, []byte, http.Header) {
	h.t.Helper()
	status, out, hdr, err := h.tryDo(method, path, body)
	if err != nil {
		h.t.Fatalf("%s %s: %v", method, path, err)
	}
	return status, out, hdr
}

// tryDo is do that returns a transport error (the host was killed mid-request) instead of
// failing the test.
func (h *host) tryDo(method, path string, body any) (int, []byte, http.Header, error) {
	var rd io.Reader
	if body != nil {
		switch b := body.(type) {
		case []byte:
			rd = bytes.NewReader(b)
		case string:
			rd = strings.NewReader(b)
		default:
			buf, _ := json.Marshal(b)
			rd = bytes.NewReader(buf)
		}
	}
	req, err := http.NewRequest(method, "http://"+h.addr+path, rd)
	if err != nil {
		return 0, nil, nil, err
	}
	if h.apiKey != "" {
		req.Header.Set("Authorization", "Bearer "+h.apiKey)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp, err := http.DefaultClient.Do(req.WithContext(ctx))
	if err != nil {
		return 0, nil, nil, err
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, nil, nil, err
	}
	return resp.StatusCode, out, resp.Header, nil
}

// secretScan fails t if any of secrets appears in any of texts. Secrets shorter than 6
// characters are skipped: they would match by accident.
func secretScan(t testing.TB, what string, texts []string, secrets []string) {
	t.Helper()
	for _, s := range secrets {
		if len(s) < 6 {
			continue
		}
		for _, text := range texts {
			if i := strings.Index(text, s); i >= 0 {
				lo, hi := max(0, i-80), min(len(text), i+len(s)+40)
				t.Errorf("%s contains a secret (fp %s): …%s…", what, tokenmgr.Fingerprint(s), strings.ReplaceAll(text[lo:hi], s, "<SECRET>"))
			}
		}
	}
}

// children returns the pids of the direct children of pid (the plugin processes of a host).
// Go forks from whichever thread runs the goroutine, so every thread's list is read.
func children(pid int) []int {
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", pid))
	var out []int
	for _, f := range tasks {
		data, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, field := range strings.Fields(string(data)) {
			var c int
			fmt.Sscan(field, &c)
			out = append(out, c)
		}
	}
	return out
}

// alive reports whether pid exists and is not a zombie.
func alive(pid int) bool {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// The state follows the command name in parentheses: "pid (comm) S ...".
	s := string(data)
	i := strings.LastIndexByte(s, ')')
	return i > 0 && i+2 < len(s) && s[i+2] != 'Z'
}
