package redistest

import (
	"fmt"
	"io"
	"net"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestKillRestart(t *testing.T) {
	s := Start(t)
	addr := s.Addr()
	if err := ping(addr); err != nil {
		t.Fatalf("ping after Start: %v", err)
	}
	s.Kill()
	if err := ping(addr); err == nil {
		t.Fatal("ping after Kill succeeded; want an error")
	}
	s.Kill() // a second Kill does nothing
	s.Restart()
	if s.Addr() != addr {
		t.Errorf("Addr() after Restart = %s; want %s", s.Addr(), addr)
	}
	if err := ping(addr); err != nil {
		t.Fatalf("ping after Restart: %v", err)
	}
	s.Restart() // restart a running server
	if err := ping(addr); err != nil {
		t.Fatalf("ping after second Restart: %v", err)
	}
}

func TestTwoServers(t *testing.T) {
	a, b := Start(t), Start(t)
	if a.Addr() == b.Addr() {
		t.Fatalf("two servers share %s", a.Addr())
	}
}

// fatalTB records Fatalf instead of failing the real test.
type fatalTB struct {
	testing.TB
	mu  sync.Mutex
	msg string
}

func (f *fatalTB) Fatalf(format string, args ...any) {
	f.mu.Lock()
	f.msg = fmt.Sprintf(format, args...)
	f.mu.Unlock()
	runtime.Goexit()
}

func (f *fatalTB) Helper() {}

func TestMissingServerFails(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	f := &fatalTB{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		Start(f)
	}()
	<-done
	if !strings.Contains(f.msg, "redis-server not found") {
		t.Fatalf("Start without redis-server: Fatalf(%q); want a failure naming redis-server", f.msg)
	}
}

func TestStartArgs(t *testing.T) {
	s := StartArgs(t, "--maxmemory", "10mb")
	check := func(when string) {
		t.Helper()
		c, err := net.Dial("tcp", s.Addr())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		fmt.Fprintf(c, "CONFIG GET maxmemory\r\n")
		buf := make([]byte, 256)
		n, _ := io.ReadAtLeast(c, buf, 30)
		if !strings.Contains(string(buf[:n]), "10485760") {
			t.Fatalf("%s: CONFIG GET maxmemory = %q; want 10485760 (the extra argument)", when, buf[:n])
		}
	}
	check("after StartArgs")
	s.Restart()
	check("after Restart")
}

func TestStartSentinel(t *testing.T) {
	m := Start(t)
	s := StartSentinel(t, m)
	if s.Addr() == m.Addr() {
		t.Fatalf("sentinel and master share %s", s.Addr())
	}
	_, port, _ := net.SplitHostPort(m.Addr())
	check := func(when string) {
		t.Helper()
		c, err := net.Dial("tcp", s.Addr())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		fmt.Fprintf(c, "SENTINEL get-master-addr-by-name %s\r\n", MasterName)
		want := fmt.Sprintf("$9\r\n127.0.0.1\r\n$%d\r\n%s\r\n", len(port), port)
		buf := make([]byte, 256)
		n, _ := io.ReadAtLeast(c, buf, len(want)+4)
		if !strings.Contains(string(buf[:n]), want) {
			t.Fatalf("%s: SENTINEL get-master-addr-by-name = %q; want the master 127.0.0.1:%s", when, buf[:n], port)
		}
	}
	check("after StartSentinel")
	s.Restart()
	check("after Restart")
}
