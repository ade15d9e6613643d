package graph

import (
	"errors"
	"strings"
	"testing"
	"testing/synctest"

	"github.com/seed-a64d9e1f/chatwire/adapter"
)

// TestGraphIDsValidated: user, chat, channel, reply and mention ids go into URLs and OData
// literals; one with a quote, a slash, surrounding or inner whitespace, or a control
// character is refused with invalid_request before any Graph call.
func TestGraphIDsValidated(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ae := newAdapter(t, nil)
		if err := ae.a.Start(t.Context()); err != nil {
			t.Fatal(err)
		}
		ch := func(team, channel string) *adapter.Channel { return &adapter.Channel{Team: team, Channel: channel} }
		for _, tc := range []struct {
			name string
			msg  adapter.Message
		}{
			{"user with quote", adapter.Message{To: adapter.Target{User: "o'brien@contoso.com"}, Text: "x"}},
			{"user OData injection", adapter.Message{To: adapter.Target{User: "x')/manager/('y"}, Text: "x"}},
			{"user leading space", adapter.Message{To: adapter.Target{User: " alice"}, Text: "x"}},
			{"user trailing newline", adapter.Message{To: adapter.Target{User: "alice\n"}, Text: "x"}},
			{"user inner space", adapter.Message{To: adapter.Target{User: "al ice"}, Text: "x"}},
			{"user slash", adapter.Message{To: adapter.Target{User: "alice/manager"}, Text: "x"}},
			{"user query", adapter.Message{To: adapter.Target{User: "alice?$select=id"}, Text: "x"}},
			{"user control", adapter.Message{To: adapter.Target{User: "ali\x00ce"}, Text: "x"}},
			{"user too long", adapter.Message{To: adapter.Target{User: strings.Repeat("a", 300)}, Text: "x"}},
			{"chat trailing space", adapter.Message{To: adapter.Target{Chat: "19:abc@thread.v2 "}, Text: "x"}},
			{"chat newline", adapter.Message{To: adapter.Target{Chat: "19:abc@thread.v2\r\n"}, Text: "x"}},
			{"chat quote", adapter.Message{To: adapter.Target{Chat: "19:a'b@thread.v2"}, Text: "x"}},
			{"chat slash", adapter.Message{To: adapter.Target{Chat: "chat-1/messages/1"}, Text: "x"}},
			{"team space", adapter.Message{To: adapter.Target{Channel: ch(" T", "C")}, Text: "x"}},
			{"channel quote", adapter.Message{To: adapter.Target{Channel: ch("T", "C'")}, Text: "x"}},
			{"reply newline", adapter.Message{To: adapter.Target{Channel: ch("T", "C")}, ReplyTo: "1\n", Text: "x"}},
			{"mention quote", adapter.Message{To: adapter.Target{Chat: "chat-1"}, Text: "x",
				Mentions: []adapter.Mention{{ID: "bob'", Name: "Bob"}}}},
		} {
			before := len(ae.srv.Requests())
			_, err := ae.a.Send(t.Context(), tc.msg)
			if !errors.Is(err, adapter.ErrInvalidRequest) {
				t.Errorf("%s: Send() error = %v; want invalid_request", tc.name, err)
			} else if !strings.Contains(err.Error(), "id") {
				t.Errorf("%s: error %q does not say which id is wrong", tc.name, err)
			}
			if n := len(ae.srv.Requests()) - before; n != 0 {
				t.Errorf("%s: %d Graph requests made; want none", tc.name, n)
			}
		}
		// Well-formed ids still go through: an object id, a UPN, a guest UPN, an emulator id.
		for _, u := range []string{"6e7b768e-07e2-4810-8459-485f84f8f204", "alice@contoso.com", "bob_fabrikam.com#EXT#@contoso.onmicrosoft.com", otherUser} {
			if _, err := ae.a.Send(t.Context(), adapter.Message{To: adapter.Target{User: u}, Text: "hi"}); err != nil {
				t.Errorf("Send() to user %q: %v", u, err)
			}
		}
		for _, c := range []string{"chat-1", "19:abc_DEF-1@thread.v2", "19:a1b2_c3d4@unq.gbl.spaces"} {
			if err := validChatID("chat", c); err != nil {
				t.Errorf("validChatID(%q) = %v", c, err)
			}
		}
	})
}

// TestGraphOptionIDsValidated: the configured mailbox user and chats are checked at New.
func TestGraphOptionIDsValidated(t *testing.T) {
	e := newEnv(t)
	for _, o := range []Options{
		{Config: e.cfg, User: "bot@contoso.com "},
		{Config: e.cfg, User: "o'brien@contoso.com"},
		{Config: e.cfg, Chats: []string{"chat-1", "chat 2"}},
		{Config: e.cfg, Chats: []string{"chat-1\n"}},
	} {
		if _, err := New(o); !errors.Is(err, adapter.ErrInvalidRequest) || !strings.Contains(err.Error(), "id") {
			t.Errorf("New(User %q, Chats %q) error = %v; want invalid_request naming the id", o.User, o.Chats, err)
		}
	}
}
