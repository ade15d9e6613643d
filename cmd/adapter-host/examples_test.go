package main

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/seed-a64d9e1f/chatwire/adapter"
)

// TestExampleConfigs keeps the commented example configs valid.
func TestExampleConfigs(t *testing.T) {
	env := map[string]string{"CHATWIRE_API_KEY": "0123456789abcdef0123", "WECOM_SECRET": "s", "WECOM_TOKEN": "t",
		"WECOM_AES_KEY": "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG", "HOOK_SECRET": "h", "GRAPH_SECRET": "g", "GRAPH_CLIENT_STATE": "cs"}
	files, _ := filepath.Glob("../../examples/configs/*.yaml")
	if len(files) == 0 {
		t.Fatal("no example configs found")
	}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := ParseConfig(f, data, envOf(env)); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
}

// TestPythonBotRetriesSend runs examples/python-bot/echo_bot.py against a fake host whose
// first send answers 503 with Retry-After, as while the plugin restarts: the bot waits and
// sends again instead of crashing. It needs python3 (make deps installs it).
func TestPythonBotRetriesSend(t *testing.T) {
	py, err := exec.LookPath("python3")
	if err != nil {
		t.Fatalf("python3 not found (install it: apt-get install python3, or run make deps): %v", err)
	}
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
		if n == 1 {
			writeError(w, &adapter.Error{Kind: adapter.KindUnavailable, Message: "plugin restarting", RetryAfter: time.Second})
			return
		}
		writeJSON(w, 200, sendResponse{ID: "m1", Bot: "hr", Platform: "wecom", Invalid: []string{}})
	})
	srv := httptest.NewServer(mux)
	defer srv.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, py, "../../examples/python-bot/echo_bot.py", "hr")
	cmd.Env = append(os.Environ(), "CHATWIRE_URL="+srv.URL, "ECHO_MAX=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("echo_bot.py = %v\n%s", err, out)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(sends) != 2 {
		t.Fatalf("bot sent %d times; want 2 (the 503, then the retry)\n%s", len(sends), out)
	}
	if wait := sends[1].Sub(sends[0]); wait < 900*time.Millisecond {
		t.Errorf("bot retried after %v; want the 1 s Retry-After honoured", wait)
	}
	if !strings.Contains(string(out), "retrying in 1s") || !strings.Contains(string(out), "echoed (id m1)") {
		t.Errorf("bot output:\n%s", out)
	}
}
