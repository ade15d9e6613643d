package host

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/seed-a64d9e1f/chatwire/internal/config"
)

// rawRequest opens a connection to the host and sends a request's head with the given
// Content-Length and only the first part of its body, leaving the rest unsent.
func rawRequest(t *testing.T, e *env, method, path string, hdr map[string]string, length int, part string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", e.h.ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: %d\r\n", method, path, length)
	for k, v := range hdr {
		fmt.Fprintf(&b, "%s: %s\r\n", k, v)
	}
	b.WriteString("\r\n" + part)
	if _, err := c.Write([]byte(b.String())); err != nil {
		t.Fatal(err)
	}
	return c
}

// readResponse reads the host's answer on c; a host that never answers fails the test
// after 10 s (a failsafe, far above the configured timeouts).
func readResponse(t *testing.T, c net.Conn) *http.Response {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("no answer to a slow body: %v", err)
	}
	resp.Body.Close()
	return resp
}

// TestSlowBodiesCutOff: a client that sends a body slowly is answered 408 once the deadline
// passes (a webhook's budget, server.read_timeout for the API), and what it held is
// released (issue 11 item 6).
func TestSlowBodiesCutOff(t *testing.T) {
	e := setup(t, setupOpts{server: config.ServerConfig{WebhookTimeout: "300ms", ReadTimeout: "300ms"}})
	hook := rawRequest(t, e, "POST", "/webhook/hr?msg_signature=x&timestamp=1&nonce=1", map[string]string{"Content-Type": "text/xml"}, 100_000, "<xml>")
	if resp := readResponse(t, hook); resp.StatusCode != http.StatusRequestTimeout {
		t.Errorf("slow webhook body = %d; want 408", resp.StatusCode)
	}
	send := rawRequest(t, e, "POST", "/v1/bots/hr/messages", map[string]string{"Content-Type": "application/json",
		"Authorization": "Bearer " + testAPIKey}, 100_000, `{"to":{"user":"alice"},"text":"`)
	if resp := readResponse(t, send); resp.StatusCode != http.StatusRequestTimeout {
		t.Errorf("slow send body = %d; want 408", resp.StatusCode)
	}
	if sent := e.emu.Sent(); len(sent) != 0 {
		t.Errorf("a cut-off send sent %d messages", len(sent))
	}
	eventually(t, "body memory released", func() bool { return testutil.ToFloat64(e.h.m.bodyBytes) == 0 })
	// An SSE stream is not a slow body: it outlives read_timeout.
	ch := e.subscribe("")
	time.Sleep(600 * time.Millisecond) // twice read_timeout
	e.push("alice", "still streaming")
	if ev := next(t, ch); ev.ev.Text != "still streaming" {
		t.Errorf("event after read_timeout = %+v", ev)
	}
}

// TestBodyBudget: concurrent bodies beyond server.body_memory_mib are refused at once (503,
// Retry-After), not buffered; the budget is free again when they are done.
func TestBodyBudget(t *testing.T) {
	e := setup(t, setupOpts{server: config.ServerConfig{BodyMemoryMiB: 3}})
	const big = 3 << 19 // 1.5 MiB: two fill the budget
	hdr := map[string]string{"Content-Type": "application/json", "Authorization": "Bearer " + testAPIKey}
	a := rawRequest(t, e, "POST", "/v1/bots/hr/messages", hdr, big, `{"to":{"user":"alice"},"text":"`)
	rawRequest(t, e, "POST", "/v1/bots/hr/messages", hdr, big, `{"to":{"user":"alice"},"text":"`)
	eventually(t, "two slow 1.5 MiB bodies reserved", func() bool { return testutil.ToFloat64(e.h.m.bodyBytes) == 2*big })
	for i := range 4 {
		status, h, body := e.do("POST", "/v1/bots/hr/messages", testAPIKey, `{"to":{"user":"alice"},"text":"`+strings.Repeat("x", 1000*i)+`"}`)
		if status != 503 || h.Get("Retry-After") == "" || !strings.Contains(string(body), "body_memory_mib") {
			t.Errorf("send %d while the budget is full = %d %s; want 503 with Retry-After", i, status, body)
		}
	}
	if p, _ := pushAny(e, "alice", "webhook while full"); p.Status != 503 {
		t.Errorf("webhook while the budget is full = %d; want 503 (the platform redelivers)", p.Status)
	}
	if got := testutil.ToFloat64(e.h.m.bodyBytes); got != 2*big {
		t.Errorf("bytes held = %v; want %d (refused bodies are not held)", got, 2*big)
	}
	if status, _, body := e.do("POST", "/v1/bots/hr/messages", testAPIKey, strings.Repeat(" ", 4<<20)); status != 413 {
		t.Errorf("a body larger than the whole budget = %d %s; want 413", status, body)
	}
	a.Close() // the client gives up: its reservation is released
	eventually(t, "one reservation released", func() bool { return testutil.ToFloat64(e.h.m.bodyBytes) == big })
	if status, _, body := e.do("POST", "/v1/bots/hr/messages", testAPIKey, `{"to":{"user":"alice"},"text":"fits"}`); status != 200 {
		t.Errorf("send with room in the budget = %d %s; want 200", status, body)
	}
	if sent := e.emu.Sent(); len(sent) != 1 {
		t.Errorf("WeCom got %d messages; want the one that fit", len(sent))
	}
}

// eventually polls cond every 5ms for up to 10s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after 10s: %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
