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
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/seed-a64d9e1f/chatwire/adapter/wecom/wecomtest"
	"github.com/seed-a64d9e1f/chatwire/internal/redistest"
)

// sendResult is one API send during the fault run.
type sendResult struct {
	at     time.Duration
	host   string
	status int
	kind   string
	text   string
}

// TestFaultsWeCom runs a steady load of sends and callbacks through two hosts sharing Redis
// while, one after the other: redis-server is killed and restarted; one host's plugin is
// SIGKILLed; the token endpoint fails with -1 while WeCom revokes the token early; the other
// host is SIGKILLed and started again. No callback WeCom got a 200 for is lost or delivered
// twice (except an event the killed host was delivering, as the README says), every failed
// send says why, and everything recovers without a restart by hand.
func TestFaultsWeCom(t *testing.T) {
	rds := redistest.Start(t)
	emu := &wecomtest.Server{TokenLifetime: 8 * time.Second, ReportRemaining: true, LenientAgentID: true, MemberLimit: -1,
		PushRetries: 40, PushRetryDelay: 250 * time.Millisecond, PushTimeout: 3 * time.Second}
	emu.AddApp(corpID, corpSecret, agentID)
	tap := &tokenTap{next: emu}
	api := httptest.NewServer(tap)
	defer api.Close()
	bot := &botReceiver{t: t}
	hook := httptest.NewServer(bot)
	defer hook.Close()

	cfg := wecomConfig(api.URL, rds.Addr(), hook.URL)
	a := startHost(t, "hostA", cfg, secretEnv()...)
	b := startHost(t, "hostB", cfg, secretEnv()...)
	a.apiKey, b.apiKey = apiKey, apiKey
	cb := wecomtest.Callback{Token: cbToken, EncodingAESKey: aesKey, CorpID: corpID, AgentID: agentID}

	var bDown atomic.Bool
	start := time.Now()
	since := func() time.Duration { return time.Since(start).Round(time.Millisecond) }
	const runFor = 34 * time.Second
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	var mu sync.Mutex
	var sends []sendResult
	var responses []string
	var pushed []wecomtest.Push
	var wg sync.WaitGroup
	wg.Go(func() { // sends, alternating hosts (only A while B is down)
		for i := 0; time.Since(start) < runFor; i++ {
			h := a
			if i%2 == 1 && !bDown.Load() {
				h = b
			}
			text := fmt.Sprintf("load %d", i)
			status, body, _, err := h.tryDo("POST", "/v1/bots/hr/messages", map[string]any{
				"to": map[string]any{"user": fmt.Sprintf("user%d", i%5)}, "text": text})
			var e struct {
				Error struct{ Kind string } `json:"error"`
			}
			json.Unmarshal(body, &e)
			if err != nil {
				// A send in flight to hostB when it is SIGKILLed loses its connection: the
				// client cannot know whether it went out (at most once, checked below).
				if h != b {
					t.Errorf("send %q via %s: %v", text, h.name, err)
				}
				e.Error.Kind = "connection lost"
			}
			mu.Lock()
			sends = append(sends, sendResult{since(), h.name, status, e.Error.Kind, text})
			responses = append(responses, string(body))
			mu.Unlock()
			time.Sleep(30 * time.Millisecond)
		}
	})
	wg.Go(func() { // callbacks, pushed like WeCom pushes: retried until a 200
		var pwg sync.WaitGroup
		for i := 0; time.Since(start) < runFor; i++ {
			h := a
			if i%2 == 1 && !bDown.Load() {
				h = b
			}
			c := cb
			c.URL = "http://" + h.addr + "/webhook/hr"
			msg := textMessage(1000 + i)
			pwg.Go(func() {
				p, err := emu.Push(ctx, c, msg)
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					t.Errorf("push %d via %s: %v after %d attempts (last status %d)", i, h.name, err, p.Attempts, p.Status)
					return
				}
				pushed = append(pushed, p)
			})
			time.Sleep(80 * time.Millisecond)
		}
		pwg.Wait()
	})

	// The faults, one after the other.
	at := func(d time.Duration) { time.Sleep(time.Until(start.Add(d))) }
	at(3 * time.Second)
	t.Logf("%v: kill redis-server", since())
	rds.Kill()
	at(6 * time.Second)
	rds.Restart()
	t.Logf("%v: redis-server back", since())

	at(9 * time.Second)
	plugins := children(a.cmd.Process.Pid)
	if len(plugins) == 0 {
		t.Fatalf("hostA has no plugin process")
	}
	t.Logf("%v: SIGKILL hostA's plugin %v", since(), plugins)
	for _, p := range plugins {
		syscall.Kill(p, syscall.SIGKILL)
	}

	at(15 * time.Second)
	t.Logf("%v: token endpoint answers -1 five times, and WeCom revokes the token early", since())
	emu.Fail("gettoken", -1, 5)
	emu.RevokeTokens(42001)

	at(20 * time.Second)
	bPlugins := children(b.cmd.Process.Pid)
	t.Logf("%v: SIGKILL hostB (pid %d, plugins %v)", since(), b.cmd.Process.Pid, bPlugins)
	bDown.Store(true)
	b.kill()
	killedB := time.Now() // every delivery hostB made arrived before this
	time.Sleep(2 * time.Second)
	for _, p := range bPlugins {
		if alive(p) {
			t.Errorf("hostB's plugin %d still running 2s after hostB was killed", p)
		}
	}
	b.start(secretEnv()...)
	bDown.Store(false)
	t.Logf("%v: hostB back", since())

	wg.Wait()
	recovered := 27 * time.Second

	// Callbacks WeCom got a 200 for reach the bot exactly once.
	deadline := time.Now().Add(30 * time.Second)
	for len(bot.byID()) < len(pushed) && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(2 * time.Second)
	ids := bot.byID()
	if len(ids) != len(pushed) {
		t.Errorf("bot received %d distinct events for %d acknowledged callbacks", len(ids), len(pushed))
	}
	// A host killed mid-delivery can deliver an event twice, never lose one (README, deliver):
	// the bot may have had its 2xx for an event whose consumed mark the killed host had not
	// yet written, and the host that takes the delivery lease over sends it again. So an
	// event may arrive twice only if it arrived first before hostB was SIGKILLed (or within a
	// second of it: a POST sent just before may be read after) and again after, at most one
	// per delivery lane (deliver.concurrency, 4) in flight at the kill.
	inFlight := 0
	arrivals := bot.arrivals()
	for id, n := range ids {
		at := arrivals[id]
		switch {
		case n == 1:
		case n == 2 && at[0].Before(killedB.Add(time.Second)) && at[1].After(killedB): // a POST it sent just before may be read after
			inFlight++
			t.Logf("event %s delivered twice: first %v before hostB was killed, again %v after (it was in flight)",
				id, killedB.Sub(at[0]), at[1].Sub(killedB))
		default:
			t.Errorf("event %s delivered %d times (at %v from the start; hostB killed at %v); want once, or twice across the kill",
				id, n, sinceAll(start, at), killedB.Sub(start))
		}
	}
	if inFlight > 4 {
		t.Errorf("%d events delivered twice across hostB's kill; at most 4 (one per delivery lane) can be in flight", inFlight)
	}
	retried := 0
	for _, p := range pushed {
		if p.Attempts > 1 {
			retried++
		}
	}

	// Sends: failures name their kind; none after recovery.
	failed, late := 0, 0
	byKind := map[string]int{}
	for _, s := range sends {
		if s.status == 200 {
			continue
		}
		failed++
		byKind[fmt.Sprintf("%d %s", s.status, s.kind)]++
		if s.kind == "" {
			t.Errorf("send at %v via %s failed with %d and no error kind", s.at, s.host, s.status)
		}
		if s.at > recovered {
			late++
			t.Errorf("send at %v via %s failed with %d %s after every fault was over", s.at, s.host, s.status, s.kind)
		}
	}
	// Sends the host answered 200 for reached WeCom exactly once; a failed one at most once
	// (it may have failed after WeCom took it, e.g. when its plugin was killed mid-call).
	delivered := map[string]int{}
	for _, s := range emu.Sent() {
		delivered[s.Content]++
	}
	for _, s := range sends {
		n := delivered[s.text]
		switch {
		case s.status == 200 && n != 1:
			t.Errorf("send %q answered 200 via %s at %v reached WeCom %d times; want once", s.text, s.host, s.at, n)
		case s.status != 200 && n > 1:
			t.Errorf("failed send %q reached WeCom %d times", s.text, n)
		}
	}
	t.Logf("%d sends, %d failed (%v), %d late; %d callbacks acknowledged, %d needed a redelivery; plugin restarts logged by hostA: %d",
		len(sends), failed, byKind, late, len(pushed), retried, a.log.count("plugin", "restart"))
	if len(sends) < 200 || len(pushed) < 200 {
		t.Errorf("only %d sends and %d callbacks: the load did not run", len(sends), len(pushed))
	}

	var texts []string
	for _, h := range []*host{a, b} {
		texts = append(texts, h.log.String())
	}
	texts = append(texts, strings.Join(responses, "\n"), strings.Join(bot.bodies, "\n"))
	secretScan(t, "logs, responses and deliveries", texts,
		append([]string{corpSecret, cbToken, aesKey, hookSecret, apiKey}, tap.issued()...))
}

// faultyGettoken sits in front of the emulator and, while mode says so, answers gettoken
// with a 502 HTML page or holds it until the mode changes.
type faultyGettoken struct {
	next http.Handler
	mode atomic.Value // "", "html", "hang"
}

func (f *faultyGettoken) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if strings.HasSuffix(r.URL.Path, "/gettoken") {
		switch f.mode.Load() {
		case "html":
			w.Header().Set("Content-Type", "text/html")
			w.WriteHeader(http.StatusBadGateway)
			io.WriteString(w, "<html><body><h1>502 Bad Gateway</h1></body></html>")
			return
		case "hang":
			for f.mode.Load() == "hang" && r.Context().Err() == nil {
				time.Sleep(20 * time.Millisecond)
			}
		}
	}
	f.next.ServeHTTP(w, r)
}

// TestTokenEndpointFaults: the token endpoint answers 502 with an HTML page, then hangs,
// across token expiry. Sends go on while the token is valid, fail saying why once it has
// expired, and work again by themselves once the endpoint recovers.
func TestTokenEndpointFaults(t *testing.T) {
	emu := &wecomtest.Server{TokenLifetime: 6 * time.Second, LenientAgentID: true, MemberLimit: -1}
	emu.AddApp(corpID, corpSecret, agentID)
	faulty := &faultyGettoken{next: emu}
	faulty.mode.Store("")
	tap := &tokenTap{next: faulty}
	api := httptest.NewServer(tap)
	defer api.Close()
	// The emulator has no per-member limit and the test sends ten a second to one user:
	// the bot's pacing is off to match.
	h := startHost(t, "host", singleHostConfig(api.URL, t.TempDir())+"    pacing: {limits: {member: []}}\n", secretEnv()...)
	h.apiKey = apiKey

	start := time.Now()
	var results []sendResult
	var responses []string
	client := &http.Client{Timeout: 10 * time.Second}
	send := func() {
		req, _ := http.NewRequest("POST", "http://"+h.addr+"/v1/bots/hr/messages",
			strings.NewReader(`{"to":{"user":"zhangsan"},"text":"hi"}`))
		req.Header.Set("Authorization", "Bearer "+apiKey)
		req.Header.Set("Content-Type", "application/json")
		r := sendResult{host: h.name}
		resp, err := client.Do(req)
		r.at = time.Since(start)
		if err != nil {
			r.kind = "client: " + err.Error()
		} else {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			var e struct {
				Error struct{ Kind, Message string } `json:"error"`
			}
			json.Unmarshal(body, &e)
			r.status, r.kind = resp.StatusCode, e.Error.Kind
			responses = append(responses, string(body))
		}
		results = append(results, r)
	}
	// The endpoint's modes change on a clock of their own, whatever the sends are doing.
	go func() {
		for _, step := range []struct {
			at   time.Duration
			mode string
		}{{2 * time.Second, "html"}, {12 * time.Second, "hang"}, {18 * time.Second, ""}} {
			time.Sleep(time.Until(start.Add(step.at)))
			faulty.mode.Store(step.mode)
		}
	}()
	for time.Since(start) < 26*time.Second {
		send()
		time.Sleep(100 * time.Millisecond)
	}

	var failedHTML, failedHang, okAfter, failedAfter int
	for _, r := range results {
		switch {
		case r.at > 20*time.Second && r.status == 200:
			okAfter++
		case r.at > 20*time.Second:
			failedAfter++
			t.Errorf("send at %v failed with %d %s after the endpoint recovered", r.at, r.status, r.kind)
		case r.status != 200 && r.kind == "":
			t.Errorf("send at %v failed with %d and no error kind", r.at, r.status)
		case r.status != 200 && r.at < 12*time.Second:
			failedHTML++
		case r.status != 200:
			failedHang++
		}
	}
	t.Logf("%d sends: %d failed while gettoken answered HTML, %d while it hung, %d ok after recovery",
		len(results), failedHTML, failedHang, okAfter)
	if failedHTML == 0 {
		t.Errorf("no send failed during 10 s of HTML answers across a 6 s token's expiry: the fault did not bite")
	}
	if okAfter < 10 {
		t.Errorf("only %d sends succeeded after recovery", okAfter)
	}
	if h.log.count("token refresh failed") == 0 {
		t.Errorf("no 'token refresh failed' line in the host log:\n%s", h.log)
	}
	secretScan(t, "logs and responses", []string{h.log.String(), strings.Join(responses, "\n")},
		append([]string{corpSecret, cbToken, aesKey, apiKey}, tap.issued()...))
}

// sinceAll is each time in ts as the duration since start.
func sinceAll(start time.Time, ts []time.Time) []time.Duration {
	out := make([]time.Duration, len(ts))
	for i, t := range ts {
		out[i] = t.Sub(start).Round(time.Millisecond)
	}
	return out
}
