package graph

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/seed-a64d9e1f/chatwire/adapter"
	"github.com/seed-a64d9e1f/chatwire/tokenmgr"
)

func FuzzParseNotifications(f *testing.F) {
	f.Add([]byte(`{"value":[{"id":"1","subscriptionId":"s","clientState":"c","changeType":"created","resource":"chats('19:a@thread.v2')/messages('1616991463150')","tenantId":"t","resourceData":{"@odata.type":"#Microsoft.Graph.chatMessage","@odata.id":"x","id":"1"}}]}`))
	f.Add([]byte(`{"value":[{"subscriptionId":"s","clientState":"c","lifecycleEvent":"missed"}]}`))
	f.Add([]byte(`{"value":[{"resource":"teams('T')/channels('C')/messages('M')/replies('R')"},{"resource":"Users/u/Messages/AAMk"}],"validationTokens":["eyJ"]}`))
	f.Add([]byte(`{"value":null}`))
	f.Add([]byte(`[]`))
	f.Add([]byte(`{"value":[{"resource":"chats('unterminated"}]}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		b, err := ParseNotifications(body)
		if err != nil {
			return
		}
		if len(b.Value) > maxNotifications {
			t.Fatalf("ParseNotifications accepted %d items", len(b.Value))
		}
		for _, n := range b.Value {
			ref, err := ParseResource(n.Resource)
			if err != nil {
				continue
			}
			if ref.Message == "" || ref.Kind == "" || !strings.HasPrefix(ref.eventID(), "graph:") || !strings.HasPrefix(ref.path(), "/") {
				t.Fatalf("ParseResource(%q) = %+v", n.Resource, ref)
			}
			if strings.Contains(ref.path(), "/../") || strings.Contains(ref.path(), "?") {
				t.Fatalf("ParseResource(%q) path %q escapes its segment", n.Resource, ref.path())
			}
		}
	})
}

func FuzzParseTokenResponse(f *testing.F) {
	f.Add(200, []byte(`{"token_type":"Bearer","expires_in":3599,"ext_expires_in":3599,"access_token":"eyJ0eX"}`))
	f.Add(200, []byte(`{"token_type":"Bearer","expires_in":"3599","access_token":"a","refresh_token":"r","scope":"x"}`))
	f.Add(200, []byte(`{"token_type":"mac","access_token":"a"}`))
	f.Add(401, aadBody("invalid_client", 7000215))
	f.Add(400, aadBody("invalid_grant", 70002, 54005))
	f.Add(400, []byte("<html><body>AADSTS50011: The redirect URI</body></html>"))
	f.Add(503, []byte(""))
	f.Add(200, []byte(`{"access_token":"a","expires_in":1e300}`))
	f.Fuzz(func(t *testing.T, status int, body []byte) {
		tr, err := ParseTokenResponse(status, http.Header{"Retry-After": {"5"}}, body)
		if err == nil {
			if tr.AccessToken == "" {
				t.Fatalf("ParseTokenResponse returned an empty token without error")
			}
			tr.token(tokenmgr.Token{}.ExpiresAt)
			return
		}
		_ = err.Error()
		if ae, ok := errorsAs[*AuthError](err); ok {
			if errors := []bool{ae.Is(tokenmgr.ErrTemporary), ae.Is(tokenmgr.ErrCredentials)}; errors[0] && errors[1] {
				t.Fatalf("%v is both temporary and a credentials error", ae)
			}
			_ = ae.PlatformCode()
			_ = ae.Kind()
		}
	})
}

// TestNoSecretsInLogsOrErrors drives failures and successes with debug logging and checks
// that no client secret, access token, refresh token or clientState shows up anywhere.
func TestNoSecretsInLogsOrErrors(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ae := newAdapter(t, nil)
		var errs []string
		record := func(err error) {
			if err != nil {
				errs = append(errs, err.Error(), fmt.Sprintf("%+v", err), fmt.Sprintf("%#v", err))
			}
		}
		ctx := t.Context()
		record(ae.a.Start(ctx))
		_, err := ae.a.Send(ctx, adapter.Message{To: adapter.Target{Chat: "c"}, Text: "x"})
		record(err)
		// An upload URL is a credential (tempauth= in its query): dropped connections on the
		// fragments and on every status GET must not put it in an error or a log line.
		ae.srv.DropUploadConnections(40)
		_, err = ae.a.Upload(ctx, adapter.Attachment{Name: "big.bin", Data: randomBytes(5 << 20)})
		record(err)
		if err == nil {
			t.Errorf("Upload() through dropped connections succeeded; want an error")
		}
		// And with a session that works, but a client that cannot send to it.
		_, err = ae.a.Client().putFragment(ctx, "http://graph.test/upload/x?tempauth=tempauth-marker\x7f", []byte("x"), 0, 0, 1)
		record(err)
		// OneDrive personal upload URLs carry the credential in the path: a dropped
		// connection on the fragment and on the status GET must not show it either.
		ae.srv.DropUploadConnections(1)
		_, err = ae.a.Client().putFragment(ctx, "http://graph.test/upload/pathauth-marker?tempauth=tempauth-marker", []byte("x"), 0, 0, 1)
		if err == nil {
			t.Errorf("putFragment() through a dropped connection succeeded; want an error")
		}
		record(err)
		ae.srv.DropUploadConnections(20)
		_, err = ae.a.Client().sessionOffset(ctx, "http://graph.test/upload/pathauth-marker?tempauth=tempauth-marker", 0, 1)
		if err == nil {
			t.Errorf("sessionOffset() through dropped connections succeeded; want an error")
		}
		record(err)
		ae.srv.RevokeTokens()
		_, err = ae.a.Send(ctx, adapter.Message{To: adapter.Target{Chat: "c"}, Text: "x"})
		record(err)
		ae.srv.InjectThrottle(1, time.Minute)
		_, err = ae.a.Send(ctx, adapter.Message{To: adapter.Target{Chat: "c"}, Text: "x"})
		record(err)
		ae.srv.RevokeRefreshTokens()
		ae.srv.RevokeTokens()
		_, err = ae.a.Send(ctx, adapter.Message{To: adapter.Target{Chat: "c"}, Text: "x"})
		record(err)
		_, _, err = ae.a.HandleWebhook(ctx, &adapter.WebhookRequest{Method: "POST", Body: []byte(`{"value":[{"clientState":"nope"}]}`)})
		record(err)
		bad := ae.cfg
		bad.ClientSecret = "wrong-" + testSecret
		_, err = bad.ClientCredentials().Token(ctx)
		record(err)
		st, _ := ae.a.Status(ctx)
		stJSON := fmt.Sprintf("%+v", st)

		var secrets []string
		secrets = append(secrets, testSecret, clientState)
		en, _ := ae.store.Load(context.Background(), ae.a.Tokens().Key())
		if len(en.State) > 0 {
			secrets = append(secrets, string(en.State))
		}
		for _, r := range ae.srv.Requests() {
			if r.Auth != "" {
				secrets = append(secrets, r.Auth)
			}
		}
		for _, u := range ae.srv.UploadURLs() {
			pu, err := url.Parse(u)
			if err != nil || pu.Query().Get("tempauth") == "" {
				t.Fatalf("upload URL without tempauth: %v", err)
			}
			secrets = append(secrets, pu.Query().Get("tempauth"))
		}
		secrets = append(secrets, "tempauth-marker", "pathauth-marker")
		if len(ae.srv.UploadURLs()) == 0 {
			t.Fatalf("no upload session was created; the upload scenario did not run")
		}
		if len(secrets) < 5 {
			t.Fatalf("collected only %d secrets; the scenario did not run", len(secrets))
		}
		haystack := ae.log.String() + strings.Join(errs, "\n") + stJSON
		if len(errs) == 0 || !strings.Contains(ae.log.String(), "graph") {
			t.Fatalf("nothing was logged or returned: logs %q errors %q", ae.log.String(), errs)
		}
		for _, s := range secrets {
			if strings.Contains(haystack, s) {
				t.Errorf("secret with fingerprint %s appears in logs, errors or status", tokenmgr.Fingerprint(s))
			}
		}
		if strings.Contains(haystack, "wrong-") {
			t.Errorf("a rejected secret appears in an error")
		}
	})
}

func BenchmarkHandleWebhook(b *testing.B) {
	ae := newAdapter(b, nil)
	ctx := context.Background()
	if err := ae.a.Start(ctx); err != nil {
		b.Fatal(err)
	}
	msg := ae.srv.AddChatMessage("chat-1", otherUser, "Alice", "hello")
	ae.hook.take()
	ae.trustSub("s")
	body := fmt.Appendf(nil, `{"value":[{"id":"n1","subscriptionId":"s","subscriptionExpirationDateTime":"2030-01-01T00:00:00Z","clientState":%q,"changeType":"created","resource":"chats('chat-1')/messages('%s')","tenantId":"t","resourceData":{"@odata.type":"#Microsoft.Graph.chatMessage","@odata.id":"chats('chat-1')/messages('%s')","id":"%s"}}]}`,
		clientState, msg.ID, msg.ID, msg.ID)
	b.Run("notification+fetch", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			ae.a.fetched.forget() // a new notification each time: the message is fetched
			resp, evs, err := ae.a.HandleWebhook(ctx, &adapter.WebhookRequest{Method: "POST", Body: body})
			if err != nil || resp.Status != 202 || len(evs) != 1 {
				b.Fatalf("HandleWebhook = %v %d %v", resp.Status, len(evs), err)
			}
		}
	})
	b.Run("redelivered", func(b *testing.B) { // the fetch outcome is remembered
		b.ReportAllocs()
		for b.Loop() {
			resp, evs, err := ae.a.HandleWebhook(ctx, &adapter.WebhookRequest{Method: "POST", Body: body})
			if err != nil || resp.Status != 202 || len(evs) != 1 {
				b.Fatalf("HandleWebhook = %v %d %v", resp.Status, len(evs), err)
			}
		}
	})
	b.Run("parse+clientState", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			nb, err := ParseNotifications(body)
			if err != nil || !equalSecret(nb.Value[0].ClientState, clientState) {
				b.Fatal(err)
			}
			if _, err := ParseResource(nb.Value[0].Resource); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("validation", func(b *testing.B) {
		b.ReportAllocs()
		req := &adapter.WebhookRequest{Method: "POST", Query: map[string][]string{"validationToken": {"Validation: token"}}}
		for b.Loop() {
			resp, _, _ := ae.a.HandleWebhook(ctx, req)
			if !bytes.Equal(resp.Body, []byte("Validation: token")) {
				b.Fatal("bad validation answer")
			}
		}
	})
}
