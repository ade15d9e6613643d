package host

import (
	"bytes"
	"context"
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
	h    *Host
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
	ping Options
	// extraBots adds WeCom bots bot1 … botN, configured as hr is.
	extraBots int
	pacing    *config.PacingConfig // the bot's pacing section
	clock     pacing.Clock         // the pacing clock; nil: real time
	dupCheck  string               // the bot's wecom.duplicate_check
	// pluginProcs is plugin.max_procs.
	pluginProcs string
}

func newEmulator() *wecomtest.Server {
	emu := &wecomtest.Server{PushRetries: -1}
	emu.AddApp(testCorp, testSecret, testAgent)
	emu.AddUsers("alice", "bob")
	return emu
}

// setup runs emulated WeCom and a host with one bot "hr" served by a plugin subprocess
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
	cfg.Plugin.MaxProcs = o.pluginProcs
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
	h, err := Start(t.Context(), cfg, Options{Logger: log, PluginDebug: !o.quiet, DeliverBackoff: 20 * time.Millisecond,
		PingInterval: o.ping.PingInterval, PingTimeout: o.ping.PingTimeout, PingMisses: o.ping.PingMisses, PacingClock: o.clock})
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, emu: emu, h: h, logs: logs,
		cb: wecomtest.Callback{URL: h.URL() + "/webhook/hr", Token: testToken, EncodingAESKey: testAESKey, CorpID: testCorp, AgentID: testAgent}}
	t.Cleanup(func() {
		pid := h.plugin.Pid()
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

func TestSend(t *testing.T) {
	e := setup(t, setupOpts{})
	status, _, body := e.do("POST", "/v1/bots/hr/messages", testAPIKey, `{"to":{"user":"alice"},"text":"hi"}`)
	if status != 200 {
		t.Fatalf("send = %d %s", status, body)
	}
	var r sendResponse
	json.Unmarshal(body, &r)
	if r.ID == "" || r.Bot != "hr" || r.Platform != "wecom" || r.Invalid == nil {
		t.Errorf("send response = %s", body)
	}
	if sent := e.emu.Sent(); len(sent) != 1 || sent[0].Content != "hi" || sent[0].ToUser != "alice" {
		t.Errorf("WeCom got %+v", sent)
	}
	if !strings.Contains(e.logs.String(), `"level":"DEBUG","msg":"message sent","bot":"hr","to":"user alice","id":"`+r.ID+`"`) {
		t.Errorf("no debug line for the send in the log:\n%s", e.logs)
	}
	// A message with an attachment goes through the plugin and WeCom's media upload.
	status, _, body = e.do("POST", "/v1/bots/hr/messages", testAPIKey, map[string]any{"to": map[string]any{"users": []string{"alice", "nobody"}},
		"attachments": []map[string]any{{"name": "a.txt", "content_type": "text/plain", "data": []byte("hello file")}}})
	if status != 200 {
		t.Fatalf("send file = %d %s", status, body)
	}
}

// TestSendLogsNoInfoLine: at level info a successful send writes no log line (it is counted
// in chatwire_sends_total); a failed one is still logged at warn.
func TestSendLogsNoInfoLine(t *testing.T) {
	e := setup(t, setupOpts{quiet: true})
	if status, _, body := e.do("POST", "/v1/bots/hr/messages", testAPIKey, `{"to":{"user":"alice"},"text":"hi"}`); status != 200 {
		t.Fatalf("send = %d %s", status, body)
	}
	if s := e.logs.String(); strings.Contains(s, "message sent") {
		t.Errorf("a successful send logged at level info:\n%s", s)
	}
	e.emu.Fail("message/send", 60020, 1) // not allowed to send from this IP
	if status, _, body := e.do("POST", "/v1/bots/hr/messages", testAPIKey, `{"to":{"user":"alice"},"text":"hi"}`); status == 200 {
		t.Fatalf("send with WeCom failing = %d %s", status, body)
	}
	if s := e.logs.String(); !strings.Contains(s, `"msg":"send failed"`) {
		t.Errorf("a failed send not logged:\n%s", s)
	}
}

func TestSendErrors(t *testing.T) {
	e := setup(t, setupOpts{})
	tests := []struct {
		name       string
		key        string
		path       string
		body       string
		prepare    func()
		wantStatus int
		wantKind   string
		wantCode   string
	}{
		{"no key", "", "/v1/bots/hr/messages", `{"to":{"user":"alice"},"text":"x"}`, nil, 401, "unauthorized", ""},
		{"wrong key", "nope-nope-nope-nope", "/v1/bots/hr/messages", `{"to":{"user":"alice"},"text":"x"}`, nil, 401, "unauthorized", ""},
		{"unknown bot", testAPIKey, "/v1/bots/nobody/messages", `{"to":{"user":"alice"},"text":"x"}`, nil, 404, "not_found", ""},
		{"bad json", testAPIKey, "/v1/bots/hr/messages", `{"to":`, nil, 400, "invalid_request", ""},
		{"unknown field", testAPIKey, "/v1/bots/hr/messages", `{"to":{"user":"alice"},"txt":"x"}`, nil, 400, "invalid_request", ""},
		{"no target", testAPIKey, "/v1/bots/hr/messages", `{"text":"x"}`, nil, 400, "invalid_request", ""},
		{"two targets", testAPIKey, "/v1/bots/hr/messages", `{"to":{"user":"a","party":"2"},"text":"x"}`, nil, 400, "invalid_request", ""},
		{"invalid recipient", testAPIKey, "/v1/bots/hr/messages", `{"to":{"user":"nobody"},"text":"x"}`, nil, 400, "invalid_recipient", "81013"},
		{"html to wecom", testAPIKey, "/v1/bots/hr/messages", `{"to":{"user":"alice"},"html":"<b>x</b>"}`, nil, 400, "invalid_request", ""},
		{"rate limited", testAPIKey, "/v1/bots/hr/messages", `{"to":{"user":"alice"},"text":"x"}`, func() { e.emu.Fail("message/send", 45009, 1) }, 429, "rate_limited", "45009"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.prepare != nil {
				tc.prepare()
			}
			status, hdr, body := e.do("POST", tc.path, tc.key, tc.body)
			var eb errorBody
			json.Unmarshal(body, &eb)
			if status != tc.wantStatus || string(eb.Error.Kind) != tc.wantKind || eb.Error.PlatformCode != tc.wantCode || eb.Error.Message == "" {
				t.Errorf("POST %s = %d %s; want %d kind %s code %q", tc.path, status, body, tc.wantStatus, tc.wantKind, tc.wantCode)
			}
			if status == 429 && hdr.Get("Retry-After") == "" {
				t.Error("429 without Retry-After")
			}
		})
	}
}

// TestSendTrailingData: a body with anything but whitespace after its JSON object is refused
// whole, not sent as its first value (issue 11 item 4).
func TestSendTrailingData(t *testing.T) {
	e := setup(t, setupOpts{})
	for _, body := range []string{
		`{"to":{"user":"alice"},"text":"a"}{"to":{"user":"bob"},"text":"b"}`,
		`{"to":{"user":"alice"},"text":"a"} x`,
		`{"to":{"user":"alice"},"text":"a"}}`,
		`{"to":{"user":"alice"},"text":"a"}[]`,
	} {
		status, _, resp := e.do("POST", "/v1/bots/hr/messages", testAPIKey, body)
		var eb errorBody
		json.Unmarshal(resp, &eb)
		if status != 400 || eb.Error.Kind != adapter.KindInvalidRequest || !strings.Contains(eb.Error.Message, "after the JSON object") {
			t.Errorf("POST %s = %d %s; want 400 invalid_request about data after the JSON object", body, status, resp)
		}
	}
	if sent := e.emu.Sent(); len(sent) != 0 {
		t.Errorf("WeCom got %d messages from refused bodies: %+v", len(sent), sent)
	}
	// Whitespace after the object is fine.
	if status, _, resp := e.do("POST", "/v1/bots/hr/messages", testAPIKey, "{\"to\":{\"user\":\"alice\"},\"text\":\"a\"}\n \t\r\n"); status != 200 {
		t.Errorf("body with trailing whitespace = %d %s; want 200", status, resp)
	}
}

func TestWebhookToSSE(t *testing.T) {
	e := setup(t, setupOpts{})
	// Events that arrive before any consumer connects are kept for it.
	e.push("alice", "early")
	ch := e.subscribe("")
	first := next(t, ch)
	if _, err := eventlog.ParseID(first.id); err != nil || first.kind != "message" || first.ev.Text != "early" || first.ev.Sender.ID != "alice" ||
		first.ev.Bot != "hr" || first.ev.Platform != "wecom" || first.ev.Chat.Type != "direct" || first.ev.ID == "" {
		t.Errorf("first event = %+v", first)
	}
	_, msg := e.push("bob", "second")
	second := next(t, ch)
	if !idLess(t, first.id, second.id) || second.ev.Text != "second" {
		t.Errorf("second event = %+v", second)
	}
	// WeCom redelivers byte for byte: 200 to WeCom, no second event.
	if p, err := e.emu.Push(t.Context(), e.cb, msg); err != nil || p.Status != 200 {
		t.Fatalf("redelivery = %+v, %v", p, err)
	}
	e.push("alice", "third")
	if ev := next(t, ch); !idLess(t, second.id, ev.id) || ev.ev.Text != "third" {
		t.Errorf("after a duplicate, event = %+v; want text third", ev)
	}
	// Resuming with Last-Event-ID replays what came after it.
	ch2 := e.subscribe(first.id)
	if ev := next(t, ch2); ev.id != second.id {
		t.Errorf("resumed stream starts at %s; want %s", ev.id, second.id)
	}
	// Bad signatures are refused before anything is trusted.
	bad := e.cb
	bad.Token = "wrong-token"
	if p, _ := e.emu.Push(t.Context(), bad, wecomtest.TextMessage(testCorp, testAgent, "eve", "forged", 999, time.Now())); p.Status/100 != 4 {
		t.Errorf("forged push status = %d; want 4xx", p.Status)
	}
	// URL verification GET.
	if err := e.emu.VerifyURL(t.Context(), e.cb); err != nil {
		t.Errorf("VerifyURL = %v", err)
	}
	if status, _, _ := e.do("POST", "/webhook/nobody", "", "x"); status != 404 {
		t.Errorf("webhook for unknown bot = %d; want 404", status)
	}
}

// TestSSEResumeAfterRestart is a client that reconnects to a restarted host (memory log)
// with the Last-Event-ID it had (the Python example does on every reconnect): ids come from
// the clock, so what the new host received comes after it. A sequence number from a version
// that numbered events from 1 starts at the oldest unconsumed event, with one log line; an
// id beyond every id the host issued (a host whose clock was ahead) reads from the first.
func TestSSEResumeAfterRestart(t *testing.T) {
	e := setup(t, setupOpts{})
	e.push("alice", "after restart")
	if ev := next(t, e.subscribe("500")); ev.ev.Text != "after restart" {
		t.Errorf("stream resumed with Last-Event-ID 500 starts at %+v; want the unconsumed event", ev)
	}
	if n := strings.Count(e.logs.String(), "Last-Event-ID is a sequence number"); n != 1 {
		t.Errorf("log says %d times that Last-Event-ID was a sequence number; want once", n)
	}
	before := eventlog.ID{Ms: uint64(time.Now().Add(-time.Minute).UnixMilli())}
	if ev := next(t, e.subscribe(before.String())); ev.ev.Text != "after restart" {
		t.Errorf("stream resumed with the previous host's id %v starts at %+v", before, ev)
	}
	ahead := eventlog.ID{Ms: uint64(time.Now().Add(time.Hour).UnixMilli())}
	if ev := next(t, e.subscribe(ahead.String())); ev.ev.Text != "after restart" {
		t.Errorf("stream resumed with an id ahead of the log %v starts at %+v", ahead, ev)
	}
}

// idLess reports whether SSE id a is before b, failing the test if either is not a log id.
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

func TestDelivery(t *testing.T) {
	var mu sync.Mutex
	var got []adapter.Event
	calls := 0
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		defer mu.Unlock()
		calls++
		if calls == 1 {
			http.Error(w, "not yet", 500) // the first attempt fails: delivery retries
			return
		}
		if !verify(hookSecret, body, r.Header.Get(signatureHeader)) {
			t.Errorf("bad signature %q", r.Header.Get(signatureHeader))
		}
		var ev adapter.Event
		json.Unmarshal(body, &ev)
		got = append(got, ev)
	}))
	defer recv.Close()
	e := setup(t, setupOpts{deliverURL: recv.URL})
	e.push("alice", "one")
	e.push("bob", "two")
	deadline := time.Now().Add(10 * time.Second)
	for {
		mu.Lock()
		n := len(got)
		mu.Unlock()
		if n == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("delivered %d events; want 2", n)
		}
		time.Sleep(20 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	// Different chats: they may arrive in either order (TestDeliveryLanes checks the order
	// within a chat).
	if texts := []string{got[0].Text, got[1].Text}; !(texts[0] == "one" && texts[1] == "two" || texts[0] == "two" && texts[1] == "one") {
		t.Errorf("delivered %+v; want one and two", got)
	}
}

func TestOpsEndpoints(t *testing.T) {
	e := setup(t, setupOpts{})
	e.do("POST", "/v1/bots/hr/messages", testAPIKey, `{"to":{"user":"alice"},"text":"hi"}`)
	e.push("alice", "counted")
	bad := e.cb
	bad.Token = "wrong-token"
	e.emu.Push(t.Context(), bad, wecomtest.TextMessage(testCorp, testAgent, "eve", "forged", msgIDs.Add(1), time.Now()))
	status, _, body := e.do("GET", "/v1/bots", testAPIKey, nil)
	if status != 200 || strings.TrimSpace(string(body)) != `{"bots":[{"name":"hr","platform":"wecom"}]}` {
		t.Errorf("/v1/bots = %d %s", status, body)
	}
	if status, _, _ := e.do("GET", "/v1/bots", "", nil); status != 401 {
		t.Errorf("/v1/bots without key = %d; want 401", status)
	}
	status, _, body = e.do("GET", "/v1/tokens", testAPIKey, nil)
	if status != 200 || !strings.Contains(string(body), `"key":"wecom/`+testCorp+`/1000002"`) || !strings.Contains(string(body), `"state":"fresh"`) {
		t.Errorf("/v1/tokens = %d %s", status, body)
	}
	if status, _, _ := e.do("GET", "/v1/tokens", "", nil); status != 401 {
		t.Errorf("/v1/tokens without key = %d; want 401", status)
	}
	for _, p := range []string{"/healthz", "/readyz"} {
		if status, _, body := e.do("GET", p, "", nil); status != 200 {
			t.Errorf("%s = %d %s", p, status, body)
		}
	}
	status, _, body = e.do("GET", "/metrics", "", nil)
	for _, want := range []string{`chatwire_sends_total{bot="hr",code="",result="ok"} 1`, "chatwire_token_refreshes_total{",
		`reason="initial",result="ok"`, "chatwire_token_expiry_seconds{", `chatwire_upstream_requests_total{code="200",platform="wecom"}`,
		"chatwire_plugin_ready 1", "chatwire_plugin_restarts_total 0",
		`chatwire_webhooks_total{bot="hr",result="ok"} 1`, `chatwire_webhooks_total{bot="hr",result="unauthorized"} 1`,
		`chatwire_events_total{bot="hr",outcome="queued"} 1`} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	if t.Failed() {
		t.Logf("/metrics = %d\n%s", status, body)
	}
}

func TestPluginCrash(t *testing.T) {
	e := setup(t, setupOpts{})
	ch := e.subscribe("")
	pid := e.h.plugin.Pid()
	syscall.Kill(pid, syscall.SIGKILL)
	// While the plugin is down, the platform is told to come back later.
	var sawDown bool
	deadline := time.Now().Add(15 * time.Second)
	for e.h.plugin.Restarts() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("plugin not restarted within 15s")
		}
		if !e.h.plugin.Ready() {
			if status, _, _ := e.do("GET", "/readyz", "", nil); status == 503 {
				sawDown = true
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	if !sawDown {
		t.Log("restart was too quick to observe /readyz 503")
	}
	if e.h.plugin.Pid() == pid {
		t.Error("plugin pid unchanged after restart")
	}
	// Bots were configured again: webhooks and sends work.
	e.push("alice", "after restart")
	if ev := next(t, ch); ev.ev.Text != "after restart" {
		t.Errorf("event after restart = %+v", ev)
	}
	if status, _, body := e.do("POST", "/v1/bots/hr/messages", testAPIKey, `{"to":{"user":"alice"},"text":"hi"}`); status != 200 {
		t.Errorf("send after restart = %d %s", status, body)
	}
	if _, _, body := e.do("GET", "/metrics", "", nil); !strings.Contains(string(body), "chatwire_plugin_restarts_total 1") {
		t.Error("/metrics does not count the restart")
	}
}

func TestWebhookAnswered503WhileDown(t *testing.T) {
	e := setup(t, setupOpts{})
	srv := e.h.srv
	ready := srv.ready
	srv.ready = func() bool { return false }
	defer func() { srv.ready = ready }()
	msg := wecomtest.TextMessage(testCorp, testAgent, "alice", "x", 1, time.Now())
	p, _ := e.emu.Push(t.Context(), e.cb, msg)
	if p.Status != 503 {
		t.Errorf("webhook while the plugin is down = %d; want 503", p.Status)
	}
	if status, _, _ := e.do("GET", "/readyz", "", nil); status != 503 {
		t.Errorf("/readyz while down = %d; want 503", status)
	}
}

func TestNoKeysLoopback(t *testing.T) {
	e := setup(t, setupOpts{noKeys: true})
	if status, _, body := e.do("POST", "/v1/bots/hr/messages", "", `{"to":{"user":"alice"},"text":"hi"}`); status != 200 {
		t.Errorf("send without keys on loopback = %d %s", status, body)
	}
}

func TestShutdownDrains(t *testing.T) {
	e := setup(t, setupOpts{})
	e.emu.Fail("message/send", 45033, 1) // "too many concurrent calls": the adapter waits 1s and retries
	type result struct {
		status int
		body   []byte
	}
	done := make(chan result, 1)
	go func() {
		status, _, body := e.do("POST", "/v1/bots/hr/messages", testAPIKey, `{"to":{"user":"alice"},"text":"in flight"}`)
		done <- result{status, body}
	}()
	for e.emu.Calls("message/send") == 0 {
		time.Sleep(10 * time.Millisecond)
	}
	if err := e.h.Shutdown(); err != nil {
		t.Errorf("shutdown = %v", err)
	}
	r := <-done
	if r.status != 200 {
		t.Errorf("send in flight during shutdown = %d %s; want 200", r.status, r.body)
	}
	if _, err := http.Get(e.h.URL() + "/healthz"); err == nil {
		t.Error("host still answers after shutdown")
	}
}
