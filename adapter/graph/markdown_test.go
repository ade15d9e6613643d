package graph

import (
	"strings"
	"testing"
	"testing/synctest"

	"github.com/seed-a64d9e1f/chatwire/adapter"
)

// TestSendMarkdown: Markdown to a Teams chat or a mail is sent as the HTML Teams and Outlook
// render, never as text with literal asterisks; raw HTML and dangerous links in the Markdown
// are not passed through.
func TestSendMarkdown(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ae := newAdapter(t, func(o *Options) { o.NotificationURL = "" })
		md := "**hello** _world_ `x<y`\n\n- a\n- b\n\n<script>alert(1)</script>\n\nand <img src=x onerror=alert(1)> [click](javascript:alert(1)) [ok](https://example.com/?a=1&b=2)"
		check := func(name, ct, content string) {
			t.Helper()
			if !strings.EqualFold(ct, "html") {
				t.Errorf("%s: content type %q; want html", name, ct)
			}
			for _, want := range []string{"<strong>hello</strong>", "<em>world</em>", "<code>x&lt;y</code>", "<li>a</li>", `<a href="https://example.com/?a=1&amp;b=2">ok</a>`} {
				if !strings.Contains(content, want) {
					t.Errorf("%s: content lacks %q:\n%s", name, want, content)
				}
			}
			for _, bad := range []string{"**", "<script", "javascript:", "onerror", "<img"} {
				if strings.Contains(content, bad) {
					t.Errorf("%s: content holds %q:\n%s", name, bad, content)
				}
			}
		}
		if _, err := ae.a.Send(t.Context(), adapter.Message{To: adapter.Target{Chat: "chat-1"}, Markdown: md}); err != nil {
			t.Fatal(err)
		}
		s := ae.srv.Sent()
		check("chat", s[len(s)-1].ContentType, s[len(s)-1].Content)

		if _, err := ae.a.Send(t.Context(), adapter.Message{To: adapter.Target{Chat: "chat-1"}, Markdown: "**look**", Mentions: []adapter.Mention{{ID: otherUser, Name: "Alice"}}}); err != nil {
			t.Fatal(err)
		}
		s = ae.srv.Sent()
		if last := s[len(s)-1]; last.ContentType != "html" || !strings.Contains(last.Content, `<at id="0">Alice</at>`) || !strings.Contains(last.Content, "<strong>look</strong>") {
			t.Errorf("markdown with a mention: %s %q", last.ContentType, last.Content)
		}

		if _, err := ae.a.Send(t.Context(), adapter.Message{To: adapter.Target{Email: "a@example.com"}, Subject: "s", Markdown: md}); err != nil {
			t.Fatal(err)
		}
		s = ae.srv.Sent()
		check("mail", s[len(s)-1].ContentType, s[len(s)-1].Content)
	})
}
