package integration

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/seed-a64d9e1f/chatwire/adapter/teams/teamstest"
	"github.com/seed-a64d9e1f/chatwire/internal/redistest"
)

// The emulated Azure Bot. The password is what the secret scan looks for, with every token
// the emulator issued.
const (
	teamsApp      = "8c2f7a1e-5b3d-4e6f-9a0b-1c2d3e4f5a60"
	teamsPassword = "teams-app-password-Rt7~wq"
	teamsTenant   = "4d1e9f2a-7c3b-4a5d-8e6f-0a1b2c3d4e5f"
)

func teamsEnv() []string {
	return []string{"CHATWIRE_API_KEY=" + apiKey, "TEAMS_PASSWORD=" + teamsPassword}
}

// teamsHostConfig is a host with one teams bot "tbot" pointed at the emulator at emuURL.
func teamsHostConfig(emuURL, metadataURL, store string) string {
	u, _ := url.Parse(emuURL)
	return fmt.Sprintf(`server:
  listen: "{{ADDR}}"
  api_keys: ["${CHATWIRE_API_KEY}"]
store:
%s
bots:
  - name: tbot
    platform: teams
    teams:
      app_id: %s
      app_password: "${TEAMS_PASSWORD}"
      tenant_id: %s
      login_base: %q
      openid_metadata_url: %q
      service_hosts: [%q]
`, store, teamsApp, teamsTenant, emuURL, metadataURL, u.Host)
}

// teamsEvent is an event as a bot reads it from the SSE stream.
type teamsEvent struct {
	ID       string `json:"id"`
	Platform string `json:"platform"`
	Kind     string `json:"kind"`
	Text     string `json:"text"`
	Chat     struct {
		ID   string `json:"id"`
		Type string `json:"type"`
	} `json:"chat"`
	Sender struct {
		ID string `json:"id"`
	} `json:"sender"`
}

// teamsStream collects a host's tbot SSE events.
type teamsStream struct {
	mu     sync.Mutex
	events []teamsEvent
	cancel context.CancelFunc
	ended  chan struct{}
}

func streamTeams(t *testing.T, h *host) *teamsStream {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+h.addr+"/v1/bots/tbot/events", nil)
	req.Header.Set("Authorization", "Bearer "+apiKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != 200 {
		cancel()
		t.Fatalf("SSE connect to %s: %v %v", h.name, resp, err)
	}
	s := &teamsStream{cancel: cancel, ended: make(chan struct{})}
	t.Cleanup(func() { s.cancel(); <-s.ended })
	go func() {
		defer close(s.ended)
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 64<<10), 4<<20)
		for sc.Scan() {
			if data, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
				var ev teamsEvent
				json.Unmarshal([]byte(data), &ev)
				s.mu.Lock()
				s.events = append(s.events, ev)
				s.mu.Unlock()
			}
		}
	}()
	return s
}

func (s *teamsStream) all() []teamsEvent {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]teamsEvent(nil), s.events...)
}

// with returns the events whose text is text.
func (s *teamsStream) with(text string) []teamsEvent {
	var out []teamsEvent
	for _, e := range s.all() {
		if e.Text == text {
			out = append(out, e)
		}
	}
	return out
}

// wait returns the first event with text, failing t after 20 s.
func (s *teamsStream) wait(t *testing.T, text string) teamsEvent {
	t.Helper()
	if !waitFor(20*time.Second, func() bool { return len(s.with(text)) > 0 }) {
		t.Fatalf("no event %q on SSE; got %+v", text, s.all())
	}
	return s.with(text)[0]
}

// newTeamsEmulator serves a teamstest emulator on 127.0.0.1, recording issued tokens.
func newTeamsEmulator(t *testing.T, tokenLifetime time.Duration) (*teamstest.Server, *tokenTap) {
	emu := &teamstest.Server{TokenLifetime: tokenLifetime}
	tap := &tokenTap{next: emu}
	srv := httptest.NewServer(tap)
	t.Cleanup(srv.Close)
	emu.URL = srv.URL
	return emu, tap
}

// TestTeamsBlackBox drives a Teams bot through the real adapter-host and its plugin with
// the emulator playing Teams: an activity signed by the emulator becomes one SSE event;
// wrong audience, wrong serviceurl claim, expired token, a key without the msteams
// endorsement and a tampered body get 401 and no event; a redelivered activity gives one
// event; a reply (reply_to = the event id) lands in the message's thread; a proactive 1:1
// message reaches a user who installed the bot and fails with a clear error for one who did
// not; an Adaptive Card action round-trips (its invoke response is the webhook's answer);
// no secret or token leaks into the logs.
func TestTeamsBlackBox(t *testing.T) {
	emu, tap := newTeamsEmulator(t, 0)
	// The app is registered before the host starts (it fetches its token at start); its
	// messaging endpoint is known once the host listens.
	emu.AddBot(teamstest.Bot{AppID: teamsApp, Password: teamsPassword, TenantID: teamsTenant, Name: "Helper"})
	h := startHost(t, "teams", teamsHostConfig(emu.URL, emu.MetadataURL(), "  dir: "+t.TempDir()), teamsEnv()...)
	h.apiKey = apiKey
	emu.SetEndpoint(teamsApp, "http://"+h.addr+"/webhook/tbot")
	sse := streamTeams(t, h)
	ctx := t.Context()

	megan := emu.NewUser("Megan Bowen", teamsTenant)
	conv, err := emu.InstallPersonal(ctx, teamsApp, megan)
	if err != nil {
		t.Fatal(err)
	}
	sse.wait(t, "installationUpdate")

	// A signed message: one event, 200.
	act, err := emu.Message(conv, megan, "hello bot")
	if err != nil {
		t.Fatal(err)
	}
	d, err := emu.Deliver(ctx, teamsApp, act, teamstest.DeliverOptions{})
	if err != nil || d.Final().Status != 200 {
		t.Fatalf("signed activity: %+v %v", d, err)
	}
	ev := sse.wait(t, "hello bot")
	if ev.Platform != "teams" || ev.Kind != "message" || ev.Chat.ID != conv.ID || ev.Chat.Type != "direct" || ev.Sender.ID != megan.AADObjectID {
		t.Errorf("message event = %+v", ev)
	}

	// Redelivery of the same activity (Teams retries after 15 s without an answer): 200, no
	// second event.
	d, err = emu.Deliver(ctx, teamsApp, act, teamstest.DeliverOptions{})
	if err != nil || d.Final().Status != 200 {
		t.Fatalf("redelivery: %+v %v", d, err)
	}

	// Refused tokens: 401, no event.
	faults := map[string]teamstest.TokenFault{"wrong audience": teamstest.WrongAudience, "wrong serviceurl": teamstest.WrongServiceURL,
		"expired": teamstest.Expired, "unendorsed key": teamstest.UnendorsedKey, "tampered body": teamstest.TamperedBody}
	for name, f := range faults {
		a, _ := emu.Message(conv, megan, "fault "+name)
		d, err := emu.Deliver(ctx, teamsApp, a, teamstest.DeliverOptions{Fault: f})
		if err != nil || d.Final().Status != 401 {
			t.Errorf("%s: %+v %v; want 401", name, d, err)
		}
	}

	// A reply in the message's thread, addressed by the event id.
	status, body, _ := h.do("POST", "/v1/bots/tbot/messages", map[string]any{"to": map[string]any{"chat": ev.Chat.ID}, "reply_to": ev.ID, "text": "pong"})
	if status != 200 {
		t.Fatalf("reply: %d %s", status, body)
	}
	var replied bool
	for _, s := range emu.Sent() {
		if s.Kind == "reply" && s.ConversationID == conv.ID && s.ReplyToID == act.ID && s.Activity.Text == "pong" {
			replied = true
		}
	}
	if !replied {
		t.Errorf("no reply to %s in %s among %+v", act.ID, conv.ID, emu.Sent())
	}

	// Proactive 1:1 by Entra object id: a user who installed the bot, and one who did not.
	status, body, _ = h.do("POST", "/v1/bots/tbot/messages", map[string]any{"to": map[string]any{"user": megan.AADObjectID}, "text": "a proactive hello"})
	if status != 200 {
		t.Fatalf("proactive send to an installed user: %d %s", status, body)
	}
	var reached bool
	for _, s := range emu.Sent() {
		if s.Kind == "send" && s.ConversationID == conv.ID && s.Activity.Text == "a proactive hello" {
			reached = true
		}
	}
	if !reached {
		t.Errorf("the proactive message did not reach %s: %+v", conv.ID, emu.Sent())
	}
	stranger := emu.NewUser("Adele Vance", teamsTenant)
	status, body, _ = h.do("POST", "/v1/bots/tbot/messages", map[string]any{"to": map[string]any{"user": stranger.AADObjectID}, "text": "hi"})
	var apiErr struct {
		Error struct{ Kind, Message, PlatformCode string } `json:"error"`
	}
	json.Unmarshal(body, &apiErr)
	if status != 400 || apiErr.Error.Kind != "invalid_recipient" || !strings.Contains(apiErr.Error.Message, "installed the bot") {
		t.Errorf("proactive send to a user who did not install the bot: %d %s; want 400 invalid_recipient saying the user must install the bot", status, body)
	}

	// An Adaptive Card action: the invoke response comes back as the webhook's answer, and
	// the action is an event.
	d, err = emu.ExecuteAction(ctx, conv, megan, act.ID, "approve", map[string]any{"ticket": 42})
	if err != nil || d.Final().Status != 200 {
		t.Fatalf("card action: %+v %v", d, err)
	}
	var inv struct {
		StatusCode int    `json:"statusCode"`
		Type       string `json:"type"`
	}
	if err := json.Unmarshal(d.Final().Body, &inv); err != nil || inv.StatusCode != 200 || inv.Type != "application/vnd.microsoft.activity.message" {
		t.Errorf("invoke response %s: %v", d.Final().Body, err)
	}
	sse.wait(t, "adaptiveCard/action")

	// Nothing from the refused deliveries, one event for the redelivered one.
	sse.wait(t, "hello bot")
	if !waitFor(5*time.Second, func() bool { return h.log.count("webhook refused") >= len(faults) }) {
		t.Errorf("%d refused-webhook log lines; want one per refused delivery (%d)", h.log.count("webhook refused"), len(faults))
	}
	for _, e := range sse.all() {
		if strings.HasPrefix(e.Text, "fault ") {
			t.Errorf("a refused activity became an event: %+v", e)
		}
	}
	if n := len(sse.with("hello bot")); n != 1 {
		t.Errorf("%d events for one activity delivered twice; want 1", n)
	}
	secretScan(t, "host log", []string{h.log.String()}, append(tap.issued(), teamsPassword))
}

// TestTeamsFleet: three hosts on one redis-server serve one Teams bot. Teams delivers to one
// of them; the others send proactively to the user it learnt (conversation references are
// shared through Redis), and the fleet fetches the connector token about once per token
// lifetime, not once per host, counted at the emulator's token endpoint.
func TestTeamsFleet(t *testing.T) {
	rds := redistest.Start(t)
	const life = 6 * time.Second
	emu, tap := newTeamsEmulator(t, life)
	emu.NoThrottle = true
	store := fmt.Sprintf("  redis_url: \"redis://%s/0\"\n  key_prefix: itestteams", rds.Addr())
	cfg := teamsHostConfig(emu.URL, emu.MetadataURL(), store)
	emu.AddBot(teamstest.Bot{AppID: teamsApp, Password: teamsPassword, TenantID: teamsTenant})
	var hosts []*host
	for i := range 3 {
		h := startHost(t, fmt.Sprintf("teams%d", i), cfg, teamsEnv()...)
		h.apiKey = apiKey
		hosts = append(hosts, h)
	}
	emu.SetEndpoint(teamsApp, "http://"+hosts[0].addr+"/webhook/tbot")
	megan := emu.NewUser("Megan Bowen", teamsTenant)
	conv, err := emu.InstallPersonal(t.Context(), teamsApp, megan)
	if err != nil {
		t.Fatal(err)
	}

	start := time.Now()
	const runFor = 3 * life
	sends := 0
	for i := 0; time.Since(start) < runFor; i++ {
		h := hosts[i%len(hosts)]
		status, body, _, err := apiSend(h, "/v1/bots/tbot/messages", map[string]any{"to": map[string]any{"user": megan.AADObjectID}, "text": fmt.Sprintf("note %d", i)})
		if err != nil || status != 200 {
			t.Fatalf("send %d via %s at %v: %d %s %v", i, h.name, time.Since(start).Round(time.Millisecond), status, body, err)
		}
		sends++
		time.Sleep(100 * time.Millisecond)
	}
	elapsed := time.Since(start)
	delivered := 0
	for _, s := range emu.Sent() {
		if s.ConversationID == conv.ID && strings.HasPrefix(s.Activity.Text, "note ") {
			delivered++
		}
	}
	fetched := 0
	for _, r := range emu.TokenRequests() {
		if r.Status == 200 {
			fetched++
		}
	}
	// Refreshed at about 80% of a lifetime: ~1 + elapsed/(0.8·life) fetches for the fleet;
	// each host on its own would make three times as many.
	most := int(elapsed/(life*7/10)) + 2
	t.Logf("%d sends over %v through 3 hosts, %d delivered; %d token fetches (at most %d allowed)", sends, elapsed.Round(time.Millisecond), delivered, fetched, most)
	if delivered != sends {
		t.Errorf("%d of %d proactive sends reached the user", delivered, sends)
	}
	if fetched < 2 || fetched > most {
		t.Errorf("%d connector token fetches for the fleet over %v with %v tokens; want about one per lifetime (2 to %d)", fetched, elapsed.Round(time.Millisecond), life, most)
	}
	var logs []string
	for _, h := range hosts {
		logs = append(logs, h.log.String())
	}
	secretScan(t, "host logs", logs, append(tap.issued(), teamsPassword))
}
