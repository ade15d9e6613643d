// Package redistest runs a real redis-server for tests: on a free 127.0.0.1 port, with no
// persistence, stopped by t.Cleanup. A missing redis-server fails the test; it never skips.
package redistest

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"
)

// startTimeout bounds how long Start and Restart wait for the server to answer PING.
const startTimeout = 10 * time.Second

// Server is a redis-server process owned by one test. Its methods are safe for concurrent use
// and must be called while the test runs.
type Server struct {
	t    testing.TB
	bin  string
	dir  string
	port int
	pre  []string // arguments before the common ones: a config file, --sentinel
	args []string // extra redis-server arguments

	mu  sync.Mutex // guards cmd, log, done
	cmd *exec.Cmd  // nil while killed
	log *bytes.Buffer
	// done is closed when cmd has been waited for.
	done chan struct{}
}

// Start starts redis-server on a free 127.0.0.1 port with a temporary directory, persistence
// off (--save "" --appendonly no), and waits until it answers PING. The server is killed when
// the test and its subtests finish. Start fails the test if redis-server is not installed
// (Debian: apt-get install redis-server; `make test` installs it).
func Start(t testing.TB) *Server {
	t.Helper()
	return StartArgs(t)
}

// StartArgs is Start with extra redis-server arguments, which also apply on Restart; for
// example StartArgs(t, "--cluster-enabled", "yes") for a node to build a Cluster from.
func StartArgs(t testing.TB, args ...string) *Server {
	t.Helper()
	s := newServer(t)
	s.args = args
	s.launch()
	return s
}

// MasterName is the name under which a Sentinel started by [StartSentinel] monitors its master.
const MasterName = "mymaster"

// StartSentinel starts a Sentinel (redis-server <config> --sentinel) on a free 127.0.0.1 port
// that monitors master as [MasterName] with a quorum of 1, so this one Sentinel can fail the
// master over to a replica by itself. down-after-milliseconds is 500 and failover-timeout
// 5000: a killed master is replaced within a few seconds. Point a go-redis FailoverClient (or
// UniversalClient with MasterName) at its Addr. Restart keeps the Sentinel's configuration,
// which it rewrites as it learns the topology.
func StartSentinel(t testing.TB, master *Server) *Server {
	t.Helper()
	s := newServer(t)
	conf := filepath.Join(s.dir, "sentinel.conf")
	text := fmt.Sprintf("sentinel monitor %[1]s 127.0.0.1 %[2]d 1\n"+
		"sentinel down-after-milliseconds %[1]s 500\n"+
		"sentinel failover-timeout %[1]s 5000\n", MasterName, master.port)
	if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
		t.Fatalf("redistest: write sentinel config: %v", err)
	}
	s.pre = []string{conf, "--sentinel"}
	s.launch()
	return s
}

func newServer(t testing.TB) *Server {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatalf("redistest: redis-server not found in PATH (install it: apt-get install redis-server, or run make test): %v", err)
	}
	return &Server{t: t, bin: bin, dir: t.TempDir()}
}

// launch starts s on a free port, registering its cleanup.
func (s *Server) launch() {
	t := s.t
	t.Helper()
	t.Cleanup(s.stop)
	var (
		err     error
		lastErr error
	)
	for range 5 { // a free port may be taken between choosing it and binding it: try again
		s.port, err = freePort()
		if err != nil {
			t.Fatalf("redistest: choose a port: %v", err)
		}
		if lastErr = s.start(); lastErr == nil {
			return
		}
	}
	t.Fatalf("redistest: %v", lastErr)
}

// Addr returns the server's address, "127.0.0.1:port". It stays the same across Restart.
func (s *Server) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)) }

// Kill stops the server with SIGKILL, as a crash would, and waits for it to exit. Its data is
// lost. Kill on a stopped server does nothing.
func (s *Server) Kill() {
	s.t.Helper()
	s.mu.Lock()
	cmd, done := s.cmd, s.done
	s.cmd = nil
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGKILL)
	<-done
}

// Restart kills the server if it runs and starts a new, empty one on the same port, waiting
// until it answers PING. It fails the test if the server does not come up.
func (s *Server) Restart() {
	s.t.Helper()
	s.Kill()
	var err error
	deadline := time.Now().Add(startTimeout)
	for { // the port can stay busy for a moment after the kill
		if err = s.start(); err == nil {
			return
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("redistest: restart: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (s *Server) start() error {
	log := new(bytes.Buffer)
	args := append(append(slices.Clip(s.pre),
		"--port", strconv.Itoa(s.port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--dir", s.dir,
		"--daemonize", "no", "--protected-mode", "no", "--loglevel", "warning",
	), s.args...)
	cmd := exec.Command(s.bin, args...)
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", s.bin, err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()

	deadline := time.Now().Add(startTimeout)
	for {
		if err := ping(s.Addr()); err == nil {
			break
		} else if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			<-done
			return fmt.Errorf("redis-server on port %d did not answer PING within %v: %v; output:\n%s", s.port, startTimeout, err, log)
		}
		select {
		case <-done:
			return fmt.Errorf("redis-server on port %d exited at start; output:\n%s", s.port, log)
		case <-time.After(10 * time.Millisecond):
		}
	}
	s.mu.Lock()
	s.cmd, s.log, s.done = cmd, log, done
	s.mu.Unlock()
	return nil
}

// stop kills the server at cleanup and keeps its output in the test log if the test failed.
func (s *Server) stop() {
	s.mu.Lock()
	log := s.log
	s.mu.Unlock()
	s.Kill()
	if s.t.Failed() && log != nil && log.Len() > 0 {
		s.t.Logf("redistest: redis-server output:\n%s", log)
	}
	_ = os.RemoveAll(filepath.Join(s.dir, "dump.rdb"))
}

// ping sends one inline PING and expects +PONG.
func ping(addr string) error {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if line != "+PONG\r\n" {
		return fmt.Errorf("PING answered %q", line)
	}
	return nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
