package aibot_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/seed-a64d9e1f/chatwire/adapter"
	"github.com/seed-a64d9e1f/chatwire/adapter/wecom/aibot"
	"github.com/seed-a64d9e1f/chatwire/adapter/wecom/aibot/aibottest"
)

// eventually waits (up to 20 s) for cond, checking every few milliseconds.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

type harness struct {
	s      *aibottest.Server
	srv    *httptest.Server
	bot    *aibot.Bot
	events chan adapter.Event
	done   chan error
}

// start serves an emulator and runs a Bot's Receive against it.
func start(t *testing.T, s *aibottest.Server, opts aibot.Options) *harness {
	t.Helper()
	h := &harness{s: s, srv: httptest.NewServer(s), events: make(chan adapter.Event, 100), done: make(chan error, 1)}
	t.Cleanup(h.srv.Close)
	h.bot = h.run(t, opts)
	eventually(t, "the bot to subscribe", func() bool { return s.Connections() == 1 })
	return h
}

func (h *harness) run(t *testing.T, opts aibot.Options) *aibot.Bot {
	t.Helper()
	if opts.BotID == "" {
		opts.BotID, opts.Secret = "BOT1", "S1"
	}
	opts.Name = "ai"
	opts.WSURL = aibottest.WSURL(h.srv.URL)
	bot, err := aibot.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(func() { cancel(); bot.Close() })
	go func() {
		h.done <- bot.Receive(ctx, func(ctx context.Context, evs []adapter.Event) error {
			for _, ev := range evs {
				h.events <- ev
			}
			return nil
		})
	}()
	return bot
}

func (h *harness) next(t *testing.T) adapter.Event {
	t.Helper()
	select {
	case ev := <-h.events:
		return ev
	case <-time.After(20 * time.Second):
		t.Fatal("no event")
	}
	return adapter.Event{}
}

func noRefused(t *testing.T, s *aibottest.Server) {
	t.Helper()
	for _, f := range s.Refused() {
		t.Errorf("emulator refused %s %s: errcode %d: %s", f.Cmd, f.ReqID, f.Errcode, f.Reason)
	}
}

func TestInboundMessagesAndEvents(t *testing.T) {
	h := start(t, &aibottest.Server{}, aibot.Options{})
	s, host := h.s, strings.TrimPrefix(h.srv.URL, "http://")
	u := aibottest.Conv{User: "zhangsan"}
	g := aibottest.Conv{User: "lisi", Chat: "wrkGROUP"}

	if _, err := s.PushText(g, "@RobotA hello robot"); err != nil {
		t.Fatal(err)
	}
	ev := h.next(t)
	if ev.Kind != adapter.EventMessage || ev.Text != "@RobotA hello robot" || ev.Chat != (adapter.Chat{ID: "wrkGROUP", Type: adapter.ChatGroup}) ||
		ev.Sender.ID != "lisi" || ev.Platform != adapter.PlatformWeComAIBot || ev.Bot != "ai" || !strings.HasPrefix(ev.ID, "wecom_aibot:MSG") {
		t.Errorf("group text event = %+v", ev)
	}

	img := []byte("\x89PNG\r\n\x1a\n fake image bytes")
	imgURL, imgKey := s.AddMedia(host, img, "a.png")
	if len(imgKey) != 43 {
		t.Fatalf("aeskey has %d characters; want 43", len(imgKey))
	}
	s.PushMessage(u, "image", map[string]string{"url": imgURL, "aeskey": imgKey})
	ev = h.next(t)
	if len(ev.Attachments) != 1 || string(ev.Attachments[0].Data) != string(img) || ev.Attachments[0].Type != adapter.AttachImage || ev.Attachments[0].ContentType != "image/png" {
		t.Errorf("image event attachments = %+v", ev.Attachments)
	}

	doc := []byte(strings.Repeat("file body ", 100))
	docURL, docKey := s.AddMedia(host, doc, "季度 报告 v2.pdf")
	s.PushMessage(u, "file", map[string]string{"url": docURL, "aeskey": docKey})
	ev = h.next(t)
	if len(ev.Attachments) != 1 || string(ev.Attachments[0].Data) != string(doc) || ev.Attachments[0].Name != "季度 报告 v2.pdf" || ev.Attachments[0].Type != adapter.AttachFile {
		t.Errorf("file event attachment = %+v; want the file named \"季度 报告 v2.pdf\"", ev.Attachments)
	}

	vidURL, vidKey := s.AddMedia(host, []byte("video"), "v.mp4")
	s.PushMessage(u, "video", map[string]string{"url": vidURL, "aeskey": vidKey})
	if ev = h.next(t); len(ev.Attachments) != 1 || string(ev.Attachments[0].Data) != "video" || ev.Attachments[0].Type != adapter.AttachVideo {
		t.Errorf("video event attachments = %+v", ev.Attachments)
	}

	s.PushMessage(u, "voice", map[string]string{"content": "transcribed words"})
	if ev = h.next(t); ev.Text != "transcribed words" {
		t.Errorf("voice event text = %q", ev.Text)
	}

	mixURL, mixKey := s.AddMedia(host, []byte("mixed image"), "m.jpg")
	s.PushMessage(u, "mixed", map[string]any{"msg_item": []any{
		map[string]any{"msgtype": "text", "text": map[string]string{"content": "look"}},
		map[string]any{"msgtype": "image", "image": map[string]string{"url": mixURL, "aeskey": mixKey}},
		map[string]any{"msgtype": "text", "text": map[string]string{"content": "at this"}},
	}})
	if ev = h.next(t); ev.Text != "look\nat this" || len(ev.Attachments) != 1 || string(ev.Attachments[0].Data) != "mixed image" {
		t.Errorf("mixed event = text %q, attachments %+v", ev.Text, ev.Attachments)
	}

	// A quote rides along a text message; its content stays in Raw.
	body := `{"msgid":"Q1","aibotid":"BOT1","chattype":"single","from":{"userid":"zhangsan"},"msgtype":"text","text":{"content":"and this?"},"quote":{"msgtype":"text","text":{"content":"quoted"}}}`
	s.Push("aibot_msg_callback", "", json.RawMessage(body))
	if ev = h.next(t); ev.Text != "and this?" || !strings.Contains(string(ev.Raw), `"quoted"`) || ev.ID != "wecom_aibot:Q1" {
		t.Errorf("quote event = %+v", ev)
	}
	// The same msgid again is dropped.
	s.Push("aibot_msg_callback", "", json.RawMessage(body))

	s.PushEvent(u, "enter_chat", nil)
	if ev = h.next(t); ev.Kind != adapter.EventNotice || ev.Text != "enter_chat" || ev.Time.IsZero() {
		t.Errorf("enter_chat event = %+v", ev)
	}
	s.PushEvent(u, "template_card_event", map[string]any{"card_type": "button_interaction", "event_key": "yes", "task_id": "T1"})
	if ev = h.next(t); ev.Text != "template_card_event" || !strings.Contains(string(ev.Raw), `"event_key":"yes"`) {
		t.Errorf("template_card_event = %+v", ev)
	}
	s.PushEvent(u, "feedback_event", map[string]any{"id": "FB1", "type": 1})
	if ev = h.next(t); ev.Text != "feedback_event" {
		t.Errorf("feedback_event = %+v", ev)
	}

	// Control characters inside a frame are stripped before decoding.
	s.PushRaw([]byte("{\"cmd\":\"aibot_msg_callback\",\x01\"headers\":{\"req_id\":\"R9\"},\"body\":{\"msgid\":\"C1\",\"aibotid\":\"BOT1\",\"chattype\":\"single\",\"from\":{\"userid\":\"u\"},\"msgtype\":\"text\",\"text\":{\"content\":\"ctl\x02 chars\x1f\"}}}"))
	if ev = h.next(t); ev.ID != "wecom_aibot:C1" || ev.Text != "ctl chars" {
		t.Errorf("event from a frame with control characters = %+v", ev)
	}
	// A frame over 1 MB is read whole.
	big := strings.Repeat("字", 400000)
	s.PushText(u, big)
	if ev = h.next(t); ev.Text != big {
		t.Errorf("1.2 MB text event has %d bytes; want %d", len(ev.Text), len(big))
	}
	select {
	case ev := <-h.events:
		t.Errorf("unexpected extra event %s (a duplicate msgid?)", ev.ID)
	default:
	}
}

func TestDecryptMediaLenientPadding(t *testing.T) {
	key := "B4U9TpUs1NdxK5ikMvAO5vLcjeK9Wi3iTsv6NRhjL5M"
	for _, n := range []int{0, 1, 15, 16, 31, 32, 33, 100} {
		data := []byte(strings.Repeat("x", n))
		enc, err := aibottest.EncryptMedia(key, data)
		if err != nil {
			t.Fatal(err)
		}
		got, err := aibot.DecryptMedia(key, enc)
		if err != nil || string(got) != string(data) {
			t.Errorf("DecryptMedia of %d bytes = %q, %v", n, got, err)
		}
		if got, err := aibot.DecryptMedia(key+"=", enc); err != nil || string(got) != string(data) {
			t.Errorf("DecryptMedia with a padded key = %q, %v", got, err)
		}
	}
	if _, err := aibot.DecryptMedia("short", make([]byte, 32)); !errors.Is(err, aibot.ErrMediaDecrypt) {
		t.Errorf("DecryptMedia with a bad key = %v; want ErrMediaDecrypt", err)
	}
}

func TestReplies(t *testing.T) {
	h := start(t, &aibottest.Server{}, aibot.Options{})
	s := h.s
	ctx := t.Context()
	u := aibottest.Conv{User: "Zhang.San"}
	send := func(msg adapter.Message) adapter.Receipt {
		t.Helper()
		r, err := h.bot.Send(ctx, msg)
		if err != nil {
			t.Fatalf("Send(%+v): %v", msg, err)
		}
		return r
	}

	s.PushText(u, "hi")
	msg := h.next(t)
	send(adapter.Message{ReplyTo: msg.ID, Markdown: "**md**"})
	send(adapter.Message{ReplyTo: msg.ID, Text: "plain"})
	card := json.RawMessage(`{"type":"template_card","template_card":{"card_type":"text_notice","main_title":{"title":"t"}}}`)
	send(adapter.Message{ReplyTo: msg.ID, Card: card})
	// The card consumed the req_id: this goes by aibot_send_msg, not into a 846606.
	send(adapter.Message{ReplyTo: msg.ID, Markdown: "after the card"})

	s.PushEvent(u, "enter_chat", nil)
	enter := h.next(t)
	send(adapter.Message{ReplyTo: enter.ID, Text: "welcome"})
	send(adapter.Message{ReplyTo: enter.ID, Text: "second answer to enter_chat"})

	s.PushEvent(u, "template_card_event", map[string]any{"card_type": "button_interaction", "event_key": "k", "task_id": "T"})
	cev := h.next(t)
	send(adapter.Message{ReplyTo: cev.ID, Card: json.RawMessage(`{"type":"template_card","card_type":"text_notice","main_title":{"title":"done"}}`)})
	send(adapter.Message{ReplyTo: cev.ID, Markdown: "clicked"})

	s.PushEvent(u, "feedback_event", map[string]any{"id": "F", "type": 1})
	fb := h.next(t)
	send(adapter.Message{ReplyTo: fb.ID, Text: "thanks"})
	send(adapter.Message{To: adapter.Target{User: "Zhang.San"}, Markdown: "proactive"})
	long := strings.Repeat("a", 30000)
	if r := send(adapter.Message{To: adapter.Target{User: "Zhang.San"}, Markdown: long}); len(r.IDs) != 2 {
		t.Errorf("a 30,000-byte markdown went out as %d messages; want 2", len(r.IDs))
	}

	noRefused(t, s)
	want := []string{"**md**", "plain", "", "after the card", "welcome", "second answer to enter_chat", "", "clicked", "thanks", "proactive", long[:20480], long[20480:]}
	if got := s.Shown("Zhang.San"); strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("Shown = %q\nwant %q", got, want)
	}
	var cmds []string
	for _, m := range s.Sent() {
		cmds = append(cmds, m.Cmd)
	}
	wantCmds := "aibot_respond_msg aibot_respond_msg aibot_send_msg aibot_respond_welcome_msg aibot_send_msg aibot_respond_update_msg aibot_send_msg aibot_send_msg aibot_send_msg aibot_send_msg aibot_send_msg"
	if strings.Join(cmds, " ") != wantCmds {
		t.Errorf("commands = %s\nwant %s", strings.Join(cmds, " "), wantCmds)
	}

	if _, err := h.bot.Send(ctx, adapter.Message{ReplyTo: "wecom_aibot:nope", Text: "x"}); !errors.Is(err, adapter.ErrNotFound) {
		t.Errorf("Send to an unknown reply_to = %v; want not found", err)
	}
	if _, err := h.bot.Send(ctx, adapter.Message{To: adapter.Target{User: "stranger"}, Text: "x"}); !errors.Is(err, adapter.ErrInvalidRecipient) || adapter.Code(err) != "93006" {
		t.Errorf("Send to a stranger = %v; want invalid recipient 93006", err)
	}
}

// streamText streams text as n deltas.
func streamText(t *testing.T, st adapter.Stream, text string, n int) {
	t.Helper()
	size := (len(text) + n - 1) / n
	for i := 0; i < len(text); i += size {
		if err := st.Append(t.Context(), text[i:min(i+size, len(text))]); err != nil {
			t.Fatal(err)
		}
	}
}

func checkBubbles(t *testing.T, s *aibottest.Server, pace time.Duration) []aibottest.Bubble {
	t.Helper()
	bs := s.Bubbles()
	for i, b := range bs {
		if !b.Finished {
			t.Errorf("bubble %d not finished", i)
		}
		for j, f := range b.Frames {
			if len(f.Content) > aibot.MaxBubbleBytes {
				t.Errorf("bubble %d frame %d has %d bytes", i, j, len(f.Content))
			}
			if j > 0 && !strings.HasPrefix(f.Content, b.Frames[j-1].Content) {
				t.Errorf("bubble %d frame %d is not cumulative: %d bytes after %d: %.40q after %.40q", i, j, len(f.Content), len(b.Frames[j-1].Content), f.Content, b.Frames[j-1].Content)
			}
		}
	}
	var all []aibottest.StreamFrame
	for _, b := range bs {
		all = append(all, b.Frames...)
	}
	for j := 1; j < len(all); j++ {
		if gap := all[j].At.Sub(all[j-1].At); gap < pace {
			t.Errorf("frames %d and %d are %s apart; want ≥ %s", j-1, j, gap, pace)
		}
	}
	return bs
}

func TestStreamLongAnswer(t *testing.T) {
	const pace = 20 * time.Millisecond
	h := start(t, &aibottest.Server{}, aibot.Options{StreamPace: pace})
	h.s.PushText(aibottest.Conv{User: "u"}, "write a lot")
	ev := h.next(t)
	var text strings.Builder
	for i := 0; text.Len() < 60000; i++ {
		fmt.Fprintf(&text, "word%d 字 ", i)
	}
	st, err := h.bot.OpenStream(t.Context(), adapter.Message{ReplyTo: ev.ID})
	if err != nil {
		t.Fatal(err)
	}
	streamText(t, st, text.String(), 3000)
	r, err := st.Finish(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	noRefused(t, h.s)
	bs := checkBubbles(t, h.s, pace)
	if len(bs) > 3 || len(r.IDs) != len(bs) {
		t.Errorf("%d bubbles, receipt %d ids; want ≤ 3 and equal", len(bs), len(r.IDs))
	}
	if got := strings.Join(h.s.Shown("u"), ""); got != text.String() {
		t.Errorf("the user sees %d bytes; want exactly the %d streamed", len(got), text.Len())
	}
}

func TestStreamExpiredContinuesBySend(t *testing.T) {
	h := start(t, &aibottest.Server{}, aibot.Options{StreamPace: time.Millisecond})
	h.s.PushText(aibottest.Conv{User: "u"}, "q")
	ev := h.next(t)
	st, _ := h.bot.OpenStream(t.Context(), adapter.Message{ReplyTo: ev.ID})
	st.Append(t.Context(), "first part, ")
	eventually(t, "the first frame", func() bool { bs := h.s.Bubbles(); return len(bs) == 1 && bs[0].Content == "first part, " })
	h.s.ExpireStreams()
	streamText(t, st, strings.Repeat("then the rest. ", 2000), 100)
	if _, err := st.Finish(t.Context()); err != nil {
		t.Fatal(err)
	}
	want := "first part, " + strings.Repeat("then the rest. ", 2000)
	if got := strings.Join(h.s.Shown("u"), ""); got != want {
		t.Errorf("after 846608 the user sees %d bytes; want exactly the %d streamed", len(got), len(want))
	}
	if n := len(h.s.Sent()); n != 2 {
		t.Errorf("%d aibot_send_msg after expiry; want 2 (30,000 bytes)", n)
	}
}

func TestStreamRotatesBeforeMaxAge(t *testing.T) {
	h := start(t, &aibottest.Server{}, aibot.Options{StreamPace: time.Millisecond, StreamMaxAge: time.Nanosecond})
	h.s.PushText(aibottest.Conv{User: "u"}, "q")
	ev := h.next(t)
	st, _ := h.bot.OpenStream(t.Context(), adapter.Message{ReplyTo: ev.ID})
	st.Append(t.Context(), "one ")
	eventually(t, "the first bubble to be finished", func() bool { bs := h.s.Bubbles(); return len(bs) == 1 && bs[0].Finished })
	st.Append(t.Context(), "two")
	if _, err := st.Finish(t.Context()); err != nil {
		t.Fatal(err)
	}
	noRefused(t, h.s)
	checkBubbles(t, h.s, time.Millisecond)
	if got := h.s.Shown("u"); strings.Join(got, "|") != "one |two" {
		t.Errorf("Shown = %q; want [one  two] in two bubbles", got)
	}
}

func TestStreamAckTimeoutFallsBack(t *testing.T) {
	h := start(t, &aibottest.Server{}, aibot.Options{StreamPace: time.Millisecond, AckTimeout: 100 * time.Millisecond})
	h.s.PushText(aibottest.Conv{User: "u"}, "q")
	ev := h.next(t)
	h.s.DropAcks("aibot_respond_msg")
	st, _ := h.bot.OpenStream(t.Context(), adapter.Message{ReplyTo: ev.ID})
	st.Append(t.Context(), "hello ")
	st.Append(t.Context(), "world")
	if _, err := st.Finish(t.Context()); err != nil {
		t.Fatal(err)
	}
	// No frame was acked, so the whole text goes by aibot_send_msg; the unacked frame may
	// have shown part of it too.
	if shown := h.s.Shown("u"); len(shown) != 2 || shown[1] != "hello world" {
		t.Fatalf("Shown = %q; want [<unacked bubble> \"hello world\"]", shown)
	}
	if frames := h.s.Bubbles()[0].Frames; len(frames) != 1 {
		t.Errorf("%d frames after an ack timeout; want 1 (no frame sent blind after an unknown outcome)", len(frames))
	}
}

func TestStreamToEventGoesBySend(t *testing.T) {
	h := start(t, &aibottest.Server{}, aibot.Options{})
	h.s.PushText(aibottest.Conv{User: "u"}, "hi") // the chat must have messaged the bot
	h.next(t)
	h.s.PushEvent(aibottest.Conv{User: "u"}, "enter_chat", nil)
	ev := h.next(t)
	st, err := h.bot.OpenStream(t.Context(), adapter.Message{ReplyTo: ev.ID})
	if err != nil {
		t.Fatal(err)
	}
	streamText(t, st, "welcome, streamed", 5)
	if _, err := st.Finish(t.Context()); err != nil {
		t.Fatal(err)
	}
	noRefused(t, h.s)
	if got := h.s.Shown("u"); len(got) != 1 || got[0] != "welcome, streamed" || len(h.s.Bubbles()) != 0 {
		t.Errorf("Shown = %q, %d bubbles; want one aibot_send_msg, no stream on an event req_id", got, len(h.s.Bubbles()))
	}
}

func TestStreamAbortClosesTheBubble(t *testing.T) {
	h := start(t, &aibottest.Server{}, aibot.Options{StreamPace: time.Millisecond})
	h.s.PushText(aibottest.Conv{User: "u"}, "q")
	ev := h.next(t)
	st, _ := h.bot.OpenStream(t.Context(), adapter.Message{ReplyTo: ev.ID})
	st.Append(t.Context(), "partial")
	eventually(t, "the first frame", func() bool { return len(h.s.Bubbles()) == 1 })
	if err := st.Abort(t.Context(), "client went away"); err != nil {
		t.Fatal(err)
	}
	if bs := h.s.Bubbles(); !bs[0].Finished || bs[0].Content != "partial" {
		t.Errorf("after Abort the bubble is %+v; want finished with \"partial\"", bs[0])
	}
	if err := st.Append(t.Context(), "x"); err == nil {
		t.Error("Append after Abort succeeded")
	}
}

func TestBadSecretIsACredentialError(t *testing.T) {
	s := &aibottest.Server{}
	srv := httptest.NewServer(s)
	defer srv.Close()
	var logs bytes.Buffer
	logger := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	bot, _ := aibot.New(aibot.Options{BotID: "BOT1", Secret: "wrong-secret-value", WSURL: aibottest.WSURL(srv.URL), Logger: logger})
	defer bot.Close()
	err := bot.Receive(t.Context(), func(context.Context, []adapter.Event) error { return nil })
	if !errors.Is(err, adapter.ErrUnauthorized) || adapter.Code(err) != "853000" {
		t.Fatalf("Receive with a wrong secret = %v; want unauthorized 853000", err)
	}
	if msg := err.Error(); !strings.Contains(msg, "secret") || !strings.Contains(msg, "admin console") || strings.Contains(msg, "wrong-secret-value") {
		t.Errorf("error %q should say what to fix and never hold the secret", msg)
	}
	if s.Subscribes() != 1 {
		t.Errorf("%d subscribes; want 1 (no retry loop on bad credentials)", s.Subscribes())
	}
	if st, _ := bot.Status(t.Context()); st.Healthy || strings.Contains(st.Detail, "wrong-secret-value") || !strings.Contains(st.Detail, "853000") {
		t.Errorf("Status = %+v; want unhealthy, naming 853000, without the secret", st)
	}
	if logs.Len() == 0 || strings.Contains(logs.String(), "wrong-secret-value") {
		t.Errorf("logs hold the secret (or nothing): %s", logs.String())
	}
}

func TestSubscribeRateLimitedWaits(t *testing.T) {
	s := &aibottest.Server{}
	s.FailSubscribes(aibottest.CodeFreq)
	start(t, s, aibot.Options{SubscribeRateLimitWait: 10 * time.Millisecond, AllowShortRateLimitWait: true})
	if s.Subscribes() != 2 {
		t.Errorf("%d subscribes; want 2", s.Subscribes())
	}
}

func TestKickedConnectionDoesNotReconnect(t *testing.T) {
	h := start(t, &aibottest.Server{}, aibot.Options{ReconnectBase: time.Millisecond})
	h2 := &harness{s: h.s, srv: h.srv, events: make(chan adapter.Event, 10), done: make(chan error, 1)}
	h2.run(t, aibot.Options{ReconnectBase: time.Millisecond})
	select {
	case err := <-h.done:
		if !errors.Is(err, aibot.ErrKicked) {
			t.Fatalf("first Receive = %v; want ErrKicked", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the kicked bot's Receive did not return")
	}
	eventually(t, "one live connection", func() bool { return h.s.Connections() == 1 })
	if n := h.s.Subscribes(); n != 2 {
		t.Errorf("%d subscribes; want 2 (no kick loop)", n)
	}
	h.s.PushText(aibottest.Conv{User: "u"}, "to the survivor")
	if ev := h2.next(t); ev.Text != "to the survivor" {
		t.Errorf("survivor got %+v", ev)
	}
}

func TestReconnectAfterDrop(t *testing.T) {
	h := start(t, &aibottest.Server{}, aibot.Options{ReconnectBase: time.Millisecond})
	h.s.Drop()
	eventually(t, "a second subscribe after a drop", func() bool { return h.s.Subscribes() == 2 && h.s.Connections() == 1 })
	h.s.PushText(aibottest.Conv{User: "u"}, "still here")
	if ev := h.next(t); ev.Text != "still here" {
		t.Errorf("after reconnecting got %+v", ev)
	}
}

func TestMissedPingsDropTheConnection(t *testing.T) {
	s := &aibottest.Server{}
	s.IgnorePings(true)
	start(t, s, aibot.Options{ReconnectBase: time.Millisecond, HeartbeatInterval: 5 * time.Millisecond})
	eventually(t, "a third subscribe after missed pings", func() bool { return s.Subscribes() >= 3 })
	// Between two subscribes: two unanswered pings, then the next tick drops the socket.
	var subs []int
	frames := s.Frames()
	for i, f := range frames {
		if f.Cmd == "aibot_subscribe" {
			subs = append(subs, i)
		}
	}
	for k := 0; k+1 < len(subs) && k < 2; k++ {
		pings := 0
		for _, f := range frames[subs[k]:subs[k+1]] {
			if f.Cmd == "ping" {
				pings++
			} else if f.Cmd != "aibot_subscribe" {
				t.Errorf("unexpected %s frame", f.Cmd)
			}
		}
		if pings != 2 {
			t.Errorf("connection %d sent %d pings before it was dropped; want 2", k+1, pings)
		}
	}
}

func TestSendWaitsForTheConnection(t *testing.T) {
	h := start(t, &aibottest.Server{}, aibot.Options{ReconnectBase: 300 * time.Millisecond})
	h.s.PushText(aibottest.Conv{User: "u"}, "q")
	h.next(t)
	h.s.Drop()
	eventually(t, "the bot to see the drop", func() bool { st, _ := h.bot.Status(t.Context()); return !st.Healthy })
	var wg sync.WaitGroup
	wg.Add(1)
	var err error
	go func() {
		defer wg.Done()
		_, err = h.bot.Send(t.Context(), adapter.Message{To: adapter.Target{User: "u"}, Text: "after the drop"})
	}()
	wg.Wait()
	if err != nil {
		t.Fatal(err)
	}
	if got := h.s.Shown("u"); len(got) != 1 || got[0] != "after the drop" {
		t.Errorf("Shown = %q", got)
	}
}

func TestStreamDeltaSplittingACharacter(t *testing.T) {
	h := start(t, &aibottest.Server{}, aibot.Options{StreamPace: time.Millisecond})
	h.s.PushText(aibottest.Conv{User: "u"}, "q")
	ev := h.next(t)
	st, _ := h.bot.OpenStream(t.Context(), adapter.Message{ReplyTo: ev.ID})
	zi := "字"
	st.Append(t.Context(), "ab"+zi[:2])
	eventually(t, "the first frame", func() bool { bs := h.s.Bubbles(); return len(bs) == 1 && len(bs[0].Frames) == 1 })
	st.Append(t.Context(), zi[2:]+"c")
	if _, err := st.Finish(t.Context()); err != nil {
		t.Fatal(err)
	}
	checkBubbles(t, h.s, time.Millisecond)
	if f := h.s.Bubbles()[0].Frames[0].Content; f != "ab" {
		t.Errorf("first frame = %q; want \"ab\" (never half a character)", f)
	}
	if got := h.s.Shown("u"); len(got) != 1 || got[0] != "ab字c" {
		t.Errorf("Shown = %q; want [ab字c]", got)
	}
}

func TestUploadAndSendAttachments(t *testing.T) {
	h := start(t, &aibottest.Server{}, aibot.Options{})
	ctx := t.Context()
	data := make([]byte, 1200<<10) // 3 chunks, each a ≈700 KB frame
	for i := range data {
		data[i] = byte(i * 7)
	}
	up, err := h.bot.Upload(ctx, adapter.Attachment{Name: "big.bin", Data: data})
	if err != nil {
		t.Fatal(err)
	}
	m := h.s.Uploaded(up.ID)
	if m == nil || !bytes.Equal(m.Data, data) || m.Filename != "big.bin" || m.Type != "file" || up.Type != adapter.AttachFile || up.Data != nil {
		t.Fatalf("uploaded %+v as %+v", up, m)
	}
	if n := len(frames(h.s, "aibot_upload_media_chunk")); n != 3 {
		t.Errorf("%d chunk frames; want 3", n)
	}
	h.s.PushText(aibottest.Conv{User: "u"}, "send me files")
	ev := h.next(t)
	img := []byte("\x89PNG\r\n\x1a\nimg")
	r, err := h.bot.Send(ctx, adapter.Message{ReplyTo: ev.ID, Text: "here:", Attachments: []adapter.Attachment{{Name: "a.png", ContentType: "image/png", Data: img}, up}})
	if err != nil {
		t.Fatal(err)
	}
	if len(r.IDs) != 3 {
		t.Errorf("receipt ids %q; want 3 (text, image, file)", r.IDs)
	}
	if _, err := h.bot.Send(ctx, adapter.Message{To: adapter.Target{User: "u"}, Attachments: []adapter.Attachment{up}}); err != nil {
		t.Fatal(err)
	}
	noRefused(t, h.s)
	var got []string
	for _, m := range h.s.Sent() {
		got = append(got, m.Cmd+"/"+m.MsgType)
	}
	if want := "aibot_respond_msg/image aibot_respond_msg/file aibot_send_msg/file"; strings.Join(got, " ") != want {
		t.Errorf("sent %s; want %s", strings.Join(got, " "), want)
	}
	if _, err := h.bot.Upload(ctx, adapter.Attachment{Type: adapter.AttachVoice, Data: make([]byte, 3<<20)}); !errors.Is(err, adapter.ErrTooLarge) {
		t.Errorf("3 MB voice upload = %v; want too large", err)
	}
}

func frames(s *aibottest.Server, cmd string) []aibottest.Frame {
	var out []aibottest.Frame
	for _, f := range s.Frames() {
		if f.Cmd == cmd {
			out = append(out, f)
		}
	}
	return out
}

func TestPollRunsTheConnection(t *testing.T) {
	s := &aibottest.Server{}
	srv := httptest.NewServer(s)
	defer srv.Close()
	bot, _ := aibot.New(aibot.Options{BotID: "BOT1", Secret: "S1", WSURL: aibottest.WSURL(srv.URL)})
	defer bot.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	evs, err := bot.Poll(ctx) // starts the connection; nothing to return yet
	cancel()
	if err != nil || len(evs) != 0 {
		t.Fatalf("first Poll = %v, %v", evs, err)
	}
	eventually(t, "the connection", func() bool { return s.Connections() == 1 })
	for i := 0; i < 3; i++ {
		s.PushText(aibottest.Conv{User: "u"}, fmt.Sprint("m", i))
	}
	var got []string
	for len(got) < 3 {
		evs, err := bot.Poll(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		for _, ev := range evs {
			got = append(got, ev.Text)
		}
	}
	if strings.Join(got, ",") != "m0,m1,m2" {
		t.Errorf("polled %q; want m0..m2 in order", got)
	}
	if _, err := bot.Send(t.Context(), adapter.Message{To: adapter.Target{User: "u"}, Text: "reply"}); err != nil {
		t.Errorf("Send on the polled connection: %v", err)
	}
	s.Kick()
	if _, err := bot.Poll(t.Context()); !errors.Is(err, aibot.ErrKicked) {
		t.Errorf("Poll after a kick = %v; want ErrKicked", err)
	}
}

func TestCheck(t *testing.T) {
	s := &aibottest.Server{}
	srv := httptest.NewServer(s)
	defer srv.Close()
	good, _ := aibot.New(aibot.Options{BotID: "BOT1", Secret: "S1", WSURL: aibottest.WSURL(srv.URL)})
	if err := good.Check(t.Context()); err != nil {
		t.Fatalf("Check with good credentials: %v", err)
	}
	bad, _ := aibot.New(aibot.Options{BotID: "BOT1", Secret: "nope", WSURL: aibottest.WSURL(srv.URL)})
	if err := bad.Check(t.Context()); !errors.Is(err, adapter.ErrUnauthorized) || adapter.Code(err) != "853000" {
		t.Errorf("Check with a wrong secret = %v; want unauthorized 853000", err)
	}
	eventually(t, "the checked connection to close", func() bool { return s.Connections() == 0 })
	if s.Subscribes() != 2 {
		t.Errorf("%d subscribes; want 2", s.Subscribes())
	}
}
