package aibot_test

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/seed-a64d9e1f/chatwire/adapter"
	"github.com/seed-a64d9e1f/chatwire/adapter/wecom/aibot"
	"github.com/seed-a64d9e1f/chatwire/adapter/wecom/aibot/aibottest"
	"github.com/seed-a64d9e1f/chatwire/internal/redistest"
)

const (
	vbToken = "aibotSpecTok3n"
	vbKey   = "B4U9TpUs1NdxK5ikMvAO5vLcjeK9Wi3iTsv6NRhjL5M"
)

type hookHarness struct {
	bot *aibot.Bot
	s   *aibottest.Server
	wh  *aibottest.Webhook
	mu  sync.Mutex
	evs []adapter.Event
	err []error
}

// serveHook serves a webhook-mode Bot as a host would, and a WeCom side for it.
func serveHook(t *testing.T, opts aibot.Options) *hookHarness {
	t.Helper()
	opts.Token, opts.EncodingAESKey, opts.Name = vbToken, vbKey, "ai"
	bot, err := aibot.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { bot.Close() })
	h := &hookHarness{bot: bot, s: &aibottest.Server{}}
	wecomSide := httptest.NewServer(h.s)
	t.Cleanup(wecomSide.Close)
	h.s.ResponseHost = strings.TrimPrefix(wecomSide.URL, "http://")
	hostSide := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		req, err := adapter.NewWebhookRequest(r, 0)
		if err != nil {
			http.Error(w, err.Error(), adapter.HTTPStatus(err))
			return
		}
		resp, evs, err := bot.HandleWebhook(r.Context(), req)
		h.mu.Lock()
		h.evs = append(h.evs, evs...)
		if err != nil {
			h.err = append(h.err, err)
		}
		h.mu.Unlock()
		resp.Write(w)
	}))
	t.Cleanup(hostSide.Close)
	h.wh = &aibottest.Webhook{URL: hostSide.URL + "/hook", Token: vbToken, EncodingAESKey: vbKey, Server: h.s}
	return h
}

func (h *hookHarness) events() []adapter.Event {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]adapter.Event(nil), h.evs...)
}

func TestWebhookVectorB(t *testing.T) {
	bot, err := aibot.New(aibot.Options{Token: vbToken, EncodingAESKey: vbKey, BotID: "aibSPECBOT0001", ReplayWindow: 100 * 365 * 24 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer bot.Close()
	req := &adapter.WebhookRequest{Method: "POST", Path: "/callback",
		Query: url.Values{"msg_signature": {"38c3a98556aaf00b190cb8d1d10621fdc564ec86"}, "timestamp": {"1700000000"}, "nonce": {"1372623149"}},
		Body:  []byte(`{"encrypt":"GXd6WVtus+F6/uuOgfAT6lkpNNzIIH5w1uAJFJ/ChC0iACR2LYqgJwwTBGZ83krPVD1EHs59Y/tcIY9ahYQATPyq+7R5y6/7ko4nVOGxe+3q3Q3fTOE3A5UE6WiL+hW8qF8NR/hVsCtWhVldpB5LmPvKmzjPBXv0yBM72gRQgVDRQqsOD0/WnFIXU6nI9JkmgO5U0YwNHrIwnsNVgmx0woBOKoj5aoePQ5gNl5SiGTvGTGp6pbPiR/sVnI5JKPQ7WptHdkAZxgU1NvR1vlk9B2Y5bzdU3ADPgvsAnMUkdKV+/HxFmTZ4snmSyXRput3L7qlHbYDecYJ1CxlgF1zI1IY81p9P030LwcUERt+/jyfB+ihhXaGk2dr+ynnYOe+ZxnD6gHAbs6+y9e6pQYTdqq081cSATe9LQW9hIPQgZ8G1Ax1tJzWywTuE1ZMsNWq73PHBDTvPLP7F3tYXCLHfHA=="}`)}
	resp, evs, err := bot.HandleWebhook(t.Context(), req)
	if err != nil || resp.Status != 200 || len(evs) != 1 {
		t.Fatalf("HandleWebhook(vector B) = %+v, %d events, %v", resp, len(evs), err)
	}
	ev := evs[0]
	if ev.ID != "wecom_aibot:CAIQ16HMjQYY/NGagIOAgAMgq4KM0AI=" || ev.Text != "@RobotA hello robot" || ev.Sender.ID != "zhangsan" ||
		ev.Chat != (adapter.Chat{ID: "wrkSFfCgAAtestchat", Type: adapter.ChatGroup}) {
		t.Errorf("vector B event = %+v", ev)
	}
	if !strings.Contains(string(ev.Raw), `"response_url":"https://qyapi.weixin.qq.com/cgi-bin/aibot/response?response_code=RESPONSE_CODE"`) {
		t.Errorf("Raw lacks the response_url: %s", ev.Raw)
	}
	// The passive reply is an encrypted envelope with the callback's nonce.
	var env map[string]string
	if err := json.Unmarshal(resp.Body, &env); err != nil || env["nonce"] != "1372623149" || env["encrypt"] == "" || env["msgsignature"] == "" {
		t.Errorf("passive reply = %s", resp.Body)
	}

	// With the default 5-minute window the same (2023) callback is a replay.
	strict, _ := aibot.New(aibot.Options{Token: vbToken, EncodingAESKey: vbKey})
	defer strict.Close()
	resp, evs, err = strict.HandleWebhook(t.Context(), req)
	if resp.Status != http.StatusUnauthorized || len(evs) != 0 || !errors.Is(err, adapter.ErrUnauthorized) {
		t.Errorf("replayed vector B = %d, %d events, %v; want 401", resp.Status, len(evs), err)
	}
	// A wrong signature is refused before anything is decrypted.
	bad := *req
	bad.Query = url.Values{"msg_signature": {strings.Repeat("0", 40)}, "timestamp": {"1700000000"}, "nonce": {"1372623149"}}
	if resp, _, err := bot.HandleWebhook(t.Context(), &bad); resp.Status != http.StatusUnauthorized || !errors.Is(err, adapter.ErrUnauthorized) {
		t.Errorf("bad signature = %d, %v; want 401", resp.Status, err)
	}
	for _, body := range []string{"", "not json", `{"encrypt":""}`} {
		b := *req
		b.Body = []byte(body)
		if resp, _, err := bot.HandleWebhook(t.Context(), &b); resp.Status != http.StatusBadRequest || !errors.Is(err, adapter.ErrInvalidRequest) {
			t.Errorf("body %q = %d, %v; want 400", body, resp.Status, err)
		}
	}
}

func TestWebhookURLVerification(t *testing.T) {
	h := serveHook(t, aibot.Options{})
	if err := h.wh.VerifyURL(t.Context()); err != nil {
		t.Fatal(err)
	}
}

func TestWebhookStreamedReplyServedToPolls(t *testing.T) {
	h := serveHook(t, aibot.Options{})
	ctx := t.Context()
	u := aibottest.Conv{User: "zhangsan"}
	msgid, reply, err := h.wh.Message(ctx, u, "hello")
	if err != nil {
		t.Fatal(err)
	}
	var first aibottest.StreamReply
	if err := json.Unmarshal(reply, &first); err != nil || first.MsgType != "stream" || first.Stream.ID == "" || first.Stream.Finish {
		t.Fatalf("passive reply to a message = %s; want an open stream", reply)
	}
	evs := h.events()
	if len(evs) != 1 || evs[0].ID != "wecom_aibot:"+msgid {
		t.Fatalf("events = %+v", evs)
	}
	r, err := h.wh.Refresh(ctx, u, first.Stream.ID)
	if err != nil || r.Stream.Finish || r.Stream.Content != "" {
		t.Fatalf("poll before any reply = %+v, %v; want open and empty", r, err)
	}
	st, err := h.bot.OpenStream(ctx, adapter.Message{ReplyTo: evs[0].ID})
	if err != nil {
		t.Fatal(err)
	}
	st.Append(ctx, "hel")
	if r, _ := h.wh.Refresh(ctx, u, first.Stream.ID); r.Stream.Content != "hel" || r.Stream.Finish {
		t.Errorf("poll mid-stream = %+v; want open \"hel\"", r.Stream)
	}
	st.Append(ctx, "lo back")
	done := make(chan error, 1)
	go func() { _, err := st.Finish(ctx); done <- err }()
	final, _, err := h.wh.PollStream(ctx, u, first.Stream.ID, time.Millisecond, 0)
	if err != nil || !final.Stream.Finish || final.Stream.Content != "hello back" {
		t.Fatalf("final poll = %+v, %v; want finished \"hello back\"", final.Stream, err)
	}
	if err := <-done; err != nil {
		t.Errorf("Finish = %v", err)
	}
	if r, _ := h.wh.Refresh(ctx, u, "no-such-stream"); !r.Stream.Finish {
		t.Errorf("poll of an unknown stream = %+v; want finish:true", r.Stream)
	}
}

func TestWebhookDedupByMsgID(t *testing.T) {
	h := serveHook(t, aibot.Options{})
	plain := []byte(`{"msgid":"DUP1","aibotid":"BOT1","chattype":"single","from":{"userid":"u"},"msgtype":"text","text":{"content":"x"}}`)
	_, r1, err1 := h.wh.PostRaw(t.Context(), plain, time.Time{})
	_, r2, err2 := h.wh.PostRaw(t.Context(), plain, time.Time{})
	if err1 != nil || err2 != nil || string(r1) != string(r2) {
		t.Errorf("replies to a redelivery differ: %s / %s (%v, %v)", r1, r2, err1, err2)
	}
	if evs := h.events(); len(evs) != 2 || evs[0].ID != evs[1].ID {
		t.Errorf("events for one msgid delivered twice: %+v; want the same event id twice (the host dedups)", evs)
	}
}

func TestWebhookSendAndResponseURL(t *testing.T) {
	h := serveHook(t, aibot.Options{Welcome: "hi there"})
	ctx := t.Context()
	u := aibottest.Conv{User: "u"}
	_, reply, err := h.wh.Message(ctx, u, "q1")
	if err != nil {
		t.Fatal(err)
	}
	var open aibottest.StreamReply
	json.Unmarshal(reply, &open)
	ev := h.events()[0]
	// A plain Send fills the polled stream.
	go h.bot.Send(ctx, adapter.Message{ReplyTo: ev.ID, Markdown: "answer"})
	final, _, err := h.wh.PollStream(ctx, u, open.Stream.ID, time.Millisecond, 0)
	if err != nil || final.Stream.Content != "answer" {
		t.Fatalf("poll after Send = %+v, %v", final.Stream, err)
	}
	// A card goes to response_url, once.
	card := json.RawMessage(`{"type":"template_card","template_card":{"card_type":"text_notice","main_title":{"title":"t"}}}`)
	if _, err := h.bot.Send(ctx, adapter.Message{ReplyTo: ev.ID, Card: card}); err != nil {
		t.Fatalf("card by response_url: %v", err)
	}
	if _, err := h.bot.Send(ctx, adapter.Message{ReplyTo: ev.ID, Card: card}); !errors.Is(err, adapter.ErrInvalidRequest) {
		t.Errorf("second response_url use = %v; want invalid request (one-shot)", err)
	}
	if _, err := h.bot.Send(ctx, adapter.Message{To: adapter.Target{User: "u"}, Text: "proactive"}); !errors.Is(err, adapter.ErrInvalidRequest) {
		t.Errorf("proactive send in webhook mode = %v; want invalid request", err)
	}
	// enter_chat gets the configured welcome as a passive text reply.
	plain := []byte(`{"msgid":"E1","create_time":1700000000,"aibotid":"BOT1","chattype":"single","from":{"userid":"u"},"msgtype":"event","event":{"eventtype":"enter_chat"}}`)
	_, welcome, err := h.wh.PostRaw(ctx, plain, time.Time{})
	if err != nil || string(welcome) != `{"msgtype":"text","text":{"content":"hi there"}}` {
		t.Errorf("enter_chat passive reply = %s, %v", welcome, err)
	}
	if got := h.s.Shown("u"); len(got) != 1 || got[0] != "" {
		t.Errorf("response_url showed %q; want one card", got)
	}
}

func TestWebhookLongReplyOverflowsToResponseURL(t *testing.T) {
	h := serveHook(t, aibot.Options{})
	ctx := t.Context()
	u := aibottest.Conv{User: "u"}
	_, reply, _ := h.wh.Message(ctx, u, "q")
	var open aibottest.StreamReply
	json.Unmarshal(reply, &open)
	ev := h.events()[0]
	text := strings.Repeat("0123456789", 3000) // 30,000 bytes
	st, _ := h.bot.OpenStream(ctx, adapter.Message{ReplyTo: ev.ID})
	streamText(t, st, text, 300)
	done := make(chan error, 1)
	go func() { _, err := st.Finish(ctx); done <- err }()
	final, _, err := h.wh.PollStream(ctx, u, open.Stream.ID, time.Millisecond, 0)
	if err != nil || !final.Stream.Finish || len(final.Stream.Content) != aibot.MaxBubbleBytes {
		t.Fatalf("final poll: %d bytes, finish %v, %v", len(final.Stream.Content), final.Stream.Finish, err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got := final.Stream.Content + strings.Join(h.s.Shown("u"), ""); got != text {
		t.Errorf("stream + response_url carried %d bytes; want exactly the %d streamed", len(got), len(text))
	}
}

func TestWebhookStreamWaitExpiresToResponseURL(t *testing.T) {
	h := serveHook(t, aibot.Options{StreamWait: time.Nanosecond})
	ctx := t.Context()
	u := aibottest.Conv{User: "u"}
	_, reply, _ := h.wh.Message(ctx, u, "q")
	var open aibottest.StreamReply
	json.Unmarshal(reply, &open)
	ev := h.events()[0]
	st, _ := h.bot.OpenStream(ctx, adapter.Message{ReplyTo: ev.ID})
	st.Append(ctx, "early ")
	// WeCom's polling ends: the stream closes with what it had.
	if r, _ := h.wh.Refresh(ctx, u, open.Stream.ID); !r.Stream.Finish || r.Stream.Content != "early " {
		t.Fatalf("poll after StreamWait = %+v; want finished \"early \"", r.Stream)
	}
	st.Append(ctx, "late part")
	if _, err := st.Finish(ctx); err != nil {
		t.Fatal(err)
	}
	if got := h.s.Shown("u"); len(got) != 1 || got[0] != "late part" {
		t.Errorf("response_url showed %q; want [late part]", got)
	}
}

func TestWebhookMediaUseTheEncodingAESKey(t *testing.T) {
	h := serveHook(t, aibot.Options{})
	host := h.s.ResponseHost
	img := []byte("\xff\xd8\xff\xe0 jpeg-ish bytes")
	mediaURL := h.s.AddMediaWithKey(host, img, "photo one.jpg", vbKey)
	plain, _ := json.Marshal(map[string]any{"msgid": "IMG1", "aibotid": "BOT1", "chattype": "single", "from": map[string]string{"userid": "u"},
		"msgtype": "image", "image": map[string]string{"url": mediaURL}})
	if status, _, err := h.wh.PostRaw(t.Context(), plain, time.Time{}); err != nil || status != 200 {
		t.Fatalf("image callback: %d, %v", status, err)
	}
	evs := h.events()
	if len(evs) != 1 || len(evs[0].Attachments) != 1 || string(evs[0].Attachments[0].Data) != string(img) || evs[0].Attachments[0].Name != "photo one.jpg" {
		t.Errorf("image event = %+v", evs)
	}
}

// TestWebhookFleetStreams: two webhook hosts share Redis. The message reaches host A; the
// bot's reply is accepted by host B; WeCom's polls go to either host and see the same stream.
func TestWebhookFleetStreams(t *testing.T) {
	rs := redistest.Start(t)
	rdb := redis.NewClient(&redis.Options{Addr: rs.Addr()})
	defer rdb.Close()
	a := serveHook(t, aibot.Options{Redis: rdb, RedisKeyPrefix: "cw"})
	b := serveHook(t, aibot.Options{Redis: rdb, RedisKeyPrefix: "cw"})
	b.s.ResponseHost = a.s.ResponseHost // one WeCom
	bWH := &aibottest.Webhook{URL: b.wh.URL, Token: vbToken, EncodingAESKey: vbKey, Server: a.s}
	ctx := t.Context()
	u := aibottest.Conv{User: "u"}
	_, reply, err := a.wh.Message(ctx, u, "q")
	if err != nil {
		t.Fatal(err)
	}
	var open aibottest.StreamReply
	json.Unmarshal(reply, &open)
	ev := a.events()[0]
	eventually(t, "the callback record", func() bool { keys, _ := rdb.Keys(ctx, "cw:aibot:*:call:"+ev.ID).Result(); return len(keys) == 1 })
	st, err := b.bot.OpenStream(ctx, adapter.Message{ReplyTo: ev.ID})
	if err != nil {
		t.Fatalf("host B opening the stream of a message host A received: %v", err)
	}
	st.Append(ctx, "partial ")
	if r, err := bWH.Refresh(ctx, u, open.Stream.ID); err != nil || r.Stream.Content != "partial " || r.Stream.Finish {
		t.Fatalf("poll on host B = %+v, %v", r.Stream, err)
	}
	if r, err := a.wh.Refresh(ctx, u, open.Stream.ID); err != nil || r.Stream.Content != "partial " {
		t.Fatalf("poll on host A = %+v, %v", r.Stream, err)
	}
	st.Append(ctx, "and the rest")
	done := make(chan error, 1)
	go func() { _, err := st.Finish(ctx); done <- err }()
	final, _, err := bWH.PollStream(ctx, u, open.Stream.ID, time.Millisecond, 0)
	if err != nil || !final.Stream.Finish || final.Stream.Content != "partial and the rest" {
		t.Fatalf("final poll = %+v, %v", final.Stream, err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if _, err := a.bot.OpenStream(ctx, adapter.Message{ReplyTo: ev.ID}); !errors.Is(err, adapter.ErrInvalidRequest) {
		t.Errorf("a second writer = %v; want invalid request (one writer per stream)", err)
	}
}

// TestWebhookRedeliveryAfter503: WeCom sends a callback again after a non-200 answer; the
// bot acknowledges the second delivery with the same passive reply and one event.
func TestWebhookRedeliveryAfter503(t *testing.T) {
	bot, err := aibot.New(aibot.Options{Token: vbToken, EncodingAESKey: vbKey})
	if err != nil {
		t.Fatal(err)
	}
	defer bot.Close()
	var mu sync.Mutex
	calls := 0
	var ids []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		calls++
		first := calls == 1
		mu.Unlock()
		req, _ := adapter.NewWebhookRequest(r, 0)
		resp, evs, _ := bot.HandleWebhook(r.Context(), req)
		mu.Lock()
		for _, ev := range evs {
			ids = append(ids, ev.ID)
		}
		mu.Unlock()
		if first { // the host could not queue the event: ask for redelivery
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		resp.Write(w)
	}))
	defer srv.Close()
	wh := &aibottest.Webhook{URL: srv.URL, Token: vbToken, EncodingAESKey: vbKey, Retries: 2}
	_, reply, err := wh.Message(t.Context(), aibottest.Conv{User: "u"}, "hi")
	if err != nil || !strings.Contains(string(reply), `"msgtype":"stream"`) {
		t.Fatalf("Message = %s, %v", reply, err)
	}
	if wh.Redeliveries() != 1 || calls != 2 {
		t.Errorf("redeliveries %d, calls %d; want 1 and 2", wh.Redeliveries(), calls)
	}
	if len(ids) != 2 || ids[0] != ids[1] {
		t.Errorf("events over two deliveries: %q; want the same event both times (the host dedups by id, so a 503 loses nothing)", ids)
	}
}
