package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/seed-a64d9e1f/chatwire/adapter"
	"github.com/seed-a64d9e1f/chatwire/adapter/wecom/wecomtest"
	"github.com/seed-a64d9e1f/chatwire/internal/config"
	"github.com/seed-a64d9e1f/chatwire/internal/eventlog"
	"github.com/seed-a64d9e1f/chatwire/internal/host"
	"github.com/seed-a64d9e1f/chatwire/internal/pacing"
	"github.com/seed-a64d9e1f/chatwire/internal/platforms"
	"github.com/seed-a64d9e1f/chatwire/internal/sse"
)

// TestMain lets the test binary serve as the plugin, as adapter-host does ("plugin").
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == "plugin" {
		platforms.Serve("test", slog.LevelDebug)
		os.Exit(0)
	}
	os.Exit(m.Run())
}

const (
	testCorp   = "wwtest0000000001"
	testAgent  = int64(1000002)
	testSecret = "corp-secret-do-not-log-1234"
	testToken  = "callbacktoken-secret"
	testAESKey = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
	testAPIKey = "api-key-0123456789abcdef"
	hookSecret = "hook-secret-do-not-log"
)

var secrets = []string{testSecret, testToken, testAESKey, testAPIKey, hookSecret}

// syncBuffer is a goroutine-safe log sink.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type env struct {
	t    testing.TB
	emu  *wecomtest.Server
	h    *host.Host
	logs *syncBuffer
	cb   wecomtest.Callback
}

type setupOpts struct {
	deliverURL string
	noKeys     bool
	quiet      bool // log at Info (benchmarks), not Debug
	redisURL   string
	store      *config.StoreConfig // instead of redisURL
	// emu and apiBase share an emulator between hosts; nil: a new one.
	emu     *wecomtest.Server
	apiBase string
	// ackTimeout is deliver.ack_timeout.
	ackTimeout string
	// server overrides the server section's timeouts and body budget (listen and keys stay).
	server config.ServerConfig
	// ping tunes the plugin's health checks (PingInterval, PingTimeout, PingMisses only).
	ping host.Options
	// extraBots adds WeCom bots bot1 … botN, configured as hr is.
	extraBots int
	pacing    *config.PacingConfig // the bot's pacing section
	clock     pacing.Clock         // the pacing clock; nil: real time
	dupCheck  string               // the bot's wecom.duplicate_check
}

func newEmulator() *wecomtest.Server {
	emu := &wecomtest.Server{PushRetries: -1}
	emu.AddApp(testCorp, testSecret, testAgent)
	emu.AddUsers("alice", "bob")
	return emu
}

// setup (a copy of internal/host's, over its exported API) runs emulated WeCom and a host with one bot "hr" served by a plugin subprocess
// (this test binary).
func setup(t testing.TB, o setupOpts) *env {
	t.Helper()
	emu, apiBase := o.emu, o.apiBase
	if emu == nil {
		emu = newEmulator()
		ws := httptest.NewServer(emu)
		t.Cleanup(ws.Close)
		apiBase = ws.URL
	}
	cfg := &config.Config{
		Server: config.ServerConfig{Listen: "127.0.0.1:0", APIKeys: []string{testAPIKey}},
		Store:  config.StoreConfig{RedisURL: o.redisURL},
		Bots: []config.BotConfig{{Name: "hr", Platform: adapter.PlatformWeCom, WeCom: &platforms.WeCom{
			CorpID: testCorp, CorpSecret: testSecret, AgentID: testAgent, Token: testToken, EncodingAESKey: testAESKey, APIBase: apiBase}}},
	}
	for i := 1; i <= o.extraBots; i++ {
		b := cfg.Bots[0]
		w := *b.WeCom
		b.Name, b.WeCom = fmt.Sprintf("bot%d", i), &w
		cfg.Bots = append(cfg.Bots, b)
	}
	if o.store != nil {
		cfg.Store = *o.store
	}
	if o.noKeys {
		cfg.Server.APIKeys = nil
	}
	cfg.Server.ReadTimeout, cfg.Server.IdleTimeout, cfg.Server.WebhookTimeout = o.server.ReadTimeout, o.server.IdleTimeout, o.server.WebhookTimeout
	cfg.Server.BodyMemoryMiB = o.server.BodyMemoryMiB
	cfg.Bots[0].Pacing, cfg.Bots[0].WeCom.DuplicateCheck = o.pacing, o.dupCheck
	if o.deliverURL != "" {
		cfg.Bots[0].Deliver = &config.DeliverConfig{WebhookURL: o.deliverURL, WebhookSecret: hookSecret}
	}
	if o.ackTimeout != "" {
		if cfg.Bots[0].Deliver == nil {
			cfg.Bots[0].Deliver = &config.DeliverConfig{}
		}
		cfg.Bots[0].Deliver.AckTimeout = o.ackTimeout
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	level := slog.LevelDebug
	if o.quiet {
		level = slog.LevelInfo
	}
	log := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: level}))
	h, err := host.Start(t.Context(), cfg, host.Options{Logger: log, PluginDebug: !o.quiet, DeliverBackoff: 20 * time.Millisecond,
		PingInterval: o.ping.PingInterval, PingTimeout: o.ping.PingTimeout, PingMisses: o.ping.PingMisses, PacingClock: o.clock})
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, emu: emu, h: h, logs: logs,
		cb: wecomtest.Callback{URL: h.URL() + "/webhook/hr", Token: testToken, EncodingAESKey: testAESKey, CorpID: testCorp, AgentID: testAgent}}
	t.Cleanup(func() {
		pid := h.PluginPid()
		h.Shutdown()
		if pid != 0 && syscall.Kill(pid, 0) == nil {
			if stat, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); !strings.Contains(string(stat), ") Z") {
				t.Errorf("plugin %d still running after shutdown", pid)
			}
		}
		s := logs.String()
		for _, sec := range secrets {
			if strings.Contains(s, sec) {
				t.Errorf("log holds secret %q", sec)
			}
		}
	})
	return e
}

// do makes an API request and returns the status and body.
func (e *env) do(method, path, key string, body any) (int, http.Header, []byte) {
	e.t.Helper()
	var r io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		r = strings.NewReader(b)
	default:
		data, _ := json.Marshal(b)
		r = bytes.NewReader(data)
	}
	req, _ := http.NewRequestWithContext(e.t.Context(), method, e.h.URL()+path, r)
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	for _, sec := range secrets {
		if strings.Contains(string(data), sec) {
			e.t.Errorf("%s %s response holds secret %q", method, path, sec)
		}
	}
	return resp.StatusCode, resp.Header, data
}

// msgIDs numbers pushed messages across every env, as WeCom's MsgId is unique per corp.
var msgIDs atomic.Int64

// push delivers a text message from user to the bot's webhook like WeCom.
func (e *env) push(user, text string) (wecomtest.Push, []byte) {
	e.t.Helper()
	msg := wecomtest.TextMessage(testCorp, testAgent, user, text, msgIDs.Add(1), time.Now())
	p, err := e.emu.Push(e.t.Context(), e.cb, msg)
	if err != nil {
		e.t.Fatalf("push: %v (status %d)", err, p.Status)
	}
	return p, msg
}

type sseEvent struct {
	id, kind string
	ev       adapter.Event
}

// subscribe reads the bot's SSE stream into a channel until the test ends.
func (e *env) subscribe(lastID string) <-chan sseEvent {
	ch, _ := e.subscribeTo("", lastID)
	return ch
}

// subscribeTo is subscribe with a query (such as "?group=g"); stop disconnects.
func (e *env) subscribeTo(query, lastID string) (ch <-chan sseEvent, stop func()) {
	out := make(chan sseEvent, 1000)
	ctx, cancel := context.WithCancel(e.t.Context())
	ready := make(chan struct{})
	done := make(chan struct{})
	stop = func() { cancel(); <-done }
	e.t.Cleanup(stop)
	go func() {
		defer close(done)
		var once sync.Once
		sse.ReadWithHook(ctx, e.h.URL()+"/v1/bots/hr/events"+query, testAPIKey, lastID, func() { once.Do(func() { close(ready) }) },
			func(id, kind string, data []byte) error {
				var ev adapter.Event
				json.Unmarshal(data, &ev)
				out <- sseEvent{id, kind, ev}
				return nil
			})
	}()
	select {
	case <-ready:
	case <-time.After(5 * time.Second):
		e.t.Fatal("SSE stream did not start")
	}
	return out, stop
}

func next(t *testing.T, ch <-chan sseEvent) sseEvent {
	t.Helper()
	select {
	case ev := <-ch:
		return ev
	case <-time.After(10 * time.Second):
		t.Fatal("no SSE event within 10s")
	}
	return sseEvent{}
}

func idLess(t *testing.T, a, b string) bool {
	t.Helper()
	ia, err1 := eventlog.ParseID(a)
	ib, err2 := eventlog.ParseID(b)
	if err1 != nil || err2 != nil {
		t.Errorf("SSE ids %q, %q are not event log ids", a, b)
		return false
	}
	return ia.Less(ib)
}

func newStoreKey(t *testing.T) string {
	k := make([]byte, 32)
	rand.Read(k)
	return base64.StdEncoding.EncodeToString(k)
}

// storeMarker is in every secret of the store tests: no output may contain it (a copy of
// internal/config's).
const storeMarker = "MARKER-do-not-print"

// storeConfig is a valid config with store replaced by the given YAML lines (a copy of
// internal/config's).
func storeConfig(store string) string {
	return "server: {listen: \"127.0.0.1:8080\"}\nstore:\n" + store + `
bots:
  - name: hr
    platform: wecom
    wecom: {corp_id: ww1, corp_secret: s, agent_id: 1000002}
`
}

// sendResponse is the JSON of a send the host answers (a copy of internal/host's, for fake
// hosts).
type sendResponse struct {
	ID       string   `json:"id"`
	Bot      string   `json:"bot"`
	Platform string   `json:"platform"`
	Invalid  []string `json:"invalid"`
}

// writeJSON answers as the host does (a copy of internal/host's).
func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	enc.Encode(v)
}

func jsonLines(t *testing.T, s string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(s), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) == nil {
			out = append(out, m)
		}
	}
	return out
}
