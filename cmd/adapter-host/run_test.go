package main

import (
	"bytes"
	"context"
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/seed-a64d9e1f/chatwire/adapter/wecom/wecomtest"
	"github.com/seed-a64d9e1f/chatwire/internal/idempotency"
)

func TestCLIAgainstHost(t *testing.T) {
	e := setup(t, setupOpts{})
	file := filepath.Join(t.TempDir(), "report.txt")
	os.WriteFile(file, bytes.Repeat([]byte("chatwire "), 50000), 0o600)
	var out, errb bytes.Buffer
	err := run(t.Context(), []string{"send", "--url", e.h.URL(), "--api-key", testAPIKey, "--bot", "hr", "--to", "user:alice", "--file", file}, &out, &errb)
	if err != nil || !strings.Contains(out.String(), "sent: bot hr") || !strings.Contains(errb.String(), "100%") {
		t.Errorf("send --file = %v\nstdout %s\nstderr %s", err, out.String(), errb.String())
	}
	out.Reset()
	err = run(t.Context(), []string{"send", "--url", e.h.URL(), "--api-key", testAPIKey, "--bot", "hr", "--to", "user:nobody", "--text", "x"}, &out, &errb)
	if err == nil || !strings.Contains(err.Error(), "81013") {
		t.Errorf("send to nobody = %v; want an error with the platform code explained", err)
	}
	out.Reset()
	err = run(t.Context(), []string{"token", "status", "--url", e.h.URL(), "--api-key", testAPIKey}, &out, &errb)
	if err != nil || !strings.Contains(out.String(), "wecom/"+testCorp) {
		t.Errorf("token status = %v\n%s", err, out.String())
	}
}

func TestCLI(t *testing.T) {
	var out, errb bytes.Buffer
	if err := run(t.Context(), []string{"--help"}, &out, &errb); err != nil || !strings.Contains(out.String(), "adapter-host demo") {
		t.Errorf("--help = %v %s", err, out.String())
	}
	out.Reset()
	if err := run(t.Context(), []string{"version"}, &out, &errb); err != nil || !strings.HasPrefix(out.String(), "adapter-host ") {
		t.Errorf("version = %v %s", err, out.String())
	}
	if err := run(t.Context(), []string{"frobnicate"}, &out, &errb); err == nil {
		t.Error("unknown command accepted")
	}
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte("bots:\n  - name: hr\n    platform: wecom\n    wecom: {corp_id: ww1, agent_id: 1}\n"), 0o600)
	err := run(t.Context(), []string{"run", "--config", bad}, &out, &errb)
	if err == nil || !strings.Contains(err.Error(), "bots[0].wecom.corp_secret: required") {
		t.Errorf("run with a bad config = %v", err)
	}
}

func TestCheck(t *testing.T) {
	emu := &wecomtest.Server{}
	emu.AddApp(testCorp, testSecret, testAgent)
	ws := httptest.NewServer(emu)
	defer ws.Close()
	dir := t.TempDir()
	write := func(secret string) string {
		p := filepath.Join(dir, "c.yaml")
		os.WriteFile(p, []byte(fmt.Sprintf("bots:\n  - name: hr\n    platform: wecom\n    wecom: {corp_id: %s, corp_secret: %q, agent_id: %d, api_base: %q}\n",
			testCorp, secret, testAgent, ws.URL)), 0o600)
		return p
	}
	var out, errb bytes.Buffer
	if err := run(t.Context(), []string{"check", "--config", write(testSecret)}, &out, &errb); err != nil || !strings.Contains(out.String(), "bot hr (wecom): ok") {
		t.Errorf("check good = %v\n%s", err, out.String())
	}
	out.Reset()
	err := run(t.Context(), []string{"check", "--config", write("wrong-secret")}, &out, &errb)
	if err == nil || exitCode(err) != 2 || !strings.Contains(out.String(), "what it means:") || !strings.Contains(out.String(), "Secret") {
		t.Errorf("check bad secret = %v (exit %d)\n%s", err, exitCode(err), out.String())
	}
	if strings.Contains(out.String(), "wrong-secret") {
		t.Error("check output holds the secret")
	}
}

// TestDemo runs the demo command as a user would (short durations): exit status 0, the
// summary, the conversation on screen, and on each platform a rejected token replaced by a
// refresh, as the plugin's log shows.
func TestDemo(t *testing.T) {
	var out, errb syncBuffer
	err := run(t.Context(), []string{"demo", "--duration", "4s", "--token-lifetime", "30s", "--every", "400ms"}, &out, &errb)
	if err != nil || exitCode(err) != 0 {
		t.Fatalf("demo = %v (exit %d)\nstdout:\n%s\nstderr:\n%s", err, exitCode(err), out.String(), errb.String())
	}
	stdout, logs := out.String(), errb.String()
	var sent, echoed int
	if i := strings.Index(stdout, "demo summary: "); i < 0 {
		t.Errorf("no summary in the output:\n%s", stdout)
	} else if _, err := fmt.Sscanf(stdout[i:], "demo summary: %d user messages, %d echoes", &sent, &echoed); err != nil || sent < 5 || echoed != sent {
		t.Errorf("summary = %q (%v); want at least 5 messages, each echoed", strings.SplitN(stdout[i:], "\n", 2)[0], err)
	}
	for _, want := range []string{"demo ok: every message was echoed; nothing lost, nothing doubled", "1 duplicate dropped", "0 plugin restarts",
		"echo  → alice: echo: hello!", "teams → chat : echo: ", "tbot  → Erin : echo: ", "ai    → Frank: echo: what's the weather? (#2) (streamed in "} {
		if !strings.Contains(stdout, want) {
			t.Errorf("demo output lacks %q:\n%s", want, stdout)
		}
	}
	// The AI bot's answers stream word by word; what the user sees is exactly the echo.
	var aiWhole, aiSent, aiStreamed, aiFrames int
	if i := strings.Index(stdout, "AI bot: "); i < 0 {
		t.Error("no AI bot line in the summary")
	} else if _, err := fmt.Sscanf(stdout[i:], "AI bot: %d of %d answers shown to the user exactly as the echo, %d streamed word by word in %d frames",
		&aiWhole, &aiSent, &aiStreamed, &aiFrames); err != nil || aiSent < 1 || aiWhole != aiSent || aiStreamed != aiSent || aiFrames < 2*aiSent {
		t.Errorf("AI bot summary %q (%v): want every answer shown as its echo and streamed in more than one frame", strings.SplitN(stdout[i:], "\n", 2)[0], err)
	}
	for _, platform := range []string{"wecom", "graph", "teams"} {
		found := false
		for _, line := range strings.Split(logs, "\n") {
			if strings.Contains(line, `msg="token refreshed"`) && strings.Contains(line, "reason=invalidated") && strings.Contains(line, "platform="+platform) {
				found = true
			}
		}
		if !found {
			t.Errorf("the log shows no %s token refreshed with reason=invalidated", platform)
		}
	}
	// The summary counts them from the metrics, per platform.
	var wecomInv, graphInv, teamsInv int
	if i := strings.Index(stdout, "transparent retry (wecom "); i < 0 {
		t.Error("summary lacks the invalidations per platform")
	} else if _, err := fmt.Sscanf(stdout[i:], "transparent retry (wecom %d, graph %d, teams %d)", &wecomInv, &graphInv, &teamsInv); err != nil || wecomInv < 1 || graphInv < 1 || teamsInv < 1 {
		t.Errorf("summary counts wecom %d, graph %d, teams %d invalidations (%v); want at least 1 each", wecomInv, graphInv, teamsInv, err)
	}
	for _, want := range []string{"reason=initial", "duplicate event dropped"} {
		if !strings.Contains(logs, want) {
			t.Errorf("demo log lacks %q", want)
		}
	}
}

// `adapter-host run` tags every line with the host's instance id, the plugin's included; the
// plugin's refresh line carries numbers for durations and when the next refresh comes.
func TestRunLogLines(t *testing.T) {
	emu := newEmulator()
	ws := httptestServer(t, emu)
	cfg := filepath.Join(t.TempDir(), "bots.yaml")
	os.WriteFile(cfg, []byte(`server: {listen: "127.0.0.1:0", api_keys: ["`+testAPIKey+`"]}
bots:
  - name: hr
    platform: wecom
    wecom: {corp_id: `+testCorp+`, corp_secret: "`+testSecret+`", agent_id: 1000002, api_base: "`+ws+`"}
`), 0o600)
	var stderr syncBuffer
	ctx, cancel := contextWithCancel(t)
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"run", "--config", cfg, "--log-format", "json"}, new(syncBuffer), &stderr)
	}()
	deadline := time.Now().Add(30 * time.Second)
	var refreshed map[string]any
	for refreshed == nil {
		if time.Now().After(deadline) {
			cancel()
			t.Fatalf("no token refreshed line:\n%s", stderr.String())
		}
		for _, l := range jsonLines(t, stderr.String()) {
			if l["msg"] == "token refreshed" {
				refreshed = l
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	// server.max_procs is unset (auto): the idle host runs on one CPU (internal/procs).
	for runtime.GOMAXPROCS(0) != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("the idle host runs on %d CPUs; want 1 (server.max_procs auto)", runtime.GOMAXPROCS(0))
		}
		time.Sleep(time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("run: %v", err)
	}
	if _, ok := refreshed["took_ms"].(float64); !ok {
		t.Errorf("refresh line took_ms = %#v; want a number (%v)", refreshed["took_ms"], refreshed)
	}
	if n, ok := refreshed["next_refresh_in_ms"].(float64); !ok || n <= 0 {
		t.Errorf("refresh line next_refresh_in_ms = %#v; want a positive number (%v)", refreshed["next_refresh_in_ms"], refreshed)
	}
	lines := jsonLines(t, stderr.String())
	id, _ := lines[len(lines)-1]["instance"].(string)
	if id == "" {
		t.Fatalf("last line has no instance: %v", lines[len(lines)-1])
	}
	for _, l := range lines {
		if l["instance"] != id {
			t.Errorf("line without instance %q: %v", id, l)
		}
	}
	if strings.Contains(stderr.String(), testSecret) {
		t.Error("log holds the secret")
	}
}

// TestCLISendIdempotencyKey: adapter-host send sends an Idempotency-Key, a new one per
// invocation unless given; --verbose prints it, and a retry with it does not send again.
func TestCLISendIdempotencyKey(t *testing.T) {
	e := setup(t, setupOpts{quiet: true})
	send := func(extra ...string) (string, string, error) {
		var out, errb strings.Builder
		args := append([]string{"send", "--url", e.h.URL(), "--api-key", testAPIKey, "--bot", "hr", "--to", "user:alice", "--text", "hi"}, extra...)
		err := run(t.Context(), args, &out, &errb)
		return out.String(), errb.String(), err
	}
	_, stderr, err := send("--verbose")
	if err != nil {
		t.Fatal(err)
	}
	key, ok := strings.CutPrefix(strings.TrimSpace(stderr), "Idempotency-Key: ")
	if !ok || idempotency.CheckKey(key) != nil {
		t.Fatalf("--verbose printed %q; want the Idempotency-Key", stderr)
	}
	out, _, err := send("--idempotency-key", key)
	if err != nil || !strings.Contains(out, "not sent again") {
		t.Errorf("retry with the printed key: %q, %v; want not sent again", out, err)
	}
	if _, _, err := send(); err != nil {
		t.Fatal(err)
	}
	if n := len(e.emu.Sent()); n != 2 {
		t.Errorf("WeCom got %d sends; want 2 (the retry answered from its key, a new invocation sent)", n)
	}
	if _, _, err := send("--idempotency-key", "bad\tkey"); err == nil {
		t.Error("send --idempotency-key with a tab: no error")
	}
}

func httptestServer(t *testing.T, emu *wecomtest.Server) string {
	ws := httptest.NewServer(emu)
	t.Cleanup(ws.Close)
	return ws.URL
}

func contextWithCancel(t *testing.T) (context.Context, context.CancelFunc) {
	return context.WithCancel(t.Context())
}
