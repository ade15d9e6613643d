package graph

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"testing/synctest"

	"github.com/seed-a64d9e1f/chatwire/adapter"
)

// TestValidationTokenOnlyOnValidationRequest: the token is echoed only on Graph's validation
// request (POST ?validationToken=…), only up to maxValidationToken bytes, as text/plain
// with X-Content-Type-Options: nosniff.
func TestValidationTokenOnlyOnValidationRequest(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ae := newAdapter(t, nil)
		q := func(tok string) map[string][]string { return map[string][]string{"validationToken": {tok}} }
		tok := "Validation: Testing client application reachability for subscription Request-Id: 0b6b3c4e-7a1d-4f59-9f8e-1c2d3e4f5a6b"
		resp, _, err := ae.a.HandleWebhook(t.Context(), &adapter.WebhookRequest{Method: "POST", Query: q(tok)})
		if err != nil || resp.Status != 200 || string(resp.Body) != tok ||
			!strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") || resp.Header.Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("validation = %d %q %v %v; want 200, the token, text/plain, nosniff", resp.Status, resp.Body, resp.Header, err)
		}
		for _, m := range []string{"GET", "PUT", "HEAD", "DELETE"} {
			resp, _, err := ae.a.HandleWebhook(t.Context(), &adapter.WebhookRequest{Method: m, Query: q("<script>x</script>")})
			if resp.Status != http.StatusMethodNotAllowed || strings.Contains(string(resp.Body), "script") || !errors.Is(err, adapter.ErrInvalidRequest) {
				t.Errorf("%s with validationToken = %d %q %v; want 405 without the echo", m, resp.Status, resp.Body, err)
			}
		}
		long := strings.Repeat("A", maxValidationToken+1)
		resp, _, err = ae.a.HandleWebhook(t.Context(), &adapter.WebhookRequest{Method: "POST", Query: q(long)})
		if resp.Status != http.StatusBadRequest || strings.Contains(string(resp.Body), long) || !errors.Is(err, adapter.ErrInvalidRequest) {
			t.Errorf("%d-byte token = %d (%d bytes) %v; want 400 without the echo", len(long), resp.Status, len(resp.Body), err)
		}
		if resp.Header.Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("refusal headers = %v; want nosniff", resp.Header)
		}
	})
}

// TestWebhookResourceMustBeUnderItsSubscription: a notification with the right clientState
// makes the adapter fetch only a resource under the subscription it names: never another
// mailbox, another chat than the subscription's, or anything for an unknown subscription.
func TestWebhookResourceMustBeUnderItsSubscription(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ae := newAdapter(t, func(o *Options) { o.Chats = []string{"chat-1"} })
		if err := ae.a.Start(t.Context()); err != nil {
			t.Fatal(err)
		}
		var chatSub, mailSub string
		for _, s := range ae.srv.Subscriptions() {
			switch {
			case strings.Contains(s.Resource, "chats/chat-1"):
				chatSub = s.ID
			case strings.Contains(s.Resource, "mailFolders"):
				mailSub = s.ID
			}
		}
		if chatSub == "" || mailSub == "" {
			t.Fatalf("subscriptions = %+v", ae.srv.Subscriptions())
		}
		ae.hook.setDown(true)
		m1 := ae.srv.AddChatMessage("chat-1", otherUser, "Alice", "in chat-1")
		m2 := ae.srv.AddChatMessage("chat-2", otherUser, "Alice", "in chat-2")
		victim := ae.srv.DeliverMail("victim", "x@example.com", "secret", "victim's mail")
		mine := ae.srv.DeliverMail(botUser, "carol@example.com", "hello", "my mail")
		ae.hook.setDown(false)
		item := func(sub, res string) string {
			return fmt.Sprintf(`{"subscriptionId":%q,"clientState":%q,"changeType":"created","resource":%q}`, sub, clientState, res)
		}
		forged := []string{
			item(chatSub, "users/victim/messages/"+victim),
			item(chatSub, "Users/victim/Messages/"+victim),
			item(mailSub, "Users/victim/Messages/"+victim),
			// Graph's {user-id}@{tenant-id} form: only the bot's own id before the tenant counts.
			item(mailSub, "Users/victim@9f0e5c2a-1b3d-4e6f-8a7b-0c1d2e3f4a5b/Messages/"+victim),
			item(chatSub, fmt.Sprintf("chats('chat-2')/messages('%s')", m2.ID)),
			item(mailSub, fmt.Sprintf("chats('chat-1')/messages('%s')", m1.ID)),
			item("not-a-subscription", fmt.Sprintf("chats('chat-1')/messages('%s')", m1.ID)),
			item(chatSub, "teams('T')/channels('C')/messages('1')"),
		}
		before := len(ae.srv.Requests())
		body := []byte(`{"value":[` + strings.Join(forged, ",") + `]}`)
		resp, evs, _ := ae.a.HandleWebhook(t.Context(), &adapter.WebhookRequest{Method: "POST", Body: body})
		if len(evs) != 0 || resp.Status >= 500 {
			t.Errorf("forged resources = %d with %d events; want no events", resp.Status, len(evs))
		}
		for _, r := range ae.srv.Requests()[before:] {
			if strings.Contains(r.Path, "victim") || strings.Contains(r.Path, "chat-2") || strings.Contains(r.Path, "/teams/") ||
				strings.Contains(r.Path, "chat-1") {
				t.Errorf("forged notification made the adapter call %s %s", r.Method, r.Path)
			}
		}
		// The genuine ones still work.
		good := []string{
			item(chatSub, fmt.Sprintf("chats('chat-1')/messages('%s')", m1.ID)),
			item(mailSub, "Users/"+botUser+"/Messages/"+mine),
		}
		body = []byte(`{"value":[` + strings.Join(good, ",") + `]}`)
		resp, evs, err := ae.a.HandleWebhook(t.Context(), &adapter.WebhookRequest{Method: "POST", Body: body})
		if err != nil || resp.Status != 202 || eventTexts(evs) != "in chat-1,my mail" && eventTexts(evs) != "my mail,in chat-1" {
			t.Errorf("genuine notifications = %d %q %v; want both events", resp.Status, eventTexts(evs), err)
		}
	})
}

// TestChatCursorsBounded: chat ids named by notifications (getAllMessages covers every chat)
// do not grow the resync cursors without bound; configured chats keep theirs.
func TestChatCursorsBounded(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ae := newAdapter(t, nil)
		for i := range maxChatCursors + 500 {
			ae.a.seenChat(fmt.Sprintf("chat-%d", i), "1")
		}
		ae.a.pollMu.Lock()
		n := len(ae.a.poll.chatLast)
		_, newest := ae.a.poll.chatLast[fmt.Sprintf("chat-%d", maxChatCursors+499)]
		_, oldest := ae.a.poll.chatLast["chat-0"]
		ae.a.pollMu.Unlock()
		if n != maxChatCursors || !newest || oldest {
			t.Errorf("%d cursors (newest kept %v, oldest kept %v); want %d, the least recent evicted", n, newest, oldest, maxChatCursors)
		}
	})
}
