package host

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/seed-a64d9e1f/chatwire/adapter"
)

// TestPythonBotRetriesSend runs examples/python-bot/echo_bot.py against a fake host whose
// sends answer 503 with Retry-After, as while the plugin restarts: first with Retry-After 1,
// then more times than a fixed try count would allow (with Retry-After 0, to keep the test
// fast): the bot waits and sends again instead of crashing. It needs python3 (make deps
// installs it).
func TestPythonBotRetriesSend(t *testing.T) {
	py := python3(t)
	const unavailable = 9 // more than the 6 tries the bot once gave up after
	var mu sync.Mutex
	var sends []time.Time
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/bots/hr/events", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprint(w, "id: 1\nevent: message\ndata: {\"platform\":\"wecom\",\"kind\":\"message\",\"text\":\"hi\",\"sender\":{\"id\":\"alice\"},\"chat\":{\"type\":\"direct\"}}\n\n")
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	})
	mux.HandleFunc("POST /v1/bots/hr/messages", func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		sends = append(sends, time.Now())
		n := len(sends)
		mu.Unlock()
		switch {
		case n == 1:
			writeError(w, &adapter.Error{Kind: adapter.KindUnavailable, Message: "plugin restarting", RetryAfter: time.Second})
		case n <= unavailable:
			w.Header().Set("Retry-After", "0")
			writeJSON(w, http.StatusServiceUnavailable, map[string]any{"error": map[string]string{"kind": "unavailable", "message": "plugin restarting"}})
		default:
			writeJSON(w, 200, sendResponse{ID: "m1", Bot: "hr", Platform: "wecom", Invalid: []string{}})
		}
	})
	srv := httptest.NewServer(mux)
	defer srv.Close()
	out := runPythonBot(t, py, srv.URL, "ECHO_MAX=1")
	mu.Lock()
	defer mu.Unlock()
	if len(sends) != unavailable+1 {
		t.Fatalf("bot sent %d times; want %d (the 503s, then the retry that succeeds)\n%s", len(sends), unavailable+1, out)
	}
	if wait := sends[1].Sub(sends[0]); wait < 900*time.Millisecond {
		t.Errorf("bot retried after %v; want the 1 s Retry-After honoured", wait)
	}
	if !strings.Contains(out, "retrying in 1s") || !strings.Contains(out, "echoed (id m1)") {
		t.Errorf("bot output:\n%s", out)
	}
}

// TestPythonBotSurvivesFailedSend gives the bot a short send budget and a host that keeps
// answering 503 to the first echo: the bot gives that message up, says so, keeps reading
// events, and resumes after the given-up event when the stream reconnects.
func TestPythonBotSurvivesFailedSend(t *testing.T) {
	py := python3(t)
	var mu sync.Mutex
	var resumes []string // Last-Event-ID of each events request
	var texts []string   // text of each send
	event := func(id, text string) string {
		return fmt.Sprintf("id: %s\nevent: message\ndata: {\"platform\":\"wecom\",\"kind\":\"message\",\"text\":%q,\"sender\":{\"id\":\"alice\"},\"chat\":{\"type\":\"direct\"}}\n\n", id, text)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/bots/hr/events", func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		resumes = append(resumes, r.Header.Get("Last-Event-ID"))
		n := len(resumes)
		mu.Unlock()
		w.Header().Set("Content-Type", "text/event-stream")
		if n == 1 {
			fmt.Fprint(w, event("1", "lost"))
			return // the stream ends: the bot reconnects
		}
		if r.Header.Get("Last-Event-ID") == "1" {
			fmt.Fprint(w, event("2", "kept"))
		}
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	})
	mux.HandleFunc("POST /v1/bots/hr/messages", func(w http.ResponseWriter, r *http.Request) {
		var req struct{ Text string }
		json.NewDecoder(r.Body).Decode(&req)
		mu.Lock()
		texts = append(texts, req.Text)
		mu.Unlock()
		if req.Text == "echo: lost" {
			writeError(w, &adapter.Error{Kind: adapter.KindUnavailable, Message: "plugin restarting", RetryAfter: time.Second})
			return
		}
		writeJSON(w, 200, sendResponse{ID: "m2", Bot: "hr", Platform: "wecom", Invalid: []string{}})
	})
	srv := httptest.NewServer(mux)
	defer srv.Close()
	out := runPythonBot(t, py, srv.URL, "ECHO_MAX=1", "ECHO_SEND_BUDGET=0.5")
	mu.Lock()
	defer mu.Unlock()
	if len(resumes) != 2 || resumes[0] != "" || resumes[1] != "1" {
		t.Errorf("events requests had Last-Event-ID %q; want [\"\" \"1\"]\n%s", resumes, out)
	}
	if n := len(texts); n < 2 || texts[n-1] != "echo: kept" || slices.Index(texts, "echo: kept") != n-1 {
		t.Errorf("sends %q; want tries of \"echo: lost\", then \"echo: kept\" once\n%s", texts, out)
	}
	if !strings.Contains(out, "'lost' -> not echoed: send failed: 503") || !strings.Contains(out, "'kept' -> echoed (id m2)") {
		t.Errorf("bot output:\n%s", out)
	}
}

func python3(t *testing.T) string {
	t.Helper()
	py, err := exec.LookPath("python3")
	if err != nil {
		t.Fatalf("python3 not found (install it: apt-get install python3, or run make deps): %v", err)
	}
	return py
}

// runPythonBot runs echo_bot.py for bot hr against url and returns its output; the bot must
// exit 0 within 30 s.
func runPythonBot(t *testing.T, py, url string, env ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, py, "../../examples/python-bot/echo_bot.py", "hr")
	cmd.Env = append(append(os.Environ(), "CHATWIRE_URL="+url), env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("echo_bot.py = %v\n%s", err, out)
	}
	return string(out)
}
