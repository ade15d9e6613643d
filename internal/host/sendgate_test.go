package host

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/seed-a64d9e1f/chatwire/adapter"
	"github.com/seed-a64d9e1f/chatwire/internal/config"
	"github.com/seed-a64d9e1f/chatwire/internal/idempotency"
	"github.com/seed-a64d9e1f/chatwire/internal/pacing"
	"github.com/seed-a64d9e1f/chatwire/internal/redistest"
)

type answer struct {
	status int
	header http.Header
	body   string
}

// post sends body to the bot "hr" with the given headers.
func (e *env) post(body string, header ...string) answer {
	e.t.Helper()
	req, _ := http.NewRequestWithContext(e.t.Context(), "POST", e.h.URL()+"/v1/bots/hr/messages", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+testAPIKey)
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return answer{resp.StatusCode, resp.Header, string(data)}
}

func errKind(t *testing.T, body string) string {
	t.Helper()
	var eb errorBody
	if err := json.Unmarshal([]byte(body), &eb); err != nil {
		t.Fatalf("error body %q: %v", body, err)
	}
	return string(eb.Error.Kind)
}

// TestIdempotencyKeyAcrossThreeHosts: the same Idempotency-Key sent 10 times at once to 3
// hosts sharing a Redis: WeCom sees one send, and all ten answers are the same.
func TestIdempotencyKeyAcrossThreeHosts(t *testing.T) {
	rs := redistest.Start(t)
	emu := newEmulator()
	ws := httptest.NewServer(emu)
	defer ws.Close()
	url := "redis://" + rs.Addr() + "/0"
	var hosts []*env
	for range 3 {
		hosts = append(hosts, setup(t, setupOpts{redisURL: url, emu: emu, apiBase: ws.URL, quiet: true}))
	}
	const body = `{"to":{"user":"alice"},"text":"once"}`
	answers := make([]answer, 10)
	var wg sync.WaitGroup
	for i := range answers {
		wg.Go(func() { answers[i] = hosts[i%3].post(body, "Idempotency-Key", "order-42") })
	}
	wg.Wait()
	replayed := 0
	for i, a := range answers {
		if a.status != 200 || a.body != answers[0].body {
			t.Errorf("answer %d = %d %s; want 200 %s", i, a.status, a.body, answers[0].body)
		}
		if a.header.Get("Idempotent-Replayed") == "true" {
			replayed++
		}
	}
	if n := len(emu.Sent()); n != 1 {
		t.Fatalf("WeCom got %d sends; want 1", n)
	}
	if replayed != 9 {
		t.Errorf("%d answers marked Idempotent-Replayed; want 9", replayed)
	}
	if !strings.Contains(answers[0].body, emu.Sent()[0].MsgID) {
		t.Errorf("answer %s does not name the message id %s", answers[0].body, emu.Sent()[0].MsgID)
	}
	// The same key with another message: 409, nothing sent.
	a := hosts[1].post(`{"to":{"user":"alice"},"text":"twice"}`, "Idempotency-Key", "order-42")
	if a.status != 409 || errKind(t, a.body) != "conflict" {
		t.Errorf("same key, other body = %d %s; want 409 conflict", a.status, a.body)
	}
	if n := len(emu.Sent()); n != 1 {
		t.Errorf("WeCom got %d sends after the conflict; want 1", n)
	}
}

// TestIdempotencyKeyOneHost: in one host (memory), a repeated key is answered from memory; a
// bad key is refused; no key sends every time.
func TestIdempotencyKeyOneHost(t *testing.T) {
	e := setup(t, setupOpts{quiet: true})
	const body = `{"to":{"user":"alice"},"text":"hi"}`
	first := e.post(body, "Idempotency-Key", "k-1")
	again := e.post(body, "Idempotency-Key", "k-1")
	if first.status != 200 || again.status != 200 || first.body != again.body || again.header.Get("Idempotent-Replayed") != "true" {
		t.Fatalf("first %d %s, again %d %s (%v); want one answer, replayed", first.status, first.body, again.status, again.body, again.header)
	}
	if a := e.post(`{"to":{"user":"bob"},"text":"hi"}`, "Idempotency-Key", "k-1"); a.status != 409 {
		t.Errorf("same key to another user = %d %s; want 409", a.status, a.body)
	}
	if a := e.post(body, "Idempotency-Key", strings.Repeat("x", 300)); a.status != 400 || errKind(t, a.body) != "invalid_request" {
		t.Errorf("300-byte key = %d %s; want 400 invalid_request", a.status, a.body)
	}
	e.post(body)
	e.post(body)
	if n := len(e.emu.Sent()); n != 3 {
		t.Errorf("WeCom got %d sends; want 3 (one keyed, two without a key)", n)
	}
}

// jumpClock is a pacing clock that moves when told to; a sleeper moves it to its wake time.
type jumpClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *jumpClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *jumpClock) SleepUntil(ctx context.Context, t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if t.After(c.t) {
		c.t = t
	}
	return ctx.Err()
}
func (c *jumpClock) advance(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

// TestPacedSendGets429: a synchronous send that would wait past its max wait is answered 429
// with Retry-After and not sent; its Idempotency-Key is released, so the retry after the wait
// sends.
func TestPacedSendGets429(t *testing.T) {
	clock := &jumpClock{t: time.Date(2026, 3, 2, 10, 0, 0, 0, time.UTC)}
	e := setup(t, setupOpts{quiet: true, clock: clock, pacing: &config.PacingConfig{Limits: config.PacingLimits{Member: []string{"2/1m", "3/1h"}}, MaxWait: "20s"}})
	const body = `{"to":{"user":"alice"},"text":"hi"}`
	for i := range 2 {
		if a := e.post(body); a.status != 200 {
			t.Fatalf("send %d = %d %s", i, a.status, a.body)
		}
	}
	a := e.post(body, "Idempotency-Key", "third")
	if a.status != 429 || a.header.Get("Retry-After") != "62" || errKind(t, a.body) != "rate_limited" {
		t.Fatalf("third send in a minute = %d %s (Retry-After %q); want 429, Retry-After 62 (a minute and pacing's margin)", a.status, a.body, a.header.Get("Retry-After"))
	}
	if n := len(e.emu.Sent()); n != 2 {
		t.Fatalf("WeCom got %d sends; want 2 (the third refused before sending)", n)
	}
	clock.advance(50 * time.Second)
	// 12 s to go: the bot's 20 s max wait covers it, a request's Prefer: wait=5 does not.
	if a := e.post(body, "Idempotency-Key", "third", "Prefer", "wait=5"); a.status != 429 || a.header.Get("Retry-After") != "12" {
		t.Errorf("with Prefer: wait=5 = %d %s (Retry-After %q); want 429, Retry-After 12", a.status, a.body, a.header.Get("Retry-After"))
	}
	if a := e.post(body, "Idempotency-Key", "third"); a.status != 200 || a.header.Get("Idempotent-Replayed") != "" {
		t.Errorf("retry after the wait = %d %s (%v); want 200, sent now", a.status, a.body, a.header)
	}
	if n := len(e.emu.Sent()); n != 3 {
		t.Errorf("WeCom got %d sends; want 3", n)
	}
	// The hour allows 3: the next waits an hour, far past the max wait.
	if a := e.post(body); a.status != 429 || a.header.Get("Retry-After") != "3658" {
		t.Errorf("fourth send in an hour = %d %s (Retry-After %q); want 429, Retry-After 3658 (62 min after the first, from 62 s)", a.status, a.body, a.header.Get("Retry-After"))
	}
}

// TestAbandonedKey: a key whose first attempt's host stopped mid-send is not sent again (409)
// unless WeCom's duplicate check would drop the repeat; then it is sent, and shown once.
func TestAbandonedKey(t *testing.T) {
	rs := redistest.Start(t)
	url := "redis://" + rs.Addr() + "/0"
	const body = `{"to":{"user":"alice"},"text":"hi"}`
	for _, dup := range []string{"", "30m"} {
		emu := newEmulator()
		ws := httptest.NewServer(emu)
		defer ws.Close()
		e := setup(t, setupOpts{quiet: true, redisURL: url, emu: emu, apiBase: ws.URL, dupCheck: dup})
		key := "abandoned-" + dup
		// A host that claimed the key and died: it never answered, and its lease lapsed.
		var msg adapter.Message
		json.Unmarshal([]byte(body), &msg)
		g := e.h.srv.sends
		req, err := g.request("hr", key, msg)
		if err != nil {
			t.Fatal(err)
		}
		if err := idempotency.ClaimAbandoned(t.Context(), g.istore, req, time.Now()); err != nil {
			t.Fatal(err)
		}
		a := e.post(body, "Idempotency-Key", key)
		if dup == "" {
			if a.status != 409 || errKind(t, a.body) != "conflict" || !strings.Contains(a.body, "never finished") || len(emu.Sent()) != 0 {
				t.Errorf("abandoned key without duplicate check = %d %s, %d sends; want 409, nothing sent", a.status, a.body, len(emu.Sent()))
			}
			continue
		}
		if a.status != 200 || len(emu.Sent()) != 1 {
			t.Errorf("abandoned key with duplicate check = %d %s, %d sends; want 200, one send", a.status, a.body, len(emu.Sent()))
		}
	}
}

// TestAsyncSend: Prefer: respond-async answers 202 with the message id once it is stored;
// the outbox sends it within the pacing limits, in order, and message.sent events and GET
// /v1/bots/hr/messages/{id} report each outcome, failures with kind and platform code.
func TestAsyncSend(t *testing.T) {
	clock := &jumpClock{t: time.Date(2026, 3, 2, 10, 0, 0, 0, time.UTC)}
	e := setup(t, setupOpts{quiet: true, clock: clock, pacing: &config.PacingConfig{Limits: config.PacingLimits{Member: []string{"2/1m"}}}})
	events := e.subscribe("")
	var ids []string
	for i := range 5 {
		a := e.post(fmt.Sprintf(`{"to":{"user":"alice"},"text":"async %d"}`, i), "Prefer", "respond-async")
		var acc acceptResponse
		if err := json.Unmarshal([]byte(a.body), &acc); err != nil || a.status != 202 || acc.State != "queued" || acc.ID == "" ||
			a.header.Get("Location") != "/v1/bots/hr/messages/"+acc.ID || a.header.Get("Preference-Applied") != "respond-async" {
			t.Fatalf("async send = %d %s %v; want 202 with an id, Location and Preference-Applied", a.status, a.body, a.header)
		}
		ids = append(ids, acc.ID)
	}
	bad := e.post(`{"to":{"user":"nobody"},"text":"x"}`, "Prefer", "respond-async")
	var badAcc acceptResponse
	json.Unmarshal([]byte(bad.body), &badAcc)
	got := map[string]string{}
	var status0 adapter.Event
	for len(got) < 6 {
		ev := next(t, events)
		status0 = ev.ev
		var st struct{ ID, State string }
		json.Unmarshal(ev.ev.Raw, &st)
		if ev.kind != "message.sent" && ev.kind != "message.failed" {
			t.Fatalf("event %+v; want message.sent or message.failed", ev)
		}
		got[st.ID] = ev.kind
	}
	sent := e.emu.Sent()
	if len(sent) != 5 {
		t.Fatalf("WeCom got %d messages; want 5", len(sent))
	}
	for i, s := range sent {
		if s.Content != fmt.Sprint("async ", i) || len(s.Dropped) > 0 {
			t.Errorf("message %d = %q (dropped %v); want async %d, delivered", i, s.Content, s.Dropped, i)
		}
		if got[ids[i]] != "message.sent" {
			t.Errorf("message %d: event %q; want message.sent", i, got[ids[i]])
		}
	}
	var st struct {
		State      string `json:"state"`
		PlatformID string `json:"platform_id"`
		Error      *struct {
			Kind, PlatformCode string
		} `json:"error"`
	}
	status, _, body := e.do("GET", "/v1/bots/hr/messages/"+ids[4], testAPIKey, nil)
	if json.Unmarshal(body, &st); status != 200 || st.State != "sent" || st.PlatformID != sent[4].MsgID {
		t.Errorf("GET status = %d %s; want sent with WeCom's msgid %s", status, body, sent[4].MsgID)
	}
	status, _, body = e.do("GET", "/v1/bots/hr/messages/"+badAcc.ID, testAPIKey, nil)
	if json.Unmarshal(body, &st); status != 200 || st.State != "failed" || !strings.Contains(string(body), `"platform_code":"81013"`) {
		t.Errorf("GET status of the bad one = %d %s; want failed with platform_code 81013", status, body)
	}
	if status, _, _ := e.do("GET", "/v1/bots/hr/messages/1-0", testAPIKey, nil); status != 404 {
		t.Errorf("GET unknown id = %d; want 404", status)
	}
	// A status event emitted again (a host that stopped between emitting it and recording
	// it) goes to the bot's event log once: its id is the log's dedup key.
	hr := e.h.srv.bots["hr"]
	before, err := hr.events.Len(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if status0.ID == "" {
		t.Fatalf("status event %+v has no id", status0)
	}
	if err := e.h.srv.enqueue(t.Context(), hr, []adapter.Event{status0}); err != nil {
		t.Fatal(err)
	}
	if after, err := hr.events.Len(t.Context()); err != nil || after.Held != before.Held {
		t.Errorf("the bot's event log held %d, then %d after the status event %s again (%v); want it dropped as a duplicate", before.Held, after.Held, status0.ID, err)
	}
	// Pacing spread them: 2 a minute.
	if d := clock.Now().Sub(time.Date(2026, 3, 2, 10, 0, 0, 0, time.UTC)); d < 2*time.Minute {
		t.Errorf("the pacing clock moved %v; want ≥ 2m (5 messages at 2 a minute)", d)
	}
}

// TestAsyncBodyField: "async": true in the body is the alternative to Prefer:
// respond-async (issue 14): 202 exactly as with the header, and the message sent is the
// body without the field; "async": false is a synchronous send.
func TestAsyncBodyField(t *testing.T) {
	e := setup(t, setupOpts{quiet: true})
	events := e.subscribe("")
	a := e.post(`{"to":{"user":"alice"},"text":"by body","async":true}`)
	var acc acceptResponse
	if err := json.Unmarshal([]byte(a.body), &acc); err != nil || a.status != 202 || acc.State != "queued" || acc.ID == "" ||
		a.header.Get("Location") != "/v1/bots/hr/messages/"+acc.ID || a.header.Get("Preference-Applied") != "respond-async" {
		t.Fatalf(`"async": true = %d %s %v; want 202 with an id, Location and Preference-Applied as with Prefer: respond-async`, a.status, a.body, a.header)
	}
	ev := next(t, events)
	if ev.kind != "message.sent" || !strings.Contains(string(ev.ev.Raw), acc.ID) {
		t.Fatalf("event %s %s; want message.sent for %s", ev.kind, ev.ev.Raw, acc.ID)
	}
	if sent := e.emu.Sent(); len(sent) != 1 || sent[0].Content != "by body" {
		t.Fatalf("WeCom got %+v; want the one message \"by body\"", sent)
	}
	s := e.post(`{"to":{"user":"alice"},"text":"sync","async":false}`)
	if s.status != 200 || !strings.Contains(s.body, `"invalid":[]`) {
		t.Fatalf(`"async": false = %d %s; want 200, sent synchronously`, s.status, s.body)
	}
	if sent := e.emu.Sent(); len(sent) != 2 || sent[1].Content != "sync" {
		t.Fatalf("WeCom got %+v; want \"sync\" second", sent)
	}
	if b := e.post(`{"to":{"user":"alice"},"text":"x","async":"yes"}`); b.status != 400 {
		t.Errorf(`"async": "yes" = %d %s; want 400`, b.status, b.body)
	}
}

// TestDecodeSendAsyncNotInMessage: the async field is the host's, not the adapter
// message's: the decoded message (what the plugin gets, what an Idempotency-Key
// fingerprints) is the same with and without it.
func TestDecodeSendAsyncNotInMessage(t *testing.T) {
	dec := func(body string) sendRequest {
		t.Helper()
		r := httptest.NewRequest("POST", "/v1/bots/hr/messages", strings.NewReader(body))
		sr, err := decodeSend(httptest.NewRecorder(), r)
		if err != nil {
			t.Fatalf("decodeSend(%s): %v", body, err)
		}
		return sr
	}
	with, without := dec(`{"to":{"user":"alice"},"text":"x","async":true}`), dec(`{"to":{"user":"alice"},"text":"x"}`)
	if !with.Async || without.Async {
		t.Fatalf("Async = %v, %v; want true, false", with.Async, without.Async)
	}
	a, _ := json.Marshal(with.Message)
	b, _ := json.Marshal(without.Message)
	if string(a) != string(b) || strings.Contains(string(a), "async") {
		t.Errorf("message with async = %s, without = %s; want the same, without the field", a, b)
	}
}

// TestTeamsPacingConfig: a Teams bot is paced per conversation by Teams' per-thread limits
// unless its pacing.limits.conversation replaces them; the scope is refused on WeCom.
func TestTeamsPacingConfig(t *testing.T) {
	env := envOf(map[string]string{"TEAMS_APP": "app-1", "TEAMS_PASSWORD": "pw"})
	sched := func(cfg *config.Config) *pacing.Scheduler {
		t.Helper()
		g, err := newSendGate(cfg, &server{}, nil, nil, slog.New(slog.DiscardHandler), nil)
		if err != nil {
			t.Fatal(err)
		}
		return g.pace["tbot"]
	}
	cfg, err := config.Parse("c.yaml", []byte(teamsConfig), env)
	if err != nil {
		t.Fatal(err)
	}
	if got := sched(cfg).Limits()[pacing.ScopeConversation]; fmt.Sprint(got) != "[7/1s 8/2s 60/30s 1800/1h0m0s]" {
		t.Errorf("teams bot's conversation limits = %v; want Teams' 7/1s, 8/2s, 60/30s, 1800/1h", got)
	}
	over := teamsConfig + "    pacing: {limits: {conversation: [\"3/1s\"]}}\n"
	if cfg, err = config.Parse("c.yaml", []byte(over), env); err != nil {
		t.Fatal(err)
	}
	if got := sched(cfg).Limits()[pacing.ScopeConversation]; fmt.Sprint(got) != "[3/1s]" {
		t.Errorf("with pacing.limits.conversation [3/1s]: %v", got)
	}
	wecom := strings.Replace(goodConfig, `    deliver: {webhook_url`, `    pacing: {limits: {conversation: ["3/1s"]}}
    deliver: {webhook_url`, 1)
	if _, err := config.Parse("c.yaml", []byte(wecom), envOf(goodEnv)); err == nil || !strings.Contains(err.Error(), `wecom has no scope "conversation"`) {
		t.Errorf("conversation on a wecom bot: %v; want refused", err)
	}
}
