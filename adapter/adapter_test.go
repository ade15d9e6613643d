package adapter_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/seed-a64d9e1f/chatwire/adapter"
)

func TestEventJSON(t *testing.T) {
	ev := adapter.Event{
		ID: "wecom:1", Bot: "hr", Platform: adapter.PlatformWeCom, Kind: adapter.EventMessage,
		Chat:   adapter.Chat{ID: "bono", Type: adapter.ChatDirect},
		Sender: adapter.Sender{ID: "bono", Name: ""},
		Text:   "nihao",
		Time:   time.Unix(1738984503, 0).UTC(),
		Raw:    json.RawMessage(`{"MsgType":"text"}`),
	}
	b, err := json.Marshal(ev)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"id":"wecom:1","bot":"hr","platform":"wecom","kind":"message","chat":{"id":"bono","type":"direct"},` +
		`"sender":{"id":"bono","name":""},"text":"nihao","time":"2025-02-08T03:15:03Z","raw":{"MsgType":"text"}}`
	if string(b) != want {
		t.Errorf("json.Marshal(event) =\n%s\nwant\n%s", b, want)
	}
	var back adapter.Event
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back, ev) {
		t.Errorf("round trip = %+v; want %+v", back, ev)
	}
}

func TestMessageJSON(t *testing.T) {
	// The host's send body decodes straight into a Message.
	body := `{"to":{"channel":{"team":"T","channel":"C"}},"html":"<b>hi</b>","subject":"s","reply_to":"r",
		"card":{"type":"textcard","title":"t"},
		"attachments":[{"name":"a.pdf","content_type":"application/pdf","data":"aGVsbG8="}]}`
	var m adapter.Message
	if err := json.Unmarshal([]byte(body), &m); err != nil {
		t.Fatal(err)
	}
	if k, err := m.To.Kind(); k != adapter.TargetChannel || err != nil {
		t.Errorf("To.Kind() = %q, %v; want channel", k, err)
	}
	if m.HTML != "<b>hi</b>" || m.Subject != "s" || m.ReplyTo != "r" || string(m.Attachments[0].Data) != "hello" {
		t.Errorf("decoded %+v", m)
	}
	if !json.Valid(m.Card) || !strings.Contains(string(m.Card), "textcard") {
		t.Errorf("Card = %s", m.Card)
	}
}

func TestTargetKind(t *testing.T) {
	tests := []struct {
		name    string
		to      adapter.Target
		want    string
		wantErr bool
		str     string
	}{
		{"user", adapter.Target{User: "zhangsan"}, adapter.TargetUser, false, "user zhangsan"},
		{"users", adapter.Target{Users: []string{"a", "b"}}, adapter.TargetUsers, false, "users a|b"},
		{"party", adapter.Target{Party: "2"}, adapter.TargetParty, false, "party 2"},
		{"tag", adapter.Target{Tag: "1"}, adapter.TargetTag, false, "tag 1"},
		{"all", adapter.Target{All: true}, adapter.TargetAll, false, "all"},
		{"chat", adapter.Target{Chat: "c1"}, adapter.TargetChat, false, "chat c1"},
		{"channel", adapter.Target{Channel: &adapter.Channel{Team: "T", Channel: "C"}}, adapter.TargetChannel, false, "channel T/C"},
		{"email", adapter.Target{Email: "a@example.com"}, adapter.TargetEmail, false, "email a@example.com"},
		{"emails", adapter.Target{Emails: []string{"a@x", "b@x"}}, adapter.TargetEmails, false, "emails a@x,b@x"},
		{"none", adapter.Target{}, "", true, "invalid target"},
		{"two", adapter.Target{User: "a", Party: "2"}, "", true, "invalid target"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.to.Kind()
			if got != tc.want || (err != nil) != tc.wantErr {
				t.Errorf("Kind() = %q, %v; want %q, error %v", got, err, tc.want, tc.wantErr)
			}
			if err != nil && !errors.Is(err, adapter.ErrInvalidRequest) {
				t.Errorf("Kind() error %v is not ErrInvalidRequest", err)
			}
			if s := tc.to.String(); s != tc.str {
				t.Errorf("String() = %q; want %q", s, tc.str)
			}
		})
	}
}

func TestAttachment(t *testing.T) {
	tests := []struct {
		name     string
		a        adapter.Attachment
		wantType string
		wantSize int64
		wantErr  bool
	}{
		{"image data", adapter.Attachment{ContentType: "image/png", Data: []byte("12345678")}, adapter.AttachImage, 8, false},
		{"voice", adapter.Attachment{ContentType: "audio/amr", Data: []byte("x")}, adapter.AttachVoice, 1, false},
		{"video", adapter.Attachment{ContentType: "Video/MP4", Data: []byte("x")}, adapter.AttachVideo, 1, false},
		{"file body", adapter.Attachment{ContentType: "application/pdf", Body: strings.NewReader("abc"), Size: 3}, adapter.AttachFile, 3, false},
		{"explicit type", adapter.Attachment{Type: adapter.AttachFile, ContentType: "image/png", Data: []byte("x")}, adapter.AttachFile, 1, false},
		{"body without size", adapter.Attachment{Body: strings.NewReader("abc")}, adapter.AttachFile, 0, true},
		{"empty", adapter.Attachment{Name: "x"}, adapter.AttachFile, 0, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.a.AttachType(); got != tc.wantType {
				t.Errorf("AttachType() = %q; want %q", got, tc.wantType)
			}
			r, n, err := tc.a.Open()
			if (err != nil) != tc.wantErr {
				t.Fatalf("Open() error = %v; want error %v", err, tc.wantErr)
			}
			if err != nil {
				if !errors.Is(err, adapter.ErrInvalidRequest) {
					t.Errorf("Open() error %v is not ErrInvalidRequest", err)
				}
				return
			}
			b, _ := io.ReadAll(r)
			if n != tc.wantSize || int64(len(b)) != n {
				t.Errorf("Open() size %d, read %d; want %d", n, len(b), tc.wantSize)
			}
		})
	}
}

func TestWebhookRequest(t *testing.T) {
	r := httptest.NewRequest("POST", "/webhook/hr?msg_signature=a&timestamp=1", strings.NewReader("<xml/>"))
	r.Header.Set("Content-Type", "text/xml")
	req, err := adapter.NewWebhookRequest(r, 0)
	if err != nil {
		t.Fatal(err)
	}
	if req.Method != "POST" || req.Path != "/webhook/hr" || req.Query.Get("msg_signature") != "a" ||
		req.Header.Get("Content-Type") != "text/xml" || string(req.Body) != "<xml/>" {
		t.Errorf("NewWebhookRequest = %+v", req)
	}

	big := httptest.NewRequest("POST", "/webhook/hr", bytes.NewReader(make([]byte, 11)))
	if _, err := adapter.NewWebhookRequest(big, 10); !errors.Is(err, adapter.ErrTooLarge) {
		t.Errorf("NewWebhookRequest(11 bytes, limit 10) error = %v; want ErrTooLarge", err)
	}
	ok := httptest.NewRequest("POST", "/webhook/hr", bytes.NewReader(make([]byte, 10)))
	if _, err := adapter.NewWebhookRequest(ok, 10); err != nil {
		t.Errorf("NewWebhookRequest(10 bytes, limit 10) error = %v", err)
	}
}

func TestWebhookResponseWrite(t *testing.T) {
	tests := []struct {
		name       string
		resp       *adapter.WebhookResponse
		wantStatus int
		wantBody   string
	}{
		{"nil", nil, 200, ""},
		{"zero status", &adapter.WebhookResponse{Body: []byte("echo")}, 200, "echo"},
		{"forbidden", &adapter.WebhookResponse{Status: 403, Header: http.Header{"X-A": {"b"}}}, 403, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			if err := tc.resp.Write(rec); err != nil {
				t.Fatal(err)
			}
			if rec.Code != tc.wantStatus || rec.Body.String() != tc.wantBody {
				t.Errorf("Write: %d %q; want %d %q", rec.Code, rec.Body.String(), tc.wantStatus, tc.wantBody)
			}
			if tc.resp != nil && tc.resp.Header != nil && rec.Header().Get("X-A") != "b" {
				t.Errorf("Write dropped headers: %v", rec.Header())
			}
		})
	}
}
