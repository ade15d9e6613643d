package graph

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/seed-a64d9e1f/chatwire/adapter"
	"github.com/seed-a64d9e1f/chatwire/adapter/graph/graphtest"
	"github.com/seed-a64d9e1f/chatwire/internal/filestore"
	"github.com/seed-a64d9e1f/chatwire/tokenmgr"
)

const (
	notifyURL   = "https://bot.test/webhook/teams"
	clientState = "client-state-secret-123"
	otherUser   = "alice"
)

// hook is the host side of the webhook: it hands requests to the adapter and keeps events.
type hook struct {
	a      *Adapter
	mu     sync.Mutex
	events []adapter.Event
	status []int
	down   bool // answer 500 without asking the adapter
}

func (h *hook) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.mu.Lock()
	down := h.down
	h.mu.Unlock()
	if down {
		w.WriteHeader(http.StatusInternalServerError)
		return
	}
	req, err := adapter.NewWebhookRequest(r, 0)
	if err != nil {
		http.Error(w, err.Error(), adapter.HTTPStatus(err))
		return
	}
	resp, evs, _ := h.a.HandleWebhook(r.Context(), req)
	h.mu.Lock()
	h.events = append(h.events, evs...)
	h.status = append(h.status, resp.Status)
	h.mu.Unlock()
	resp.Write(w)
}

func (h *hook) take() []adapter.Event {
	h.mu.Lock()
	defer h.mu.Unlock()
	evs := h.events
	h.events = nil
	return evs
}

type adapterEnv struct {
	*env
	a     *Adapter
	hook  *hook
	store *tokenmgr.MemoryStore
}

func newAdapter(t testing.TB, mutate func(*Options)) *adapterEnv {
	t.Helper()
	e := newEnv(t)
	store := new(tokenmgr.MemoryStore)
	opts := Options{Bot: "teams", Config: e.cfg, GraphBase: base, HTTPClient: e.hc, Store: store, Logger: e.logger(),
		NotificationURL: notifyURL, ClientState: clientState}
	if mutate != nil {
		mutate(&opts)
	}
	a, err := New(opts)
	if err != nil {
		t.Fatalf("New() error = %v", err)
	}
	t.Cleanup(func() { a.Close() })
	if opts.Auth != AuthClientCredentials {
		rt := e.srv.IssueRefreshToken(testClient, botUser, "offline_access")
		store.Put(a.Tokens().Key(), tokenmgr.Entry{State: []byte(rt)})
	}
	h := &hook{a: a}
	e.srv.Client = &http.Client{Transport: graphtest.HandlerTransport(h)}
	return &adapterEnv{env: e, a: a, hook: h, store: store}
}

func TestSendTeams(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ae := newAdapter(t, func(o *Options) { o.NotificationURL = "" })
		ctx := t.Context()
		cases := []struct {
			name  string
			msg   adapter.Message
			check func(graphtest.Sent) bool
		}{
			{"text to chat", adapter.Message{To: adapter.Target{Chat: "chat-1"}, Text: "hello"},
				func(s graphtest.Sent) bool {
					return s.Kind == "chat" && s.ContentType == "text" && s.Content == "hello"
				}},
			{"html to channel", adapter.Message{To: adapter.Target{Channel: &adapter.Channel{Team: "T", Channel: "C"}}, HTML: "<b>hi</b>"},
				func(s graphtest.Sent) bool {
					return s.Kind == "channel" && s.ContentType == "html" && s.Content == "<b>hi</b>"
				}},
			{"mention", adapter.Message{To: adapter.Target{Chat: "chat-1"}, Text: "look <here>", Mentions: []adapter.Mention{{ID: otherUser, Name: "Alice"}}},
				func(s graphtest.Sent) bool {
					return s.ContentType == "html" && strings.Contains(s.Content, `<at id="0">Alice</at> look &lt;here&gt;`)
				}},
			{"1:1 with a user", adapter.Message{To: adapter.Target{User: otherUser}, Text: "dm"},
				func(s graphtest.Sent) bool { return s.ChatID == "19:alice_bot-user@unq.gbl.spaces" }},
			{"file as reference attachment", adapter.Message{To: adapter.Target{Chat: "chat-1"}, Text: "report",
				Attachments: []adapter.Attachment{{Name: "r.pdf", ContentType: "application/pdf", Data: []byte("%PDF")}}},
				func(s graphtest.Sent) bool {
					return len(s.Attachments) == 1 && s.Attachments[0].Name == "r.pdf" && strings.Contains(s.Content, "<attachment id=")
				}},
			{"adaptive card", adapter.Message{To: adapter.Target{Chat: "chat-1"}, Card: json.RawMessage(`{"type":"adaptive","body":[{"type":"TextBlock","text":"x"}]}`)},
				func(s graphtest.Sent) bool {
					return strings.Contains(string(s.Raw), "application/vnd.microsoft.card.adaptive")
				}},
		}
		var parent string
		for _, tc := range cases {
			r, err := ae.a.Send(ctx, tc.msg)
			if err != nil || r.ID == "" {
				t.Errorf("%s: Send() = %+v, %v", tc.name, r, err)
				continue
			}
			sent := ae.srv.Sent()
			if last := sent[len(sent)-1]; !tc.check(last) || last.ID != r.ID {
				t.Errorf("%s: sent %+v", tc.name, last)
			}
			if tc.msg.To.Channel != nil {
				parent = r.ID
			}
		}
		r, err := ae.a.Send(ctx, adapter.Message{To: adapter.Target{Channel: &adapter.Channel{Team: "T", Channel: "C"}}, Text: "re", ReplyTo: parent})
		sent := ae.srv.Sent()
		if err != nil || sent[len(sent)-1].Kind != "reply" || sent[len(sent)-1].ReplyTo != parent || r.ID == "" {
			t.Errorf("reply: %v %+v", err, sent[len(sent)-1])
		}
		// Uploaded once through Upload, then referenced by id.
		up, err := ae.a.Upload(ctx, adapter.Attachment{Name: "big.bin", Data: randomBytes(5 << 20)})
		if err != nil || up.ID == "" || up.URL == "" {
			t.Fatalf("Upload() = %+v, %v", up, err)
		}
		if _, err := ae.a.Send(ctx, adapter.Message{To: adapter.Target{Chat: "chat-1"}, Text: "big", Attachments: []adapter.Attachment{{ID: up.ID}}}); err != nil {
			t.Errorf("Send(uploaded id) error = %v", err)
		}
		// Errors keep their kinds.
		_, err = ae.a.Send(ctx, adapter.Message{To: adapter.Target{Party: "2"}, Text: "x"})
		if !errors.Is(err, adapter.ErrInvalidRecipient) {
			t.Errorf("Send(party) error = %v; want invalid_recipient", err)
		}
		_, err = ae.a.Send(ctx, adapter.Message{To: adapter.Target{Chat: "chat-1"}})
		if !errors.Is(err, adapter.ErrInvalidRequest) {
			t.Errorf("Send(empty) error = %v; want invalid_request", err)
		}
		ae.srv.InjectThrottle(1, time.Minute)
		_, err = ae.a.Send(ctx, adapter.Message{To: adapter.Target{Chat: "chat-1"}, Text: "x"})
		if !errors.Is(err, adapter.ErrRateLimited) || adapter.RetryAfter(err) != time.Minute || adapter.Code(err) != "TooManyRequests" {
			t.Errorf("throttled Send() error = %v; want rate_limited, 1m, TooManyRequests", err)
		}
	})
}

func TestClientCredentialsBot(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ae := newAdapter(t, func(o *Options) {
			o.Auth, o.User, o.NotificationURL = AuthClientCredentials, "bot@contoso.test", ""
		})
		_, err := ae.a.Send(t.Context(), adapter.Message{To: adapter.Target{Chat: "chat-1"}, Text: "x"})
		if !errors.Is(err, adapter.ErrUnauthorized) || !strings.Contains(err.Error(), "delegated") {
			t.Errorf("Teams Send() with client credentials = %v; want an error saying Teams needs delegated auth", err)
		}
		if len(ae.srv.Requests()) != 0 || len(ae.srv.TokenRequests()) != 0 {
			t.Errorf("a refused Teams send made requests")
		}
		big := randomBytes(4 << 20)
		_, err = ae.a.Send(t.Context(), adapter.Message{To: adapter.Target{Emails: []string{"a@example.com", "b@example.com"}},
			Subject: "hi", HTML: "<p>hi</p>", Attachments: []adapter.Attachment{
				{Name: "a.txt", Data: []byte("small")}, {Name: "big.bin", Data: big}}})
		if err != nil {
			t.Fatalf("mail Send() error = %v", err)
		}
		s := ae.srv.Sent()
		if len(s) != 1 || s[0].From != "bot@contoso.test" || len(s[0].To) != 2 || len(s[0].Attachments) != 2 || !bytes.Equal(s[0].Attachments[1].Data, big) {
			t.Errorf("Sent() = %+v", s)
		}
		if _, err := New(Options{Config: ae.cfg, Auth: AuthClientCredentials, User: "x", Subscribe: []string{"chats"}}); !errors.Is(err, adapter.ErrInvalidRequest) {
			t.Errorf("New(client credentials, chats) error = %v", err)
		}
	})
}

func TestWebhookNotifications(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ae := newAdapter(t, nil)
		if err := ae.a.Start(t.Context()); err != nil {
			t.Fatalf("Start() error = %v", err)
		}
		subs := ae.srv.Subscriptions()
		if len(subs) != 2 {
			t.Fatalf("subscriptions = %+v; want chats and mail", subs)
		}
		ae.srv.AddChatMessage("chat-1", otherUser, "Alice", "hello bot")
		evs := ae.hook.take()
		if len(evs) != 1 || evs[0].Text != "hello bot" || evs[0].Sender.ID != otherUser || evs[0].Chat.ID != "chat-1" ||
			evs[0].Chat.Type != adapter.ChatGroup || evs[0].Platform != "graph" || evs[0].Bot != "teams" || evs[0].Kind != adapter.EventMessage {
			t.Fatalf("events = %+v", evs)
		}
		// A byte-for-byte redelivery yields the same event id (the host drops it).
		ae.srv.DeliverAgain()
		if again := ae.hook.take(); len(again) != 1 || again[0].ID != evs[0].ID {
			t.Errorf("redelivery events = %+v; want the same id %s", again, evs[0].ID)
		}
		// The bot's own message and system messages are dropped.
		if _, err := ae.a.Send(t.Context(), adapter.Message{To: adapter.Target{Chat: "chat-1"}, Text: "echo"}); err != nil {
			t.Fatal(err)
		}
		ae.srv.Flush()
		ae.srv.AddChatMessage("chat-1", "", "", "Alice added Bob")
		if evs := ae.hook.take(); len(evs) != 0 {
			t.Errorf("own/system message events = %+v; want none", evs)
		}
		// Channel replies and mail.
		ae.srv.AddChannelMessage("T", "C", "", otherUser, "Alice", "in channel") // no subscription for channels
		ae.srv.DeliverMail(botUser, "carol@example.com", "Subject", "mail body")
		evs = ae.hook.take()
		if len(evs) != 1 || evs[0].Chat.Type != adapter.ChatMail || evs[0].Text != "mail body" || evs[0].Sender.ID != "carol@example.com" {
			t.Errorf("mail events = %+v", evs)
		}
		for _, st := range ae.hook.status {
			if st != http.StatusAccepted && st != http.StatusOK { // 200: validation
				t.Errorf("webhook answered %d; want 202", st)
			}
		}
	})
}

func TestWebhookRefusesForgeries(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ae := newAdapter(t, nil)
		body := []byte(`{"value":[{"subscriptionId":"x","clientState":"guess","changeType":"created","resource":"chats('c')/messages('1')"}]}`)
		resp, evs, err := ae.a.HandleWebhook(t.Context(), &adapter.WebhookRequest{Method: "POST", Body: body})
		if resp.Status != 401 || len(evs) != 0 || !errors.Is(err, adapter.ErrUnauthorized) {
			t.Errorf("forged clientState: %d %v %v; want 401 unauthorized", resp.Status, evs, err)
		}
		for _, b := range []string{"", "null", "[]", `{"value":{}}`, "{", `{"value":[1]}`} {
			resp, _, err := ae.a.HandleWebhook(t.Context(), &adapter.WebhookRequest{Method: "POST", Body: []byte(b)})
			if resp.Status != 400 || !errors.Is(err, adapter.ErrInvalidRequest) {
				t.Errorf("body %q: %d %v; want 400 invalid_request", b, resp.Status, err)
			}
		}
		resp, _, _ = ae.a.HandleWebhook(t.Context(), &adapter.WebhookRequest{Method: "POST", Query: map[string][]string{"validationToken": {"a b&c"}}})
		if resp.Status != 200 || string(resp.Body) != "a b&c" || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") {
			t.Errorf("validation = %d %q %v", resp.Status, resp.Body, resp.Header)
		}
		if len(ae.srv.Requests()) != 0 {
			t.Errorf("forged or malformed notifications caused %d Graph requests", len(ae.srv.Requests()))
		}
	})
}

func TestWebhookAsksForRedeliveryWhenGraphIsDown(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ae := newAdapter(t, nil)
		if err := ae.a.Start(t.Context()); err != nil {
			t.Fatal(err)
		}
		ae.srv.InjectStatus(20, 503, 0) // the message fetch keeps failing past the fetch budget
		ae.srv.AddChatMessage("chat-1", otherUser, "Alice", "hi")
		if evs := ae.hook.take(); len(evs) != 0 || ae.hook.status[len(ae.hook.status)-1] != 503 {
			t.Fatalf("events %v status %v; want none and 503", evs, ae.hook.status)
		}
		ae.srv.InjectStatus(0, 0, 0)
		for range 20 { // drain what is left of the fault queue
			ae.a.Client().Do(t.Context(), "GET", "/me", nil, nil)
		}
		if n := ae.srv.Redeliver(); n != 1 {
			t.Fatalf("Redeliver() = %d; want 1", n)
		}
		if evs := ae.hook.take(); len(evs) != 1 || evs[0].Text != "hi" {
			t.Errorf("redelivered events = %+v", evs)
		}
	})
}

func TestSubscriptionLifecycle(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ae := newAdapter(t, func(o *Options) { o.SubscriptionLifetime = 2 * time.Hour; o.Chats = []string{"chat-1"} })
		if err := ae.a.Start(t.Context()); err != nil {
			t.Fatal(err)
		}
		find := func(res string) graphtest.Subscription {
			for _, s := range ae.srv.Subscriptions() {
				if strings.Contains(s.Resource, res) {
					return s
				}
			}
			return graphtest.Subscription{}
		}
		mail := find("mailFolders")
		if mail.ID == "" || mail.LifecycleURL == "" || mail.ClientState != clientState {
			t.Fatalf("mail subscription = %+v", mail)
		}
		// Renewed ahead of expiry by the refresh-ahead machinery.
		time.Sleep(112 * time.Minute) // refresh-ahead: 80% ±5% of 2 h, no later than 5 min before expiry
		synctest.Wait()
		renewed := find("mailFolders")
		if renewed.ID != mail.ID || !renewed.Expiration.After(mail.Expiration) {
			t.Errorf("after 112 min: subscription %s expiring %v; want %s renewed past %v", renewed.ID, renewed.Expiration, mail.ID, mail.Expiration)
		}
		// reauthorizationRequired: renew, answer 202.
		before := find("mailFolders").Expiration
		time.Sleep(time.Minute)
		if st, err := ae.srv.Lifecycle(mail.ID, "reauthorizationRequired"); err != nil || st != 202 {
			t.Fatalf("Lifecycle(reauthorizationRequired) = %d, %v", st, err)
		}
		time.Sleep(30 * time.Second)
		synctest.Wait()
		if after := find("mailFolders"); !after.Expiration.After(before) {
			t.Errorf("reauthorizationRequired did not renew: %v → %v", before, after.Expiration)
		}
		// missed: mail that arrived while the webhook was down comes through a delta resync.
		ae.hook.setDown(true)
		ae.srv.DeliverMail(botUser, "dave@example.com", "lost", "while down")
		ae.hook.setDown(false)
		if st, _ := ae.srv.Lifecycle(mail.ID, "missed"); st != 202 {
			t.Fatalf("Lifecycle(missed) = %d", st)
		}
		if evs := ae.hook.take(); len(evs) != 1 || evs[0].Text != "while down" {
			t.Errorf("missed resync events = %+v", evs)
		}
		// subscriptionRemoved: recreated, and chats resynced.
		chat := find("chats/chat-1")
		ae.hook.setDown(true)
		ae.srv.AddChatMessage("chat-1", otherUser, "Alice", "during removal")
		ae.hook.setDown(false)
		if st, _ := ae.srv.Lifecycle(chat.ID, "subscriptionRemoved"); st != 202 {
			t.Fatalf("Lifecycle(subscriptionRemoved) = %d", st)
		}
		if evs := ae.hook.take(); len(evs) != 1 || evs[0].Text != "during removal" {
			t.Errorf("removal resync events = %+v", evs)
		}
		time.Sleep(time.Minute)
		synctest.Wait()
		if re := find("chats/chat-1"); re.ID == "" || re.ID == chat.ID {
			t.Errorf("chat subscription after removal = %+v; want a new one", re)
		}
		subs, err := ae.a.Subscriptions(t.Context())
		if err != nil || subs["chats/chat-1/messages"] != find("chats/chat-1").ID {
			t.Errorf("Subscriptions() = %v, %v", subs, err)
		}
	})
}

func TestPolling(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ae := newAdapter(t, func(o *Options) { o.NotificationURL = ""; o.Chats = []string{"chat-1"} })
		ae.srv.AddChatMessage("chat-1", otherUser, "Alice", "history")
		ae.srv.DeliverMail(botUser, "carol@example.com", "old", "history")
		ctx := t.Context()
		start := time.Now()
		if evs, err := ae.a.Poll(ctx); err != nil || len(evs) != 0 || time.Since(start) != 30*time.Second {
			t.Fatalf("first Poll() = %v, %v after %v; want a baseline with no events after the 30 s interval", evs, err, time.Since(start))
		}
		ae.srv.AddChatMessage("chat-1", otherUser, "Alice", "one")
		ae.srv.AddChatMessage("chat-1", otherUser, "Alice", "two")
		ae.srv.AddChatMessage("chat-1", "", "", "system")
		ae.srv.DeliverMail(botUser, "carol@example.com", "new", "three")
		if _, err := ae.a.Send(ctx, adapter.Message{To: adapter.Target{Chat: "chat-1"}, Text: "own"}); err != nil {
			t.Fatal(err)
		}
		evs, err := ae.a.Poll(ctx)
		var texts []string
		for _, e := range evs {
			texts = append(texts, e.Text)
		}
		if err != nil || strings.Join(texts, ",") != "three,one,two" {
			t.Fatalf("Poll() = %v, %v; want three, one, two", texts, err)
		}
		// Nothing new: wait one interval, return nothing (and commit the previous batch).
		start = time.Now()
		if evs, err := ae.a.Poll(ctx); len(evs) != 0 || err != nil || time.Since(start) != 30*time.Second {
			t.Errorf("idle Poll() = %v, %v after %v", evs, err, time.Since(start))
		}
	})
}

func TestStatus(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ae := newAdapter(t, func(o *Options) { o.NotificationURL = "" })
		if err := ae.a.Start(t.Context()); err != nil {
			t.Fatal(err)
		}
		st, _ := ae.a.Status(t.Context())
		if !st.Healthy || st.Bot != "teams" || len(st.Tokens) != 1 || st.Tokens[0].State != "fresh" {
			t.Errorf("Status() = %+v", st)
		}
		ae.a.Close()
		st, _ = ae.a.Status(t.Context())
		if st.Healthy {
			t.Errorf("Status() after Close = %+v; want unhealthy", st)
		}
		if _, err := ae.a.Send(t.Context(), adapter.Message{To: adapter.Target{Chat: "c"}, Text: "x"}); !errors.Is(err, adapter.ErrUnavailable) {
			t.Errorf("Send after Close = %v", err)
		}
	})
}

// inflight counts the message fetches in flight and keeps the maximum; each takes 10 ms of
// (fake) time so concurrent fetches overlap.
type inflight struct {
	srv      *graphtest.Server
	mu       sync.Mutex
	now, max int
}

func (h *inflight) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/messages/") {
		h.mu.Lock()
		h.now++
		h.max = max(h.max, h.now)
		h.mu.Unlock()
		time.Sleep(10 * time.Millisecond)
		defer func() {
			h.mu.Lock()
			h.now--
			h.mu.Unlock()
		}()
	}
	h.srv.ServeHTTP(w, r)
}

// TestWebhookFetchConcurrencyCapped: a POST with many items fetches at most 4 messages at a
// time (Outlook's per-mailbox concurrency limit), still all of them.
func TestWebhookFetchConcurrencyCapped(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		counter := &inflight{}
		ae := newAdapter(t, func(o *Options) {
			o.HTTPClient = &http.Client{Transport: graphtest.HandlerTransport(counter)}
		})
		counter.srv = ae.srv
		ae.trustSub("s")
		var items []string
		for i := range 40 {
			m := ae.srv.AddChatMessage("chat-1", otherUser, "Alice", fmt.Sprint("m", i))
			items = append(items, fmt.Sprintf(`{"subscriptionId":"s","clientState":%q,"changeType":"created","resource":"chats('chat-1')/messages('%s')"}`, clientState, m.ID))
		}
		body := []byte(`{"value":[` + strings.Join(items, ",") + `]}`)
		resp, evs, err := ae.a.HandleWebhook(t.Context(), &adapter.WebhookRequest{Method: "POST", Body: body})
		if err != nil || resp.Status != http.StatusAccepted || len(evs) != 40 {
			t.Fatalf("HandleWebhook() = %d, %d events, %v; want 202 with 40 events", resp.Status, len(evs), err)
		}
		if counter.max != maxConcurrentFetches {
			t.Errorf("at most %d fetches ran at once; want exactly the cap %d", counter.max, maxConcurrentFetches)
		}
	})
}

// slowFetch makes every message fetch take 500 ms of (fake) time.
type slowFetch struct{ srv *graphtest.Server }

func (h *slowFetch) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/messages/") {
		time.Sleep(500 * time.Millisecond)
	}
	h.srv.ServeHTTP(w, r)
}

// TestWebhookBigBatchProgressesAcrossRedeliveries: a batch bigger than the 4 fetch slots can
// fetch in the fetch budget is answered 503 with the events fetched so far, and each
// redelivery gets further, until all arrive (the host deduplicates by id) and it is acked.
func TestWebhookBigBatchProgressesAcrossRedeliveries(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		slow := &slowFetch{}
		ae := newAdapter(t, func(o *Options) {
			o.HTTPClient = &http.Client{Transport: graphtest.HandlerTransport(slow)}
		})
		slow.srv = ae.srv
		ae.trustSub("s")
		const n = 60 // 4 slots × 2.5 s / 0.5 s = 20 fetches per POST at most
		var items []string
		for i := range n {
			m := ae.srv.AddChatMessage("chat-1", otherUser, "Alice", fmt.Sprint("m", i))
			items = append(items, fmt.Sprintf(`{"subscriptionId":"s","clientState":%q,"changeType":"created","resource":"chats('chat-1')/messages('%s')"}`, clientState, m.ID))
		}
		body := []byte(`{"value":[` + strings.Join(items, ",") + `]}`)
		queued := map[string]adapter.Event{} // the host's queue, deduplicated by event id
		attempts := 0
		for ; attempts < 10; attempts++ {
			resp, evs, err := ae.a.HandleWebhook(t.Context(), &adapter.WebhookRequest{Method: "POST", Body: body})
			if err != nil {
				t.Fatalf("attempt %d: HandleWebhook() error = %v", attempts+1, err)
			}
			before := len(queued)
			for _, ev := range evs {
				queued[ev.ID] = ev
			}
			if resp.Status == http.StatusAccepted {
				break
			}
			if resp.Status != http.StatusServiceUnavailable {
				t.Fatalf("attempt %d: status %d; want 202 or 503", attempts+1, resp.Status)
			}
			if len(queued) == before {
				t.Fatalf("attempt %d: 503 with no new events (%d of %d queued); a redelivery must make progress", attempts+1, len(queued), n)
			}
		}
		if attempts == 0 {
			t.Fatalf("the first POST was acknowledged; want a batch too big for one fetch budget")
		}
		if attempts >= 10 {
			t.Fatalf("not acknowledged after 10 deliveries; %d of %d events queued", len(queued), n)
		}
		texts := map[string]int{}
		for _, ev := range queued {
			texts[ev.Text]++
		}
		for i := range n {
			if texts[fmt.Sprint("m", i)] != 1 {
				t.Errorf("message m%d queued %d times; want once", i, texts[fmt.Sprint("m", i)])
			}
		}
		if len(queued) != n {
			t.Errorf("%d events queued; want %d", len(queued), n)
		}
	})
}

// TestPollingDiscoversChats: without Options.Chats, polling watches the chats GET /me/chats
// lists, including one that appears after the baseline, and says which in one log line.
func TestPollingDiscoversChats(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ae := newAdapter(t, func(o *Options) { o.NotificationURL = "" })
		ae.srv.AddChatMessage("chat-1", otherUser, "Alice", "history")
		ae.srv.AddChatMessage("19:alice_carol@unq.gbl.spaces", otherUser, "Alice", "not the bot's chat")
		ctx := t.Context()
		if evs, err := ae.a.Poll(ctx); err != nil || len(evs) != 0 {
			t.Fatalf("first Poll() = %v, %v; want a baseline", evs, err)
		}
		ae.srv.AddChatMessage("chat-1", otherUser, "Alice", "one")
		ae.srv.AddChatMessage("chat-2", otherUser, "Alice", "in a new chat")
		ae.srv.AddChatMessage("19:alice_carol@unq.gbl.spaces", otherUser, "Alice", "still not the bot's")
		evs, err := ae.a.Poll(ctx)
		var got []string
		for _, e := range evs {
			got = append(got, e.Chat.ID+":"+e.Text)
		}
		if err != nil || strings.Join(got, ",") != "chat-1:one,chat-2:in a new chat" {
			t.Fatalf("Poll() = %v, %v; want the new message of chat-1 and all of the new chat-2", got, err)
		}
		logs := ae.log.String()
		if n := strings.Count(logs, "graph watching chats"); n != 2 || !strings.Contains(logs, "chats=chat-1,chat-2") ||
			!strings.Contains(logs, `source="GET /me/chats"`) {
			t.Errorf("logs %q; want one line per change of the watched chats (2), naming them and the source", logs)
		}
	})
}

// TestResyncDiscoversChats: with the default getAllMessages subscription, a
// subscriptionRemoved resyncs every chat of the user, including one never notified.
func TestResyncDiscoversChats(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ae := newAdapter(t, nil)
		ae.srv.AddChatMessage("chat-old", otherUser, "Alice", "before start")
		time.Sleep(time.Second)
		if err := ae.a.Start(t.Context()); err != nil {
			t.Fatal(err)
		}
		chatSub := chatSubscription(t, ae.srv)
		time.Sleep(time.Second)
		ae.srv.AddChatMessage("chat-1", otherUser, "Alice", "notified")
		ae.hook.take()
		ae.hook.setDown(true)
		ae.srv.AddChatMessage("chat-1", otherUser, "Alice", "lost in chat-1")
		ae.srv.AddChatMessage("chat-9", otherUser, "Alice", "lost in a chat never notified")
		ae.hook.setDown(false)
		if st, _ := ae.srv.Lifecycle(chatSub.ID, "subscriptionRemoved"); st != 202 {
			t.Fatalf("Lifecycle(subscriptionRemoved) = %d", st)
		}
		var got []string
		for _, e := range ae.hook.take() {
			got = append(got, e.Text)
		}
		slices.Sort(got)
		if strings.Join(got, ",") != "lost in a chat never notified,lost in chat-1" {
			t.Errorf("resync events = %q; want both lost messages and nothing from before Start", got)
		}
	})
}

// failChat answers status (0: 503) to listings of one chat's messages while fail is set.
type failChat struct {
	srv    *graphtest.Server
	mu     sync.Mutex
	chat   string
	status int
	fail   bool
}

func (h *failChat) set(fail bool) {
	h.mu.Lock()
	h.fail = fail
	h.mu.Unlock()
}

func (h *failChat) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.mu.Lock()
	fail := h.fail && r.Method == http.MethodGet && strings.HasSuffix(r.URL.Path, "/chats/"+h.chat+"/messages")
	status := cmp.Or(h.status, http.StatusServiceUnavailable)
	h.mu.Unlock()
	if fail {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		w.Write([]byte(`{"error":{"code":"failChat","message":"not now"}}`))
		return
	}
	h.srv.ServeHTTP(w, r)
}

// TestResyncFailureKeepsCursors: a chat resync that fails on a later chat asks for a
// redelivery and moves no cursor, so the redelivered resync still returns the messages of
// the chats read before the failure.
func TestResyncFailureKeepsCursors(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fc := &failChat{chat: "chat-9"}
		ae := newAdapter(t, func(o *Options) {
			o.HTTPClient = &http.Client{Transport: graphtest.HandlerTransport(fc)}
		})
		fc.srv = ae.srv
		if err := ae.a.Start(t.Context()); err != nil {
			t.Fatal(err)
		}
		chatSub := chatSubscription(t, ae.srv)
		time.Sleep(time.Second)
		ae.srv.AddChatMessage("chat-1", otherUser, "Alice", "notified")
		ae.srv.AddChatMessage("chat-9", otherUser, "Alice", "notified in chat-9")
		ae.hook.take()
		ae.hook.setDown(true)
		ae.srv.AddChatMessage("chat-1", otherUser, "Alice", "lost in chat-1")
		ae.srv.AddChatMessage("chat-9", otherUser, "Alice", "lost in chat-9")
		ae.hook.setDown(false)
		fc.set(true) // chat-1 (listed first) is read, chat-9 fails
		if st, _ := ae.srv.Lifecycle(chatSub.ID, "missed"); st != http.StatusServiceUnavailable {
			t.Fatalf("Lifecycle(missed) with chat-9 unreadable = %d; want 503", st)
		}
		if evs := ae.hook.take(); len(evs) != 0 {
			t.Fatalf("failed resync events = %+v; want none", evs)
		}
		fc.set(false)
		if st, _ := ae.srv.Lifecycle(chatSub.ID, "missed"); st != http.StatusAccepted {
			t.Fatalf("redelivered Lifecycle(missed) = %d; want 202", st)
		}
		var got []string
		for _, e := range ae.hook.take() {
			got = append(got, e.Text)
		}
		slices.Sort(got)
		if strings.Join(got, ",") != "lost in chat-1,lost in chat-9" {
			t.Errorf("redelivered resync events = %q; want both lost messages", got)
		}
	})
}

// TestPollingLateChatStartsAtBaseline: a chat unreadable (403) at the polling baseline is
// warned about once, however many polls skip it, and once readable only what arrived
// after the baseline comes out, not its history.
func TestPollingLateChatStartsAtBaseline(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fc := &failChat{chat: "chat-old", status: http.StatusForbidden}
		ae := newAdapter(t, func(o *Options) {
			o.NotificationURL = ""
			o.HTTPClient = &http.Client{Transport: graphtest.HandlerTransport(fc)}
		})
		fc.srv = ae.srv
		ae.srv.AddChatMessage("chat-1", otherUser, "Alice", "history")
		ae.srv.AddChatMessage("chat-old", otherUser, "Alice", "old history")
		time.Sleep(time.Second)
		fc.set(true)
		ctx := t.Context()
		if evs, err := ae.a.Poll(ctx); err != nil || len(evs) != 0 {
			t.Fatalf("first Poll() = %v, %v; want a baseline", evs, err)
		}
		texts := func(evs []adapter.Event) string {
			var got []string
			for _, e := range evs {
				got = append(got, e.Chat.ID+":"+e.Text)
			}
			return strings.Join(got, ",")
		}
		for i := range 2 {
			ae.srv.AddChatMessage("chat-1", otherUser, "Alice", fmt.Sprint("one", i))
			if evs, err := ae.a.Poll(ctx); err != nil || texts(evs) != fmt.Sprint("chat-1:one", i) {
				t.Fatalf("Poll() with chat-old unreadable = %q, %v; want chat-1:one%d", texts(evs), err, i)
			}
		}
		if n := strings.Count(ae.log.String(), `level=WARN msg="graph chat not readable: skipped"`); n != 1 {
			t.Errorf("%d warnings for the unreadable chat over 3 polls; want 1", n)
		}
		fc.set(false)
		ae.srv.AddChatMessage("chat-old", otherUser, "Alice", "new in chat-old")
		if evs, err := ae.a.Poll(ctx); err != nil || texts(evs) != "chat-old:new in chat-old" {
			t.Errorf("Poll() once chat-old is readable = %q, %v; want only its message after the baseline", texts(evs), err)
		}
	})
}

// TestWatchedChatsLoggedOncePerChange: chats named by notifications (kept in a map) are
// logged as watched once, not on every sweep in whatever order the map gives.
func TestWatchedChatsLoggedOncePerChange(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ae := newAdapter(t, nil)
		ae.trustSub("s")
		var items []string
		for _, c := range []string{"chat-b", "chat-a"} { // not listed by GET /me/chats
			items = append(items, fmt.Sprintf(`{"subscriptionId":"s","clientState":%q,"changeType":"created","resource":"chats('%s')/messages('1')"}`, clientState, c))
		}
		body := []byte(`{"value":[` + strings.Join(items, ",") + `]}`)
		if resp, _, err := ae.a.HandleWebhook(t.Context(), &adapter.WebhookRequest{Method: "POST", Body: body}); err != nil || resp.Status != http.StatusAccepted {
			t.Fatalf("HandleWebhook() = %+v, %v; want 202", resp, err)
		}
		for range 20 {
			chats, _, err := ae.a.chatsToWatch(t.Context())
			if err != nil || !slices.Contains(chats, "chat-a") || !slices.Contains(chats, "chat-b") {
				t.Fatalf("chatsToWatch() = %v, %v; want chat-a and chat-b", chats, err)
			}
		}
		logs := ae.log.String()
		if n := strings.Count(logs, "graph watching chats"); n != 1 || !strings.Contains(logs, "chats=chat-a,chat-b") {
			t.Errorf("%d watched-chats lines in %q; want 1, naming chat-a,chat-b", n, logs)
		}
	})
}

// throttleToken answers the token endpoint's first n requests 429 with Retry-After: 60.
type throttleToken struct {
	srv *graphtest.Server
	mu  sync.Mutex
	n   int
}

func (h *throttleToken) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.mu.Lock()
	throttle := h.n > 0 && strings.HasSuffix(r.URL.Path, "/oauth2/v2.0/token")
	if throttle {
		h.n--
	}
	h.mu.Unlock()
	if throttle {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Retry-After", "60")
		w.WriteHeader(http.StatusTooManyRequests)
		w.Write([]byte(`{"error":"temporarily_unavailable","error_description":"AADSTS50196: too many requests","error_codes":[50196]}`))
		return
	}
	h.srv.ServeHTTP(w, r)
}

// TestTokenBackoffRetryAfterIsTimeLeft: after the token endpoint answered 429 with
// Retry-After: 60, a send during the token manager's backoff fails at once with
// adapter.RetryAfter the time left of that minute, not the full minute again.
func TestTokenBackoffRetryAfterIsTimeLeft(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		th := &throttleToken{n: 1}
		hc := &http.Client{Transport: graphtest.HandlerTransport(th)}
		ae := newAdapter(t, func(o *Options) { o.NotificationURL, o.HTTPClient, o.Config.HTTPClient = "", hc, hc })
		th.srv = ae.srv
		ctx := t.Context()
		msg := adapter.Message{To: adapter.Target{Chat: "chat-1"}, Text: "x"}
		_, err := ae.a.Send(ctx, msg)
		if !errors.Is(err, adapter.ErrRateLimited) || adapter.RetryAfter(err) != time.Minute {
			t.Fatalf("Send() with the token endpoint throttled = %v (retry after %v); want rate_limited, 1m", err, adapter.RetryAfter(err))
		}
		redeemed := len(ae.srv.TokenRequests())
		time.Sleep(20 * time.Second)
		_, err = ae.a.Send(ctx, msg)
		if !errors.Is(err, adapter.ErrRateLimited) || adapter.RetryAfter(err) != 40*time.Second {
			t.Errorf("Send() 20 s into the backoff = %v (retry after %v); want rate_limited, 40s", err, adapter.RetryAfter(err))
		}
		if n := len(ae.srv.TokenRequests()); n != redeemed {
			t.Errorf("%d token requests during the backoff; want none", n-redeemed)
		}
		time.Sleep(41 * time.Second)
		if _, err := ae.a.Send(ctx, msg); err != nil {
			t.Errorf("Send() after the backoff = %v; want success", err)
		}
	})
}

// TestRotatedRefreshTokenSurvivesAdapterRestart: a delegated adapter on a file store sends,
// is closed, and a new adapter (a new process: a new store loaded from the same directory)
// sends again. The emulator kills every redeemed refresh token, so the second send works
// only if the rotated one reached the disk; the emulator sees exactly one redemption per
// adapter and no failed one.
func TestRotatedRefreshTokenSurvivesAdapterRestart(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t)
		e.srv.StrictRefresh = true
		dir := t.TempDir()
		start := func() (*Adapter, *filestore.Store) {
			t.Helper()
			st, err := filestore.Open(dir)
			if err != nil {
				t.Fatalf("filestore.Open() error = %v", err)
			}
			a, err := New(Options{Bot: "teams", Config: e.cfg, GraphBase: base, HTTPClient: e.hc, Store: st, Logger: e.logger()})
			if err != nil {
				t.Fatalf("New() error = %v", err)
			}
			return a, st
		}
		send := func(a *Adapter, text string) {
			t.Helper()
			if _, err := a.Send(t.Context(), adapter.Message{To: adapter.Target{Chat: "chat-1"}, Text: text}); err != nil {
				t.Fatalf("Send(%q) error = %v", text, err)
			}
		}
		// What graph login leaves behind: the refresh token in the state file.
		key := e.cfg.Key("me")
		rt0 := []byte(e.srv.IssueRefreshToken(testClient, botUser, "offline_access"))
		if login, err := filestore.Open(dir); err != nil || login.SetState(key, rt0) != nil {
			t.Fatalf("seeding the state file: %v", err)
		}
		a1, st1 := start()
		if a1.Tokens().Key() != key {
			t.Fatalf("token key = %q; want %q", a1.Tokens().Key(), key)
		}
		send(a1, "before restart")
		rt1 := st1.State(key)
		if len(rt1) == 0 || bytes.Equal(rt1, rt0) {
			t.Fatalf("the refresh token was not rotated in the store")
		}
		a1.Close()

		a2, st2 := start()
		defer a2.Close()
		if got := st2.State(key); !bytes.Equal(got, rt1) {
			t.Fatalf("after restart the store holds %s; want the rotated refresh token %s",
				tokenmgr.Fingerprint(string(got)), tokenmgr.Fingerprint(string(rt1)))
		}
		send(a2, "after restart")
		if rt2 := st2.State(key); len(rt2) == 0 || bytes.Equal(rt2, rt1) {
			t.Errorf("the second redemption's refresh token was not stored")
		}
		var grants []string
		for _, r := range e.srv.TokenRequests() {
			grants = append(grants, r.GrantType+":"+r.Error)
		}
		if strings.Join(grants, ",") != "refresh_token:,refresh_token:" {
			t.Errorf("token requests = %v; want exactly two successful refresh_token redemptions", grants)
		}
		if sent := e.srv.Sent(); len(sent) != 2 || sent[1].Content != "after restart" {
			t.Errorf("Sent() = %d messages; want both", len(sent))
		}
	})
}

// TestStartTwice: a second Start keeps the running subscriptions (no duplicate managers,
// nothing leaked past Close) and creates nothing new.
func TestStartTwice(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ae := newAdapter(t, nil)
		if err := ae.a.Start(t.Context()); err != nil {
			t.Fatal(err)
		}
		ae.a.subsMu.Lock()
		first := maps.Clone(ae.a.subs)
		ae.a.subsMu.Unlock()
		if err := ae.a.Start(t.Context()); err != nil {
			t.Fatalf("second Start() error = %v", err)
		}
		ae.a.subsMu.Lock()
		for res, s := range first {
			if ae.a.subs[res] != s {
				t.Errorf("subscription %s: a second Start replaced its manager", res)
				s.m.Close() // the old one would renew forever
			}
		}
		n := len(ae.a.subs)
		ae.a.subsMu.Unlock()
		posts := 0
		for _, r := range ae.srv.Requests() {
			if r.Method == http.MethodPost && r.Path == "/v1.0/subscriptions" {
				posts++
			}
		}
		if n != 2 || posts != 2 || len(ae.srv.Subscriptions()) != 2 {
			t.Errorf("after two Starts: %d managers, %d creations, %d subscriptions; want 2 each", n, posts, len(ae.srv.Subscriptions()))
		}
	})
}

// setDown makes the hook answer 500 without asking the adapter (down) or serve again.
func (h *hook) setDown(down bool) {
	h.mu.Lock()
	h.down = down
	h.mu.Unlock()
}

// trustSub makes id one of the adapter's subscriptions, to the bot user's getAllMessages (as
// Start would), for tests that POST notifications without running Start.
func (ae *adapterEnv) trustSub(id string) {
	ae.a.rememberSub(id, "users/"+botUser+"/chats/getAllMessages")
}

// chatSubscription returns the getAllMessages subscription the adapter created on srv.
func chatSubscription(t *testing.T, srv *graphtest.Server) graphtest.Subscription {
	t.Helper()
	for _, s := range srv.Subscriptions() {
		if strings.Contains(s.Resource, "getAllMessages") {
			return s
		}
	}
	t.Fatalf("subscriptions = %+v; want getAllMessages", srv.Subscriptions())
	return graphtest.Subscription{}
}
