package robot_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/seed-a64d9e1f/chatwire/adapter"
	"github.com/seed-a64d9e1f/chatwire/adapter/wecom/robot"
	"github.com/seed-a64d9e1f/chatwire/adapter/wecom/robot/robottest"
)

func setup(t *testing.T, s *robottest.Server, opts robot.Options) *robot.Robot {
	t.Helper()
	srv := httptest.NewServer(s)
	t.Cleanup(srv.Close)
	if opts.WebhookKey == "" {
		opts.WebhookKey = "KEY1"
	}
	opts.APIBase = srv.URL
	r, err := robot.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestSendEveryKind(t *testing.T) {
	s := &robottest.Server{}
	r := setup(t, s, robot.Options{})
	ctx := t.Context()
	long := strings.Repeat("字", 1000) // 3,000 bytes: two text messages
	msgs := []adapter.Message{
		{Text: long, Mentions: []adapter.Mention{{ID: "zhangsan"}, {ID: "@all"}}},
		{Markdown: "# title\n**bold**"},
		{Card: json.RawMessage(`{"type":"markdown_v2","markdown_v2":{"content":"| a | b |"}}`)},
		{Card: json.RawMessage(`{"type":"news","articles":[{"title":"t","url":"https://example.com"}]}`)},
		{Card: json.RawMessage(`{"type":"template_card","template_card":{"card_type":"text_notice","main_title":{"title":"x"}}}`)},
		{Attachments: []adapter.Attachment{
			{Name: "p.png", ContentType: "image/png", Data: []byte("\x89PNG\r\n\x1a\nimage")},
			{Name: "report 1.pdf", Data: []byte("%PDF-1.4 file body")},
			{Type: adapter.AttachVoice, Name: "v.amr", Data: []byte("#!AMR\nvoice")},
		}},
	}
	for _, m := range msgs {
		if _, err := r.Send(ctx, m); err != nil {
			t.Fatalf("Send(%+v): %v", m, err)
		}
	}
	var types []string
	for _, m := range s.Sent() {
		types = append(types, m.MsgType)
	}
	if want := "text text markdown markdown_v2 news template_card image file voice"; strings.Join(types, " ") != want {
		t.Errorf("sent %s; want %s", strings.Join(types, " "), want)
	}
	sent := s.Sent()
	if sent[0].Content+sent[1].Content != long || !bytes.Contains(sent[0].Body, []byte(`"mentioned_list":["zhangsan","@all"]`)) {
		t.Errorf("text parts %d+%d bytes, first body %s", len(sent[0].Content), len(sent[1].Content), sent[0].Body)
	}
	var file struct {
		File struct {
			MediaID string `json:"media_id"`
		} `json:"file"`
	}
	json.Unmarshal(sent[7].Body, &file)
	if m := s.Uploaded(file.File.MediaID); m.Filename != "report 1.pdf" || string(m.Data) != "%PDF-1.4 file body" {
		t.Errorf("uploaded file = %+v", m)
	}
}

func TestErrors(t *testing.T) {
	s := &robottest.Server{}
	bad := setup(t, s, robot.Options{WebhookKey: "wrong-key-value"})
	_, err := bad.Send(t.Context(), adapter.Message{Text: "x"})
	if !errors.Is(err, adapter.ErrUnauthorized) || adapter.Code(err) != "93000" || strings.Contains(err.Error(), "wrong-key-value") {
		t.Errorf("Send with a wrong key = %v; want unauthorized 93000 without the key", err)
	}
	r := setup(t, s, robot.Options{})
	if _, err := r.Send(t.Context(), adapter.Message{Attachments: []adapter.Attachment{{Type: adapter.AttachVideo, Data: []byte("v")}}}); !errors.Is(err, adapter.ErrInvalidRequest) {
		t.Errorf("video = %v; want invalid request", err)
	}
	if _, err := r.Send(t.Context(), adapter.Message{Card: json.RawMessage(`{"type":"textcard"}`)}); !errors.Is(err, adapter.ErrInvalidRequest) {
		t.Errorf("textcard = %v; want invalid request", err)
	}
	if _, _, err := r.HandleWebhook(t.Context(), &adapter.WebhookRequest{Method: "POST"}); !errors.Is(err, adapter.ErrNotFound) {
		t.Errorf("HandleWebhook = %v; want not found", err)
	}
}

// TestPacing: the robot keeps to its per-minute limit itself, so the platform's 45009 is
// never reached; a send that would wait longer than MaxWait is refused at once with a
// retry-after.
func TestPacing(t *testing.T) {
	s := &robottest.Server{PerMinute: 3}
	r := setup(t, s, robot.Options{PerMinute: 3, MaxWait: time.Millisecond})
	for i := 0; i < 3; i++ {
		if _, err := r.Send(t.Context(), adapter.Message{Text: "x"}); err != nil {
			t.Fatal(err)
		}
	}
	_, err := r.Send(t.Context(), adapter.Message{Text: "x"})
	if !errors.Is(err, adapter.ErrRateLimited) || adapter.RetryAfter(err) < 50*time.Second || adapter.Code(err) != "" {
		t.Errorf("4th send in a minute = %v (retry after %s); want rate limited by the adapter, about a minute", err, adapter.RetryAfter(err))
	}
	if n := len(s.Sent()); n != 3 {
		t.Errorf("emulator got %d messages; want 3", n)
	}
	// Without the adapter's pacing, the emulator answers 45009.
	fast := setup(t, s, robot.Options{PerMinute: 1000})
	_, err = fast.Send(t.Context(), adapter.Message{Text: "x"})
	if !errors.Is(err, adapter.ErrRateLimited) || adapter.Code(err) != "45009" {
		t.Errorf("unpaced 4th send = %v; want 45009", err)
	}
}
