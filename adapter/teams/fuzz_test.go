package teams_test

import (
	"encoding/base64"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/seed-a64d9e1f/chatwire/adapter"
	"github.com/seed-a64d9e1f/chatwire/adapter/teams"
	"github.com/seed-a64d9e1f/chatwire/adapter/teams/teamstest"
)

// fuzzActivities are activities as Teams sends them (spec §2, the tests' fixtures), with
// serviceUrl SU replaced by the emulator's.
var fuzzActivities = []string{
	`{"type":"message","id":"1001","serviceUrl":"SU","channelId":"msteams","from":{"id":"29:u","name":"Megan","aadObjectId":"g-u"},"conversation":{"conversationType":"personal","id":"a:1"},"recipient":{"id":"28:` + appID + `"},"textFormat":"plain","text":"hello","attachments":[{"contentType":"text/html","content":"<div>hello</div>"}],"channelData":{"tenant":{"id":"` + tenant + `"}}}`,
	`{"type":"message","id":"1002","serviceUrl":"SU","channelId":"msteams","from":{"id":"29:u","aadObjectId":"g-u"},"conversation":{"conversationType":"groupChat","id":"19:g@thread.v2"},"text":"<at>Bot</at> deploy","entities":[{"type":"mention","mentioned":{"id":"28:` + appID + `","name":"Bot"},"text":"<at>Bot</at>"}],"replyToId":"1001"}`,
	`{"type":"message","id":"1003","serviceUrl":"SU","channelId":"msteams","from":{"id":"29:u"},"conversation":{"conversationType":"channel","id":"19:c@thread.tacv2;messageid=1003"},"text":"file","attachments":[{"contentType":"application/vnd.microsoft.teams.file.download.info","name":"a.txt","content":{"downloadUrl":"https://x/a","fileType":"txt"}}],"channelData":{"team":{"id":"19:t"},"channel":{"id":"19:c@thread.tacv2"}}}`,
	`{"type":"conversationUpdate","id":"f:1","serviceUrl":"SU","channelId":"msteams","from":{"id":"29:u"},"conversation":{"id":"a:1"},"membersAdded":[{"id":"28:` + appID + `"},{"id":"29:u"}]}`,
	`{"type":"installationUpdate","action":"add","id":"f:2","serviceUrl":"SU","channelId":"msteams","from":{"id":"29:u","aadObjectId":"g-u"},"conversation":{"conversationType":"personal","id":"a:1"}}`,
	`{"type":"installationUpdate","action":"remove","id":"f:3","serviceUrl":"SU","channelId":"msteams","conversation":{"id":"19:x@thread.tacv2;messageid=1","conversationType":"channel"}}`,
	`{"type":"messageReaction","id":"f:4","serviceUrl":"SU","channelId":"msteams","from":{"id":"29:u"},"conversation":{"id":"a:1"},"replyToId":"1001","reactionsAdded":[{"type":"like"}]}`,
	`{"type":"messageUpdate","id":"1001","serviceUrl":"SU","channelId":"msteams","from":{"id":"29:u"},"conversation":{"id":"a:1"},"text":"edited","channelData":{"eventType":"editMessage"}}`,
	`{"type":"messageDelete","id":"1001","serviceUrl":"SU","channelId":"msteams","from":{"id":"29:u"},"conversation":{"id":"a:1"},"channelData":{"eventType":"softDeleteMessage"}}`,
	`{"type":"invoke","name":"adaptiveCard/action","id":"f:5","serviceUrl":"SU","channelId":"msteams","from":{"id":"29:u"},"conversation":{"id":"a:1"},"value":{"action":{"type":"Action.Execute","verb":"ok","data":{"x":1}}}}`,
	`{"type":"invoke","name":"composeExtension/query","id":"f:6","serviceUrl":"SU","channelId":"msteams","from":{"id":"29:u"},"conversation":{"id":"a:1"}}`,
	`{"type":"typing","id":"f:7","serviceUrl":"SU","channelId":"msteams","from":{"id":"29:u"},"conversation":{"id":"a:1"}}`,
}

// signedPart is a JWT's header and payload: what its signature covers.
func signedPart(tok string) string {
	if i := strings.LastIndexByte(tok, '.'); i >= 0 {
		return tok[:i]
	}
	return tok
}

// FuzzInbound: any request to the messaging endpoint (Authorization header and body) is
// answered without a panic, with the status of its error kind (401 unauthorized, 400
// invalid_request); a request is accepted only with a token whose signed header and payload
// are one the emulator signed, for the activity's serviceUrl and channel msteams; an accepted
// activity gives at most one event whose Raw is the body (round trip); no error holds the token.
func FuzzInbound(f *testing.F) {
	srv := &teamstest.Server{}
	ts := httptest.NewServer(srv)
	f.Cleanup(ts.Close)
	srv.URL = ts.URL
	u, _ := url.Parse(ts.URL)
	a, err := teams.New(teams.Options{Bot: "tbot", AppID: appID, AppPassword: password, TenantID: tenant, LoginBase: ts.URL,
		OpenIDMetadataURL: srv.MetadataURL(), ServiceHosts: []string{u.Host},
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { a.Close() })
	su := srv.ServiceURL(tenant)
	good, err := srv.ChannelToken("", teamstest.TokenClaims{Audience: appID, ServiceURL: su})
	if err != nil {
		f.Fatal(err)
	}
	signed := map[string]string{signedPart(good): su} // signed part → its serviceurl claim
	mint := func(c teamstest.TokenClaims) string {
		tok, err := srv.ChannelToken("", c)
		if err != nil {
			f.Fatal(err)
		}
		return tok
	}
	bad := []string{
		"Bearer " + mint(teamstest.TokenClaims{Audience: "someone-else", ServiceURL: su}),
		"Bearer " + mint(teamstest.TokenClaims{Audience: appID, ServiceURL: su, Expires: time.Now().Add(-time.Hour), NotBefore: time.Now().Add(-2 * time.Hour)}),
		"Bearer " + mint(teamstest.TokenClaims{Audience: appID, ServiceURL: su, NoExpiry: true}),
		"Bearer " + mint(teamstest.TokenClaims{Audience: appID, ServiceURL: su, Issuer: "https://evil.example"}),
		"Bearer " + mint(teamstest.TokenClaims{Audience: appID, ServiceURL: "https://evil.example/"}),
		"Bearer " + signedPart(good) + ".AAAA",
		"Bearer " + base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none","typ":"JWT"}`)) + "." + strings.Split(good, ".")[1] + ".",
		"bearer " + good,
		"Basic dXNlcjpwYXNz",
		"Bearer ",
		"",
	}
	var seeds [][2]string
	for _, act := range fuzzActivities {
		body := strings.ReplaceAll(act, `"SU"`, `"`+su+`"`)
		seeds = append(seeds, [2]string{"Bearer " + good, body})
		f.Add("Bearer "+good, []byte(body))
	}
	for i, auth := range bad {
		f.Add(auth, []byte(seeds[i%len(seeds)][1]))
	}
	f.Add("Bearer "+good, []byte(`{"type":"message","serviceUrl":"`+su+`","channelId":"msteams"}`))
	f.Add("Bearer "+good, []byte(`{"serviceUrl":"`+su+`","channelId":"skype","type":"message","id":"1","conversation":{"id":"a:1"}}`))
	f.Add("Bearer "+good, []byte(`not json`))

	// The valid seeds are accepted, each with its event (typing and invokes other than
	// adaptiveCard/action give none).
	for _, s := range seeds {
		resp, evs, err := a.HandleWebhook(f.Context(), &adapter.WebhookRequest{Method: "POST", Header: http.Header{"Authorization": {s[0]}}, Body: []byte(s[1])})
		if err != nil || resp.Status == http.StatusUnauthorized {
			f.Errorf("valid seed %s refused: %d %v", s[1], resp.Status, err)
		}
		if len(evs) == 1 && string(evs[0].Raw) != s[1] {
			f.Errorf("event Raw %s; want the body", evs[0].Raw)
		}
	}
	for _, auth := range bad {
		resp, _, err := a.HandleWebhook(f.Context(), &adapter.WebhookRequest{Method: "POST", Header: http.Header{"Authorization": {auth}}, Body: []byte(seeds[0][1])})
		if err == nil || resp.Status != http.StatusUnauthorized {
			f.Errorf("bad token %.40q accepted: %d %v", auth, resp.Status, err)
		}
	}

	f.Fuzz(func(t *testing.T, auth string, body []byte) {
		resp, evs, err := a.HandleWebhook(t.Context(), &adapter.WebhookRequest{Method: "POST", Header: http.Header{"Authorization": {auth}}, Body: body})
		if resp == nil || resp.Status == 0 {
			t.Fatalf("no answer (err %v)", err)
		}
		tok := strings.TrimSpace(strings.TrimPrefix(auth, "Bearer "))
		if err != nil {
			kind := adapter.KindOf(err)
			if len(evs) != 0 || !(kind == adapter.KindUnauthorized && resp.Status == 401 || kind == adapter.KindInvalidRequest && resp.Status == 400) {
				t.Fatalf("refusal %d with %d events, kind %s: %v", resp.Status, len(evs), kind, err)
			}
			if len(tok) >= 16 && strings.Contains(err.Error(), tok) {
				t.Fatalf("the refusal holds the token: %v", err)
			}
			return
		}
		claim, ok := signed[signedPart(tok)]
		if !ok {
			t.Fatalf("accepted a token the emulator did not sign: %q", auth)
		}
		var act struct {
			Type       string `json:"type"`
			ServiceURL string `json:"serviceUrl"`
			ChannelID  string `json:"channelId"`
		}
		if json.Unmarshal(body, &act) != nil || strings.TrimSuffix(act.ServiceURL, "/") != strings.TrimSuffix(claim, "/") || act.ChannelID != "msteams" {
			t.Fatalf("accepted %q for serviceurl %q", body, claim)
		}
		if resp.Status != http.StatusOK && act.Type != "invoke" || len(evs) > 1 {
			t.Fatalf("accepted with %d and %d events", resp.Status, len(evs))
		}
		if len(evs) == 1 && (evs[0].ID == "" || string(evs[0].Raw) != string(body) || evs[0].Bot != "tbot") {
			t.Fatalf("event %q bot %q Raw %q; want the body", evs[0].ID, evs[0].Bot, evs[0].Raw)
		}
	})
}
