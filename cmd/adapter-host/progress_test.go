package main

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestSendProgressPlain: send --file with stderr not a terminal prints plain percentages,
// one a line (no \r bar), then says it waits for the platform while WeCom's media/upload is
// held, and ends at 100%.
func TestSendProgressPlain(t *testing.T) {
	emu := newEmulator()
	release := make(chan struct{})
	var once sync.Once
	free := func() { once.Do(func() { close(release) }) }
	ws := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/media/upload") {
			<-release // the platform takes its time
		}
		emu.ServeHTTP(w, r)
	}))
	defer ws.Close()
	defer free()
	e := setup(t, setupOpts{emu: emu, apiBase: ws.URL})
	file := filepath.Join(t.TempDir(), "report.txt")
	os.WriteFile(file, bytes.Repeat([]byte("chatwire "), 200000), 0o600)
	var out, errb syncBuffer
	done := make(chan error, 1)
	go func() {
		done <- run(t.Context(), []string{"send", "--url", e.h.URL(), "--api-key", testAPIKey, "--bot", "hr", "--to", "user:alice", "--file", file}, &out, &errb)
	}()
	const waiting = "report.txt: the host has it all; waiting for bot hr's platform to take the upload"
	for deadline := time.Now().Add(30 * time.Second); !strings.Contains(errb.String(), waiting); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			free()
			t.Fatalf("no waiting line while the platform upload is held:\n%q", errb.String())
		}
	}
	free()
	if err := <-done; err != nil || !strings.Contains(out.String(), "sent: bot hr") {
		t.Fatalf("send --file = %v\n%s\n%s", err, out.String(), errb.String())
	}
	s := errb.String()
	if strings.Contains(s, "\r") || strings.Contains(s, "\033") {
		t.Errorf("non-terminal output holds a redrawn bar:\n%q", s)
	}
	pct := regexp.MustCompile(`^report\.txt: (\d+)%$`)
	last := 0
	for _, line := range strings.Split(strings.TrimSuffix(s, "\n"), "\n") {
		if line == waiting {
			if last != 100 {
				t.Errorf("waiting line before 100%%:\n%s", s)
			}
			continue
		}
		m := pct.FindStringSubmatch(line)
		if m == nil {
			t.Errorf("line %q is not a plain percentage", line)
			continue
		}
		n, _ := strconv.Atoi(m[1])
		if n <= last || n%10 != 0 {
			t.Errorf("percentage %d after %d:\n%s", n, last, s)
		}
		last = n
	}
	if last != 100 {
		t.Errorf("the last percentage is %d; want 100:\n%s", last, s)
	}
}

// TestProgressTerminal: on a terminal the bar is redrawn in place, then a line counts the
// wait for the platform, and the final bar is drawn over it.
func TestProgressTerminal(t *testing.T) {
	var b bytes.Buffer
	v := &progressView{w: &b, tty: true, name: "f.bin", bot: "hr", size: 100}
	v.tick(50)
	v.tick(100)
	v.tick(100)
	v.finish(100)
	s := b.String()
	for _, want := range []string{"\rf.bin [===============               ]  50%", "100% 100 B/100 B\n\r\033[Kwaiting for bot hr's platform to take the upload: 0s",
		"\r\033[K\033[A\rf.bin [==============================] 100% 100 B/100 B\n"} {
		if !strings.Contains(s, want) {
			t.Errorf("terminal output lacks %q:\n%q", want, s)
		}
	}
	if !strings.HasSuffix(s, "100 B/100 B\n") {
		t.Errorf("terminal output does not end with the full bar:\n%q", s)
	}
}
