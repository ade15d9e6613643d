package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/seed-a64d9e1f/chatwire/adapter"
	"github.com/seed-a64d9e1f/chatwire/adapter/wecom/wecomtest"
	"github.com/seed-a64d9e1f/chatwire/internal/platforms"
)

// demoSummary is what a demo run counted.
type demoSummary struct {
	UsersSent     int
	EchoesSeen    int
	TokenFetches  int
	Refreshes     uint64
	Revocations   int
	Duplicates    int
	Restarts      int
	PluginPid     int
	EventsHandled int64
}

func cmdDemo(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("demo", "demo [--duration 40s] [--token-lifetime 12s] [--log-format text|json]", stderr)
	duration := fs.Duration("duration", 40*time.Second, "how long the simulated users talk")
	lifetime := fs.Duration("token-lifetime", 12*time.Second, "lifetime of the emulated WeCom access tokens (real ones live 2h)")
	every := fs.Duration("every", 2*time.Second, "time between simulated user messages")
	var lf logFlags
	lf.register(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	log, level, err := lf.logger(stderr)
	if err != nil {
		return err
	}
	s, err := runDemo(ctx, demoOptions{Duration: *duration, TokenLifetime: *lifetime, Every: *every,
		Log: log, PluginDebug: level <= slog.LevelDebug, Out: stdout})
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "\ndemo summary: %d user messages, %d echoes, %d token fetches (%d refreshes), %d early revocation answered by a transparent retry, %d duplicate dropped, %d plugin restarts\n",
		s.UsersSent, s.EchoesSeen, s.TokenFetches, s.Refreshes, s.Revocations, s.Duplicates, s.Restarts)
	if s.EchoesSeen != s.UsersSent {
		return fmt.Errorf("demo: %d of %d messages got no echo", s.UsersSent-s.EchoesSeen, s.UsersSent)
	}
	fmt.Fprintln(stdout, "demo ok: every message was echoed; nothing lost, nothing doubled")
	return nil
}

type demoOptions struct {
	Duration, TokenLifetime, Every time.Duration
	Log                            *slog.Logger
	PluginDebug                    bool
	Out                            io.Writer
	PluginArgs                     []string // tests: how the test binary serves as the plugin
}

func randomString(n int) string {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
	b := make([]byte, n)
	rand.Read(b)
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return string(b)
}

// runDemo runs emulated WeCom, a host with a real plugin subprocess, an echo bot on the
// HTTP API (SSE in, POST out) and simulated users, then reports what happened.
func runDemo(ctx context.Context, o demoOptions) (demoSummary, error) {
	var sum demoSummary
	out := &lockedWriter{w: o.Out}
	const corpID, agentID = "wwdemo00000000001", int64(1000002)
	secret := randomString(32)
	emu := &wecomtest.Server{TokenLifetime: o.TokenLifetime, PushRetryDelay: 200 * time.Millisecond}
	emu.AddApp(corpID, secret, agentID)
	emu.AddUsers("alice", "bob")
	wecomSrv := httptest.NewServer(emu)
	defer wecomSrv.Close()

	apiKey := randomString(24)
	cfg := &Config{
		Server: ServerConfig{Listen: "127.0.0.1:0", APIKeys: []string{apiKey}},
		Bots: []BotConfig{{Name: "echo", Platform: adapter.PlatformWeCom, WeCom: &platforms.WeCom{
			CorpID: corpID, CorpSecret: secret, AgentID: agentID,
			Token: randomString(16), EncodingAESKey: randomString(43), APIBase: wecomSrv.URL}}},
	}
	cfg.defaults()
	fmt.Fprintf(out, "chatwire demo: emulated WeCom at %s, tokens live %s; the bot runs in a plugin subprocess\n", wecomSrv.URL, o.TokenLifetime)
	h, err := startHost(ctx, cfg, hostOptions{Logger: o.Log, PluginDebug: o.PluginDebug, PluginArgs: o.PluginArgs})
	if err != nil {
		return sum, err
	}
	defer h.shutdown()
	sum.PluginPid = h.plugin.Pid()
	fmt.Fprintf(out, "host listening on %s (plugin pid %d)\n\n", h.URL(), sum.PluginPid)

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var echoes atomic.Int64
	echoErr := make(chan error, 1)
	go func() { echoErr <- echoBot(ctx, h.URL(), apiKey, "echo", &echoes, o.Log) }()

	cb := wecomtest.Callback{URL: h.URL() + "/webhook/echo", Token: cfg.Bots[0].WeCom.Token,
		EncodingAESKey: cfg.Bots[0].WeCom.EncodingAESKey, CorpID: corpID, AgentID: agentID}
	if err := emu.VerifyURL(ctx, cb); err != nil {
		return sum, fmt.Errorf("demo: callback URL verification: %w", err)
	}
	fmt.Fprintln(out, "WeCom verified the callback URL /webhook/echo")

	// Print the bot's replies as WeCom receives them.
	var printed int
	printSent := func() {
		sent := emu.Sent()
		for ; printed < len(sent); printed++ {
			fmt.Fprintf(out, "  echo  → %-5s: %s\n", sent[printed].ToUser, sent[printed].Content)
		}
	}

	users := []string{"alice", "bob"}
	lines := []string{"hello!", "what's the weather?", "tell me a joke", "are you a bot?", "ping", "thanks"}
	start := time.Now()
	revoked, duplicated := false, false
	var last []byte
	tick := time.NewTicker(o.Every)
	defer tick.Stop()
	for i := 0; time.Since(start) < o.Duration; i++ {
		if !revoked && time.Since(start) >= o.Duration/2 {
			emu.RevokeTokens(42001)
			revoked = true
			sum.Revocations++
			fmt.Fprintln(out, "*** WeCom revokes the access token early (errcode 42001); the next send refreshes and retries once, transparently")
		}
		user := users[i%len(users)]
		text := fmt.Sprintf("%s (#%d)", lines[i%len(lines)], i+1)
		msg := wecomtest.TextMessage(corpID, agentID, user, text, int64(7000000+i), time.Now())
		fmt.Fprintf(out, "  %-5s → echo : %s\n", user, text)
		if _, err := emu.Push(ctx, cb, msg); err != nil {
			return sum, fmt.Errorf("demo: push: %w", err)
		}
		sum.UsersSent++
		if !duplicated && i == 2 {
			// WeCom redelivers byte for byte when it misses an answer: the host drops it by id.
			if _, err := emu.Push(ctx, cb, last); err != nil {
				return sum, fmt.Errorf("demo: push: %w", err)
			}
			duplicated = true
			fmt.Fprintln(out, "*** WeCom redelivers the previous message; the host drops the duplicate by event id")
		}
		last = msg
		select {
		case <-tick.C:
		case <-ctx.Done():
			return sum, ctx.Err()
		case err := <-echoErr:
			return sum, fmt.Errorf("demo: echo bot: %w", err)
		}
		printSent()
	}
	// Let the last echoes arrive.
	deadline := time.Now().Add(10 * time.Second)
	for int(echoes.Load()) < sum.UsersSent && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	printSent()

	sum.EchoesSeen = int(echoes.Load())
	sum.TokenFetches = emu.TokensIssued()
	sum.Restarts = h.plugin.Restarts()
	for _, st := range h.srv.statuses(ctx) {
		for _, t := range st.Tokens {
			sum.Refreshes += t.Refreshes
		}
	}
	mfs, _ := h.m.reg.Gather()
	for _, mf := range mfs {
		if mf.GetName() == "chatwire_events_total" {
			for _, m := range mf.GetMetric() {
				for _, l := range m.GetLabel() {
					if l.GetName() == "outcome" && l.GetValue() == "duplicate" {
						sum.Duplicates += int(m.GetCounter().GetValue())
					}
				}
			}
		}
	}
	return sum, nil
}

// echoBot is a bot written against the HTTP API only: it reads events over SSE and answers
// each message with a POST.
func echoBot(ctx context.Context, base, key, bot string, echoes *atomic.Int64, log *slog.Logger) error {
	return readSSE(ctx, base+"/v1/bots/"+bot+"/events", key, "", func(id, kind string, data []byte) error {
		var ev adapter.Event
		if err := json.Unmarshal(data, &ev); err != nil {
			return err
		}
		if ev.Kind != adapter.EventMessage {
			return nil
		}
		body, _ := json.Marshal(map[string]any{"to": map[string]string{"user": ev.Sender.ID}, "text": "echo: " + ev.Text})
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, base+"/v1/bots/"+bot+"/messages", bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+key)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return apiError(resp)
		}
		echoes.Add(1)
		return nil
	})
}

// readSSE reads a Server-Sent Events stream, calling fn for each event, until ctx is done
// (nil) or the stream or fn fails.
func readSSE(ctx context.Context, url, key, lastID string, fn func(id, kind string, data []byte) error) error {
	return readSSEWithHook(ctx, url, key, lastID, nil, fn)
}

// readSSEWithHook is readSSE calling connected (if not nil) once the stream is open.
func readSSEWithHook(ctx context.Context, url, key, lastID string, connected func(), fn func(id, kind string, data []byte) error) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	if lastID != "" {
		req.Header.Set("Last-Event-ID", lastID)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return apiError(resp)
	}
	if connected != nil {
		connected()
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	var id, kind string
	var data []byte
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
			if data != nil {
				if err := fn(id, kind, data); err != nil {
					return err
				}
			}
			id, kind, data = "", "", nil
		case strings.HasPrefix(line, ":"):
		case strings.HasPrefix(line, "id: "):
			id = line[4:]
		case strings.HasPrefix(line, "event: "):
			kind = line[7:]
		case strings.HasPrefix(line, "data: "):
			data = append(data, line[6:]...)
		}
	}
	if ctx.Err() != nil {
		return nil
	}
	if err := sc.Err(); err != nil {
		return err
	}
	return errors.New("event stream ended")
}

// lockedWriter serializes writes to the demo's stdout.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
