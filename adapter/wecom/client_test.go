package wecom_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/seed-a64d9e1f/chatwire/adapter"
	"github.com/seed-a64d9e1f/chatwire/adapter/wecom"
	"github.com/seed-a64d9e1f/chatwire/adapter/wecom/wecomtest"
	"github.com/seed-a64d9e1f/chatwire/tokenmgr"
)

const (
	testCorp   = "ww0123456789abcdef"
	testSecret = "s3cr3t-corp-secret-value"
	testAgent  = 1000002
	testToken  = "cbT0ken"
	testAESKey = "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C"
)

func testConfig() wecom.Config {
	return wecom.Config{Bot: "hr", CorpID: testCorp, CorpSecret: testSecret, AgentID: testAgent,
		Token: testToken, EncodingAESKey: testAESKey, APIBase: "http://wecom.test"}
}

// setup returns a Client talking to a fresh emulator in process (usable in synctest
// bubbles), with the app registered.
func setup(t *testing.T, opts wecom.Options) (*wecom.Client, *wecomtest.Server) {
	t.Helper()
	srv := &wecomtest.Server{}
	srv.AddApp(testCorp, testSecret, testAgent)
	if opts.HTTPClient == nil {
		opts.HTTPClient = srv.Client()
	}
	c, err := wecom.New(testConfig(), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, srv
}

func text(to adapter.Target, s string) adapter.Message { return adapter.Message{To: to, Text: s} }

func TestNewConfigErrors(t *testing.T) {
	tests := []struct {
		name string
		cfg  wecom.Config
		want string
	}{
		{"no corp", wecom.Config{CorpSecret: "s", AgentID: 1}, "corp_id"},
		{"no secret", wecom.Config{CorpID: "c", AgentID: 1}, "corp_secret"},
		{"no agent", wecom.Config{CorpID: "c", CorpSecret: "s"}, "agent_id"},
		{"bad base", wecom.Config{CorpID: "c", CorpSecret: "s", AgentID: 1, APIBase: "ftp://x"}, "api_base"},
		{"short key", wecom.Config{CorpID: "c", CorpSecret: "s", AgentID: 1, Token: "t", EncodingAESKey: "abc"}, "encoding_aes_key"},
		{"no token", wecom.Config{CorpID: "c", CorpSecret: "s", AgentID: 1, EncodingAESKey: testAESKey}, "token"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := wecom.New(tc.cfg, wecom.Options{})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("New(%s) error = %v; want one naming %q", tc.name, err, tc.want)
			}
			if err != nil && (strings.Contains(err.Error(), "s3cr3t") || strings.Contains(err.Error(), testAESKey)) {
				t.Errorf("New error leaks a secret: %v", err)
			}
		})
	}
}

func TestSendText(t *testing.T) {
	t.Parallel()
	c, srv := setup(t, wecom.Options{})
	rc, err := c.Send(t.Context(), text(adapter.Target{User: "zhangsan"}, "hello"))
	if err != nil {
		t.Fatal(err)
	}
	sent := srv.Sent()
	if len(sent) != 1 {
		t.Fatalf("Sent() has %d messages; want 1", len(sent))
	}
	s := sent[0]
	if s.AgentID != testAgent || s.MsgType != "text" || s.ToUser != "zhangsan" || s.Content != "hello" || rc.ID != s.MsgID || rc.ID == "" {
		t.Errorf("sent %+v, receipt %+v", s, rc)
	}
	// agentid goes out as a JSON number (silenceper sends a string).
	if !strings.Contains(string(s.Body), `"agentid":1000002`) {
		t.Errorf("body %s lacks numeric agentid", s.Body)
	}
}

func TestSendTargets(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name                  string
		to                    adapter.Target
		user, party, tag, err string
	}{
		{"users", adapter.Target{Users: []string{"a", "b"}}, "a|b", "", "", ""},
		{"party", adapter.Target{Party: "2"}, "", "2", "", ""},
		{"tag", adapter.Target{Tag: "1"}, "", "", "1", ""},
		{"tags", adapter.Target{Tag: "1|4"}, "", "", "1|4", ""},
		{"all", adapter.Target{All: true}, "@all", "", "", ""},
		{"channel", adapter.Target{Channel: &adapter.Channel{Team: "t", Channel: "c"}}, "", "", "", "cannot send"},
		{"email", adapter.Target{Email: "a@b"}, "", "", "", "cannot send"},
		{"none", adapter.Target{}, "", "", "", "no target"},
		// Recipient injection: "@all" and "|" inside one id would widen the recipients.
		{"user @all", adapter.Target{User: "@all"}, "", "", "", "Target.All"},
		{"user @ALL", adapter.Target{User: "@ALL"}, "", "", "", "Target.All"},
		{"user with pipe", adapter.Target{User: "alice|bob"}, "", "", "", "Target.Users"},
		{"users element with pipe", adapter.Target{Users: []string{"a", "b|c"}}, "", "", "", "users[1]"},
		{"users element @all", adapter.Target{Users: []string{"a", "@all"}}, "", "", "", "Target.All"},
		{"users element empty", adapter.Target{Users: []string{"a", ""}}, "", "", "", "users[1] is empty"},
		{"users over 1000", adapter.Target{Users: make([]string, 1001)}, "", "", "", "at most 1000 users"},
		{"party @all", adapter.Target{Party: "@all"}, "", "", "", "Target.All"},
		{"tag @all", adapter.Target{Tag: "@all"}, "", "", "", "Target.All"},
		{"tag list @all", adapter.Target{Tag: "2|@all"}, "", "", "", "Target.All"},
		{"tag empty id", adapter.Target{Tag: "2||3"}, "", "", "", "empty id"},
		{"tag over 100", adapter.Target{Tag: strings.Repeat("1|", 100) + "1"}, "", "", "", "at most 100 tag"},
		{"tag 100", adapter.Target{Tag: strings.Repeat("1|", 99) + "1"}, "", "", strings.Repeat("1|", 99) + "1", ""},
		// Issue 11 item 15: a party id with "|" names several departments ("2|1" adds the
		// root, every member); ids with surrounding white space or control characters are
		// not what the caller meant (" @all" would slip past the @all check).
		{"party with pipe", adapter.Target{Party: "2|3"}, "", "", "", `party "2|3" contains "|"`},
		{"party with pipe to root", adapter.Target{Party: "5|1"}, "", "", "", `party "5|1" contains "|"`},
		{"party leading space", adapter.Target{Party: " 2"}, "", "", "", `party " 2" has white space around it`},
		{"party trailing newline", adapter.Target{Party: "2\n"}, "", "", "", `party "2\n" has white space around it`},
		{"party control char", adapter.Target{Party: "2\x003"}, "", "", "", `party "2\x003" contains a control character`},
		{"party spaced @all", adapter.Target{Party: " @all"}, "", "", "", `party " @all" has white space around it`},
		{"user leading space", adapter.Target{User: " zhangsan"}, "", "", "", `user " zhangsan" has white space around it`},
		{"user trailing newline", adapter.Target{User: "zhangsan\n"}, "", "", "", `user "zhangsan\n" has white space around it`},
		{"user inner newline", adapter.Target{User: "zhang\nsan"}, "", "", "", `user "zhang\nsan" contains a control character`},
		{"user spaced @all", adapter.Target{User: "@all "}, "", "", "", `user "@all " has white space around it`},
		{"users element tab", adapter.Target{Users: []string{"a", "\tb"}}, "", "", "", `users[1] "\tb" has white space around it`},
		{"tag element space", adapter.Target{Tag: "1| 4"}, "", "", "", `tag " 4" in "1| 4" has white space around it`},
		{"tag element newline @all", adapter.Target{Tag: "1|\n@all"}, "", "", "", `tag "\n@all" in "1|\n@all" has white space around it`},
		{"tag surrounding space", adapter.Target{Tag: " 1|4 "}, "", "", "", `has white space around it`},
		{"chat trailing space", adapter.Target{Chat: "chat1 "}, "", "", "", `chat "chat1 " has white space around it`},
		{"chat newline", adapter.Target{Chat: "\nchat1"}, "", "", "", `chat "\nchat1" has white space around it`},
		{"chat control char", adapter.Target{Chat: "ch\x7fat"}, "", "", "", `chat "ch\x7fat" contains a control character`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c, srv := setup(t, wecom.Options{})
			_, err := c.Send(t.Context(), text(tc.to, "hi"))
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) || !errors.Is(err, adapter.ErrInvalidRequest) {
					t.Fatalf("Send(%v) error = %v; want invalid request %q", tc.to, err, tc.err)
				}
				var ae *adapter.Error
				if errors.As(err, &ae) && ae.Platform != "wecom" {
					t.Errorf("error platform = %q; want wecom", ae.Platform)
				}
				if n := srv.Calls("gettoken") + srv.Calls("message/send") + srv.Calls("appchat/send"); n != 0 {
					t.Errorf("an invalid request reached WeCom (%d calls)", n)
				}
				return
			}

			if err != nil {
				t.Fatal(err)
			}
			s := srv.Sent()[0]
			if s.ToUser != tc.user || s.ToParty != tc.party || s.ToTag != tc.tag {
				t.Errorf("sent to user=%q party=%q tag=%q; want %q %q %q", s.ToUser, s.ToParty, s.ToTag, tc.user, tc.party, tc.tag)
			}
		})
	}
}

func TestSendInvalidRecipients(t *testing.T) {
	t.Parallel()
	c, srv := setup(t, wecom.Options{})
	srv.AddUsers("alice")
	srv.AddParties("2")
	rc, err := c.Send(t.Context(), text(adapter.Target{Users: []string{"Alice", "BOB"}}, "hi"))
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(rc.Invalid, ","); got != "user:bob" {
		t.Errorf("Receipt.Invalid = %v; want [user:bob] (lower-cased)", rc.Invalid)
	}
	if got := srv.Sent()[0].Delivered; len(got) != 1 || got[0] != "alice" {
		t.Errorf("Delivered = %v; want [alice]", got)
	}

	_, err = c.Send(t.Context(), text(adapter.Target{Users: []string{"Nobody"}}, "hi"))
	if !errors.Is(err, adapter.ErrInvalidRecipient) || adapter.Code(err) != "81013" {
		t.Fatalf("Send to nobody: error = %v; want invalid recipient 81013", err)
	}
	var apiErr *wecom.APIError
	if !errors.As(err, &apiErr) || strings.Join(apiErr.Invalid, ",") != "user:nobody" {
		t.Errorf("APIError = %+v; want Invalid [user:nobody]", apiErr)
	}
	if got := adapter.HTTPStatus(err); got != 400 {
		t.Errorf("HTTPStatus = %d; want 400", got)
	}
}

func TestSendLongText(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("字", 600) + "\n" + strings.Repeat("a", 1000) // 2801 bytes
	t.Run("refused", func(t *testing.T) {
		t.Parallel()
		c, srv := setup(t, wecom.Options{})
		_, err := c.Send(t.Context(), text(adapter.Target{User: "u"}, long))
		if !errors.Is(err, adapter.ErrTooLarge) {
			t.Fatalf("Send(2801 bytes) error = %v; want too large", err)
		}
		if srv.Calls("message/send") != 0 {
			t.Errorf("refused text reached WeCom")
		}
	})
	t.Run("split", func(t *testing.T) {
		t.Parallel()
		c, srv := setup(t, wecom.Options{SplitText: true})
		rc, err := c.Send(t.Context(), adapter.Message{To: adapter.Target{User: "u"}, Markdown: long})
		if err != nil {
			t.Fatal(err)
		}
		var joined strings.Builder
		for _, s := range srv.Sent() {
			if s.Truncated || len(s.Content) > wecom.MaxTextBytes {
				t.Errorf("part of %d bytes truncated=%v", len(s.Content), s.Truncated)
			}
			joined.WriteString(s.Content)
		}
		if joined.String() != long || len(rc.IDs) != 2 || rc.ID != rc.IDs[0] {
			t.Errorf("split into %d parts (receipt %d ids); joined equal = %v", len(srv.Sent()), len(rc.IDs), joined.String() == long)
		}
		if first := srv.Sent()[0].Content; !strings.HasSuffix(first, "\n") {
			t.Errorf("first part does not end at the line break: ...%q", first[len(first)-5:])
		}
	})
}

func TestSendContent(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		msg     adapter.Message
		msgType string
		wantErr error
	}{
		{"markdown mention", adapter.Message{Markdown: "**hi**", Mentions: []adapter.Mention{{ID: "zhangsan"}}}, "markdown", nil},
		// A mention id is a user id, sent inside "<@…>": checked like one (issue 11 item 15).
		{"markdown mention spaced", adapter.Message{Markdown: "hi", Mentions: []adapter.Mention{{ID: "zhangsan "}}}, "", adapter.ErrInvalidRequest},
		{"markdown mention newline", adapter.Message{Markdown: "hi", Mentions: []adapter.Mention{{ID: "a\nb"}}}, "", adapter.ErrInvalidRequest},
		{"markdown mention @all", adapter.Message{Markdown: "hi", Mentions: []adapter.Mention{{ID: "@all"}}}, "", adapter.ErrInvalidRequest},
		{"markdown mention pipe", adapter.Message{Markdown: "hi", Mentions: []adapter.Mention{{ID: "a|b"}}}, "", adapter.ErrInvalidRequest},
		{"markdown mention markup", adapter.Message{Markdown: "hi", Mentions: []adapter.Mention{{ID: "a><@b"}}}, "", adapter.ErrInvalidRequest},
		{"textcard nested", adapter.Message{Card: json.RawMessage(`{"type":"textcard","textcard":{"title":"t","description":"d","url":"https://x"}}`)}, "textcard", nil},
		{"textcard flat", adapter.Message{Card: json.RawMessage(`{"type":"textcard","title":"t","description":"d","url":"https://x","btntxt":"go"}`)}, "textcard", nil},
		{"textcard no description", adapter.Message{Card: json.RawMessage(`{"type":"textcard","title":"t","url":"https://x"}`)}, "", adapter.ErrInvalidRequest},
		{"news", adapter.Message{Card: json.RawMessage(`{"type":"news","articles":[{"title":"a","url":"https://x"}]}`)}, "news", nil},
		{"news empty", adapter.Message{Card: json.RawMessage(`{"type":"news","articles":[]}`)}, "", adapter.ErrInvalidRequest},
		{"template card", adapter.Message{Card: json.RawMessage(`{"type":"template_card","card_type":"text_notice","main_title":{"title":"x"}}`)}, "template_card", nil},
		{"template card bad type", adapter.Message{Card: json.RawMessage(`{"type":"template_card","card_type":"nope"}`)}, "", adapter.ErrInvalidRequest},
		{"unknown card", adapter.Message{Card: json.RawMessage(`{"type":"adaptive"}`)}, "", adapter.ErrInvalidRequest},
		{"video card", adapter.Message{Card: json.RawMessage(`{"type":"video","media_id":"m"}`)}, "", adapter.ErrInvalidRequest},
		{"card not object", adapter.Message{Card: json.RawMessage(`[1]`)}, "", adapter.ErrInvalidRequest},
		{"html", adapter.Message{HTML: "<b>x</b>"}, "", adapter.ErrInvalidRequest},
		{"two kinds", adapter.Message{Text: "a", Markdown: "b"}, "", adapter.ErrInvalidRequest},
		{"empty", adapter.Message{}, "", adapter.ErrInvalidRequest},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c, srv := setup(t, wecom.Options{})
			tc.msg.To = adapter.Target{User: "zhangsan"}
			_, err := c.Send(t.Context(), tc.msg)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Errorf("Send error = %v; want %v", err, tc.wantErr)
				}
				if strings.HasPrefix(tc.name, "markdown mention ") && (err == nil || !strings.Contains(err.Error(), "mentions[0]")) {
					t.Errorf("mention error = %v; want it to name mentions[0]", err)
				}
				if tc.name == "video card" && (err == nil || !strings.Contains(err.Error(), "Attachments")) {
					t.Errorf("video card error = %v; want it to point to Message.Attachments", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			s := srv.Sent()[0]
			if s.MsgType != tc.msgType {
				t.Errorf("msgtype = %q; want %q", s.MsgType, tc.msgType)
			}
			if tc.msgType == "markdown" && s.Content != "**hi** <@zhangsan>" {
				t.Errorf("markdown content = %q", s.Content)
			}
		})
	}
}

func TestSendAttachmentsAndMedia(t *testing.T) {
	t.Parallel()
	c, srv := setup(t, wecom.Options{})
	png := []byte("\x89PNG\r\n\x1a\n-fake-image")
	rc, err := c.Send(t.Context(), adapter.Message{To: adapter.Target{User: "u"}, Text: "see",
		Attachments: []adapter.Attachment{
			{Name: "a.png", ContentType: "image/png", Data: png},
			{Name: "r.pdf", ContentType: "application/pdf", Body: strings.NewReader("%PDF-1.4 ..."), Size: 12},
		}})
	if err != nil {
		t.Fatal(err)
	}
	sent := srv.Sent()
	if len(sent) != 3 || sent[1].MsgType != "image" || sent[2].MsgType != "file" || len(rc.IDs) != 3 {
		t.Fatalf("sent %d messages; want text, image, file", len(sent))
	}
	m := srv.Media(sent[1].MediaID)
	if m == nil || string(m.Data) != string(png) || m.Name != "a.png" || m.FileLength != fmt.Sprint(len(png)) {
		t.Fatalf("uploaded media = %+v", m)
	}
	got, err := c.Media(t.Context(), sent[1].MediaID)
	if err != nil || string(got.Data) != string(png) || got.ContentType != "image/png" || got.Name != "a.png" {
		t.Errorf("Media() = %+v, %v", got, err)
	}
	if _, err := c.Media(t.Context(), "nonexistent"); !errors.Is(err, adapter.ErrNotFound) || adapter.Code(err) != "40007" {
		t.Errorf("Media(unknown) error = %v; want not found 40007", err)
	}
	// Already uploaded: sent by ID without another upload.
	uploads := srv.Calls("media/upload")
	if _, err := c.Send(t.Context(), adapter.Message{To: adapter.Target{User: "u"}, Attachments: []adapter.Attachment{{Type: adapter.AttachImage, ID: sent[1].MediaID}}}); err != nil {
		t.Fatal(err)
	}
	if srv.Calls("media/upload") != uploads {
		t.Errorf("sending by media id uploaded again")
	}
}

// TestSendVoiceVideoMPNews: voice and video attachments are uploaded with their own media
// type and sent as voice and video messages (video with its title); mpnews cards go out as
// mpnews.
func TestSendVoiceVideoMPNews(t *testing.T) {
	t.Parallel()
	c, srv := setup(t, wecom.Options{})
	amr, mp4 := []byte("#!AMR\n-fake-voice"), []byte("\x00\x00\x00\x18ftypmp42-fake-video")
	rc, err := c.Send(t.Context(), adapter.Message{To: adapter.Target{User: "u"}, Attachments: []adapter.Attachment{
		{Name: "v.amr", ContentType: "audio/amr", Data: amr},
		{Name: "clip.mp4", ContentType: "video/mp4", Data: mp4, Title: "Demo", Description: "the demo"},
	}})
	if err != nil {
		t.Fatal(err)
	}
	sent := srv.Sent()
	if len(sent) != 2 || len(rc.IDs) != 2 {
		t.Fatalf("sent %d messages, receipt %+v; want voice and video", len(sent), rc)
	}
	for i, want := range []struct {
		typ  string
		data []byte
	}{{"voice", amr}, {"video", mp4}} {
		m := srv.Media(sent[i].MediaID)
		if sent[i].MsgType != want.typ || m == nil || m.Type != want.typ || string(m.Data) != string(want.data) {
			t.Errorf("message %d: msgtype %q, media %+v; want %s", i, sent[i].MsgType, m, want.typ)
		}
	}
	var body struct {
		Video struct {
			MediaID     string `json:"media_id"`
			Title       string `json:"title"`
			Description string `json:"description"`
		} `json:"video"`
	}
	if err := json.Unmarshal(sent[1].Body, &body); err != nil || body.Video.Title != "Demo" ||
		body.Video.Description != "the demo" || body.Video.MediaID != sent[1].MediaID {
		t.Errorf("video body %s; want media_id, title and description", sent[1].Body)
	}

	card := fmt.Sprintf(`{"type":"mpnews","mpnews":{"articles":[{"title":"t","thumb_media_id":%q,"content":"<p>hi</p>","digest":"d"}]}}`, sent[1].MediaID)
	if _, err := c.Send(t.Context(), adapter.Message{To: adapter.Target{User: "u"}, Card: json.RawMessage(card)}); err != nil {
		t.Fatal(err)
	}
	last := srv.Sent()[2]
	var mp struct {
		MPNews struct {
			Articles []struct {
				Title   string `json:"title"`
				Content string `json:"content"`
			} `json:"articles"`
		} `json:"mpnews"`
	}
	if err := json.Unmarshal(last.Body, &mp); err != nil || last.MsgType != "mpnews" || len(mp.MPNews.Articles) != 1 || mp.MPNews.Articles[0].Content != "<p>hi</p>" {
		t.Errorf("mpnews sent as %q: %s", last.MsgType, last.Body)
	}
	nine := `{"type":"mpnews","articles":[` + strings.Repeat(`{"title":"t"},`, 8) + `{"title":"t"}]}`
	if _, err := c.Send(t.Context(), adapter.Message{To: adapter.Target{User: "u"}, Card: json.RawMessage(nine)}); !errors.Is(err, adapter.ErrInvalidRequest) {
		t.Errorf("mpnews with 9 articles: error = %v; want invalid request", err)
	}
	if got := srv.Calls("message/send"); got != 3 {
		t.Errorf("message/send called %d times; want 3", got)
	}
}

// TestMediaTextAndJSON: media/get of a text or JSON file returns the file; only a JSON answer
// with a non-zero errcode is an error. File names survive quotes and non-ASCII characters.
func TestMediaTextAndJSON(t *testing.T) {
	t.Parallel()
	c, _ := setup(t, wecom.Options{})
	tests := []struct {
		name, contentType, data string
	}{
		{"notes.txt", "text/plain; charset=utf-8", "plain text, not JSON\n"},
		{"data.json", "application/json", `{"items":[1,2,3]}`},
		{"ok.json", "application/json", `{"errcode":0,"errmsg":"ok","x":1}`},
		{`报告 "v2"; final.txt`, "text/plain", "quoted name"},
	}
	for _, tc := range tests {
		up, err := c.Upload(t.Context(), adapter.Attachment{Name: tc.name, ContentType: tc.contentType, Data: []byte(tc.data)})
		if err != nil {
			t.Fatalf("Upload(%s): %v", tc.name, err)
		}
		got, err := c.Media(t.Context(), up.ID)
		if err != nil {
			t.Errorf("Media(%s) error = %v; want the file", tc.name, err)
			continue
		}
		if string(got.Data) != tc.data || got.Name != tc.name || got.ContentType != tc.contentType || got.Size != int64(len(tc.data)) {
			t.Errorf("Media(%s) = name %q type %q data %q", tc.name, got.Name, got.ContentType, got.Data)
		}
	}
}

func TestUploadLimits(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		a    adapter.Attachment
		want error
	}{
		{"five bytes", adapter.Attachment{Name: "x", Data: []byte("12345")}, adapter.ErrInvalidRequest},
		{"voice over 2MB", adapter.Attachment{Name: "v.amr", ContentType: "audio/amr", Body: strings.NewReader(""), Size: 2<<20 + 1}, adapter.ErrTooLarge},
		{"image over 10MB", adapter.Attachment{Name: "i.png", ContentType: "image/png", Body: strings.NewReader(""), Size: 10<<20 + 1}, adapter.ErrTooLarge},
		{"file over 20MB", adapter.Attachment{Name: "f", Body: strings.NewReader(""), Size: 20<<20 + 1}, adapter.ErrTooLarge},
		{"video over 10MB", adapter.Attachment{Name: "v.mp4", ContentType: "video/mp4", Body: strings.NewReader(""), Size: 10<<20 + 1}, adapter.ErrTooLarge},
		{"typed video over 10MB", adapter.Attachment{Type: adapter.AttachVideo, Name: "v", Data: make([]byte, 10<<20+1)}, adapter.ErrTooLarge},
		{"voice not amr", adapter.Attachment{Name: "v.mp3", ContentType: "audio/mpeg", Data: []byte("123456")}, adapter.ErrInvalidRequest},
		{"no content", adapter.Attachment{Name: "n"}, adapter.ErrInvalidRequest},
		{"short body", adapter.Attachment{Name: "s", Body: strings.NewReader("1234567"), Size: 10}, adapter.ErrInvalidRequest},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c, srv := setup(t, wecom.Options{})
			if _, err := c.Upload(t.Context(), tc.a); !errors.Is(err, tc.want) {
				t.Errorf("Upload error = %v; want %v", err, tc.want)
			}
			if srv.Calls("media/upload") != 0 {
				t.Errorf("refused upload reached WeCom")
			}
		})
	}
}

func TestRecall(t *testing.T) {
	t.Parallel()
	c, srv := setup(t, wecom.Options{})
	rc, err := c.Send(t.Context(), text(adapter.Target{User: "u"}, "oops"))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Recall(t.Context(), rc.ID); err != nil {
		t.Fatal(err)
	}
	if !srv.Sent()[0].Recalled {
		t.Errorf("message not recalled")
	}
	if err := c.Recall(t.Context(), rc.ID); err == nil || adapter.Code(err) != "43001" {
		t.Errorf("second Recall error = %v; want 43001", err)
	}
	if err := c.Recall(t.Context(), ""); !errors.Is(err, adapter.ErrInvalidRequest) {
		t.Errorf("Recall(\"\") error = %v", err)
	}
}

func TestRecallAfter24Hours(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c, _ := setup(t, wecom.Options{})
		rc, err := c.Send(t.Context(), text(adapter.Target{User: "u"}, "old"))
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(24 * time.Hour) // fake time
		if err := c.Recall(t.Context(), rc.ID); adapter.Code(err) != "43001" {
			t.Errorf("Recall after 24h error = %v; want 43001", err)
		}
	})
}

func TestAppChat(t *testing.T) {
	t.Parallel()
	c, srv := setup(t, wecom.Options{})
	id, err := c.CreateAppChat(t.Context(), "ops", "alice", []string{"alice", "bob"}, "opsroom")
	if err != nil || id != "opsroom" {
		t.Fatalf("CreateAppChat = %q, %v", id, err)
	}
	rc, err := c.Send(t.Context(), text(adapter.Target{Chat: id}, "hello room"))
	if err != nil {
		t.Fatal(err)
	}
	s := srv.Sent()[0]
	if s.Endpoint != "appchat/send" || s.ChatID != id || s.Content != "hello room" || rc.ID != "" {
		t.Errorf("sent %+v, receipt %+v", s, rc)
	}
	if strings.Contains(string(s.Body), "agentid") {
		t.Errorf("appchat body carries agentid: %s", s.Body)
	}
	if _, err := c.Send(t.Context(), text(adapter.Target{Chat: "nosuchchat"}, "x")); !errors.Is(err, adapter.ErrNotFound) || adapter.Code(err) != "86003" {
		t.Errorf("Send to unknown chat error = %v; want not found 86003", err)
	}
	if _, err := c.Send(t.Context(), text(adapter.Target{Chat: "bad-id!"}, "x")); adapter.Code(err) != "86001" {
		t.Errorf("Send to malformed chat id error = %v; want 86001", err)
	}
	if _, err := c.CreateAppChat(t.Context(), "x", "a", []string{"a"}, ""); !errors.Is(err, adapter.ErrInvalidRequest) {
		t.Errorf("CreateAppChat(1 member) error = %v", err)
	}
}

// TestRevokeMidStream: WeCom revokes the token early; every send still succeeds and exactly
// one extra gettoken is made (T5: compare-invalidate, refresh once, retry once).
func TestRevokeMidStream(t *testing.T) {
	for _, code := range []int{42001, 40014} {
		t.Run(fmt.Sprint(code), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				c, srv := setup(t, wecom.Options{})
				for i := range 20 {
					if i == 10 {
						srv.RevokeTokens(code)
					}
					if _, err := c.Send(t.Context(), text(adapter.Target{User: "u"}, fmt.Sprint(i))); err != nil {
						t.Fatalf("send %d: %v", i, err)
					}
					time.Sleep(time.Second)
				}
				if got := srv.TokenRequests(); got != 2 {
					t.Errorf("TokenRequests() = %d; want 2 (initial + one after revocation)", got)
				}
				if got := len(srv.Sent()); got != 20 {
					t.Errorf("%d messages delivered; want 20", got)
				}
				if got := srv.Calls("message/send"); got != 21 {
					t.Errorf("message/send called %d times; want 21 (one rejected)", got)
				}
			})
		})
	}
}

// TestConcurrentAfterRevocation: 200 concurrent sends with a revoked token cause one refresh.
func TestConcurrentAfterRevocation(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c, srv := setup(t, wecom.Options{})
		if _, err := c.Send(t.Context(), text(adapter.Target{User: "u"}, "warm up")); err != nil {
			t.Fatal(err)
		}
		srv.RevokeTokens(42001)
		var wg sync.WaitGroup
		errs := make(chan error, 200)
		for i := range 200 {
			wg.Go(func() {
				_, err := c.Send(t.Context(), text(adapter.Target{User: fmt.Sprint("u", i)}, "hi"))
				errs <- err
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
		if got := srv.TokenRequests(); got != 2 {
			t.Errorf("TokenRequests() = %d; want 2 (one refresh for 200 senders)", got)
		}
		if got := len(srv.Sent()); got != 201 {
			t.Errorf("%d delivered; want 201", got)
		}
	})
}

// TestTokenIdle: a bot idle for hours between sends never fails a send, whichever
// expires_in WeCom reports for a repeated gettoken (unverified: remaining or full lifetime).
func TestTokenIdle(t *testing.T) {
	for _, remaining := range []bool{true, false} {
		t.Run(fmt.Sprint("remaining=", remaining), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				srv := &wecomtest.Server{ReportRemaining: remaining}
				c, err := wecom.New(testConfig(), wecom.Options{HTTPClient: srv.Client()})
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				for i := range 6 {
					if _, err := c.Send(t.Context(), text(adapter.Target{User: "u"}, "x")); err != nil {
						t.Fatalf("send %d: %v", i, err)
					}
					time.Sleep(2*time.Hour + time.Duration(i)*7*time.Minute)
				}
				rejected := srv.Calls("message/send") - len(srv.Sent())
				t.Logf("remaining=%v: %d gettoken calls, %d tokens, %d sends rejected and retried", remaining,
					srv.TokenRequests(), srv.TokensIssued(), rejected)
				if rejected != 0 {
					t.Errorf("%d sends rejected; want 0 (a refetched token keeps its first expiry)", rejected)
				}
			})
		})
	}
}

// TestTokenReissuedAfterExpiry: WeCom hands back an expired token's value with a fresh
// expires_in. The bot must take the new lifetime, not keep the value's first expiry (which is
// in the past, so tokenmgr would refuse the token at every refresh).
func TestTokenReissuedAfterExpiry(t *testing.T) {
	for _, remaining := range []bool{false, true} {
		t.Run(fmt.Sprint("remaining=", remaining), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				srv := &wecomtest.Server{ReissueExpired: true, ReportRemaining: remaining}
				c, err := wecom.New(testConfig(), wecom.Options{HTTPClient: srv.Client()})
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				start := time.Now()
				for i := range 5 {
					if _, err := c.Send(t.Context(), text(adapter.Target{User: "u"}, "x")); err != nil {
						t.Fatalf("send %d (after %v): %v", i, time.Since(start), err)
					}
					time.Sleep(2*time.Hour + 30*time.Minute)
				}
				if got := srv.TokensIssued(); got != 1 {
					t.Errorf("TokensIssued() = %d; want 1 (the same value all along)", got)
				}
				if got := srv.TokenRequests(); got > 15 {
					t.Errorf("TokenRequests() = %d over 5 lifetimes; want a few per lifetime", got)
				}
			})
		})
	}
}

// TestRateLimited: 45009 comes back at once as rate_limited with retry-after ≥ 60 s, with
// no retry.
func TestRateLimited(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c, srv := setup(t, wecom.Options{})
		if _, err := c.Send(t.Context(), text(adapter.Target{User: "u"}, "x")); err != nil {
			t.Fatal(err)
		}
		srv.LimitCalls("message/send", 0)
		start := time.Now()
		_, err := c.Send(t.Context(), text(adapter.Target{User: "u"}, "y"))
		if !errors.Is(err, adapter.ErrRateLimited) || !errors.Is(err, tokenmgr.ErrTemporary) {
			t.Fatalf("error = %v; want rate limited", err)
		}
		if ra := adapter.RetryAfter(err); ra < 60*time.Second {
			t.Errorf("RetryAfter = %v; want ≥ 60s", ra)
		}
		if got := adapter.HTTPStatus(err); got != http.StatusTooManyRequests {
			t.Errorf("HTTPStatus = %d; want 429", got)
		}
		if adapter.Code(err) != "45009" {
			t.Errorf("Code = %q; want 45009", adapter.Code(err))
		}
		if got := srv.Calls("message/send"); got != 2 {
			t.Errorf("message/send called %d times; want 2 (no retry on 45009)", got)
		}
		if d := time.Since(start); d != 0 {
			t.Errorf("Send waited %v on 45009; want an immediate return", d)
		}
	})
}

func TestBusyRetries(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c, srv := setup(t, wecom.Options{})
		srv.Fail("message/send", -1, 2)
		start := time.Now()
		if _, err := c.Send(t.Context(), text(adapter.Target{User: "u"}, "x")); err != nil {
			t.Fatalf("Send after two -1: %v", err)
		}
		if got := srv.Calls("message/send"); got != 3 {
			t.Errorf("message/send called %d times; want 3", got)
		}
		if d := time.Since(start); d <= 0 || d > 2*time.Second {
			t.Errorf("waited %v; want a short backoff", d)
		}

		srv.Fail("message/send", -1, -1)
		_, err := c.Send(t.Context(), text(adapter.Target{User: "u"}, "x"))
		if !errors.Is(err, adapter.ErrUnavailable) || adapter.Code(err) != "-1" {
			t.Errorf("error = %v; want unavailable -1", err)
		}
		if got := srv.Calls("message/send"); got != 3+4 {
			t.Errorf("message/send called %d times; want 7 (1 + 3 retries)", got-3)
		}
		srv.ClearFailures()

		// 45033: a short backoff (1 s, jittered down to half), then success.
		srv.Fail("message/send", 45033, 1)
		calls, start := srv.Calls("message/send"), time.Now()
		if _, err := c.Send(t.Context(), text(adapter.Target{User: "u"}, "x")); err != nil {
			t.Errorf("Send after one 45033: %v", err)
		}
		if got := srv.Calls("message/send") - calls; got != 2 {
			t.Errorf("after one 45033: message/send called %d times; want 2", got)
		}
		if d := time.Since(start); d < 500*time.Millisecond || d > time.Second {
			t.Errorf("after one 45033: waited %v; want 0.5 s to 1 s", d)
		}
		// 45033 every time: 2 retries (1 s, 2 s, each jittered down to half), then rate limited.
		srv.Fail("message/send", 45033, -1)
		calls, start = srv.Calls("message/send"), time.Now()
		_, err = c.Send(t.Context(), text(adapter.Target{User: "u"}, "x"))
		if !errors.Is(err, adapter.ErrRateLimited) || adapter.Code(err) != "45033" || adapter.RetryAfter(err) != time.Second {
			t.Errorf("persistent 45033: error = %v (retry after %v); want rate limited 45033, 1 s", err, adapter.RetryAfter(err))
		}
		if got := srv.Calls("message/send") - calls; got != 3 {
			t.Errorf("persistent 45033: message/send called %d times; want 3 (1 + 2 retries)", got)
		}
		if d := time.Since(start); d < 1500*time.Millisecond || d > 3*time.Second {
			t.Errorf("persistent 45033: waited %v; want 1.5 s to 3 s", d)
		}
		srv.ClearFailures()
		// A deadline shorter than the backoff: no wait, the error at once.
		srv.Fail("message/send", -1, 1)
		ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
		defer cancel()
		if _, err := c.Send(ctx, text(adapter.Target{User: "u"}, "x")); adapter.Code(err) != "-1" {
			t.Errorf("Send with short deadline error = %v; want -1 at once", err)
		}
	})
}

func TestCredentialErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, corp, secret, code string
	}{
		{"wrong secret", testCorp, "WRONG-s3cret-xyz", "40001"},
		{"wrong corp", "wwother", testSecret, "40013"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := &wecomtest.Server{}
			srv.AddApp(testCorp, testSecret, testAgent)
			cfg := testConfig()
			cfg.CorpID, cfg.CorpSecret = tc.corp, tc.secret
			c, err := wecom.New(cfg, wecom.Options{HTTPClient: srv.Client()})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			_, err = c.Send(t.Context(), text(adapter.Target{User: "u"}, "x"))
			if !errors.Is(err, adapter.ErrUnauthorized) || !errors.Is(err, tokenmgr.ErrCredentials) || adapter.Code(err) != tc.code {
				t.Fatalf("error = %v; want unauthorized %s", err, tc.code)
			}
			var apiErr *wecom.APIError
			if !errors.As(err, &apiErr) || apiErr.Hint() == "" || !strings.Contains(err.Error(), apiErr.Hint()) {
				t.Errorf("error %q lacks the plain hint", err)
			}
			if strings.Contains(err.Error(), tc.secret) {
				t.Errorf("error leaks the secret: %v", err)
			}
			st, _ := c.Status(t.Context())
			if st.Healthy || !strings.Contains(st.Detail, tc.code) {
				t.Errorf("Status = %+v; want unhealthy naming %s", st, tc.code)
			}
		})
	}
}

func TestInjectedGetTokenErrors(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c, srv := setup(t, wecom.Options{})
		srv.Fail("gettoken", 60020, 1)
		_, err := c.Send(t.Context(), text(adapter.Target{User: "u"}, "x"))
		if !errors.Is(err, adapter.ErrUnauthorized) || adapter.Code(err) != "60020" || !strings.Contains(err.Error(), "trusted IP") {
			t.Errorf("60020 error = %v", err)
		}
	})
}

// TestTwoBotsTwoBases: two Clients with different API bases in one process each reach their
// own server (silenceper's URI modifier and HTTP client are process-global; ours are not).
func TestTwoBotsTwoBases(t *testing.T) {
	t.Parallel()
	var srvs [2]*wecomtest.Server
	var clients [2]*wecom.Client
	for i := range srvs {
		srvs[i] = &wecomtest.Server{}
		hs := httptest.NewServer(srvs[i])
		t.Cleanup(hs.Close)
		cfg := testConfig()
		cfg.APIBase = hs.URL + "/cgi-bin/"
		cfg.AgentID = int64(1000 + i)
		c, err := wecom.New(cfg, wecom.Options{HTTPClient: hs.Client()})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		clients[i] = c
	}
	for i, c := range clients {
		if _, err := c.Send(t.Context(), text(adapter.Target{User: "u"}, fmt.Sprint("bot", i))); err != nil {
			t.Fatal(err)
		}
	}
	for i, srv := range srvs {
		sent := srv.Sent()
		if len(sent) != 1 || sent[0].Content != fmt.Sprint("bot", i) || sent[0].AgentID != int64(1000+i) {
			t.Errorf("server %d got %+v", i, sent)
		}
	}
}

func TestStatus(t *testing.T) {
	t.Parallel()
	c, _ := setup(t, wecom.Options{})
	if _, err := c.Send(t.Context(), text(adapter.Target{User: "u"}, "x")); err != nil {
		t.Fatal(err)
	}
	st, err := c.Status(t.Context())
	if err != nil || !st.Healthy || st.Bot != "hr" || st.Platform != "wecom" || len(st.Tokens) != 1 {
		t.Fatalf("Status = %+v, %v", st, err)
	}
	ts := st.Tokens[0]
	if ts.Key != "wecom/"+testCorp+"/1000002" || ts.State != "fresh" || ts.Fingerprint == "" {
		t.Errorf("token status = %+v", ts)
	}
	c.Close()
	if st, _ := c.Status(t.Context()); st.Healthy {
		t.Errorf("Status after Close is healthy")
	}
}

// TestRetryStopsWhenCancelled: a cancelled ctx ends the -1 backoff of a send and of gettoken at
// once, with the platform's error.
func TestRetryStopsWhenCancelled(t *testing.T) {
	for _, endpoint := range []string{"message/send", "gettoken"} {
		t.Run(endpoint, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				c, srv := setup(t, wecom.Options{})
				srv.Fail(endpoint, -1, -1)
				ctx, cancel := context.WithCancel(t.Context())
				go func() { time.Sleep(100 * time.Millisecond); cancel() }()
				start := time.Now()
				_, err := c.Send(ctx, text(adapter.Target{User: "u"}, "x"))
				if err == nil {
					t.Fatal("Send succeeded against a busy server")
				}
				if got := time.Since(start); got != 100*time.Millisecond {
					t.Errorf("Send returned %v after the start; want 100ms (when ctx was cancelled)", got)
				}
				if got := srv.Calls(endpoint); got != 1 {
					t.Errorf("%s called %d times; want 1 (cancelled during the first backoff)", endpoint, got)
				}
			})
		})
	}
}
