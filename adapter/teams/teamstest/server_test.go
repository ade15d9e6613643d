package teamstest_test

import (
	"context"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/seed-a64d9e1f/chatwire/adapter/teams/teamstest"
)

const (
	appID    = "c9e8c047-2a74-40a2-b28a-b162d5f5327c"
	password = "s3cret-value"
	tenant   = "72f988bf-86f1-41af-91ab-2d7cd011db47"
)

// recorder is a bot endpoint that records what it got.
type recorder struct {
	mu    sync.Mutex
	got   []*http.Request
	acts  []teamstest.Activity
	delay func(n int) time.Duration // per delivery number (1-based)
}

func (b *recorder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	var a teamstest.Activity
	json.Unmarshal(body, &a)
	b.mu.Lock()
	b.got = append(b.got, r)
	b.acts = append(b.acts, a)
	n := len(b.got)
	b.mu.Unlock()
	if b.delay != nil {
		if d := b.delay(n); d > 0 {
			select {
			case <-time.After(d):
			case <-r.Context().Done():
				return
			}
		}
	}
	w.WriteHeader(http.StatusOK)
}

func (b *recorder) activities() []teamstest.Activity {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]teamstest.Activity(nil), b.acts...)
}

func setup(t *testing.T) (*teamstest.Server, *recorder, string) {
	t.Helper()
	s := &teamstest.Server{}
	ts := httptest.NewServer(s)
	t.Cleanup(ts.Close)
	s.URL = ts.URL
	bot := &recorder{}
	bs := httptest.NewServer(bot)
	t.Cleanup(bs.Close)
	s.AddBot(teamstest.Bot{AppID: appID, Password: password, TenantID: tenant, Name: "TestBot", Endpoint: bs.URL + "/api/messages"})
	return s, bot, ts.URL
}

func getToken(t *testing.T, base, authority, secret, scope string) (int, map[string]any) {
	t.Helper()
	resp, err := http.PostForm(base+"/"+authority+"/oauth2/v2.0/token", url.Values{"grant_type": {"client_credentials"},
		"client_id": {appID}, "client_secret": {secret}, "scope": {scope}})
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var m map[string]any
	json.NewDecoder(resp.Body).Decode(&m)
	return resp.StatusCode, m
}

func TestTokenEndpoint(t *testing.T) {
	_, _, base := setup(t)
	status, m := getToken(t, base, tenant, password, teamstest.ConnectorScope)
	if status != 200 || m["token_type"] != "Bearer" || m["access_token"] == "" || m["expires_in"] == nil {
		t.Fatalf("token = %d %v; want 200 Bearer with access_token and expires_in", status, m)
	}
	claims := jwt.MapClaims{}
	if _, _, err := jwt.NewParser().ParseUnverified(m["access_token"].(string), claims); err != nil {
		t.Fatalf("access token is not a JWT: %v", err)
	}
	if claims["aud"] != "https://api.botframework.com" || claims["appid"] != appID || claims["tid"] != tenant {
		t.Errorf("claims = %v; want aud api.botframework.com, appid, tid", claims)
	}
	cases := []struct {
		name, authority, secret, scope string
		status                         int
		code                           string
	}{
		{"single-tenant app at the multi-tenant authority", "botframework.com", password, teamstest.ConnectorScope, 400, "AADSTS700016"},
		{"wrong secret", tenant, "nope", teamstest.ConnectorScope, 401, "AADSTS7000215"},
		{"graph scope", tenant, password, "https://graph.microsoft.com/.default", 400, "AADSTS1002012"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			status, m := getToken(t, base, tc.authority, tc.secret, tc.scope)
			desc, _ := m["error_description"].(string)
			if status != tc.status || !strings.HasPrefix(desc, tc.code) {
				t.Errorf("token = %d %v; want %d %s", status, m, tc.status, tc.code)
			}
		})
	}
}

// jwks fetches the key set through the metadata, as a bot does.
func jwks(t *testing.T, base string) map[string]struct {
	key          *rsa.PublicKey
	endorsements []string
} {
	t.Helper()
	var meta struct {
		Issuer  string `json:"issuer"`
		JWKSURI string `json:"jwks_uri"`
	}
	getJSON(t, base+teamstest.MetadataPath, &meta)
	if meta.Issuer != teamstest.ChannelIssuer || meta.JWKSURI != base+teamstest.KeysPath {
		t.Fatalf("metadata = %+v", meta)
	}
	var set struct {
		Keys []struct {
			Kid, X5t, N, E string
			X5c            []string
			Endorsements   []string
		}
	}
	getJSON(t, meta.JWKSURI, &set)
	out := map[string]struct {
		key          *rsa.PublicKey
		endorsements []string
	}{}
	for _, k := range set.Keys {
		n, _ := base64.RawURLEncoding.DecodeString(k.N)
		e, _ := base64.RawURLEncoding.DecodeString(k.E)
		if k.X5t == "" || len(k.X5c) != 1 {
			t.Errorf("key %s lacks x5t or x5c", k.Kid)
		}
		out[k.Kid] = struct {
			key          *rsa.PublicKey
			endorsements []string
		}{&rsa.PublicKey{N: new(big.Int).SetBytes(n), E: int(new(big.Int).SetBytes(e).Int64())}, k.Endorsements}
	}
	return out
}

func getJSON(t *testing.T, u string, v any) {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
}

func TestDeliveredTokenVerifiesWithPublishedKey(t *testing.T) {
	s, bot, base := setup(t)
	u := s.NewUser("Megan Bowen", tenant)
	c, err := s.InstallPersonal(t.Context(), appID, u)
	if err != nil {
		t.Fatal(err)
	}
	d, err := s.Say(t.Context(), c, u, "hello")
	if err != nil || d.Final().Status != 200 {
		t.Fatalf("Say = %+v, %v", d, err)
	}
	keys := jwks(t, base)
	bot.mu.Lock()
	last := bot.got[len(bot.got)-1]
	bot.mu.Unlock()
	raw := strings.TrimPrefix(last.Header.Get("Authorization"), "Bearer ")
	claims := jwt.MapClaims{}
	var endorsed []string
	_, err = jwt.ParseWithClaims(raw, claims, func(tok *jwt.Token) (any, error) {
		k := keys[tok.Header["kid"].(string)]
		endorsed = k.endorsements
		return k.key, nil
	}, jwt.WithValidMethods([]string{"RS256"}), jwt.WithIssuer(teamstest.ChannelIssuer), jwt.WithAudience(appID), jwt.WithExpirationRequired())
	if err != nil {
		t.Fatalf("token does not verify with the JWKS: %v", err)
	}
	acts := bot.activities()
	a := acts[len(acts)-1]
	if claims["serviceurl"] != a.ServiceURL || a.ServiceURL != s.ServiceURL(tenant) {
		t.Errorf("serviceurl claim %v, activity %q; want both %q", claims["serviceurl"], a.ServiceURL, s.ServiceURL(tenant))
	}
	if len(endorsed) != 1 || endorsed[0] != "msteams" {
		t.Errorf("signing key endorsements = %v; want [msteams]", endorsed)
	}
	if got := last.Header.Get("x-ms-conversation-id"); got != c.ID {
		t.Errorf("x-ms-conversation-id = %q; want %q", got, c.ID)
	}
	// The install announced itself: conversationUpdate then installationUpdate add.
	if acts[0].Type != "conversationUpdate" || len(acts[0].MembersAdded) != 2 || acts[1].Type != "installationUpdate" || acts[1].Action != "add" {
		t.Errorf("install activities = %+v", acts[:2])
	}
}

func TestKeyRollover(t *testing.T) {
	s, _, base := setup(t)
	old := s.SigningKey()
	kid := s.RolloverKey(false)
	keys := jwks(t, base)
	if _, ok := keys[kid]; !ok {
		t.Fatalf("new key %s not published", kid)
	}
	if _, ok := keys[old]; !ok || s.SigningKey() != old {
		t.Fatalf("old key dropped or signing switched before SignWith")
	}
	s.SignWith(kid)
	tok, err := s.ChannelToken("", teamstest.TokenClaims{Audience: appID, ServiceURL: "x"})
	if err != nil {
		t.Fatal(err)
	}
	h, _, _ := jwt.NewParser().ParseUnverified(tok, jwt.MapClaims{})
	if h.Header["kid"] != kid || h.Header["x5t"] != kid {
		t.Errorf("header = %v; want kid and x5t %s", h.Header, kid)
	}
	hidden := s.NewUnpublishedKey()
	if _, ok := jwks(t, base)[hidden]; ok {
		t.Fatal("unpublished key listed")
	}
	s.PublishKey(hidden)
	if _, ok := jwks(t, base)[hidden]; !ok {
		t.Fatal("published key not listed")
	}
	n, _ := s.KeyFetches()
	if n != 3 {
		t.Errorf("KeyFetches = %d; want 3", n)
	}
}

// connector sends a request with the bot's token.
func connector(t *testing.T, method, u, token string, body any) (int, http.Header, map[string]any) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = strings.NewReader(string(b))
	}
	req, _ := http.NewRequest(method, u, rd)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var m map[string]any
	json.NewDecoder(resp.Body).Decode(&m)
	return resp.StatusCode, resp.Header, m
}

func errCode(m map[string]any) string {
	if e, ok := m["error"].(map[string]any); ok {
		return e["code"].(string)
	}
	if m["errorCode"] != nil {
		return "209:" + m["message"].(string)
	}
	return ""
}

func TestConnector(t *testing.T) {
	s, _, base := setup(t)
	_, m := getToken(t, base, tenant, password, teamstest.ConnectorScope)
	tok := m["access_token"].(string)
	u := s.NewUser("Megan", tenant)
	c, err := s.InstallPersonal(t.Context(), appID, u)
	if err != nil {
		t.Fatal(err)
	}
	su := s.ServiceURL(tenant)
	msg := map[string]any{"type": "message", "text": "hi", "from": map[string]string{"id": "28:" + appID}}

	if st, _, m := connector(t, "POST", su+"v3/conversations/"+c.ID+"/activities", "", msg); st != 401 || m["message"] != "Authorization has been denied for this request." {
		t.Errorf("no token: %d %v; want 401 denied", st, m)
	}
	st, h, m := connector(t, "POST", su+"v3/conversations/"+url.PathEscape(c.ID)+"/activities", tok, msg)
	if st != 201 || m["id"] == "" || h.Get("MS-CV") == "" {
		t.Fatalf("send (escaped id) = %d %v; want 201 with id and MS-CV", st, m)
	}
	id := m["id"].(string)
	if st, _, m := connector(t, "POST", su+"v3/conversations/"+c.ID+"/activities/"+id, tok, msg); st != 201 || m["id"] == "" {
		t.Errorf("reply (raw id) = %d %v; want 201", st, m)
	}
	if st, _, m := connector(t, "PUT", su+"v3/conversations/"+c.ID+"/activities/"+id, tok, map[string]any{"type": "message", "text": "edited"}); st != 200 || m["id"] != id {
		t.Errorf("update = %d %v; want 200", st, m)
	}
	if st, _, m := connector(t, "PUT", su+"v3/conversations/"+c.ID+"/activities/999", tok, map[string]any{"type": "message", "text": "x"}); st != 404 || errCode(m) != "ActivityNotFoundInConversation" {
		t.Errorf("update unknown = %d %v", st, m)
	}
	if st, _, _ := connector(t, "DELETE", su+"v3/conversations/"+c.ID+"/activities/"+id, tok, nil); st != 200 {
		t.Errorf("delete = %d; want 200", st)
	}
	if st, _, m := connector(t, "POST", su+"v3/conversations/a:nope/activities", tok, msg); st != 404 || errCode(m) != "ConversationNotFound" {
		t.Errorf("unknown conversation = %d %v", st, m)
	}
	big := map[string]any{"type": "message", "text": strings.Repeat("x", 52000)}
	if st, _, m := connector(t, "POST", su+"v3/conversations/"+c.ID+"/activities", tok, big); st != 413 || errCode(m) != "MessageSizeTooBig" {
		t.Errorf("104 KB UTF-16 message = %d %v; want 413", st, m)
	}

	// Proactive 1:1: idempotent for an installed user, forbidden otherwise.
	create := func(user teamstest.User) (int, map[string]any) {
		st, _, m := connector(t, "POST", su+"v3/conversations", tok, map[string]any{"isGroup": false,
			"members": []map[string]string{{"id": user.ID}}, "tenantId": tenant})
		return st, m
	}
	if st, m := create(u); st != 201 || m["id"] != c.ID {
		t.Errorf("create 1:1 with installed user = %d %v; want 201 %s", st, m, c.ID)
	}
	other := s.NewUser("Other", tenant)
	if st, m := create(other); st != 403 || errCode(m) != "ForbiddenOperationException" {
		t.Errorf("create 1:1 without install = %d %v; want 403 ForbiddenOperationException", st, m)
	}
	if st, _, m := connector(t, "POST", su+"v3/conversations", tok, map[string]any{"isGroup": true, "members": []map[string]string{{"id": u.ID}}, "tenantId": tenant}); st != 400 || errCode(m) != "BadSyntax" {
		t.Errorf("create group chat = %d %v; want 400 BadSyntax", st, m)
	}

	// Faults, then throttling.
	s.Inject(teamstest.Fault{Status: 412}, teamstest.Fault{Status: 429, RetryAfter: 2 * time.Second}, teamstest.Fault{Status: 502})
	for _, want := range []struct {
		status int
		code   string
	}{{412, "PreconditionFailed"}, {429, "Throttled"}, {502, "ServiceError"}} {
		st, h, m := connector(t, "POST", su+"v3/conversations/"+c.ID+"/activities", tok, msg)
		if st != want.status || errCode(m) != want.code {
			t.Errorf("injected = %d %v; want %d %s", st, m, want.status, want.code)
		}
		if want.status == 429 && h.Get("Retry-After") != "2" {
			t.Errorf("Retry-After = %q; want 2", h.Get("Retry-After"))
		}
	}
	throttled := false
	for range 9 {
		st, h, m := connector(t, "POST", su+"v3/conversations/"+c.ID+"/activities", tok, msg)
		if st == 429 {
			throttled = errCode(m) == "Throttled" && h.Get("Retry-After") != ""
			break
		}
	}
	if !throttled {
		t.Error("9 sends in a burst were not throttled with 429 Throttled and Retry-After")
	}

	// Blocked, then removed from the roster.
	s.NoThrottle = true
	s.Block(appID, u)
	if st, _, m := connector(t, "POST", su+"v3/conversations/"+c.ID+"/activities", tok, msg); st != 403 || !strings.Contains(errCode(m), "MessageWritesBlocked") {
		t.Errorf("blocked = %d %v; want 403 MessageWritesBlocked", st, m)
	}
	g, err := s.NewGroupChat(t.Context(), appID, "g", u, other)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Uninstall(t.Context(), g); err != nil {
		t.Fatal(err)
	}
	if st, _, m := connector(t, "POST", su+"v3/conversations/"+g.ID+"/activities", tok, msg); st != 403 || errCode(m) != "BotNotInConversationRoster" {
		t.Errorf("after removal = %d %v; want 403 BotNotInConversationRoster", st, m)
	}
	s.RevokeTokens()
	if st, _, _ := connector(t, "POST", su+"v3/conversations/"+g.ID+"/activities", tok, msg); st != 401 {
		t.Errorf("revoked token = %d; want 401", st)
	}
}

func TestRedeliveryAfterSlowAnswer(t *testing.T) {
	s, bot, _ := setup(t)
	u := s.NewUser("Megan", tenant)
	c, err := s.InstallPersonal(t.Context(), appID, u)
	if err != nil {
		t.Fatal(err)
	}
	s.DeliveryTimeout = time.Second
	// The bot answers the first message attempt after a minute (cut short by the timeout).
	base := len(bot.activities())
	bot.delay = func(n int) time.Duration {
		if n == base+1 {
			return time.Minute
		}
		return 0
	}
	d, err := s.Say(context.Background(), c, u, "slow")
	if err != nil {
		t.Fatal(err)
	}
	if len(d.Attempts) != 2 || !d.Attempts[0].TimedOut || d.Attempts[1].Status != 200 {
		t.Fatalf("attempts = %+v; want a timeout then 200", d.Attempts)
	}
	acts := bot.activities()[base:]
	if len(acts) != 2 || acts[0].ID != acts[1].ID {
		t.Errorf("bot got %d deliveries; want the same id twice", len(acts))
	}
}

func TestGroupAndChannelMessagesMentionTheBot(t *testing.T) {
	s, _, _ := setup(t)
	u := s.NewUser("Megan", tenant)
	ch, err := s.NewChannel(t.Context(), appID, "General", u)
	if err != nil {
		t.Fatal(err)
	}
	a, err := s.Message(ch, u, "status?")
	if err != nil {
		t.Fatal(err)
	}
	if a.Text != "<at>TestBot</at> status?" || a.Entities[0].Type != "mention" || a.Entities[0].Mentioned.ID != "28:"+appID {
		t.Errorf("channel message = %q %+v", a.Text, a.Entities)
	}
	if a.Conversation.ID != ch.ID+";messageid="+a.ID || a.Conversation.ConversationType != "channel" {
		t.Errorf("conversation = %+v; want a thread of %s", a.Conversation, ch.ID)
	}
}
