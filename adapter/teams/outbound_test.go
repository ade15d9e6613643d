package teams_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/seed-a64d9e1f/chatwire/adapter"
	"github.com/seed-a64d9e1f/chatwire/adapter/teams"
	"github.com/seed-a64d9e1f/chatwire/adapter/teams/teamstest"
	"github.com/seed-a64d9e1f/chatwire/tokenmgr"
)

func lastSent(t *testing.T, s *teamstest.Server) teamstest.Sent {
	t.Helper()
	sent := s.Sent()
	if len(sent) == 0 {
		t.Fatal("nothing sent")
	}
	return sent[len(sent)-1]
}

func TestReplyInThread(t *testing.T) {
	e := setup(t, nil)
	u := e.srv.NewUser("Megan", tenant)
	ch, err := e.srv.NewChannel(t.Context(), appID, "General", u)
	if err != nil {
		t.Fatal(err)
	}
	ev := e.say(t, ch, u, "status?")
	if ev.Chat != (adapter.Chat{ID: ch.ID, Type: adapter.ChatChannel}) {
		t.Fatalf("chat = %+v; want channel %s", ev.Chat, ch.ID)
	}
	rc, err := e.a.Send(t.Context(), adapter.Message{To: adapter.Target{Chat: ev.Chat.ID}, ReplyTo: ev.ID, Text: "all green"})
	if err != nil {
		t.Fatal(err)
	}
	_, root, _ := teams.ParseID(ev.ID)
	s := lastSent(t, e.srv)
	if s.Kind != "reply" || s.ReplyToID != root || s.ConversationID != ch.ID+";messageid="+root || s.Activity.Text != "all green" {
		t.Errorf("sent = %+v; want a reply to %s in its thread", s, root)
	}
	if s.Activity.From == nil || s.Activity.From.ID != "28:"+appID || s.Activity.ReplyToID != root {
		t.Errorf("activity from %+v replyToId %q", s.Activity.From, s.Activity.ReplyToID)
	}
	if conv, id, ok := teams.ParseID(rc.ID); !ok || id != s.ActivityID || conv != s.ConversationID {
		t.Errorf("receipt %q; want the thread and id %s", rc.ID, s.ActivityID)
	}
	// A reply needs no target.
	if _, err := e.a.Send(t.Context(), adapter.Message{ReplyTo: ev.ID, Text: "again"}); err != nil {
		t.Fatalf("reply without a target: %v", err)
	}
	if s := lastSent(t, e.srv); s.Kind != "reply" || s.ConversationID != ch.ID+";messageid="+root {
		t.Errorf("reply without a target went to %+v", s)
	}
	// The receipt edits and deletes the reply.
	if err := e.a.Edit(t.Context(), rc.ID, adapter.Message{Text: "all green (edited)"}); err != nil {
		t.Fatal(err)
	}
	if s := lastSent(t, e.srv); s.Kind != "update" || s.Activity.Text != "all green (edited)" {
		t.Errorf("after Edit: %+v", s)
	}
	if err := e.a.Recall(t.Context(), rc.ID); err != nil {
		t.Fatal(err)
	}
	if s := lastSent(t, e.srv); s.Kind != "delete" || s.ActivityID != id(rc.ID) {
		t.Errorf("after Recall: %+v", s)
	}
	if err := e.a.Typing(t.Context(), ev.Chat.ID); err != nil {
		t.Fatal(err)
	}
	if s := lastSent(t, e.srv); s.Activity.Type != "typing" {
		t.Errorf("typing sent %+v", s)
	}
}

func id(receipt string) string { _, i, _ := teams.ParseID(receipt); return i }

func TestProactivePersonal(t *testing.T) {
	e := setup(t, nil)
	// Installed through Teams: the bot learnt the chat from the installation.
	u, c := e.install(t, "Installed")
	if _, err := e.a.Send(t.Context(), adapter.Message{To: adapter.Target{User: u.AADObjectID}, Text: "reminder"}); err != nil {
		t.Fatal(err)
	}
	if s := lastSent(t, e.srv); s.Kind != "send" || s.ConversationID != c.ID {
		t.Errorf("sent %+v; want a send to %s", s, c.ID)
	}
	if n := countRequests(e.srv, "POST", "/v3/conversations") - countRequests(e.srv, "POST", "/v3/conversations/"); n != 0 {
		t.Errorf("createConversation calls = %d; want 0 with a stored reference", n)
	}

	// Known from a channel, installed personally while the bot was not told: the adapter opens
	// the 1:1 with POST v3/conversations.
	member := e.srv.NewUser("Member", tenant)
	stranger := e.srv.NewUser("Stranger", tenant)
	ch, err := e.srv.NewChannel(t.Context(), appID, "General", member, stranger)
	if err != nil {
		t.Fatal(err)
	}
	e.say(t, ch, member, "hi")
	e.say(t, ch, stranger, "hello")
	pc, err := e.srv.InstallPersonalSilently(appID, member)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.a.Send(t.Context(), adapter.Message{To: adapter.Target{User: member.AADObjectID}, Text: "welcome"}); err != nil {
		t.Fatal(err)
	}
	sent := e.srv.Sent()
	if len(sent) < 2 || sent[len(sent)-2].Kind != "create" || sent[len(sent)-1].ConversationID != pc.ID || sent[len(sent)-1].Activity.Text != "welcome" {
		t.Errorf("sent %+v; want create then a send to %s", sent[len(sent)-2:], pc.ID)
	}

	// Known but not installed: a clear, non-retried error.
	before := len(e.srv.Requests())
	_, err = e.a.Send(t.Context(), adapter.Message{To: adapter.Target{User: stranger.AADObjectID}, Text: "psst"})
	if k, code := kindCode(err); k != adapter.KindInvalidRecipient || code != "ForbiddenOperationException" || !strings.Contains(err.Error(), "install") {
		t.Errorf("send to a user without the bot = %v (%s %s); want invalid_recipient ForbiddenOperationException saying install", err, k, code)
	}
	if n := len(e.srv.Requests()) - before; n != 1 {
		t.Errorf("requests = %d; want 1 (not retried)", n)
	}

	// Never seen: refused without a request.
	before = len(e.srv.Requests())
	_, err = e.a.Send(t.Context(), adapter.Message{To: adapter.Target{User: "0b5e0d3a-0000-4000-8000-000000000000"}, Text: "x"})
	if k, code := kindCode(err); k != adapter.KindInvalidRecipient || code != "UnknownUser" {
		t.Errorf("send to an unknown user = %v; want invalid_recipient UnknownUser", err)
	}
	if n := len(e.srv.Requests()) - before; n != 0 {
		t.Errorf("requests = %d; want 0", n)
	}
}

func TestAdaptiveCardActionRoundTrip(t *testing.T) {
	var got teams.Invoke
	e := setup(t, func(o *teams.Options) {
		o.OnInvoke = func(ctx context.Context, inv teams.Invoke) (*teams.InvokeResponse, error) {
			got = inv
			return &teams.InvokeResponse{StatusCode: 200, Type: "application/vnd.microsoft.card.adaptive",
				Value: map[string]any{"type": "AdaptiveCard", "version": "1.5", "body": []any{map[string]any{"type": "TextBlock", "text": "Approved"}}}}, nil
		}
	})
	u, c := e.install(t, "Megan")
	card := json.RawMessage(`{"type":"AdaptiveCard","body":[{"type":"TextBlock","text":"Approve?"}],
		"actions":[{"type":"Action.Execute","title":"Approve","verb":"approve","data":{"req":42}}]}`)
	rc, err := e.a.Send(t.Context(), adapter.Message{To: adapter.Target{Chat: c.ID}, Card: card})
	if err != nil {
		t.Fatal(err)
	}
	s := lastSent(t, e.srv)
	if len(s.Activity.Attachments) != 1 || s.Activity.Attachments[0].ContentType != "application/vnd.microsoft.card.adaptive" ||
		!strings.Contains(string(s.Activity.Attachments[0].Content), `"version":"1.5"`) {
		t.Fatalf("card sent as %+v", s.Activity.Attachments)
	}
	d, err := e.srv.ExecuteAction(t.Context(), c, u, id(rc.ID), "approve", map[string]int{"req": 42})
	if err != nil {
		t.Fatal(err)
	}
	var resp struct {
		StatusCode int             `json:"statusCode"`
		Type       string          `json:"type"`
		Value      json.RawMessage `json:"value"`
	}
	if d.Final().Status != 200 || json.Unmarshal(d.Final().Body, &resp) != nil || resp.StatusCode != 200 ||
		resp.Type != "application/vnd.microsoft.card.adaptive" || !strings.Contains(string(resp.Value), "Approved") {
		t.Errorf("invoke answered %d %s; want 200 with the new card", d.Final().Status, d.Final().Body)
	}
	if got.Verb != "approve" || string(got.Data) != `{"req":42}` || got.Activity.ReplyToID != id(rc.ID) {
		t.Errorf("OnInvoke got verb %q data %s replyTo %q", got.Verb, got.Data, got.Activity.ReplyToID)
	}
	if evs := e.eventsOf("adaptiveCard/action"); len(evs) != 1 || evs[0].Kind != adapter.EventNotice {
		t.Errorf("invoke events = %+v; want 1 notice", evs)
	}
}

func TestInvokeDefaultAnswerInTime(t *testing.T) {
	e := setup(t, func(o *teams.Options) {
		o.InvokeTimeout = 100 * time.Millisecond
		o.OnInvoke = func(ctx context.Context, inv teams.Invoke) (*teams.InvokeResponse, error) {
			<-ctx.Done() // too slow
			return nil, ctx.Err()
		}
	})
	u, c := e.install(t, "Megan")
	d, err := e.srv.ExecuteAction(t.Context(), c, u, "1", "slow", nil)
	if err != nil {
		t.Fatal(err)
	}
	if d.Final().Status != 200 || !strings.Contains(string(d.Final().Body), `"type":"application/vnd.microsoft.activity.message"`) ||
		!strings.Contains(string(d.Final().Body), "Received.") {
		t.Errorf("invoke answered %d %s; want the default message response", d.Final().Status, d.Final().Body)
	}
	if n := len(e.eventsOf("adaptiveCard/action")); n != 1 {
		t.Errorf("events = %d; want 1 (the bot can answer later)", n)
	}
}

func TestConnectorErrors(t *testing.T) {
	e := setup(t, nil)
	u, c := e.install(t, "Megan")
	send := func(text string) error {
		_, err := e.a.Send(t.Context(), adapter.Message{To: adapter.Target{Chat: c.ID}, Text: text})
		return err
	}
	posts := func() int { return countRequests(e.srv, "POST", "/activities") }

	// 429 with Retry-After is waited out and retried.
	e.srv.Inject(teamstest.Fault{Status: 429, RetryAfter: time.Second})
	n := posts()
	start := time.Now()
	if err := send("after throttle"); err != nil {
		t.Fatalf("send after one 429 = %v; want success", err)
	}
	if posts()-n != 2 || time.Since(start) < 900*time.Millisecond {
		t.Errorf("requests %d after %s; want 2 after Retry-After (1 s)", posts()-n, time.Since(start))
	}
	// A Retry-After longer than MaxRetryWait is returned at once.
	e.srv.Inject(teamstest.Fault{Status: 429, RetryAfter: time.Minute})
	err := send("long throttle")
	if k, _ := kindCode(err); k != adapter.KindRateLimited || adapter.RetryAfter(err) != time.Minute {
		t.Errorf("long throttle = %v; want rate_limited, retry after 1m", err)
	}
	// 412 is not retried.
	e.srv.Inject(teamstest.Fault{Status: 412})
	n = posts()
	err = send("precondition")
	if k, code := kindCode(err); k != adapter.KindUnavailable || code != "PreconditionFailed" || posts()-n != 1 {
		t.Errorf("412 = %v (%s, %d requests); want unavailable PreconditionFailed, 1 request", err, code, posts()-n)
	}
	// 502 on a POST is not retried (it may have been delivered); on a PUT it is.
	e.srv.Inject(teamstest.Fault{Status: 502, Deliver: true})
	n = posts()
	if err := send("maybe delivered"); adapter.KindOf(err) != adapter.KindUnavailable || posts()-n != 1 {
		t.Errorf("502 POST = %v, %d requests; want unavailable after 1", err, posts()-n)
	}
	rc, err := e.a.Send(t.Context(), adapter.Message{To: adapter.Target{Chat: c.ID}, Text: "v1"})
	if err != nil {
		t.Fatal(err)
	}
	e.srv.Inject(teamstest.Fault{Status: 503})
	if err := e.a.Edit(t.Context(), rc.ID, adapter.Message{Text: "v2"}); err != nil {
		t.Errorf("PUT after one 503 = %v; want success after a retry", err)
	}
	// Too large: refused before sending.
	n = posts()
	err = send(strings.Repeat("é", 52*1024))
	if k, _ := kindCode(err); k != adapter.KindTooLarge || posts() != n {
		t.Errorf("104 KB message = %v with %d requests; want too_large and none", err, posts()-n)
	}
	// A revoked token: invalidated and retried once with a fresh one.
	tokensBefore := len(e.srv.TokenRequests())
	e.srv.RevokeTokens()
	if err := send("new token"); err != nil {
		t.Errorf("send after revocation = %v; want success with a fresh token", err)
	}
	if n := len(e.srv.TokenRequests()) - tokensBefore; n != 1 {
		t.Errorf("token requests = %d; want 1", n)
	}
	// The user blocked the bot: a permanent, clear error; the reference is forgotten.
	e.srv.Block(appID, u)
	n = posts()
	err = send("blocked?")
	if k, code := kindCode(err); k != adapter.KindInvalidRecipient || code != "MessageWritesBlocked" || posts()-n != 1 {
		t.Errorf("blocked = %v (%s %s, %d requests); want invalid_recipient MessageWritesBlocked, 1 request", err, k, code, posts()-n)
	}
	if _, ok, _ := e.a.References().Conversation(t.Context(), c.ID); ok {
		t.Error("reference kept after MessageWritesBlocked")
	}
	if err := send("again"); adapter.KindOf(err) != adapter.KindNotFound {
		t.Errorf("send without a reference = %v; want not_found", err)
	}
}

func TestRosterErrorForgetsReference(t *testing.T) {
	e := setup(t, nil)
	u := e.srv.NewUser("Megan", tenant)
	g, err := e.srv.NewGroupChat(t.Context(), appID, "g", u, e.srv.NewUser("Lee", tenant))
	if err != nil {
		t.Fatal(err)
	}
	// Removed and told (conversationUpdate membersRemoved, installationUpdate remove): forgotten.
	g2, err := e.srv.NewGroupChat(t.Context(), appID, "g2", u)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.srv.Uninstall(t.Context(), g2); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := e.a.References().Conversation(t.Context(), g2.ID); ok {
		t.Error("reference kept after the bot was removed from a group chat")
	}
	// Removed without the bot being told.
	e.srv.Inject(teamstest.Fault{Status: 403, Code: "BotNotInConversationRoster", Message: "The bot is not part of the conversation roster."})
	_, err = e.a.Send(t.Context(), adapter.Message{To: adapter.Target{Chat: g.ID}, Text: "hi"})
	var ae *adapter.Error
	if !errors.As(err, &ae) || ae.Kind != adapter.KindInvalidRecipient || ae.Code != "BotNotInConversationRoster" || errors.Is(err, tokenmgr.ErrTemporary) {
		t.Fatalf("err = %v; want a permanent invalid_recipient BotNotInConversationRoster", err)
	}
	if _, ok, _ := e.a.References().Conversation(t.Context(), g.ID); ok {
		t.Error("reference kept after BotNotInConversationRoster")
	}
}

func TestTokenRequestsAndErrors(t *testing.T) {
	e := setup(t, func(o *teams.Options) { o.AppType = teams.AppMultiTenant })
	_, c := e.install(t, "Megan")
	_, err := e.a.Send(t.Context(), adapter.Message{To: adapter.Target{Chat: c.ID}, Text: "x"})
	if k, code := kindCode(err); k != adapter.KindUnauthorized || code != "AADSTS700016" || !strings.Contains(err.Error(), "single-tenant") {
		t.Errorf("multi-tenant token for a single-tenant app = %v; want unauthorized AADSTS700016 with the single-tenant hint", err)
	}
	if strings.Contains(err.Error(), password) || strings.Contains(e.logs.String(), password) {
		t.Error("the app password leaked")
	}
	tr := e.srv.TokenRequests()
	if len(tr) == 0 || tr[0].Tenant != teams.MultiTenantAuthority || tr[0].Scope != teams.ConnectorScope || tr[0].GrantType != "client_credentials" {
		t.Errorf("token requests = %+v", tr)
	}

	ok := setup(t, nil)
	_, c2 := ok.install(t, "Megan")
	for range 3 {
		if _, err := ok.a.Send(t.Context(), adapter.Message{To: adapter.Target{Chat: c2.ID}, Text: "x"}); err != nil {
			t.Fatal(err)
		}
	}
	tr = ok.srv.TokenRequests()
	if len(tr) != 1 || tr[0].Tenant != tenant || tr[0].Status != http.StatusOK {
		t.Errorf("token requests = %+v; want one to the tenant authority", tr)
	}
	if st, _ := ok.a.Status(t.Context()); !st.Healthy || st.Platform != teams.Platform || st.Tokens[0].Fingerprint == "" {
		t.Errorf("status = %+v", st)
	}
}

// TestConnectorThrottleWaitEndsWithCtx: a cancelled ctx ends the wait for a Retry-After at
// once instead of sleeping it out.
func TestConnectorThrottleWaitEndsWithCtx(t *testing.T) {
	e := setup(t, nil)
	_, c := e.install(t, "Megan")
	e.srv.Inject(teamstest.Fault{Status: 429, RetryAfter: 9 * time.Second})
	ctx, cancel := context.WithCancel(t.Context())
	time.AfterFunc(100*time.Millisecond, cancel)
	start := time.Now()
	_, err := e.a.Send(ctx, adapter.Message{To: adapter.Target{Chat: c.ID}, Text: "throttled"})
	if err == nil {
		t.Fatal("Send succeeded; want the throttle's error after the cancel")
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("Send returned after %v; want soon after the cancel at 100ms, not after the 9 s Retry-After", took)
	}
}
