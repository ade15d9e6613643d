package plugin

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"reflect"
	"testing"
	"time"

	"github.com/seed-a64d9e1f/chatwire/adapter"
	"github.com/seed-a64d9e1f/chatwire/tokenmgr"
)

// setup serves fake as bot "hr" over an in-process gRPC connection and returns the client,
// which makes its calls (if any) on the wire.
func setup(t *testing.T, fake *fakeAdapter) *Client {
	t.Helper()
	return setupHopCalls(t, fake, hopWire, false)
}

// forHops runs test once per hop (the wire, the Calls stream, unary RPCs).
func forHops(t *testing.T, test func(t *testing.T, h hop)) {
	for _, h := range hops {
		t.Run(string(h), func(t *testing.T) { test(t, h) })
	}
}

func TestSendRoundTrip(t *testing.T) { forHops(t, testSendRoundTrip) }

func testSendRoundTrip(t *testing.T, h hop) {
	var got adapter.Message
	fake := &fakeAdapter{SendFn: func(ctx context.Context, msg adapter.Message) (adapter.Receipt, error) {
		got = msg
		if _, ok := ctx.Deadline(); !ok {
			t.Error("plugin side ctx has no deadline; want the caller's")
		}
		return adapter.Receipt{ID: "m1", Invalid: []string{"user:x"}, IDs: []string{"m1", "m2"}}, nil
	}}
	c := setupHop(t, fake, h)
	msg := adapter.Message{
		To:          adapter.Target{Channel: &adapter.Channel{Team: "T", Channel: "C"}},
		Markdown:    "**hi**",
		Card:        json.RawMessage(`{"type":"textcard"}`),
		Subject:     "s",
		ReplyTo:     "r",
		Mentions:    []adapter.Mention{{ID: "u1", Name: "U"}},
		Attachments: []adapter.Attachment{{Name: "a.txt", ContentType: "text/plain", Data: []byte("hello"), Size: 5}},
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	r, err := c.Bot("hr").Send(ctx, msg)
	if err != nil {
		t.Fatal(err)
	}
	if want := (adapter.Receipt{ID: "m1", Invalid: []string{"user:x"}, IDs: []string{"m1", "m2"}}); !reflect.DeepEqual(r, want) {
		t.Errorf("Send = %+v; want %+v", r, want)
	}
	if !reflect.DeepEqual(got, msg) {
		t.Errorf("plugin got %+v; want %+v", got, msg)
	}
}

func TestSendErrorKeepsKind(t *testing.T) { forHops(t, testSendErrorKeepsKind) }

func testSendErrorKeepsKind(t *testing.T, h hop) {
	fake := &fakeAdapter{SendFn: func(ctx context.Context, msg adapter.Message) (adapter.Receipt, error) {
		return adapter.Receipt{}, &adapter.Error{Kind: adapter.KindRateLimited, Platform: "wecom", Code: "45009", RetryAfter: time.Minute, Message: "api freq out of limit"}
	}}
	c := setupHop(t, fake, h)
	_, err := c.Bot("hr").Send(t.Context(), adapter.Message{To: adapter.Target{User: "u"}, Text: "x"})
	if !errors.Is(err, adapter.ErrRateLimited) || adapter.Code(err) != "45009" || adapter.RetryAfter(err) != time.Minute {
		t.Errorf("Send error = %v (code %q, retry %v); want rate limited 45009 after 1m", err, adapter.Code(err), adapter.RetryAfter(err))
	}
}

func TestUnknownBot(t *testing.T) { forHops(t, testUnknownBot) }

func testUnknownBot(t *testing.T, h hop) {
	c := setupHop(t, &fakeAdapter{}, h)
	_, err := c.Bot("nobody").Send(t.Context(), adapter.Message{})
	if !errors.Is(err, adapter.ErrNotFound) {
		t.Errorf("Send to unknown bot = %v; want not found", err)
	}
}

func TestConfigureFailureNamesBot(t *testing.T) {
	c := setup(t, &fakeAdapter{})
	_, err := c.Configure(t.Context(), StoreConfig{}, []BotConfig{{Name: "broken", Platform: "wecom"}})
	if !errors.Is(err, adapter.ErrUnauthorized) || adapter.Code(err) != "40001" {
		t.Fatalf("Configure = %v; want unauthorized 40001", err)
	}
	// The previous bots are kept.
	if _, err := c.Bot("hr").Status(t.Context()); err != nil {
		t.Errorf("Status after failed Configure = %v; want nil", err)
	}
}

func TestHandleWebhookRoundTrip(t *testing.T) { forHops(t, testHandleWebhookRoundTrip) }

func testHandleWebhookRoundTrip(t *testing.T, h hop) {
	when := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	events := []adapter.Event{{ID: "wecom:1", Bot: "hr", Platform: "wecom", Kind: "message",
		Chat: adapter.Chat{ID: "u", Type: "direct"}, Sender: adapter.Sender{ID: "u", Name: "U"}, Text: "hi",
		Attachments: []adapter.Attachment{{Type: "image", URL: "http://x/y"}}, Time: when, Raw: json.RawMessage(`{"MsgId":"1"}`)}}
	var gotReq *adapter.WebhookRequest
	fake := &fakeAdapter{WebhookFn: func(ctx context.Context, req *adapter.WebhookRequest) (*adapter.WebhookResponse, []adapter.Event, error) {
		gotReq = req
		if string(req.Body) == "bad" {
			return &adapter.WebhookResponse{Status: 401, Body: []byte("bad signature")}, nil,
				&adapter.Error{Kind: adapter.KindUnauthorized, Message: "signature mismatch"}
		}
		return &adapter.WebhookResponse{Status: 200, Header: http.Header{"Content-Type": {"text/plain"}}, Body: []byte("success")}, events, nil
	}}
	c := setupHop(t, fake, h)
	req := &adapter.WebhookRequest{Method: "POST", Path: "/webhook/hr", Query: map[string][]string{"msg_signature": {"s"}, "a": {"1", "2"}},
		Header: http.Header{"Content-Type": {"text/xml"}, "X-Forwarded-For": {"10.0.0.1", "10.0.0.2", "10.0.0.3"}},
		Body:   []byte("<xml/>"), RemoteAddr: "1.2.3.4:5"}
	resp, evs, err := c.Bot("hr").HandleWebhook(t.Context(), req)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(gotReq, req) {
		t.Errorf("plugin got %+v; want %+v", gotReq, req)
	}
	if resp.Status != 200 || string(resp.Body) != "success" || resp.Header.Get("Content-Type") != "text/plain" {
		t.Errorf("response = %+v", resp)
	}
	if !reflect.DeepEqual(evs, events) {
		t.Errorf("events = %+v; want %+v", evs, events)
	}

	resp, evs, err = c.Bot("hr").HandleWebhook(t.Context(), &adapter.WebhookRequest{Method: "POST", Body: []byte("bad")})
	if !errors.Is(err, adapter.ErrUnauthorized) || resp == nil || resp.Status != 401 || len(evs) != 0 {
		t.Errorf("refused webhook = %+v, %v, %v; want 401 response and unauthorized error", resp, evs, err)
	}
}

func TestStatusUploadPoll(t *testing.T) {
	exp := time.Now().Add(time.Hour).Truncate(time.Microsecond)
	fake := &fakeAdapter{
		StatusFn: func(ctx context.Context) (adapter.Status, error) {
			return adapter.Status{Bot: "hr", Platform: "wecom", Healthy: true,
				Tokens: []tokenmgr.Status{{Key: "wecom/c/1", State: "fresh", ExpiresAt: exp, Generation: 3, Consecutive: 1}}}, nil
		},
		UploadFn: func(ctx context.Context, a adapter.Attachment) (adapter.Attachment, error) {
			a.ID, a.Data = "media-1", nil
			return a, nil
		},
		PollFn: func(ctx context.Context) ([]adapter.Event, error) {
			return []adapter.Event{{ID: "e1"}}, nil
		},
	}
	c := setup(t, fake)
	st, err := c.Bot("hr").Status(t.Context())
	if err != nil || !st.Healthy || len(st.Tokens) != 1 || !st.Tokens[0].ExpiresAt.Equal(exp) || st.Tokens[0].Generation != 3 || st.Tokens[0].Consecutive != 1 {
		t.Errorf("Status = %+v, %v", st, err)
	}
	a, err := c.Bot("hr").Upload(t.Context(), adapter.Attachment{Name: "f", Body: stringsReader("abc"), Size: 3})
	if err != nil || a.ID != "media-1" || a.Size != 3 {
		t.Errorf("Upload = %+v, %v", a, err)
	}
	evs, err := c.Bot("hr").Poll(t.Context())
	if err != nil || len(evs) != 1 || evs[0].ID != "e1" {
		t.Errorf("Poll = %+v, %v", evs, err)
	}
}

func TestCallerDeadlineReachesPlugin(t *testing.T) { forHops(t, testCallerDeadlineReachesPlugin) }

func testCallerDeadlineReachesPlugin(t *testing.T, h hop) {
	fake := &fakeAdapter{SendFn: func(ctx context.Context, msg adapter.Message) (adapter.Receipt, error) {
		<-ctx.Done()
		return adapter.Receipt{}, &adapter.Error{Kind: adapter.KindUnavailable, Err: ctx.Err()}
	}}
	c := setupHop(t, fake, h)
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	_, err := c.Bot("hr").Send(ctx, adapter.Message{})
	if !errors.Is(err, adapter.ErrUnavailable) {
		t.Errorf("Send past deadline = %v; want unavailable", err)
	}
}
