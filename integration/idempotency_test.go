package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/seed-a64d9e1f/chatwire/adapter/wecom/wecomtest"
	"github.com/seed-a64d9e1f/chatwire/internal/pacing"
	"github.com/seed-a64d9e1f/chatwire/internal/redistest"
)

// sendConfig is a WeCom bot "hr" on Redis without event delivery; extra is appended to its
// wecom section.
func sendConfig(apiBase, redisAddr, extra string) string {
	return fmt.Sprintf(`server:
  listen: "{{ADDR}}"
  api_keys: ["${CHATWIRE_API_KEY}"]
store:
  redis_url: "redis://%s/0"
  key_prefix: itest
bots:
  - name: hr
    platform: wecom
    wecom:
      corp_id: %s
      corp_secret: "${WECOM_SECRET}"
      agent_id: %d
      api_base: %q
%s`, redisAddr, corpID, agentID, apiBase, extra)
}

type sendAnswer struct {
	status   int
	body     string
	replayed string
	err      error
}

// postKeyed sends body to h's bot "hr" with an Idempotency-Key, waiting up to a minute.
func postKeyed(h *host, key, body string) sendAnswer {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "POST", "http://"+h.addr+"/v1/bots/hr/messages", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+apiKey)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Idempotency-Key", key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return sendAnswer{err: err}
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return sendAnswer{status: resp.StatusCode, body: string(data), replayed: resp.Header.Get("Idempotent-Replayed")}
}

// TestIdempotencyKeyFleet: the same Idempotency-Key sent 10 times at once to 3 adapter-host
// processes on one redis-server: one platform send, ten identical answers.
func TestIdempotencyKeyFleet(t *testing.T) {
	rds := redistest.Start(t)
	emu := &wecomtest.Server{}
	emu.AddApp(corpID, corpSecret, agentID)
	api := httptest.NewServer(emu)
	defer api.Close()
	cfg := sendConfig(api.URL, rds.Addr(), "")
	var hosts []*host
	for i := range 3 {
		hosts = append(hosts, startHost(t, fmt.Sprintf("host%d", i), cfg, secretEnv()...))
	}
	answers := make([]sendAnswer, 10)
	var wg sync.WaitGroup
	for i := range answers {
		wg.Go(func() {
			answers[i] = postKeyed(hosts[i%3], "invoice-7", `{"to":{"user":"zhangsan"},"text":"invoice 7 is paid"}`)
		})
	}
	wg.Wait()
	replayed := 0
	for i, a := range answers {
		if a.err != nil || a.status != 200 || a.body != answers[0].body {
			t.Errorf("answer %d = %d %s %v; want 200 %s", i, a.status, a.body, a.err, answers[0].body)
		}
		if a.replayed == "true" {
			replayed++
		}
	}
	if n := len(emu.Sent()); n != 1 || replayed != 9 {
		t.Errorf("WeCom got %d sends, %d answers replayed; want 1 send, 9 replayed", n, replayed)
	}
}

// holdSends passes message/send to WeCom (which accepts it) but holds the answer until
// release is closed: a host killed meanwhile never learns that WeCom accepted.
type holdSends struct {
	next     http.Handler
	held     chan struct{} // receives once per held request
	release  chan struct{}
	mu       sync.Mutex
	holdNext bool
}

func (h *holdSends) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.mu.Lock()
	hold := h.holdNext && strings.HasSuffix(r.URL.Path, "/message/send")
	if hold {
		h.holdNext = false
	}
	h.mu.Unlock()
	if !hold {
		h.next.ServeHTTP(w, r)
		return
	}
	rec := httptest.NewRecorder()
	h.next.ServeHTTP(rec, r)
	h.held <- struct{}{}
	<-h.release
	w.WriteHeader(http.StatusBadGateway) // the answer never reaches the killed host
}

// TestIdempotencyKeyHostKilledMidSend: a host SIGKILLed after WeCom accepted a keyed send and
// before it answered. A retry with the key on another host is not sent blindly: without
// wecom.duplicate_check it answers 409; with it, the retry is sent and WeCom shows the
// message once.
func TestIdempotencyKeyHostKilledMidSend(t *testing.T) {
	for _, dup := range []bool{false, true} {
		t.Run(fmt.Sprint("duplicate_check=", dup), func(t *testing.T) {
			rds := redistest.Start(t)
			emu := &wecomtest.Server{}
			emu.AddApp(corpID, corpSecret, agentID)
			hold := &holdSends{next: emu, held: make(chan struct{}, 1), release: make(chan struct{})}
			api := httptest.NewServer(hold)
			defer api.Close()
			defer close(hold.release)
			extra := ""
			if dup {
				extra = "      duplicate_check: 30m\n"
			}
			cfg := sendConfig(api.URL, rds.Addr(), extra)
			a := startHost(t, "a", cfg, secretEnv()...)
			b := startHost(t, "b", cfg, secretEnv()...)
			const body = `{"to":{"user":"zhangsan"},"text":"your leave is approved"}`
			hold.mu.Lock()
			hold.holdNext = true
			hold.mu.Unlock()
			first := make(chan sendAnswer, 1)
			go func() { first <- postKeyed(a, "leave-9", body) }()
			<-hold.held // WeCom accepted; host a waits for the answer
			a.kill()
			if r := <-first; r.err == nil {
				t.Fatalf("the request to the killed host got an answer: %d %s", r.status, r.body)
			}
			// Host b waits for a's lease to lapse (30 s), then decides.
			r := postKeyed(b, "leave-9", body)
			sent := emu.Sent()
			shown := 0
			for _, s := range sent {
				if !s.Duplicate {
					shown++
				}
			}
			if !dup {
				if r.status != 409 || !strings.Contains(r.body, `"conflict"`) || !strings.Contains(r.body, "never finished") || len(sent) != 1 {
					t.Errorf("retry without duplicate_check = %d %s, %d sends; want 409 conflict, WeCom's one send only", r.status, r.body, len(sent))
				}
				return
			}
			if r.status != 200 || len(sent) != 2 || shown != 1 || !sent[1].Duplicate {
				t.Errorf("retry with duplicate_check = %d %s; WeCom got %d requests, showed %d; want 200, 2 requests, shown once", r.status, r.body, len(sent), shown)
			}
			if again := postKeyed(b, "leave-9", body); again.body != r.body || again.replayed != "true" {
				t.Errorf("third try = %d %s (replayed %q); want the retry's answer replayed", again.status, again.body, again.replayed)
			}
		})
	}
}

// slowSends delays each message/send a little, so a host can be killed mid-way.
type slowSends struct{ next http.Handler }

func (s slowSends) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if strings.HasSuffix(r.URL.Path, "/message/send") {
		time.Sleep(20 * time.Millisecond)
	}
	s.next.ServeHTTP(w, r)
}

// TestOutboxHostKilled: 500 messages accepted asynchronously by a host that is SIGKILLed while
// sending them, another host alive on the same redis-server: every message is shown exactly
// once (by text), none lost, and each ends "sent".
func TestOutboxHostKilled(t *testing.T) {
	rds := redistest.Start(t)
	emu := &wecomtest.Server{}
	emu.AddApp(corpID, corpSecret, agentID)
	api := httptest.NewServer(slowSends{emu})
	defer api.Close()
	cfg := sendConfig(api.URL, rds.Addr(), "      duplicate_check: 30m\n")
	a := startHost(t, "a", cfg, secretEnv()...) // first: it holds the outbox lease
	a.apiKey = apiKey
	b := startHost(t, "b", cfg, secretEnv()...)
	b.apiKey = apiKey
	const n = 500
	ids := make([]string, n)
	for i := range n {
		body := fmt.Sprintf(`{"to":{"user":"user%d"},"text":"outbox %d"}`, i%50, i)
		req, _ := http.NewRequest("POST", "http://"+a.addr+"/v1/bots/hr/messages", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+apiKey)
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Prefer", "respond-async")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		data, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var acc struct{ ID string }
		if json.Unmarshal(data, &acc); resp.StatusCode != 202 || acc.ID == "" {
			t.Fatalf("accept %d = %d %s", i, resp.StatusCode, data)
		}
		ids[i] = acc.ID
	}
	for len(emu.Sent()) < 100 {
		time.Sleep(5 * time.Millisecond)
	}
	a.kill()
	killedAt := len(emu.Sent())
	if killedAt >= n {
		t.Fatalf("host a sent all %d before it was killed; the test proves nothing", n)
	}
	shown := func() map[string]int {
		m := map[string]int{}
		for _, s := range emu.Sent() {
			if !s.Duplicate {
				m[s.Content]++
			}
		}
		return m
	}
	// b takes the lease within 10 s, waits up to 35 s for the sends a was making, then sends.
	deadline := time.Now().Add(3 * time.Minute)
	for len(shown()) < n && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	m := shown()
	for i := range n {
		if c := m[fmt.Sprint("outbox ", i)]; c != 1 {
			t.Errorf("outbox %d shown %d times; want once", i, c)
		}
	}
	for i, id := range ids {
		var st struct{ State string }
		for {
			status, body, _ := b.do("GET", "/v1/bots/hr/messages/"+id, nil)
			if json.Unmarshal(body, &st); status != 200 {
				t.Fatalf("status of %d = %d %s", i, status, body)
			}
			if st.State == "sent" || st.State == "failed" || time.Now().After(deadline) {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		if st.State != "sent" {
			t.Errorf("message %d ended %q; want sent", i, st.State)
		}
	}
	t.Logf("host a was killed after %d sends; WeCom got %d requests for %d messages", killedAt, len(emu.Sent()), n)
}

// TestOutboxBurstPaced: 120 messages to one member accepted at once are all delivered by an
// emulator that drops what exceeds 30 a minute, none dropped, in order, spread over at least
// 3 minutes of emulated time (host and emulator share a clock 20 times faster than real).
func TestOutboxBurstPaced(t *testing.T) {
	rds := redistest.Start(t)
	origin := time.Now()
	clock := pacing.Scaled(origin, 20)
	emu := &wecomtest.Server{Now: clock.Now}
	emu.AddApp(corpID, corpSecret, agentID)
	api := httptest.NewServer(emu)
	defer api.Close()
	env := append(secretEnv(), fmt.Sprintf("CHATWIRE_TEST_TIME_SCALE=%d:20", origin.UnixMilli()))
	h := startHost(t, "a", sendConfig(api.URL, rds.Addr(), ""), env...)
	for i := range 120 {
		body := fmt.Sprintf(`{"to":{"user":"zhangsan"},"text":"burst %d"}`, i)
		req, _ := http.NewRequest("POST", "http://"+h.addr+"/v1/bots/hr/messages", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+apiKey)
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Prefer", "respond-async")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 202 {
			t.Fatalf("accept %d = %d", i, resp.StatusCode)
		}
	}
	deadline := time.Now().Add(2 * time.Minute)
	for len(emu.Sent()) < 120 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	sent := emu.Sent()
	if len(sent) != 120 {
		t.Fatalf("emulator got %d messages; want 120", len(sent))
	}
	for i, s := range sent {
		if s.Content != fmt.Sprint("burst ", i) || len(s.Dropped) > 0 {
			t.Errorf("message %d = %q, dropped %v; want burst %d delivered", i, s.Content, s.Dropped, i)
		}
	}
	if span := sent[119].Time.Sub(sent[0].Time); span < 3*time.Minute {
		t.Errorf("120 messages spread over %v of emulated time; want ≥ 3m (30 a minute)", span)
	}
	t.Logf("120 messages over %v of emulated time", sent[119].Time.Sub(sent[0].Time))
}
