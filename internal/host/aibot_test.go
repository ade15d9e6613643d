package host

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/seed-a64d9e1f/chatwire/adapter"
	"github.com/seed-a64d9e1f/chatwire/adapter/wecom/aibot/aibottest"
	"github.com/seed-a64d9e1f/chatwire/internal/config"
	"github.com/seed-a64d9e1f/chatwire/internal/platforms"
)

// TestWeComAIBotThroughTheHost: a wecom_aibot bot configured in the host runs its long
// connection in the plugin (through Poll); a message pushed by the emulator reaches the SSE
// stream, and a reply sent with reply_to reaches the emulator on the callback's req_id.
// aibotHost runs a host with one wecom_aibot bot "hr" on the emulator emu.
func aibotHost(t *testing.T, emu *aibottest.Server) *env { return aibotHostB(t, emu) }

func aibotHostB(t testing.TB, emu *aibottest.Server) *env {
	t.Helper()
	srv := httptest.NewServer(emu)
	t.Cleanup(srv.Close)
	return aibotHostAt(t, emu, aibottest.WSURL(srv.URL), "", true)
}

// aibotHostAt runs a host whose bot "hr" dials wsURL, on the Redis at redisURL ("" for
// none); with wait it waits for the emulator to see one connection.
func aibotHostAt(t testing.TB, emu *aibottest.Server, wsURL, redisURL string, wait bool) *env {
	t.Helper()
	cfg := &config.Config{
		Server: config.ServerConfig{Listen: "127.0.0.1:0", APIKeys: []string{testAPIKey}},
		Store:  config.StoreConfig{RedisURL: redisURL},
		Bots: []config.BotConfig{{Name: "hr", Platform: adapter.PlatformWeComAIBot,
			WeComAIBot: &platforms.WeComAIBot{BotID: "BOT1", Secret: "S1", WSURL: wsURL}}},
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	h, err := Start(t.Context(), cfg, Options{Logger: slog.New(slog.NewJSONHandler(logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		h.Shutdown()
		if strings.Contains(logs.String(), `"S1"`) {
			t.Error("logs hold the secret")
		}
	})
	deadline := time.Now().Add(20 * time.Second)
	for wait && emu.Connections() != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("the plugin did not connect; logs:\n%s", logs)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return &env{t: t, h: h, logs: logs}
}

// TestWeComAIBotThroughTheHost: a wecom_aibot bot configured in the host runs its long
// connection in the plugin (through Poll); a message pushed by the emulator reaches the SSE
// stream, and a reply sent with reply_to reaches the emulator on the callback's req_id.
func TestWeComAIBotThroughTheHost(t *testing.T) {
	emu := &aibottest.Server{}
	e := aibotHost(t, emu)
	events := e.subscribe("")
	p, err := emu.PushText(aibottest.Conv{User: "zhangsan"}, "hello host")
	if err != nil {
		t.Fatal(err)
	}
	ev := next(t, events).ev
	if ev.Text != "hello host" || ev.ID != "wecom_aibot:"+p.MsgID || ev.Platform != adapter.PlatformWeComAIBot {
		t.Fatalf("SSE event = %+v", ev)
	}
	// The host still wants a target beside reply_to; the adapter answers on the callback.
	status, _, body := e.do("POST", "/v1/bots/hr/messages", testAPIKey, map[string]any{"to": map[string]string{"user": "zhangsan"}, "reply_to": ev.ID, "markdown": "**hi** back"})
	if status != 200 {
		t.Fatalf("reply = %d %s", status, body)
	}
	sent := emu.Sent()
	if len(sent) != 1 || sent[0].Cmd != "aibot_respond_msg" || sent[0].ReqID != p.ReqID || sent[0].Content != "**hi** back" {
		t.Errorf("emulator got %+v", sent)
	}
}

// streamReply POSTs text to the host as an NDJSON stream of n deltas replying to eventID,
// written as the request goes (chunked), and returns the status and body.
func streamReply(t *testing.T, e *env, eventID, text string, n int) (int, []byte) {
	return streamReplyGated(t, e, eventID, text, n, nil)
}

// streamReplyGated is streamReply calling afterFirst (if not nil) once the first delta is
// written, before the others.
func streamReplyGated(t *testing.T, e *env, eventID, text string, n int, afterFirst func()) (int, []byte) {
	t.Helper()
	pr, pw := io.Pipe()
	go func() {
		enc := json.NewEncoder(pw)
		enc.Encode(map[string]string{"reply_to": eventID})
		size := (len(text) + n - 1) / n
		for i := 0; i < len(text); i += size {
			if i > 0 && afterFirst != nil {
				afterFirst()
				afterFirst = nil
			}
			// Deltas cut anywhere, even inside a character, are JSON strings: cut at a
			// character boundary as an LLM client would.
			end := min(i+size, len(text))
			for end < len(text) && !utf8.RuneStart(text[end]) {
				end++
			}
			enc.Encode(map[string]string{"delta": text[i:end]})
			i = end - size
		}
		pw.Close()
	}()
	req, _ := http.NewRequestWithContext(t.Context(), "POST", e.h.URL()+"/v1/bots/hr/messages", pr)
	req.Header.Set("Authorization", "Bearer "+testAPIKey)
	req.Header.Set("Content-Type", "application/x-ndjson")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, body
}

func longAnswer() string {
	var b strings.Builder
	for i := 0; b.Len() < 60000; i++ {
		fmt.Fprintf(&b, "token%d 字 ", i)
	}
	return b.String()
}

// TestStreamedReplyThroughTheHost is the proof: a 60 KB answer streamed as 3,000
// small deltas in one HTTP request reaches the emulator as ≤ 3 bubbles whose final texts
// concatenate to exactly the input, no frame over 20,480 bytes, frames at least the
// adapter's 500 ms pace apart.
func TestStreamedReplyThroughTheHost(t *testing.T) {
	emu := &aibottest.Server{}
	e := aibotHost(t, emu)
	events := e.subscribe("")
	emu.PushText(aibottest.Conv{User: "u"}, "write a lot")
	ev := next(t, events).ev
	text := longAnswer()
	status, body := streamReply(t, e, ev.ID, text, 3000)
	if status != 200 {
		t.Fatalf("streamed reply = %d %s", status, body)
	}
	var r streamResponse
	json.Unmarshal(body, &r)
	bubbles := emu.Bubbles()
	if len(bubbles) == 0 || len(bubbles) > 3 || len(r.IDs) != len(bubbles) {
		t.Errorf("%d bubbles, answer %s; want 1 to 3, each named in ids", len(bubbles), body)
	}
	var last time.Time
	for i, b := range bubbles {
		if !b.Finished {
			t.Errorf("bubble %d not finished", i)
		}
		for _, f := range b.Frames {
			if len(f.Content) > aibottest.MaxStreamBytes {
				t.Errorf("a frame of %d bytes", len(f.Content))
			}
			if !last.IsZero() && f.At.Sub(last) < 500*time.Millisecond {
				t.Errorf("frames %s apart; want ≥ 500ms", f.At.Sub(last))
			}
			last = f.At
		}
	}
	if got := strings.Join(emu.Shown("u"), ""); got != text {
		t.Errorf("the user sees %d bytes; want exactly the %d streamed", len(got), len(text))
	}
	for _, f := range emu.Refused() {
		t.Errorf("emulator refused %s: %d %s", f.Cmd, f.Errcode, f.Reason)
	}
}

// TestStreamedReplySurvivesExpiry: the same answer over streams the emulator expires right
// after their first frame (846608) still arrives whole, the rest by aibot_send_msg.
func TestStreamedReplySurvivesExpiry(t *testing.T) {
	emu := &aibottest.Server{StreamTTL: time.Nanosecond}
	e := aibotHost(t, emu)
	events := e.subscribe("")
	emu.PushText(aibottest.Conv{User: "u"}, "write a lot")
	ev := next(t, events).ev
	text := longAnswer()
	// The rest of the answer comes once the stream's first frame is shown: had the whole
	// answer arrived before it (a fast host), each 20 KB bubble would go as one frame of a
	// stream of its own and never meet the expiry.
	shown := func() {
		for deadline := time.Now().Add(10 * time.Second); len(emu.Shown("u")) == 0 && time.Now().Before(deadline); {
			time.Sleep(5 * time.Millisecond)
		}
	}
	if status, body := streamReplyGated(t, e, ev.ID, text, 3000, shown); status != 200 {
		t.Fatalf("streamed reply = %d %s", status, body)
	}
	if got := strings.Join(emu.Shown("u"), ""); got != text {
		t.Errorf("the user sees %d bytes; want exactly the %d streamed", len(got), len(text))
	}
	if n := len(emu.Sent()); n < 2 {
		t.Errorf("%d aibot_send_msg; want the rest of 60 KB in ≥ 2", n)
	}
}

func TestStreamedSendErrors(t *testing.T) {
	emu := &aibottest.Server{}
	e := aibotHost(t, emu)
	post := func(body string) (int, string) {
		req, _ := http.NewRequestWithContext(t.Context(), "POST", e.h.URL()+"/v1/bots/hr/messages", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+testAPIKey)
		req.Header.Set("Content-Type", "application/x-ndjson")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	emu.PushText(aibottest.Conv{User: "u"}, "q")
	events := e.subscribe("")
	ev := next(t, events).ev
	tests := []struct {
		name, body string
		status     int
	}{
		{"empty", "", 400},
		{"content in the header", `{"reply_to":"` + ev.ID + `","text":"x"}` + "\n", 400},
		{"unknown reply_to", `{"reply_to":"wecom_aibot:nope"}` + "\n", 404},
		{"bad format", `{"reply_to":"` + ev.ID + `","format":"html"}` + "\n", 400},
		{"malformed line", `{"reply_to":"` + ev.ID + `"}` + "\n" + `{"delta":"a"}` + "\n" + `{"text":"b"}` + "\n", 400},
		{"no text", `{"reply_to":"` + ev.ID + `"}` + "\n", 400},
	}
	for _, tc := range tests {
		if status, body := post(tc.body); status != tc.status {
			t.Errorf("%s: %d %s; want %d", tc.name, status, body, tc.status)
		}
	}
}
