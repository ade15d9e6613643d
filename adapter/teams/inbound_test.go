package teams_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/seed-a64d9e1f/chatwire/adapter"
	"github.com/seed-a64d9e1f/chatwire/adapter/teams"
	"github.com/seed-a64d9e1f/chatwire/adapter/teams/teamstest"
)

func TestSignedActivityBecomesOneEvent(t *testing.T) {
	e := setup(t, nil)
	u, c := e.install(t, "Megan Bowen")
	if n := len(e.eventsOf("installationUpdate")); n != 1 {
		t.Errorf("installationUpdate events = %d; want 1", n)
	}
	ev := e.say(t, c, u, "hello bot")
	if ev.Kind != adapter.EventMessage || ev.Text != "hello bot" || ev.Platform != teams.Platform || ev.Bot != "tbot" {
		t.Errorf("event = %+v; want a message \"hello bot\" from teams/tbot", ev)
	}
	if ev.Chat != (adapter.Chat{ID: c.ID, Type: adapter.ChatDirect}) || ev.Sender.ID != u.AADObjectID || ev.Sender.Name != u.Name {
		t.Errorf("chat %+v sender %+v; want direct %s from %s", ev.Chat, ev.Sender, c.ID, u.AADObjectID)
	}
	if n := len(e.eventsOf("hello bot")); n != 1 {
		t.Errorf("events for the message = %d; want 1", n)
	}
	var raw map[string]any
	if json.Unmarshal(ev.Raw, &raw) != nil || raw["serviceUrl"] != e.srv.ServiceURL(tenant) {
		t.Errorf("Raw does not hold the activity: %s", ev.Raw)
	}
}

func TestGroupMessageStripsTheBotMention(t *testing.T) {
	e := setup(t, nil)
	u := e.srv.NewUser("Megan", tenant)
	g, err := e.srv.NewGroupChat(t.Context(), appID, "project", u, e.srv.NewUser("Lee", tenant))
	if err != nil {
		t.Fatal(err)
	}
	ev := e.say(t, g, u, "deploy now")
	if ev.Text != "deploy now" || ev.Chat.Type != adapter.ChatGroup || ev.Chat.ID != g.ID {
		t.Errorf("event text %q chat %+v; want \"deploy now\" in group %s", ev.Text, ev.Chat, g.ID)
	}
}

// Every refusal of spec §1.2 is a 401 with no event and one log line without the token.
func TestRefusedActivities(t *testing.T) {
	e := setup(t, nil)
	u, c := e.install(t, "Megan")
	for _, tc := range []struct {
		name   string
		fault  teamstest.TokenFault
		reason string
	}{
		{"wrong audience", teamstest.WrongAudience, "audience"},
		{"wrong serviceurl claim", teamstest.WrongServiceURL, "serviceurl claim"},
		{"expired token", teamstest.Expired, "expired"},
		{"key without msteams endorsement", teamstest.UnendorsedKey, "endorse"},
		{"tampered body (serviceUrl redirected)", teamstest.TamperedBody, "serviceurl claim"},
		{"tampered token", teamstest.TamperedToken, "signature invalid"},
		{"wrong issuer", teamstest.WrongIssuer, "issuer"},
		{"no exp", teamstest.NoExpiry, "no exp"},
		{"unknown key", teamstest.UnknownKey, "kid"},
		{"no token", teamstest.NoToken, "no Bearer token"},
		{"lower-case scheme", teamstest.LowercaseScheme, "Bearer"},
		{"alg none", teamstest.AlgNone, "token"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before, logsBefore := len(e.Events()), strings.Count(e.logs.String(), "webhook refused")
			a, err := e.srv.Message(c, u, "attack "+tc.name)
			if err != nil {
				t.Fatal(err)
			}
			d, err := e.srv.Deliver(t.Context(), appID, a, teamstest.DeliverOptions{Fault: tc.fault})
			if err != nil {
				t.Fatal(err)
			}
			if st := d.Final().Status; st != http.StatusUnauthorized || len(d.Attempts) != 1 {
				t.Errorf("answer %d after %d attempts; want one 401", st, len(d.Attempts))
			}
			if n := len(e.Events()); n != before {
				t.Errorf("events %d → %d; want none added", before, n)
			}
			logs := e.logs.String()
			if n := strings.Count(logs, "webhook refused") - logsBefore; n != 1 {
				t.Errorf("log lines = %d; want 1", n)
			}
			last := logs[strings.LastIndex(logs, "webhook refused"):]
			if !strings.Contains(last, tc.reason) {
				t.Errorf("log line %q does not say %q", last, tc.reason)
			}
			if strings.Contains(logs, "eyJ") {
				t.Errorf("a token reached the log: %s", logs)
			}
		})
	}
	// The valid path still works after all that.
	e.say(t, c, u, "still fine")
}

// postSigned sends activity a with a token minted from claims straight to the bot.
func postSigned(t *testing.T, e *env, a any, claims teamstest.TokenClaims) (int, []byte) {
	t.Helper()
	tok, err := e.srv.ChannelToken("", claims)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(a)
	req, _ := http.NewRequest(http.MethodPost, e.endpoint, strings.NewReader(string(b)))
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("Content-Type", "application/json; charset=utf-8")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, body
}

// Spec §7 A2: accept iff now ∈ [nbf−300 s, exp+300 s] and serviceurl matches modulo one "/".
func TestTokenVectorWindows(t *testing.T) {
	e := setup(t, nil)
	u, c := e.install(t, "Megan")
	now := time.Now()
	su := e.srv.ServiceURL(tenant)
	for _, tc := range []struct {
		name   string
		claims teamstest.TokenClaims
		want   int
	}{
		{"expired 240 s ago", teamstest.TokenClaims{NotBefore: now.Add(-time.Hour), Expires: now.Add(-240 * time.Second)}, 200},
		{"expired 360 s ago", teamstest.TokenClaims{NotBefore: now.Add(-time.Hour), Expires: now.Add(-360 * time.Second)}, 401},
		{"valid in 240 s", teamstest.TokenClaims{NotBefore: now.Add(240 * time.Second), Expires: now.Add(time.Hour)}, 200},
		{"valid in 400 s", teamstest.TokenClaims{NotBefore: now.Add(400 * time.Second), Expires: now.Add(time.Hour)}, 401},
		{"serviceurl without trailing slash", teamstest.TokenClaims{ServiceURL: strings.TrimSuffix(su, "/")}, 200},
		{"serviceUrl claim in camelCase", teamstest.TokenClaims{ServiceURLClaim: "serviceUrl"}, 401},
		{"aud api://appId", teamstest.TokenClaims{Audience: "api://" + appID}, 401},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, err := e.srv.Message(c, u, tc.name)
			if err != nil {
				t.Fatal(err)
			}
			cl := tc.claims
			if cl.Audience == "" {
				cl.Audience = appID
			}
			if cl.ServiceURL == "" {
				cl.ServiceURL = su
			}
			if st, body := postSigned(t, e, a, cl); st != tc.want {
				t.Errorf("status %d %s; want %d", st, body, tc.want)
			}
		})
	}
}

// Spec §7 A1: the real activity, verbatim, signed for its serviceUrl.
const activityA1 = `{"type":"message","id":"1485983408511","timestamp":"2017-02-01T21:10:07.437Z","localTimestamp":"2017-02-01T14:10:07.437-07:00",
 "serviceUrl":"https://smba.trafficmanager.net/amer/","channelId":"msteams",
 "from":{"id":"29:1XJKJMvc5GBtc2JwZq0oj8tHZmzrQgFmB39ATiQWA85gQtHieVkKilBZ9XHoq9j7Zaqt7CZ-NJWi7me2kHTL3Bw","name":"Megan Bowen",
         "aadObjectId":"7faf8ab2-3d56-4244-b585-20c8a42ed2b8"},
 "conversation":{"conversationType":"personal",
   "id":"a:17I0kl9EkpE1O9PH5TWrzrLNwnWWcfrU7QZjKR0WSfOpzbfcAg2IaydGElSo10tVr4C7Fc6GtieTJX663WuJCc1uA83n4CSrHSgGBj5XNYLcVlJAs2ZX8DbYBPck201w-"},
 "recipient":{"id":"28:c9e8c047-2a74-40a2-b28a-b162d5f5327c","name":"Teams TestBot"},
 "textFormat":"plain","text":"Hello Teams TestBot.Sending bold-italic rich text",
 "attachments":[{"contentType":"text/html",
   "content":"<div><div>Hello Teams TestBot. Sending <strong>bold</strong>-<em>italic</em> rich text.</div>\n</div>"}],
 "entities":[{"locale":"en-US","country":"US","platform":"Windows","timezone":"America/Los_Angeles","type":"clientInfo"}],
 "channelData":{"tenant":{"id":"72f988bf-86f1-41af-91ab-2d7cd011db47"}},"locale":"en-US"}`

// smba answers for smba.trafficmanager.net and records what it was asked.
type smba struct {
	base http.RoundTripper
	mu   chan struct{}
	urls []string
}

func (s *smba) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.URL.Host != "smba.trafficmanager.net" {
		return s.base.RoundTrip(r)
	}
	s.mu <- struct{}{}
	s.urls = append(s.urls, r.Method+" "+r.URL.String())
	<-s.mu
	return &http.Response{StatusCode: 201, Header: http.Header{"Content-Type": {"application/json"}},
		Body: io.NopCloser(strings.NewReader(`{"id":"1485983408999"}`)), Request: r}, nil
}

func TestArtefactA1(t *testing.T) {
	rt := &smba{base: http.DefaultTransport, mu: make(chan struct{}, 1)}
	e := setup(t, func(o *teams.Options) {
		o.HTTPClient = &http.Client{Transport: rt}
		o.ServiceHosts = append(o.ServiceHosts, "smba.trafficmanager.net")
	})
	var a map[string]any
	if err := json.Unmarshal([]byte(activityA1), &a); err != nil {
		t.Fatal(err)
	}
	st, body := postSigned(t, e, a, teamstest.TokenClaims{Audience: appID, ServiceURL: "https://smba.trafficmanager.net/amer/"})
	if st != 200 || len(body) != 0 {
		t.Fatalf("A1 answered %d %q; want 200 and an empty body", st, body)
	}
	evs := e.Events()
	if len(evs) != 1 {
		t.Fatalf("events = %d; want 1", len(evs))
	}
	ev := evs[0]
	conv := "a:17I0kl9EkpE1O9PH5TWrzrLNwnWWcfrU7QZjKR0WSfOpzbfcAg2IaydGElSo10tVr4C7Fc6GtieTJX663WuJCc1uA83n4CSrHSgGBj5XNYLcVlJAs2ZX8DbYBPck201w-"
	if ev.Text != "Hello Teams TestBot.Sending bold-italic rich text" || ev.Chat.Type != adapter.ChatDirect || ev.Chat.ID != conv ||
		ev.Sender.ID != "7faf8ab2-3d56-4244-b585-20c8a42ed2b8" || len(ev.Attachments) != 0 {
		t.Errorf("event = %+v", ev)
	}
	ref, ok, _ := e.a.References().Conversation(t.Context(), conv)
	if !ok || ref.TenantID != tenant || ref.ServiceURL != "https://smba.trafficmanager.net/amer/" {
		t.Errorf("reference = %+v, %v; want tenant %s at smba /amer/", ref, ok, tenant)
	}
	// The reply goes to POST {serviceUrl}v3/conversations/{id}/activities/1485983408511.
	if _, err := e.a.Send(t.Context(), adapter.Message{To: adapter.Target{Chat: ev.Chat.ID}, ReplyTo: ev.ID, Text: "hi Megan"}); err != nil {
		t.Fatal(err)
	}
	want := "POST https://smba.trafficmanager.net/amer/v3/conversations/" + strings.ReplaceAll(conv, ":", ":") + "/activities/1485983408511"
	if len(rt.urls) != 1 || rt.urls[0] != want {
		t.Errorf("reply went to %v; want %s", rt.urls, want)
	}
}

func TestRedeliveryGivesOneEvent(t *testing.T) {
	e := setup(t, nil)
	u, c := e.install(t, "Megan")
	e.srv.DeliveryTimeout = time.Second
	first := true
	e.mu.Lock()
	e.emitHook = func(ctx context.Context, events []adapter.Event) error {
		e.mu.Lock()
		slow := first && len(events) == 1 && events[0].Text == "slow one"
		if slow {
			first = false
		}
		e.mu.Unlock()
		if slow {
			<-ctx.Done() // still queueing when Teams gives up on the attempt; then it succeeds
		}
		return nil
	}
	e.mu.Unlock()
	d, err := e.srv.Say(context.Background(), c, u, "slow one")
	if err != nil {
		t.Fatal(err)
	}
	if len(d.Attempts) < 2 || !d.Attempts[0].TimedOut || d.Final().Status != 200 {
		t.Fatalf("attempts = %+v; want a timed-out attempt, then 200", d.Attempts)
	}
	if d.Attempts[0].ActivityID != d.Attempts[1].ActivityID {
		t.Errorf("redelivery changed the id")
	}
	// The redelivery was answered only once the first delivery's events were queued.
	if n := len(e.eventsOf("slow one")); n != 1 {
		t.Errorf("events = %d; want exactly 1", n)
	}
}

func TestReactionsEditsAndRemoval(t *testing.T) {
	e := setup(t, nil)
	u, c := e.install(t, "Megan")
	ev := e.say(t, c, u, "typo")
	_, msgID, _ := teams.ParseID(ev.ID)
	if _, err := e.srv.React(t.Context(), c, u, msgID, "like", false); err != nil {
		t.Fatal(err)
	}
	if _, err := e.srv.Edit(t.Context(), c, u, msgID, "fixed", false); err != nil {
		t.Fatal(err)
	}
	if _, err := e.srv.Edit(t.Context(), c, u, msgID, "", true); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"messageReaction", "messageUpdate", "messageDelete"} {
		evs := e.eventsOf(name)
		if len(evs) != 1 || evs[0].Kind != adapter.EventNotice || evs[0].ID == ev.ID {
			t.Errorf("%s events = %+v; want one notice with its own id", name, evs)
		}
	}
	if err := e.srv.Uninstall(t.Context(), c); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := e.a.References().Conversation(t.Context(), c.ID); ok {
		t.Error("the reference survived the uninstall")
	}
	_, err := e.a.Send(t.Context(), adapter.Message{To: adapter.Target{User: u.AADObjectID}, Text: "still there?"})
	if k, code := kindCode(err); k != adapter.KindInvalidRecipient || code != "ForbiddenOperationException" {
		t.Errorf("send after uninstall = %v (%s, %s); want invalid_recipient ForbiddenOperationException", err, k, code)
	}
}

// Spec §1.2 step 9: a signed request whose body is not a usable activity is a 400.
func TestMalformedActivities(t *testing.T) {
	e := setup(t, nil)
	u, c := e.install(t, "Megan")
	su := e.srv.ServiceURL(tenant)
	claims := teamstest.TokenClaims{Audience: appID, ServiceURL: su}
	for _, tc := range []struct {
		name string
		body map[string]any
	}{
		{"no type", map[string]any{"id": "1", "serviceUrl": su, "channelId": "msteams", "conversation": map[string]any{"id": c.ID}}},
		{"no conversation id", map[string]any{"type": "message", "id": "1", "serviceUrl": su, "channelId": "msteams"}},
		{"conversation not an object", map[string]any{"type": "message", "id": "1", "serviceUrl": su, "channelId": "msteams", "conversation": "x"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := len(e.Events())
			if st, body := postSigned(t, e, tc.body, claims); st != http.StatusBadRequest {
				t.Errorf("status %d %s; want 400", st, body)
			}
			if len(e.Events()) != before {
				t.Error("an event was emitted")
			}
		})
	}
	// Unknown activity types are acknowledged (spec §1.5) and passed on.
	a, _ := e.srv.Message(c, u, "x")
	a.Type = "somethingNew"
	if st, _ := postSigned(t, e, a, claims); st != http.StatusOK {
		t.Errorf("unknown type answered %d; want 200", st)
	}
	if len(e.eventsOf("somethingNew")) != 1 {
		t.Error("no event for an unknown activity type")
	}
	resp, err := http.Get(e.endpoint)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("GET answered %d; want 405", resp.StatusCode)
	}
}

// A key set that cannot be fetched is the bot's outage, not a bad token: 503, so Teams
// redelivers, and no event.
func TestKeysUnavailableIs503(t *testing.T) {
	e := setup(t, func(o *teams.Options) { o.OpenIDMetadataURL = "http://127.0.0.1:1/v1/.well-known/openidconfiguration" })
	u := e.srv.NewUser("Megan", tenant)
	c, err := e.srv.InstallPersonalSilently(appID, u)
	if err != nil {
		t.Fatal(err)
	}
	e.srv.Redeliveries = -1
	d, err := e.srv.Say(t.Context(), c, u, "hello")
	if err != nil {
		t.Fatal(err)
	}
	if d.Final().Status != http.StatusServiceUnavailable || len(e.Events()) != 0 {
		t.Errorf("answer %d with %d events; want 503 and none", d.Final().Status, len(e.Events()))
	}
	if !strings.Contains(e.logs.String(), "KeysUnavailable") {
		t.Errorf("log does not name the cause: %s", e.logs.String())
	}
}
