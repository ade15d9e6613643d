package integration

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/seed-a64d9e1f/chatwire/adapter/graph/graphtest"
	"github.com/seed-a64d9e1f/chatwire/internal/redistest"
)

// The emulated Graph app. Secret, client state, API key and hook secret are what the scans
// look for, together with every access and refresh token the emulator issued.
const (
	graphTenant      = "contoso-tenant-7c1e"
	graphClientID    = "5f0c2a4e-1b7d-4c39-9e61-2d8a0b7f3c11"
	graphSecret      = "graph-secret-Vq3p9LmZ~x2"
	graphClientState = "client-state-Hs82kQpW4n"
	graphUser        = "bot@contoso.com"
)

func graphEnv() []string {
	return []string{"CHATWIRE_API_KEY=" + apiKey, "GRAPH_SECRET=" + graphSecret,
		"GRAPH_CLIENT_STATE=" + graphClientState, "HOOK_SECRET=" + hookSecret}
}

// graphTap records every access and refresh token the emulator's token endpoint hands out
// (Graph's token responses carry a rotating refresh_token next to the access_token).
type graphTap struct {
	next   http.Handler
	mu     sync.Mutex
	tokens map[string]bool
}

var graphTokenRE = regexp.MustCompile(`"(?:access_token|refresh_token)"\s*:\s*"([^"]+)"`)

func (tp *graphTap) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rec := httptest.NewRecorder()
	tp.next.ServeHTTP(rec, r)
	if ms := graphTokenRE.FindAllSubmatch(rec.Body.Bytes(), -1); ms != nil {
		tp.mu.Lock()
		if tp.tokens == nil {
			tp.tokens = map[string]bool{}
		}
		for _, m := range ms {
			tp.tokens[string(m[1])] = true
		}
		tp.mu.Unlock()
	}
	for k, v := range rec.Header() {
		w.Header()[k] = v
	}
	w.WriteHeader(rec.Code)
	w.Write(rec.Body.Bytes())
}

func (tp *graphTap) issued() []string {
	tp.mu.Lock()
	defer tp.mu.Unlock()
	var out []string
	for t := range tp.tokens {
		out = append(out, t)
	}
	return out
}

// graphSecrets is everything no log line, response or delivery may contain.
func graphSecrets(tap *graphTap) []string {
	return append([]string{graphSecret, graphClientState, apiKey, hookSecret}, tap.issued()...)
}

// graphConfig is a host config with one Graph bot. store is the YAML of the store section's
// body; deliver adds deliver.webhook_url when hookURL is set.
func graphConfig(bot, store, auth, base, notifyURL, subscribe, hookURL string) string {
	cfg := fmt.Sprintf(`server:
  listen: "{{ADDR}}"
  api_keys: ["${CHATWIRE_API_KEY}"]
store:
%s
bots:
  - name: %s
    platform: graph
    graph:
      tenant_id: %s
      client_id: %s
      client_secret: "${GRAPH_SECRET}"
      auth: %s
      user: %s
      notification_url: %q
      client_state: "${GRAPH_CLIENT_STATE}"
      subscribe: %s
      login_base: %q
      graph_base: %q
    # graphtest has no rate limits and these tests send many posts a second: pacing off.
    pacing: {limits: {chats: [], channels: [], channel: [], mail: []}}
`, store, bot, graphTenant, graphClientID, auth, graphUser, notifyURL, subscribe, base, base)
	if hookURL != "" {
		cfg += fmt.Sprintf(`    deliver:
      webhook_url: %q
      webhook_secret: "${HOOK_SECRET}"
`, hookURL)
	}
	return cfg
}

// graphLogin signs the delegated bot of config in the way an operator does: it runs
// `adapter-host graph login` with a loopback redirect, "opens" the printed URL (the emulator
// signs LoginUser in and redirects to the command's listener), and waits for the command to
// store the refresh token. It returns the command's output.
func graphLogin(t *testing.T, config, bot, redirect string) string {
	t.Helper()
	f := filepath.Join(t.TempDir(), "login.yaml")
	cfg := strings.ReplaceAll(config, "{{ADDR}}", fmt.Sprintf("127.0.0.1:%d", freePort(t)))
	if err := os.WriteFile(f, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(binDir, "adapter-host"), "graph", "login", "--config", f, "--bot", bot, "--redirect", redirect)
	cmd.Env = append(os.Environ(), graphEnv()...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	urls := make(chan string, 1)
	lines := make(chan struct{})
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			l := sc.Text()
			out.WriteString(l + "\n")
			if u := strings.TrimSpace(l); strings.HasPrefix(u, "http://") || strings.HasPrefix(u, "https://") {
				select {
				case urls <- u:
				default:
				}
			}
		}
	}()
	var authURL string
	select {
	case authURL = <-urls:
	case <-ctx.Done():
		t.Fatalf("graph login printed no sign-in URL: %s", stderr.String())
	}
	resp, err := http.Get(authURL) // authorize → 302 to the command's loopback redirect
	if err != nil {
		t.Fatalf("opening the sign-in URL: %v", err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(page), "Signed in") {
		t.Fatalf("sign-in redirect answered %d %q", resp.StatusCode, page)
	}
	<-lines
	if err := cmd.Wait(); err != nil {
		t.Fatalf("graph login: %v\n%s%s", err, out.String(), stderr.String())
	}
	if !strings.Contains(out.String(), "signed in") {
		t.Fatalf("graph login output:\n%s", out.String())
	}
	return out.String() + stderr.String() + string(page)
}

// notifyLB stands where Graph's notification_url points, like a load balancer in front of a
// fleet: each notification POST goes to the next host in turn; once that host has
// acknowledged it, the same bytes go to the following host too, as Graph's redelivery landing
// elsewhere would. Mail notifications are refused (503) the first time they are seen, so the
// emulator keeps them for Redeliver. Validation requests go to one host only.
type notifyLB struct {
	mu      sync.Mutex
	hosts   []*host
	next    int
	seen    map[string]bool
	bodies  []string // every host answer, for the secret scan
	primary map[int]int
	dup     map[int]int
	refused atomic.Int64
	wg      sync.WaitGroup
	client  http.Client
}

func (lb *notifyLB) add(h *host) {
	lb.mu.Lock()
	defer lb.mu.Unlock()
	lb.hosts = append(lb.hosts, h)
}

// forward POSTs body to h's webhook with r's path and query.
func (lb *notifyLB) forward(h *host, r *http.Request, body []byte) (int, http.Header, []byte, error) {
	req, _ := http.NewRequest(r.Method, "http://"+h.addr+r.URL.RequestURI(), bytes.NewReader(body))
	req.Header.Set("Content-Type", r.Header.Get("Content-Type"))
	resp, err := lb.client.Do(req)
	if err != nil {
		return 0, nil, nil, err
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	lb.mu.Lock()
	lb.bodies = append(lb.bodies, string(out))
	lb.mu.Unlock()
	return resp.StatusCode, resp.Header, out, nil
}

func (lb *notifyLB) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	// The first host's subscription is validated while that host is still starting.
	deadline := time.Now().Add(9 * time.Second)
	var hosts []*host
	for {
		lb.mu.Lock()
		hosts = append([]*host(nil), lb.hosts...)
		lb.mu.Unlock()
		if len(hosts) > 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if len(hosts) == 0 {
		http.Error(w, "no host yet", http.StatusServiceUnavailable)
		return
	}
	if r.URL.Query().Get("validationToken") != "" {
		status, hdr, out, err := lb.forward(hosts[0], r, body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		w.Header().Set("Content-Type", hdr.Get("Content-Type"))
		w.WriteHeader(status)
		w.Write(out)
		return
	}
	lb.mu.Lock()
	if lb.seen == nil {
		lb.seen, lb.primary, lb.dup = map[string]bool{}, map[int]int{}, map[int]int{}
	}
	first := !lb.seen[string(body)]
	lb.seen[string(body)] = true
	i := lb.next
	lb.next++
	lb.mu.Unlock()
	if first && strings.Contains(string(body), "#Microsoft.Graph.Message") {
		lb.refused.Add(1)
		http.Error(w, "upstream unavailable", http.StatusServiceUnavailable)
		return
	}
	a, b := hosts[i%len(hosts)], hosts[(i+1)%len(hosts)]
	status, _, out, err := lb.forward(a, r, body)
	lb.mu.Lock()
	lb.primary[status]++
	lb.mu.Unlock()
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	if status/100 == 2 && a != b {
		lb.wg.Go(func() {
			st, _, _, _ := lb.forward(b, r, body)
			lb.mu.Lock()
			lb.dup[st]++
			lb.mu.Unlock()
		})
	}
	w.WriteHeader(status)
	w.Write(out)
}

// send posts an API request to h without failing from a goroutine that is not the test's.
func apiSend(h *host, path string, body any) (int, []byte, http.Header, error) {
	buf, _ := json.Marshal(body)
	req, _ := http.NewRequest("POST", "http://"+h.addr+path, bytes.NewReader(buf))
	req.Header.Set("Authorization", "Bearer "+h.apiKey)
	req.Header.Set("Content-Type", "application/json")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp, err := http.DefaultClient.Do(req.WithContext(ctx))
	if err != nil {
		return 0, nil, nil, err
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, out, resp.Header, nil
}

// waitFor polls cond until it holds or limit passes.
func waitFor(limit time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(50 * time.Millisecond)
	}
	return true
}

// tokenGrants counts the token endpoint's successful answers for grant and its errors.
func tokenGrants(emu *graphtest.Server, grant string) (ok, failed int) {
	for _, r := range emu.TokenRequests() {
		switch {
		case r.Error != "":
			failed++
		case r.GrantType == grant:
			ok++
		}
	}
	return ok, failed
}

// TestGraphFleet: three hosts share one Redis and one delegated Graph bot signed in with
// `graph login`. The fleet creates each subscription once; chat and mail notifications,
// spread over the hosts by a load balancer and each delivered a second time to another host
// (mail after a refused first delivery and the emulator's Redeliver), reach the bot exactly
// once; sends spread over the hosts all succeed across several short token lifetimes, while
// the fleet redeems the (strictly rotating) refresh token about once per lifetime, not once
// per host; no secret or token leaks.
func TestGraphFleet(t *testing.T) {
	rds := redistest.Start(t)
	const life = 5 * time.Second
	emu := &graphtest.Server{TokenLifetime: life, StrictRefresh: true, LoginUser: graphUser}
	redirect := fmt.Sprintf("http://127.0.0.1:%d/callback", freePort(t))
	emu.AddClient(graphClientID, graphSecret, redirect)
	tap := &graphTap{next: emu}
	api := httptest.NewServer(tap)
	defer api.Close()
	bot := &botReceiver{t: t}
	hook := httptest.NewServer(bot)
	defer hook.Close()
	lb := &notifyLB{client: http.Client{Timeout: 10 * time.Second}}
	lbSrv := httptest.NewServer(lb)
	defer lbSrv.Close()
	defer lb.wg.Wait()

	store := fmt.Sprintf("  redis_url: \"redis://%s/0\"\n  key_prefix: itestg", rds.Addr())
	cfg := graphConfig("teams", store, "delegated", api.URL, lbSrv.URL+"/webhook/teams", "[chats, mail]", hook.URL)
	loginOut := graphLogin(t, cfg, "teams", redirect)

	var hosts []*host
	for i := range 3 {
		h := startHost(t, fmt.Sprintf("graph%d", i), cfg, graphEnv()...)
		h.apiKey = apiKey
		hosts = append(hosts, h)
		lb.add(h)
	}
	started := func() bool {
		for _, h := range hosts {
			if h.log.count("graph bot started") == 0 {
				return false
			}
		}
		return true
	}
	if !waitFor(30*time.Second, started) {
		for _, h := range hosts {
			t.Logf("%s:\n%s", h.name, h.log)
		}
		t.Fatalf("not every host started its graph bot")
	}
	subs := emu.Subscriptions()
	subPosts := 0
	for _, r := range emu.Requests() {
		if r.Method == "POST" && r.Path == "/v1.0/subscriptions" {
			subPosts++
		}
	}
	t.Logf("subscriptions: %d live, %d created", len(subs), subPosts)
	if len(subs) != 2 || subPosts != 2 {
		t.Errorf("three hosts of one bot hold %d subscriptions after %d POSTs; want 2 (chats, mail), created once for the fleet", len(subs), subPosts)
	}
	for _, s := range subs {
		if s.NotificationURL != lbSrv.URL+"/webhook/teams" || s.ClientState != graphClientState {
			t.Errorf("subscription %s: notification URL %s, clientState set %v", s.Resource, s.NotificationURL, s.ClientState == graphClientState)
		}
	}
	_, failedBefore := tokenGrants(emu, "refresh_token")
	refreshBefore, _ := tokenGrants(emu, "refresh_token")

	start := time.Now()
	const runFor = 5 * life
	var mu sync.Mutex
	var responses []string
	want := map[string]string{} // event id → text
	var sends, sendFails, redelivered atomic.Int64
	var wg sync.WaitGroup
	wg.Go(func() { // sends, round robin over the hosts
		for i := 0; time.Since(start) < runFor; i++ {
			h := hosts[i%len(hosts)]
			status, body, _, err := apiSend(h, "/v1/bots/teams/messages", map[string]any{
				"to": map[string]any{"chat": fmt.Sprintf("19:user%d_bot@unq.gbl.spaces", i%4)}, "text": fmt.Sprintf("reply %d", i)})
			sends.Add(1)
			if err != nil || status != 200 {
				sendFails.Add(1)
				t.Errorf("send %d via %s at %v: %d %s %v", i, h.name, time.Since(start).Round(time.Millisecond), status, body, err)
			}
			mu.Lock()
			responses = append(responses, string(body))
			mu.Unlock()
			time.Sleep(60 * time.Millisecond)
		}
	})
	wg.Go(func() { // people writing to the bot: chat messages, and now and then a mail
		for i := 0; time.Since(start) < runFor; i++ {
			if i%6 == 5 {
				id := emu.DeliverMail(graphUser, "carol@example.com", fmt.Sprintf("subject %d", i), fmt.Sprintf("mail %d", i))
				mu.Lock()
				want["graph:mail/"+id] = fmt.Sprintf("mail %d", i)
				mu.Unlock()
				redelivered.Add(int64(emu.Redeliver()))
			} else {
				chat := fmt.Sprintf("19:user%d_bot@unq.gbl.spaces", i%4)
				m := emu.AddChatMessage(chat, fmt.Sprintf("user%d", i%4), "User", fmt.Sprintf("hello %d", i))
				mu.Lock()
				want["graph:chats/"+chat+"/messages/"+m.ID] = fmt.Sprintf("hello %d", i)
				mu.Unlock()
			}
			time.Sleep(150 * time.Millisecond)
		}
	})
	wg.Wait()
	elapsed := time.Since(start)
	emu.Flush()
	lb.wg.Wait()
	// A sentinel, queued after every notification above (and its repetition) was acknowledged:
	// the fleet's one deliverer hands events over in queue order, so once the sentinel is
	// there, any duplicate would be there too.
	sentinelChat := "19:sentinel_bot@unq.gbl.spaces"
	sm := emu.AddChatMessage(sentinelChat, "sentinel", "Sentinel", "last")
	lb.wg.Wait()
	sentinel := "graph:chats/" + sentinelChat + "/messages/" + sm.ID
	want[sentinel] = "last"

	// Every event reaches the bot exactly once.
	if !waitFor(30*time.Second, func() bool { return bot.byID()[sentinel] > 0 }) {
		t.Errorf("the sentinel event did not reach the bot")
	}
	ids := bot.byID()
	for id, text := range want {
		if ids[id] != 1 {
			t.Errorf("event %s (%q) delivered %d times; want once", id, text, ids[id])
		}
	}
	for id, n := range ids {
		if _, ok := want[id]; !ok {
			t.Errorf("unexpected event %s delivered %d times", id, n)
		}
	}
	bot.mu.Lock()
	for _, ev := range bot.events {
		id, _ := ev["id"].(string)
		chat, _ := ev["chat"].(map[string]any)
		if ev["bot"] != "teams" || ev["platform"] != "graph" || ev["kind"] != "message" || ev["text"] != want[id] {
			t.Errorf("event %s: bot %v platform %v kind %v text %q; want teams graph message %q", id, ev["bot"], ev["platform"], ev["kind"], ev["text"], want[id])
		}
		if wantType := map[bool]string{true: "mail", false: "direct"}[strings.HasPrefix(id, "graph:mail/")]; chat["type"] != wantType {
			t.Errorf("event %s: chat type %v; want %s", id, chat["type"], wantType)
		}
	}
	bot.mu.Unlock()
	if n := bot.badSig.Load(); n != 0 {
		t.Errorf("%d deliveries with a bad signature", n)
	}

	// Notifications: every first delivery and every second one acknowledged with a 2xx.
	lb.mu.Lock()
	primary, dup := fmt.Sprint(lb.primary), fmt.Sprint(lb.dup)
	for st, n := range lb.primary {
		if st/100 != 2 {
			t.Errorf("%d notifications answered %d by the host they reached first", n, st)
		}
	}
	for st, n := range lb.dup {
		if st/100 != 2 {
			t.Errorf("%d repeated notifications answered %d", n, st)
		}
	}
	lb.mu.Unlock()
	mails := 0
	for id := range want {
		if strings.HasPrefix(id, "graph:mail/") {
			mails++
		}
	}
	if int(lb.refused.Load()) != mails || int(redelivered.Load()) != mails {
		t.Errorf("%d mails: the balancer refused %d first deliveries, the emulator's Redeliver got %d through; want %d each",
			mails, lb.refused.Load(), redelivered.Load(), mails)
	}
	// Each event's second delivery is acknowledged and dropped by id, on whichever host.
	dupLines := 0
	waitFor(5*time.Second, func() bool {
		dupLines = 0
		for _, h := range hosts {
			dupLines += h.log.count("duplicate event dropped")
		}
		return dupLines >= len(want)
	})
	if dupLines != len(want) {
		t.Errorf("hosts logged %d dropped duplicates for %d events delivered twice each", dupLines, len(want))
	}

	// Sends: all through, all in the emulator.
	if sent := len(emu.Sent()); int64(sent) != sends.Load()-sendFails.Load() {
		t.Errorf("emulator accepted %d messages for %d successful sends", sent, sends.Load()-sendFails.Load())
	}

	// Tokens: the fleet redeems the refresh token about once per lifetime. A manager renews
	// at 80% ± 5% of the lifetime, so one renewal per ≥ 0.75·life for the fleet; hosts fetching
	// on their own would make three times as many. Under StrictRefresh a refresh token redeemed
	// twice (two hosts racing with the same one) fails with invalid_grant: none may fail.
	refreshes, failed := tokenGrants(emu, "refresh_token")
	refreshes -= refreshBefore
	failed -= failedBefore
	maxRefreshes := int(float64(elapsed)/(0.75*float64(life))) + 2
	minRefreshes := int(elapsed/life) - 1
	t.Logf("%v with a %v token: %d sends (%d failed); %d events (%d mails) to the bot; notifications first %s, again %s; "+
		"%d duplicates dropped by the hosts; %d refresh_token redemptions (bound %d..%d), %d token errors",
		elapsed.Round(time.Millisecond), life, sends.Load(), sendFails.Load(), len(want), mails, primary, dup,
		dupLines, refreshes, minRefreshes, maxRefreshes, failed)
	if refreshes > maxRefreshes || refreshes < minRefreshes {
		t.Errorf("fleet redeemed the refresh token %d times in %v of %v tokens; want %d..%d (one per lifetime for the fleet)",
			refreshes, elapsed.Round(time.Millisecond), life, minRefreshes, maxRefreshes)
	}
	if failed != 0 {
		for _, r := range emu.TokenRequests() {
			if r.Error != "" {
				t.Logf("token request %s: %s", r.GrantType, r.Error)
			}
		}
		t.Errorf("%d token requests failed (a rotated refresh token redeemed twice?)", failed)
	}
	if len(want) < 50 || sends.Load() < 100 {
		t.Errorf("only %d events and %d sends: the load did not run", len(want), sends.Load())
	}

	// The scan below must have something to look for: the login's and every rotation's tokens.
	rts := 0
	for _, tok := range tap.issued() {
		if strings.HasPrefix(tok, "rt-") {
			rts++
		}
	}
	if rts < refreshes+1 || len(tap.issued()) < 2*(refreshes+1) {
		t.Errorf("the tap saw %d tokens, %d of them refresh tokens, for %d redemptions and a login", len(tap.issued()), rts, refreshes)
	}
	var texts []string
	for _, h := range hosts {
		for _, path := range []string{"/v1/tokens", "/metrics"} {
			status, body, _ := h.do("GET", path, nil)
			if status != 200 {
				t.Errorf("%s GET %s: %d", h.name, path, status)
			}
			texts = append(texts, string(body))
		}
		texts = append(texts, h.log.String())
	}
	lb.mu.Lock()
	texts = append(texts, strings.Join(lb.bodies, "\n"))
	lb.mu.Unlock()
	texts = append(texts, strings.Join(responses, "\n"), strings.Join(bot.bodies, "\n"), loginOut)
	secretScan(t, "logs, login output, API and webhook responses, deliveries", texts, graphSecrets(tap))
}

// startMailHost starts one host with an app-only (client credentials) mail bot whose
// notification URL is the host's own webhook, and waits until its subscription exists.
func startMailHost(t *testing.T, name string, emu *graphtest.Server, base, hookURL string) *host {
	t.Helper()
	store := fmt.Sprintf("  dir: %q", t.TempDir())
	h := startHost(t, name, graphConfig("mail", store, "client_credentials", base, "http://{{ADDR}}/webhook/mail", "[mail]", hookURL), graphEnv()...)
	h.apiKey = apiKey
	if !waitFor(30*time.Second, func() bool { return h.log.count("graph bot started") > 0 && len(emu.Subscriptions()) == 1 }) {
		t.Fatalf("mail bot not started (%d subscriptions):\n%s", len(emu.Subscriptions()), h.log)
	}
	return h
}

type apiError struct {
	Error struct {
		Kind, Message string
		PlatformCode  string `json:"platform_code"`
	} `json:"error"`
}

// TestGraphThrottling: Graph throttles and goes unavailable with a short Retry-After (waited
// out inside, the send succeeds), throttles with a long one (the API answers 429 with
// Retry-After and the platform code at once), and revokes the token in the middle of
// concurrent sends (every send succeeds, with one new token).
func TestGraphThrottling(t *testing.T) {
	emu := &graphtest.Server{}
	emu.AddClient(graphClientID, graphSecret)
	tap := &graphTap{next: emu}
	api := httptest.NewServer(tap)
	defer api.Close()
	bot := &botReceiver{t: t}
	hook := httptest.NewServer(bot)
	defer hook.Close()
	h := startMailHost(t, "graph-mail", emu, api.URL, hook.URL)

	var responses []string
	mail := func(i int) (int, []byte, http.Header, time.Duration) {
		t.Helper()
		t0 := time.Now()
		status, body, hdr := h.do("POST", "/v1/bots/mail/messages", map[string]any{
			"to": map[string]any{"email": "alice@example.com"}, "subject": "s", "text": fmt.Sprintf("mail %d", i)})
		responses = append(responses, string(body))
		return status, body, hdr, time.Since(t0)
	}
	sendMailRequests := func() []int {
		var out []int
		for _, r := range emu.Requests() {
			if r.Method == "POST" && strings.HasSuffix(r.Path, "/sendMail") {
				out = append(out, r.Status)
			}
		}
		return out
	}
	if status, body, _, _ := mail(0); status != 200 {
		t.Fatalf("first send: %d %s", status, body)
	}

	// 429 with Retry-After: 1 → waited out inside, one retry.
	emu.InjectThrottle(1, time.Second)
	status, body, _, took := mail(1)
	if status != 200 || took < 900*time.Millisecond {
		t.Errorf("send throttled for 1 s: %d %s after %v; want 200 after waiting ≥ 1 s", status, body, took)
	}
	t.Logf("throttled 1 s: %d after %v", status, took.Round(time.Millisecond))

	// 503 twice with Retry-After: 1 → both waited out.
	emu.InjectStatus(2, http.StatusServiceUnavailable, time.Second)
	status, body, _, took = mail(2)
	if status != 200 || took < 1800*time.Millisecond {
		t.Errorf("send unavailable twice for 1 s: %d %s after %v; want 200 after ≥ 2 s", status, body, took)
	}
	t.Logf("503 ×2 for 1 s: %d after %v", status, took.Round(time.Millisecond))
	if got, want := fmt.Sprint(sendMailRequests()), "[200 429 200 503 503 200]"; got != want {
		t.Errorf("sendMail requests answered %s; want %s", got, want)
	}

	// 429 with Retry-After: 60 → returned at once as rate_limited, with the header.
	emu.InjectThrottle(1, 60*time.Second)
	status, body, hdr, took := mail(3)
	var e apiError
	json.Unmarshal(body, &e)
	t.Logf("throttled 60 s: %d Retry-After %q %s after %v", status, hdr.Get("Retry-After"), bytes.TrimSpace(body), took.Round(time.Millisecond))
	if status != 429 || hdr.Get("Retry-After") != "60" || e.Error.Kind != "rate_limited" || e.Error.PlatformCode != "TooManyRequests" {
		t.Errorf("send throttled for 60 s: %d Retry-After %q %s; want 429, Retry-After 60, kind rate_limited, platform_code TooManyRequests",
			status, hdr.Get("Retry-After"), body)
	}
	if took > 5*time.Second {
		t.Errorf("a 60 s throttle took %v to report; want at once", took)
	}
	if status, body, _, _ := mail(4); status != 200 {
		t.Errorf("send after the throttle: %d %s", status, body)
	}

	// Retry-After as an HTTP date: two minutes away is returned at once with the seconds left;
	// two seconds away is waited out.
	emu.InjectRetryAfterHeader(http.StatusTooManyRequests, time.Now().Add(2*time.Minute).UTC().Format(http.TimeFormat))
	status, body, hdr, _ = mail(5)
	if ra, _ := strconv.Atoi(hdr.Get("Retry-After")); status != 429 || ra < 100 || ra > 121 {
		t.Errorf("send throttled until a date 2 min away: %d Retry-After %q %s; want 429 with about 120", status, hdr.Get("Retry-After"), body)
	}
	emu.InjectRetryAfterHeader(http.StatusTooManyRequests, time.Now().Add(2*time.Second).UTC().Format(http.TimeFormat))
	if status, body, _, took := mail(6); status != 200 {
		t.Errorf("send throttled until a date 2 s away: %d %s after %v; want 200", status, body, took)
	}

	// A notification whose message fetch is throttled for 60 s: the host asks Graph to
	// redeliver (no event queued), and the redelivery brings the event. One throttled for 1 s
	// is waited out inside the webhook, within Graph's 3 s.
	emu.InjectThrottle(1, 60*time.Second)
	throttled := emu.DeliverMail(graphUser, "judy@example.com", "throttled", "fetched on redelivery")
	if n := emu.Redeliver(); n != 1 {
		t.Errorf("notification whose fetch was throttled for 60 s: %d redelivered; want 1 (the first answered 503)", n)
	}
	emu.InjectThrottle(1, time.Second)
	waited := emu.DeliverMail(graphUser, "judy@example.com", "waited", "fetched after 1 s")
	if n := emu.Redeliver(); n != 0 {
		t.Errorf("notification whose fetch was throttled for 1 s was not acknowledged the first time (%d redelivered)", n)
	}
	if !waitFor(15*time.Second, func() bool { return bot.byID()["graph:mail/"+waited] > 0 }) {
		t.Errorf("throttled notifications' events did not reach the bot: %v", bot.byID())
	}
	if ids := bot.byID(); len(ids) != 2 || ids["graph:mail/"+throttled] != 1 || ids["graph:mail/"+waited] != 1 {
		t.Errorf("bot got %v; want graph:mail/%s and graph:mail/%s once each", ids, throttled, waited)
	}
	if n := h.log.count("asking for redelivery"); n != 1 {
		t.Errorf("host logged %d 'asking for redelivery' lines; want 1", n)
	}

	// The token revoked while three senders are busy: one new token, no failed send.
	before, _ := tokenGrants(emu, "client_credentials")
	var wg sync.WaitGroup
	var revoked atomic.Bool
	var fails atomic.Int64
	var mu sync.Mutex
	for w := range 3 {
		wg.Go(func() {
			for i := range 15 {
				if w == 0 && i == 5 {
					emu.RevokeTokens()
					revoked.Store(true)
				}
				status, body, _, err := apiSend(h, "/v1/bots/mail/messages", map[string]any{
					"to": map[string]any{"email": "bob@example.com"}, "subject": "s", "text": fmt.Sprintf("stream %d/%d", w, i)})
				mu.Lock()
				responses = append(responses, string(body))
				mu.Unlock()
				if err != nil || status != 200 {
					fails.Add(1)
					t.Errorf("sender %d send %d (revoked %v): %d %s %v", w, i, revoked.Load(), status, body, err)
				}
				time.Sleep(20 * time.Millisecond)
			}
		})
	}
	wg.Wait()
	after, failed := tokenGrants(emu, "client_credentials")
	rejected := 0
	for _, r := range emu.Requests() {
		if r.Status == 401 {
			rejected++
		}
	}
	t.Logf("revoked mid-stream: 45 sends, %d failed; %d requests rejected with 401; %d new tokens; %d token errors",
		fails.Load(), rejected, after-before, failed)
	if after-before != 1 {
		t.Errorf("revocation during 3 concurrent senders cost %d new tokens; want exactly 1", after-before)
	}
	if rejected < 1 || rejected > 3 {
		t.Errorf("%d requests rejected with the revoked token; want 1..3 (one per sender in flight)", rejected)
	}
	secretScan(t, "log, API responses and deliveries", []string{h.log.String(), strings.Join(responses, "\n"),
		strings.Join(bot.bodies, "\n")}, graphSecrets(tap))
}

// TestGraphWebhookBadInput: forged, malformed and oversized notifications to a real host get
// their 4xx and a log line; the validation handshake echoes its token as text/plain; a batch
// mixing a forged item with a real one keeps the real one; the host stays ready and a real
// notification still reaches the bot exactly once.
func TestGraphWebhookBadInput(t *testing.T) {
	emu := &graphtest.Server{}
	emu.AddClient(graphClientID, graphSecret)
	tap := &graphTap{next: emu}
	api := httptest.NewServer(tap)
	defer api.Close()
	bot := &botReceiver{t: t}
	hook := httptest.NewServer(bot)
	defer hook.Close()
	h := startMailHost(t, "graph-bad", emu, api.URL, hook.URL)
	sub := emu.Subscriptions()[0]
	hookURL := "http://" + h.addr + "/webhook/mail"

	var responses []string
	post := func(name, rawQuery, contentType string, body []byte) (int, http.Header, string) {
		t.Helper()
		req, _ := http.NewRequest("POST", hookURL+rawQuery, bytes.NewReader(body))
		req.Header.Set("Content-Type", contentType)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		out, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		responses = append(responses, string(out))
		return resp.StatusCode, resp.Header, string(out)
	}
	item := func(clientState, msgID string) map[string]any {
		return map[string]any{"id": "n-" + msgID, "subscriptionId": sub.ID, "clientState": clientState, "changeType": "created",
			"resource": "Users/" + graphUser + "/Messages/" + msgID, "tenantId": graphtest.TenantID,
			"resourceData": map[string]any{"@odata.type": "#Microsoft.Graph.Message", "id": msgID}}
	}
	batch := func(items ...map[string]any) []byte {
		b, _ := json.Marshal(map[string]any{"value": items})
		return b
	}

	// Validation handshake: the decoded token back, as text/plain.
	token := "Validation: Testing client application reachability for subscription Request-Id: 7f1c&x=1 +ü"
	status, hdr, body := post("validation", "?validationToken="+url.QueryEscape(token), "text/plain", nil)
	if status != 200 || !strings.HasPrefix(hdr.Get("Content-Type"), "text/plain") || body != token {
		t.Errorf("validation: %d %q %q; want 200 text/plain %q", status, hdr.Get("Content-Type"), body, token)
	}

	// A real mail in the inbox, so a forged notification names something that exists.
	realID := emu.DeliverMail(graphUser, "mallory@example.com", "hi", "forged")
	emu.Flush()
	if !waitFor(10*time.Second, func() bool { return len(bot.byID()) >= 1 }) {
		t.Fatalf("a real notification did not reach the bot:\n%s", h.log)
	}

	cases := []struct {
		name        string
		contentType string
		body        []byte
		want        int
	}{
		{"wrong clientState", "application/json", batch(item("not-the-client-state", realID)), 401},
		{"no clientState", "application/json", batch(item("", realID)), 401},
		{"malformed JSON", "application/json", []byte(`{"value":[{"id":`), 400},
		{"not a notification collection", "application/json", []byte(`{"values":"x"}`), 400},
		{"JSON array", "application/json", []byte(`[1,2,3]`), 400},
		{"oversized", "application/json", bytes.Repeat([]byte(" "), 8<<20), 413},
	}
	for _, tc := range cases {
		status, _, body := post(tc.name, "", tc.contentType, tc.body)
		if status != tc.want && !(tc.name == "oversized" && status == 400) {
			t.Errorf("%s: %d %q; want %d", tc.name, status, abbreviate(body), tc.want)
		}
	}
	req, _ := http.NewRequest("POST", "http://"+h.addr+"/webhook/nobody", bytes.NewReader(batch(item(graphClientState, realID))))
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 404 {
		t.Errorf("notification for an unknown bot: %v %v; want 404", resp, err)
	} else {
		resp.Body.Close()
	}
	if status, body, _ := h.do("GET", "/readyz", nil); status != 200 {
		t.Fatalf("/readyz after bad input: %d %s", status, body)
	}

	// A batch with a forged item and a real one: accepted, only the real one becomes an event.
	mixedID := emu.DeliverMail(graphUser, "dave@example.com", "mixed", "the real one") // notified and delivered
	emu.Flush()
	status, _, body = post("mixed batch", "", "application/json", batch(item("forged", realID), item(graphClientState, mixedID)))
	if status/100 != 2 {
		t.Errorf("batch with one forged and one real item: %d %q; want 2xx", status, body)
	}
	// And the real notification delivered again by Graph: a 2xx, dropped as a duplicate.
	if !emu.DeliverAgain() {
		t.Errorf("a real notification delivered again was not acknowledged")
	}
	// A sentinel after all that: events are delivered in queue order, so once it is there, a
	// duplicate would be too.
	sentinelID := emu.DeliverMail(graphUser, "erin@example.com", "last", "sentinel")
	if !waitFor(15*time.Second, func() bool { return bot.byID()["graph:mail/"+sentinelID] > 0 }) {
		t.Errorf("the sentinel mail did not reach the bot")
	}
	ids := bot.byID()
	if len(ids) != 3 || ids["graph:mail/"+realID] != 1 || ids["graph:mail/"+mixedID] != 1 || ids["graph:mail/"+sentinelID] != 1 {
		t.Errorf("bot got %v; want graph:mail/%s, graph:mail/%s and graph:mail/%s once each", ids, realID, mixedID, sentinelID)
	}
	if n := h.log.count("webhook refused"); n < 6 {
		t.Errorf("host logged %d 'webhook refused' lines for 6 refused notifications:\n%s", n, h.log)
	}
	if n := h.log.count("wrong clientState"); n < 3 {
		t.Errorf("host logged %d 'wrong clientState' lines for 3 forged items; want each logged", n)
	}
	for _, l := range []string{"panic", "goroutine "} {
		if h.log.count(l) > 0 {
			t.Errorf("host log mentions %q:\n%s", l, h.log)
		}
	}
	secretScan(t, "log, webhook responses and deliveries", []string{h.log.String(), strings.Join(responses, "\n"),
		strings.Join(bot.bodies, "\n")}, graphSecrets(tap))
}

// dropper fails the next n notification POSTs the emulator makes (validation requests pass),
// as a notification lost on the way would be.
type dropper struct{ n atomic.Int64 }

func (d *dropper) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.URL.Query().Get("validationToken") == "" && d.n.Add(-1) >= 0 {
		if r.Body != nil {
			r.Body.Close()
		}
		return nil, fmt.Errorf("dropper: notification lost")
	}
	d.n.Store(max(d.n.Load(), 0))
	return http.DefaultTransport.RoundTrip(r)
}

// TestGraphLifecycle: Graph's lifecycle events through a real host. reauthorizationRequired
// renews the subscription; a notification lost on the way is recovered by "missed" (the host
// resyncs the inbox) and reaches the bot once, even when Graph later redelivers it;
// subscriptionRemoved makes the host create a new subscription, which then carries mail.
func TestGraphLifecycle(t *testing.T) {
	drop := &dropper{}
	emu := &graphtest.Server{Client: &http.Client{Transport: drop, Timeout: 10 * time.Second}}
	emu.AddClient(graphClientID, graphSecret)
	tap := &graphTap{next: emu}
	api := httptest.NewServer(tap)
	defer api.Close()
	bot := &botReceiver{t: t}
	hook := httptest.NewServer(bot)
	defer hook.Close()
	h := startMailHost(t, "graph-life", emu, api.URL, hook.URL)
	sub := emu.Subscriptions()[0]

	// reauthorizationRequired: acknowledged, and the subscription renewed (PATCH).
	patched := func() int {
		n := 0
		for _, r := range emu.Requests() {
			if r.Method == "PATCH" && r.Path == "/v1.0/subscriptions/"+sub.ID && r.Status == 200 {
				n++
			}
		}
		return n
	}
	if status, err := emu.Lifecycle(sub.ID, "reauthorizationRequired"); err != nil || status/100 != 2 {
		t.Errorf("reauthorizationRequired: %d %v; want 2xx", status, err)
	}
	if !waitFor(10*time.Second, func() bool { return patched() == 1 }) {
		t.Errorf("subscription renewed %d times after reauthorizationRequired; want once", patched())
	}

	// A notification lost on the way, then "missed": the host resyncs and finds the mail.
	drop.n.Store(1)
	lost := emu.DeliverMail(graphUser, "frank@example.com", "lost", "lost on the way")
	if status, err := emu.Lifecycle(sub.ID, "missed"); err != nil || status/100 != 2 {
		t.Errorf("missed: %d %v; want 2xx", status, err)
	}
	if !waitFor(15*time.Second, func() bool { return bot.byID()["graph:mail/"+lost] > 0 }) {
		t.Errorf("the mail whose notification was lost did not reach the bot after 'missed':\n%s", h.log)
	}
	// Graph redelivers the lost notification later: acknowledged, dropped as a duplicate.
	if n := emu.Redeliver(); n != 1 {
		t.Errorf("redelivery of the lost notification: %d acknowledged; want 1", n)
	}

	renewals := patched()

	// subscriptionRemoved: the host creates a new subscription, and mail flows through it.
	// (The new one may take up to tokenmgr's minimum refresh interval, 10 s, to appear: the
	// subscription was renewed just above.)
	if status, err := emu.Lifecycle(sub.ID, "subscriptionRemoved"); err != nil || status/100 != 2 {
		t.Errorf("subscriptionRemoved: %d %v; want 2xx", status, err)
	}
	var renewed graphtest.Subscription
	if !waitFor(15*time.Second, func() bool {
		s := emu.Subscriptions()
		if len(s) == 1 && s[0].ID != sub.ID {
			renewed = s[0]
			return true
		}
		return false
	}) {
		t.Fatalf("no new subscription after subscriptionRemoved (%d live):\n%s", len(emu.Subscriptions()), h.log)
	}
	if renewed.ClientState != graphClientState || renewed.Resource != sub.Resource {
		t.Errorf("new subscription for %s (clientState kept: %v); want %s", renewed.Resource, renewed.ClientState == graphClientState, sub.Resource)
	}
	after := emu.DeliverMail(graphUser, "grace@example.com", "after", "through the new subscription")
	if !waitFor(15*time.Second, func() bool { return bot.byID()["graph:mail/"+after] > 0 }) {
		t.Errorf("mail after the subscription was recreated did not reach the bot:\n%s", h.log)
	}
	// Events are delivered in queue order: with the last one there, any duplicate would be too.
	ids := bot.byID()
	if len(ids) != 2 || ids["graph:mail/"+lost] != 1 || ids["graph:mail/"+after] != 1 {
		t.Errorf("bot got %v; want graph:mail/%s and graph:mail/%s once each", ids, lost, after)
	}
	t.Logf("lifecycle: renewed %d×, lost mail resynced, subscription %s… replaced by %s…; host logged %d lifecycle lines",
		renewals, sub.ID[:8], renewed.ID[:8], h.log.count("graph lifecycle event"))
	secretScan(t, "log and deliveries", []string{h.log.String(), strings.Join(bot.bodies, "\n")}, graphSecrets(tap))
}

// TestGraphCAE: a delegated bot whose token is revoked under continuous access evaluation
// (Graph answers with a claims challenge) while two senders are busy: every send succeeds,
// and the fleet of one asks for exactly one new token, carrying the challenge's claims.
// waitFirstToken waits (up to 30 s) until GET /v1/tokens shows bot holding a fresh token.
func waitFirstToken(t *testing.T, h *host, bot string) {
	t.Helper()
	var body []byte
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		var status int
		status, body, _ = h.do("GET", "/v1/tokens", nil)
		var st struct {
			Bots []struct {
				Bot    string `json:"bot"`
				Tokens []struct {
					State string `json:"state"`
				} `json:"tokens"`
			} `json:"bots"`
		}
		if status != 200 || json.Unmarshal(body, &st) != nil {
			continue
		}
		for _, b := range st.Bots {
			if b.Bot == bot && len(b.Tokens) > 0 && b.Tokens[0].State == "fresh" {
				return
			}
		}
	}
	t.Fatalf("bot %s holds no fresh token 30s after the host is ready: %s", bot, body)
}

func TestGraphCAE(t *testing.T) {
	emu := &graphtest.Server{CAE: true, StrictRefresh: true, LoginUser: graphUser}
	redirect := fmt.Sprintf("http://127.0.0.1:%d/callback", freePort(t))
	emu.AddClient(graphClientID, graphSecret, redirect)
	tap := &graphTap{next: emu}
	api := httptest.NewServer(tap)
	defer api.Close()
	store := fmt.Sprintf("  dir: %q", t.TempDir())
	cfg := graphConfig("teams", store, "delegated", api.URL, "", "[]", "")
	loginOut := graphLogin(t, cfg, "teams", redirect)
	h := startHost(t, "graph-cae", cfg, graphEnv()...)
	h.apiKey = apiKey
	// The host is ready before its background first token fetch (platforms.warm) is done;
	// count from when the bot holds that token, so only what the revocation costs is counted.
	waitFirstToken(t, h, "teams")

	chat := "19:kim_bot@unq.gbl.spaces"
	before := len(emu.TokenRequests())
	var responses []string
	var mu sync.Mutex
	var wg sync.WaitGroup
	var fails atomic.Int64
	for w := range 2 {
		wg.Go(func() {
			for i := range 12 {
				if w == 0 && i == 4 {
					emu.RevokeTokens()
				}
				status, body, _, err := apiSend(h, "/v1/bots/teams/messages", map[string]any{
					"to": map[string]any{"chat": chat}, "text": fmt.Sprintf("cae %d/%d", w, i)})
				mu.Lock()
				responses = append(responses, string(body))
				mu.Unlock()
				if err != nil || status != 200 {
					fails.Add(1)
					t.Errorf("sender %d send %d: %d %s %v", w, i, status, body, err)
				}
				time.Sleep(20 * time.Millisecond)
			}
		})
	}
	wg.Wait()
	reqs := emu.TokenRequests()[before:]
	withClaims := 0
	for _, r := range reqs {
		if r.Error != "" {
			t.Errorf("token request %s failed: %s", r.GrantType, r.Error)
		}
		if r.Claims != "" {
			withClaims++
		}
	}
	t.Logf("CAE revocation: 24 sends, %d failed; %d token requests after the first send, %d with claims; %d messages in the chat",
		fails.Load(), len(reqs), withClaims, len(emu.Messages(chat)))
	if len(reqs) != 1 || withClaims != 1 {
		t.Errorf("CAE revocation cost %d token requests (%d with claims); want exactly one, with the challenge's claims", len(reqs), withClaims)
	}
	if n := len(emu.Messages(chat)); n != 24-int(fails.Load()) {
		t.Errorf("chat holds %d messages for %d successful sends", n, 24-fails.Load())
	}
	secretScan(t, "log, login output and API responses", []string{h.log.String(), loginOut, strings.Join(responses, "\n")}, graphSecrets(tap))
}
