package integration

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/seed-a64d9e1f/chatwire/adapter/wecom/wecomtest"
	"github.com/seed-a64d9e1f/chatwire/internal/redistest"
)

// Credentials of the emulated WeCom app. They are secrets as far as the scan is concerned.
const (
	corpID     = "ww4ee1ae7c1c1f0a01"
	corpSecret = "corp-secret-Zq8v1mX0pLr5"
	agentID    = 1000002
	cbToken    = "cbtokenQDG6eK"
	aesKey     = "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C" // 43 characters
	hookSecret = "hook-secret-7f3c9a"
	apiKey     = "api-key-b71d2e90c4"
)

// tokenTap records every access_token the emulator issues, for the secret scan.
type tokenTap struct {
	next   http.Handler
	mu     sync.Mutex
	tokens map[string]bool
}

var accessTokenRE = regexp.MustCompile(`"access_token"\s*:\s*"([^"]+)"`)

func (tp *tokenTap) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rec := httptest.NewRecorder()
	tp.next.ServeHTTP(rec, r)
	if m := accessTokenRE.FindSubmatch(rec.Body.Bytes()); m != nil {
		tp.mu.Lock()
		if tp.tokens == nil {
			tp.tokens = map[string]bool{}
		}
		tp.tokens[string(m[1])] = true
		tp.mu.Unlock()
	}
	for k, v := range rec.Header() {
		w.Header()[k] = v
	}
	w.WriteHeader(rec.Code)
	w.Write(rec.Body.Bytes())
}

func (tp *tokenTap) issued() []string {
	tp.mu.Lock()
	defer tp.mu.Unlock()
	var out []string
	for t := range tp.tokens {
		out = append(out, t)
	}
	return out
}

// botReceiver is the bot's side of `deliver.webhook_url`: it checks the signature and
// records every event it is given.
type botReceiver struct {
	t      testing.TB
	mu     sync.Mutex
	events []map[string]any
	at     []time.Time // when each of events arrived
	badSig atomic.Int64
	bodies []string
}

func (b *botReceiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	mac := hmac.New(sha256.New, []byte(hookSecret))
	mac.Write(body)
	if r.Header.Get("X-Chatwire-Signature") != "sha256="+hex.EncodeToString(mac.Sum(nil)) {
		b.badSig.Add(1)
		http.Error(w, "bad signature", http.StatusUnauthorized)
		return
	}
	var ev map[string]any
	if err := json.Unmarshal(body, &ev); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	if msg := checkDelivery(r, body); msg != "" {
		b.t.Errorf("%s", msg) // the host's delivery does not match api/openapi.yaml
	}
	b.mu.Lock()
	b.events = append(b.events, ev)
	b.at = append(b.at, time.Now())
	b.bodies = append(b.bodies, string(body))
	b.mu.Unlock()
}

// arrivals returns when each event id arrived, in order.
func (b *botReceiver) arrivals() map[string][]time.Time {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := map[string][]time.Time{}
	for i, e := range b.events {
		id, _ := e["id"].(string)
		out[id] = append(out[id], b.at[i])
	}
	return out
}

func (b *botReceiver) byID() map[string]int {
	b.mu.Lock()
	defer b.mu.Unlock()
	ids := map[string]int{}
	for _, e := range b.events {
		id, _ := e["id"].(string)
		ids[id]++
	}
	return ids
}

func wecomConfig(apiBase, redisAddr, hookURL string) string {
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
      token: "${WECOM_TOKEN}"
      encoding_aes_key: "${WECOM_AES_KEY}"
      api_base: %q
    # The emulators of these tests have no per-member limit (MemberLimit -1) and the tests
    # send hundreds a minute to a few users: the bot's pacing is off to match.
    pacing: {limits: {member: []}}
    deliver:
      webhook_url: %q
      webhook_secret: "${HOOK_SECRET}"
`, redisAddr, corpID, agentID, apiBase, hookURL)
}

func secretEnv() []string {
	return []string{"CHATWIRE_API_KEY=" + apiKey, "WECOM_SECRET=" + corpSecret, "WECOM_TOKEN=" + cbToken,
		"WECOM_AES_KEY=" + aesKey, "HOOK_SECRET=" + hookSecret}
}

func textMessage(i int) []byte {
	return fmt.Appendf(nil, `<xml><ToUserName><![CDATA[%s]]></ToUserName><FromUserName><![CDATA[user%d]]></FromUserName>`+
		`<CreateTime>%d</CreateTime><MsgType><![CDATA[text]]></MsgType><Content><![CDATA[hello %d]]></Content>`+
		`<MsgId>%d</MsgId><AgentID>%d</AgentID></xml>`, corpID, i%7, time.Now().Unix(), i, 7000000000000000+i, agentID)
}

// TestFleetWeCom: three hosts share one Redis. Sends spread over the hosts keep working
// across many short token lifetimes and an early revocation; callbacks spread over the hosts,
// each delivered twice as WeCom redelivers, reach the bot exactly once; the fleet asks the
// emulator for a new token once per lifetime, not once per host; no secret or token leaks.
func TestFleetWeCom(t *testing.T) {
	rds := redistest.Start(t)
	const life = 6 * time.Second
	emu := &wecomtest.Server{TokenLifetime: life, ReportRemaining: true, LenientAgentID: true, MemberLimit: -1}
	emu.AddApp(corpID, corpSecret, agentID)
	tap := &tokenTap{next: emu}
	api := httptest.NewServer(tap)
	defer api.Close()
	bot := &botReceiver{t: t}
	hook := httptest.NewServer(bot)
	defer hook.Close()

	cfg := wecomConfig(api.URL, rds.Addr(), hook.URL)
	var hosts []*host
	for i := range 3 {
		h := startHost(t, fmt.Sprintf("host%d", i), cfg, secretEnv()...)
		h.apiKey = apiKey
		hosts = append(hosts, h)
	}
	cb := wecomtest.Callback{Token: cbToken, EncodingAESKey: aesKey, CorpID: corpID, AgentID: agentID}

	start := time.Now()
	const runFor = 5 * life
	var responses []string
	var respMu sync.Mutex
	var sends, sendFails atomic.Int64
	var wg sync.WaitGroup
	// Sends: one every 50 ms, round robin over the hosts.
	wg.Go(func() {
		for i := 0; time.Since(start) < runFor; i++ {
			h := hosts[i%len(hosts)]
			status, body, _ := h.do("POST", "/v1/bots/hr/messages", map[string]any{
				"to": map[string]any{"user": fmt.Sprintf("user%d", i%5)}, "text": fmt.Sprintf("message %d", i)})
			sends.Add(1)
			if status != 200 {
				sendFails.Add(1)
				t.Errorf("send %d via %s: %d %s", i, h.name, status, body)
			}
			respMu.Lock()
			responses = append(responses, string(body))
			respMu.Unlock()
			time.Sleep(50 * time.Millisecond)
		}
	})
	// An early revocation in the middle: the next send on each host gets 42001 and retries.
	wg.Go(func() {
		time.Sleep(runFor / 2)
		emu.RevokeTokens(42001)
	})
	// Callbacks: each one to two different hosts, byte for byte the same.
	const callbacks = 60
	wg.Go(func() {
		for i := range callbacks {
			body, query, err := wecomtest.Encrypt(cb, textMessage(i), time.Now().Unix(), fmt.Sprintf("nonce%d", i))
			if err != nil {
				t.Error(err)
				return
			}
			for _, h := range []*host{hosts[i%3], hosts[(i+1)%3]} {
				resp, err := http.Post("http://"+h.addr+"/webhook/hr?"+query.Encode(), "text/xml", bytes.NewReader(body))
				if err != nil {
					t.Errorf("callback %d to %s: %v", i, h.name, err)
					continue
				}
				out, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					t.Errorf("callback %d to %s: %d %s", i, h.name, resp.StatusCode, out)
				}
				respMu.Lock()
				responses = append(responses, string(out))
				respMu.Unlock()
			}
			time.Sleep(runFor / callbacks)
		}
	})
	wg.Wait()
	elapsed := time.Since(start)

	// Every event reaches the bot exactly once.
	deadline := time.Now().Add(20 * time.Second)
	for len(bot.byID()) < callbacks && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(2 * time.Second) // give a duplicate the chance to arrive
	ids := bot.byID()
	if len(ids) != callbacks {
		t.Errorf("bot received %d distinct events; want %d", len(ids), callbacks)
	}
	for id, n := range ids {
		if n != 1 {
			t.Errorf("event %s delivered %d times; want once", id, n)
		}
	}
	if n := bot.badSig.Load(); n != 0 {
		t.Errorf("%d deliveries with a bad signature", n)
	}

	// One new token per lifetime for the whole fleet (+1 for the revocation, +1 for the edge).
	lifetimes := int(elapsed/life) + 1
	issued, requests := emu.TokensIssued(), emu.TokenRequests()
	t.Logf("%v: %d sends (%d failed), %d callbacks ×2; emulator issued %d tokens over %d lifetimes in %d gettoken calls",
		elapsed.Round(time.Second), sends.Load(), sendFails.Load(), callbacks, issued, lifetimes, requests)
	if issued > lifetimes+2 {
		t.Errorf("emulator issued %d tokens over %d lifetimes; want at most one per lifetime (+ revocation)", issued, lifetimes)
	}
	// With ReportRemaining the emulator hands back the same token while it is valid: one
	// manager asks twice per lifetime (refresh-ahead, then at expiry; tokenmgr's
	// TestSameTokenShortLifetimeDoesNotLoop). Three hosts sharing Redis ask no more than one.
	if limit := 2 * (lifetimes + 2); requests > limit {
		t.Errorf("fleet made %d gettoken calls over %d lifetimes; want at most %d", requests, lifetimes, limit)
	}

	// No secret, issued token anywhere in logs, API responses or deliveries.
	var texts []string
	for _, h := range hosts {
		texts = append(texts, h.log.String())
	}
	texts = append(texts, strings.Join(responses, "\n"), strings.Join(bot.bodies, "\n"))
	secretScan(t, "logs, responses and deliveries", texts,
		append([]string{corpSecret, cbToken, aesKey, hookSecret, apiKey}, tap.issued()...))
}
