package aibot

import (
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/seed-a64d9e1f/chatwire/adapter"
	"github.com/seed-a64d9e1f/chatwire/adapter/wecom"
)

// refuseTransport fails every request: fuzzed media URLs never leave the process.
type refuseTransport struct{}

func (refuseTransport) RoundTrip(*http.Request) (*http.Response, error) {
	return nil, errors.New("no network in fuzzing")
}

// fuzzFrameSeeds are frames WeCom sends, from spec §5 vector A, the emulator's pushes and
// the tests' raw frames (control characters, acks, kicks).
var fuzzFrameSeeds = []string{
	`{"headers":{"req_id":"aibot_subscribe_1796411236498_f8e71843"},"errcode":0,"errmsg":"ok"}`,
	`{"cmd":"aibot_msg_callback","headers":{"req_id":"REQ_MSG_1"},"body":{"msgid":"M1","aibotid":"BOT1","chattype":"single","from":{"userid":"u1"},"msgtype":"text","text":{"content":"hello"}}}`,
	`{"headers":{"req_id":"REQ_MSG_1"},"errcode":0,"errmsg":"ok"}`,
	`{"headers":{"req_id":"aibot_send_msg_1"},"errcode":846608,"errmsg":"stream expired"}`,
	`{"headers":{"req_id":"aibot_send_msg_1"},"errcode":0,"errmsg":"ok","body":{"media_id":"m"}}`,
	`{"headers":{"req_id":"ping_1_00"},"errcode":0,"errmsg":"ok"}`,
	"{\"cmd\":\"aibot_msg_callback\",\x01\"headers\":{\"req_id\":\"R9\"},\"body\":{\"msgid\":\"C1\",\"aibotid\":\"BOT1\",\"chattype\":\"single\",\"from\":{\"userid\":\"u\"},\"msgtype\":\"text\",\"text\":{\"content\":\"ctl\x02 chars\x1f\"}}}",
	`{"cmd":"aibot_msg_callback","headers":{"req_id":"R2"},"body":{"msgid":"M2","aibotid":"BOT1","chatid":"g1","chattype":"group","from":{"userid":"u1"},"msgtype":"image","image":{"url":"http://127.0.0.1:1/media/x","aeskey":"kcyQBYTEoVDt3bKxSmQ4abeKzVwDAwMvxlhJPuYxOco"}}}`,
	`{"cmd":"aibot_msg_callback","headers":{"req_id":"R3"},"body":{"msgid":"M3","aibotid":"BOT1","chattype":"single","from":{"userid":"u1"},"msgtype":"mixed","mixed":{"msg_item":[{"msgtype":"text","text":{"content":"a"}},{"msgtype":"image","image":{"url":"http://127.0.0.1:1/m"}}]},"quote":{"msgtype":"file","file":{"url":"http://127.0.0.1:1/f"}}}}`,
	`{"cmd":"aibot_msg_callback","headers":{"req_id":"R4"},"body":{"msgid":"M4","aibotid":"BOT1","chattype":"single","from":{"userid":"u1"},"msgtype":"voice","voice":{"content":"transcribed words"}}}`,
	`{"cmd":"aibot_event_callback","headers":{"req_id":"R5"},"body":{"msgid":"E1","create_time":1700000000,"aibotid":"BOT1","chattype":"single","from":{"userid":"u1"},"msgtype":"event","event":{"eventtype":"enter_chat"}}}`,
	`{"cmd":"aibot_event_callback","headers":{"req_id":"R6"},"body":{"msgid":"E2","aibotid":"BOT1","chattype":"single","from":{"userid":"u1"},"msgtype":"event","event":{"eventtype":"template_card_event","template_card_event":{"card_type":"button_interaction","event_key":"yes","task_id":"T1"}}}}`,
	`{"cmd":"aibot_event_callback","headers":{"req_id":"R7"},"body":{"msgid":"E3","aibotid":"BOT1","chattype":"single","from":{"userid":""},"msgtype":"event","event":{"eventtype":"disconnected_event"}}}`,
	`{"cmd":"aibot_unknown","headers":{"req_id":"R8"},"body":{}}`,
	`{"cmd":"aibot_msg_callback","headers":{"req_id":"R10"},"body":"not an object"}`,
	`{"cmd":"aibot_msg_callback","headers":{"req_id":"R11"},"body":{"msgtype":"text"}}`,
	`not json`,
	``,
	`null`,
	`{"errcode":"0"}`,
}

// FuzzFrame: any frame read from the long connection is dispatched without a panic; a frame
// that is not JSON gives an error wrapping errBadFrame and nothing else; an ack reaches the
// frame waiting on its req_id with the frame's errcode; a callback becomes exactly one queued
// event whose id is its msgid and whose Raw decodes to the same callback (round trip); only
// disconnected_event gives ErrKicked.
func FuzzFrame(f *testing.F) {
	for _, s := range fuzzFrameSeeds {
		f.Add([]byte(s))
	}
	newBot := func(tb testing.TB) *Bot {
		b, err := New(Options{Name: "ai", BotID: "BOT1", Secret: "S1", HTTPClient: &http.Client{Transport: refuseTransport{}},
			Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
		if err != nil {
			tb.Fatal(err)
		}
		tb.Cleanup(func() { b.Close() })
		return b
	}
	b := newBot(f)
	const pendingID = "aibot_send_msg_1"
	// The seeds that are callbacks with a msgid round-trip: one queued event each.
	queued := 0
	for _, s := range fuzzFrameSeeds {
		in := newInbox()
		b.dispatch(f.Context(), &wsConn{pending: map[string]chan ack{}, done: make(chan struct{})}, []byte(s), in)
		if n := len(in.items); n == 1 {
			var again callbackBody
			if ev := b.event(f.Context(), in.items[0]); json.Unmarshal(ev.Raw, &again) != nil || !reflect.DeepEqual(again, in.items[0].body) {
				f.Errorf("seed %q: the event's Raw does not decode to its callback", s)
			}
			queued++
		}
	}
	if queued != 7 {
		f.Errorf("%d seed callbacks queued; want the 7 with a msgid and msgtype (and not disconnected_event)", queued)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		b := newBot(t) // fresh: what an input covers does not depend on the inputs before it
		ch := make(chan ack, 1)
		c := &wsConn{pending: map[string]chan ack{pendingID: ch}, done: make(chan struct{})}
		c.missed.Store(1)
		in := newInbox()
		err := b.dispatch(t.Context(), c, data, in)
		frame, perr := parseFrame(data)
		if perr != nil {
			if !errors.Is(err, errBadFrame) || !errors.Is(perr, errBadFrame) {
				t.Fatalf("frame %q does not parse (%v) but dispatch = %v; want errBadFrame", data, perr, err)
			}
			if len(in.items) != 0 || len(ch) != 0 {
				t.Fatalf("a frame that does not parse was used")
			}
			return
		}
		if err != nil && err != ErrKicked {
			t.Fatalf("dispatch(%q) = %v; want nil or ErrKicked", data, err)
		}
		var body callbackBody
		bodyErr := json.Unmarshal(frame.Body, &body)
		kick := frame.Cmd == "aibot_event_callback" || frame.Cmd == "aibot_msg_callback"
		kick = kick && bodyErr == nil && body.MsgType != "" && body.Event != nil && body.Event.EventType == "disconnected_event"
		if (err == ErrKicked) != kick {
			t.Fatalf("dispatch(%q) = %v; disconnected_event %v", data, err, kick)
		}
		switch {
		case frame.Cmd == "" && strings.HasPrefix(frame.Headers.ReqID, "ping"):
			if c.missed.Load() != 0 {
				t.Errorf("a ping ack did not reset the missed count")
			}
		case frame.Cmd == "" && frame.Headers.ReqID == pendingID:
			if len(ch) != 1 {
				t.Fatalf("the ack %q did not reach the waiting frame", data)
			}
			a := <-ch
			if want := -1; frame.Errcode != nil && a.code != *frame.Errcode || frame.Errcode == nil && a.code != want {
				t.Errorf("ack code %d for errcode %v", a.code, frame.Errcode)
			}
			if _, still := c.pending[pendingID]; still {
				t.Errorf("an acked frame is still pending")
			}
		case len(ch) != 0:
			t.Fatalf("frame %q acked a frame on another req_id", data)
		}
		callback := (frame.Cmd == "aibot_msg_callback" || frame.Cmd == "aibot_event_callback") && bodyErr == nil &&
			body.MsgID != "" && body.MsgType != "" && !kick
		if want := map[bool]int{true: 1}[callback]; len(in.items) != want {
			t.Fatalf("frame %q queued %d callbacks; want %d", data, len(in.items), want)
		}
		if !callback {
			return
		}
		ev := b.event(t.Context(), in.items[0])
		if ev.ID != eventID(body.MsgID) || ev.Bot != "ai" || ev.Platform != adapter.PlatformWeComAIBot {
			t.Errorf("event %q/%q/%q for msgid %q", ev.ID, ev.Bot, ev.Platform, body.MsgID)
		}
		var again callbackBody
		if err := json.Unmarshal(ev.Raw, &again); err != nil || !reflect.DeepEqual(again, body) {
			t.Errorf("the event's Raw %q does not decode to its callback (%v)", ev.Raw, err)
		}
		if body.MsgType == "text" && body.Text != nil && ev.Text != body.Text.Content {
			t.Errorf("text event %q; want %q", ev.Text, body.Text.Content)
		}
	})
}

// vectorBBody and vectorBQuery are spec §5 vector B's callback.
const (
	hookToken    = "aibotSpecTok3n"
	hookKey      = "B4U9TpUs1NdxK5ikMvAO5vLcjeK9Wi3iTsv6NRhjL5M"
	vectorBQuery = "msg_signature=38c3a98556aaf00b190cb8d1d10621fdc564ec86&timestamp=1700000000&nonce=1372623149"
	vectorBBody  = `{"encrypt":"GXd6WVtus+F6/uuOgfAT6lkpNNzIIH5w1uAJFJ/ChC0iACR2LYqgJwwTBGZ83krPVD1EHs59Y/tcIY9ahYQATPyq+7R5y6/7ko4nVOGxe+3q3Q3fTOE3A5UE6WiL+hW8qF8NR/hVsCtWhVldpB5LmPvKmzjPBXv0yBM72gRQgVDRQqsOD0/WnFIXU6nI9JkmgO5U0YwNHrIwnsNVgmx0woBOKoj5aoePQ5gNl5SiGTvGTGp6pbPiR/sVnI5JKPQ7WptHdkAZxgU1NvR1vlk9B2Y5bzdU3ADPgvsAnMUkdKV+/HxFmTZ4snmSyXRput3L7qlHbYDecYJ1CxlgF1zI1IY81p9P030LwcUERt+/jyfB+ihhXaGk2dr+ynnYOe+ZxnD6gHAbs6+y9e6pQYTdqq081cSATe9LQW9hIPQgZ8G1Ax1tJzWywTuE1ZMsNWq73PHBDTvPLP7F3tYXCLHfHA=="}`
	vectorBPlain = `{"msgid":"CAIQ16HMjQYY/NGagIOAgAMgq4KM0AI=","aibotid":"aibSPECBOT0001","chatid":"wrkSFfCgAAtestchat","chattype":"group","from":{"userid":"zhangsan"},"response_url":"https://qyapi.weixin.qq.com/cgi-bin/aibot/response?response_code=RESPONSE_CODE","msgtype":"text","text":{"content":"@RobotA hello robot"}}`
)

// fuzzCallbackSeeds are decrypted webhook callbacks: vector B and one of each kind the
// tests push (spec §2.4), plus a stream refresh and malformed ones.
var fuzzCallbackSeeds = []string{
	vectorBPlain,
	`{"msgid":"W1","aibotid":"BOT1","chattype":"single","from":{"userid":"u"},"response_url":"http://127.0.0.1:1/cgi-bin/aibot/response?response_code=C","msgtype":"text","text":{"content":"hi"}}`,
	`{"msgid":"W2","aibotid":"BOT1","chattype":"single","from":{"userid":"u"},"msgtype":"image","image":{"url":"http://127.0.0.1:1/media/i"}}`,
	`{"msgid":"W3","aibotid":"BOT1","chatid":"g","chattype":"group","from":{"userid":"u"},"msgtype":"mixed","mixed":{"msg_item":[{"msgtype":"text","text":{"content":"a"}},{"msgtype":"image","image":{"url":"http://127.0.0.1:1/m"}}]}}`,
	`{"msgid":"W4","aibotid":"BOT1","chattype":"single","from":{"userid":"u"},"msgtype":"file","file":{"url":"http://127.0.0.1:1/f"},"quote":{"msgtype":"text","text":{"content":"q"}}}`,
	`{"msgid":"W5","create_time":1700000000,"aibotid":"BOT1","chattype":"single","from":{"userid":"u"},"msgtype":"event","event":{"eventtype":"enter_chat"}}`,
	`{"msgid":"W6","aibotid":"BOT1","chattype":"single","from":{"userid":"u"},"msgtype":"event","event":{"eventtype":"template_card_event","template_card_event":{"event_key":"yes"}}}`,
	`{"msgid":"W7","aibotid":"BOT1","chattype":"single","from":{"userid":"u"},"msgtype":"stream","stream":{"id":"STREAM1"}}`,
	`{"aibotid":"BOT1","msgtype":"text","text":{"content":"no msgid"}}`,
	`{"msgid":"W8"}`,
	`[]`,
	`not json`,
	``,
}

// fuzzHookBot returns a fresh webhook-mode bot: each fuzz input meets the same state, so
// what it covers does not depend on the inputs before it.
func fuzzHookBot(f testing.TB) *Bot {
	bot, err := New(Options{Name: "ai", Token: hookToken, EncodingAESKey: hookKey, ReplayWindow: 100 * 365 * 24 * time.Hour,
		StreamWait: time.Millisecond, HTTPClient: &http.Client{Transport: refuseTransport{}}, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { bot.Close() })
	return bot
}

// checkAnswer holds for every webhook answer: a status; a refusal has no events and the
// status of its kind; an acceptance is a 200 whose body, if any, is a passive reply that
// decrypts with the bot's key and carries a valid signature.
func checkAnswer(t *testing.T, c *wecom.Crypto, resp *adapter.WebhookResponse, evs []adapter.Event, err error) []byte {
	t.Helper()
	if resp == nil || resp.Status == 0 {
		t.Fatalf("no answer (err %v)", err)
	}
	if err != nil {
		kind := adapter.KindOf(err)
		ok := kind == adapter.KindInvalidRequest && (resp.Status == http.StatusBadRequest || resp.Status == http.StatusMethodNotAllowed) ||
			kind == adapter.KindUnauthorized && resp.Status == http.StatusUnauthorized
		if len(evs) != 0 || !ok {
			t.Fatalf("refusal %d with %d events, kind %s: %v", resp.Status, len(evs), kind, err)
		}
		return nil
	}
	if resp.Status != http.StatusOK || len(evs) > 1 {
		t.Fatalf("acceptance %d with %d events", resp.Status, len(evs))
	}
	if len(resp.Body) == 0 || resp.Header.Get("Content-Type") != "application/json" {
		return nil
	}
	var env map[string]string
	if err := json.Unmarshal(resp.Body, &env); err != nil {
		t.Fatalf("passive reply %q is not JSON", resp.Body)
	}
	if !c.Verify(env["msgsignature"], env["timestamp"], env["nonce"], env["encrypt"]) {
		t.Fatalf("passive reply signature does not verify")
	}
	plain, err := c.Decrypt(env["encrypt"])
	if err != nil || !json.Valid(plain) {
		t.Fatalf("passive reply does not decrypt to JSON: %q, %v", plain, err)
	}
	return plain
}

// FuzzWebhook: any request to a webhook-mode bot is answered without a panic, with the
// documented status per error kind (400 invalid_request, 401 unauthorized, 405 for methods);
// only a correctly signed callback is accepted.
func FuzzWebhook(f *testing.F) {
	c, err := wecom.NewCrypto(hookToken, hookKey, "")
	if err != nil {
		f.Fatal(err)
	}
	f.Add("POST", vectorBQuery, []byte(vectorBBody))
	echo, _ := c.Encrypt([]byte("echo-1"))
	f.Add("GET", url.Values{"msg_signature": {c.Signature("1700000000", "n1", echo)}, "timestamp": {"1700000000"}, "nonce": {"n1"}, "echostr": {echo}}.Encode(), []byte(nil))
	f.Add("POST", "msg_signature="+"0000000000000000000000000000000000000000"+"&timestamp=1700000000&nonce=1372623149", []byte(vectorBBody))
	f.Add("POST", vectorBQuery, []byte(`{"encrypt":""}`))
	f.Add("POST", vectorBQuery, []byte("not json"))
	f.Add("PUT", vectorBQuery, []byte(vectorBBody))
	f.Add("GET", "echostr=AAAA&timestamp=1&nonce=2&signature=x", []byte(nil))
	f.Fuzz(func(t *testing.T, method, query string, body []byte) {
		bot := fuzzHookBot(t)
		q, _ := url.ParseQuery(query)
		resp, evs, err := bot.HandleWebhook(t.Context(), &adapter.WebhookRequest{Method: method, Path: "/hook", Query: q, Body: body})
		checkAnswer(t, c, resp, evs, err)
		if err == nil && method == http.MethodPost && len(evs) == 1 && evs[0].ID == "" {
			t.Fatalf("an event without an id")
		}
	})
}

// FuzzWebhookCallback: any decrypted callback (encrypted and signed as WeCom does, so the
// parser behind the signature check is reached) is answered without a panic: a body that is
// not a JSON object with msgtype, or a message without msgid, is a 400 of kind
// invalid_request; a stream refresh is a 200 with the stream's snapshot and no event; any
// other callback is a 200 with one event whose id is its msgid and whose Raw is the callback
// (round trip).
func FuzzWebhookCallback(f *testing.F) {
	c, err := wecom.NewCrypto(hookToken, hookKey, "")
	if err != nil {
		f.Fatal(err)
	}
	for _, s := range fuzzCallbackSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, plain []byte) {
		bot := fuzzHookBot(t)
		enc, err := c.Encrypt(plain)
		if err != nil {
			t.Fatal(err)
		}
		ts := strconv.FormatInt(time.Now().Unix(), 10)
		q := url.Values{"msg_signature": {c.Signature(ts, "n", enc)}, "timestamp": {ts}, "nonce": {"n"}}
		body, _ := json.Marshal(map[string]string{"encrypt": enc})
		resp, evs, err := bot.HandleWebhook(t.Context(), &adapter.WebhookRequest{Method: "POST", Query: q, Body: body})
		reply := checkAnswer(t, c, resp, evs, err)
		var cb callbackBody
		parsed := json.Unmarshal(plain, &cb) == nil && cb.MsgType != ""
		switch {
		case !parsed || cb.MsgType != "stream" && cb.MsgID == "":
			if resp.Status != http.StatusBadRequest || adapter.KindOf(err) != adapter.KindInvalidRequest {
				t.Fatalf("callback %q answered %d, %v; want 400 invalid_request", plain, resp.Status, err)
			}
		case cb.MsgType == "stream":
			var r struct {
				MsgType string `json:"msgtype"`
				Stream  struct {
					ID     string `json:"id"`
					Finish bool   `json:"finish"`
				} `json:"stream"`
			}
			id := ""
			if cb.Stream != nil {
				id = cb.Stream.ID
			}
			if err != nil || len(evs) != 0 || json.Unmarshal(reply, &r) != nil || r.MsgType != "stream" || r.Stream.ID != id || !r.Stream.Finish {
				t.Fatalf("stream refresh %q answered %q, %d events, %v; want the finished snapshot of %q", plain, reply, len(evs), err, id)
			}
		default:
			if err != nil || len(evs) != 1 {
				t.Fatalf("callback %q answered %d, %d events, %v; want one event", plain, resp.Status, len(evs), err)
			}
			ev := evs[0]
			var again struct {
				MsgID string `json:"msgid"`
			}
			if ev.ID != "wecom_aibot:"+cb.MsgID || json.Unmarshal(ev.Raw, &again) != nil || again.MsgID != cb.MsgID {
				t.Fatalf("event %q with Raw %q for msgid %q", ev.ID, ev.Raw, cb.MsgID)
			}
			if ev.Bot != "ai" || ev.Platform != adapter.PlatformWeComAIBot {
				t.Fatalf("event of bot %q platform %q", ev.Bot, ev.Platform)
			}
		}
	})
}

// TestWebhookStreamsBounded: message callbacks whose streams WeCom never polls to the end do
// not pile up: the bot keeps at most maxHookReplies of them, forgetting the oldest. (Found by
// FuzzWebhookCallback: past 10,000 such streams every callback swept them all under the lock
// and forgot none, so each took longer than the last — 8 ms each at 25,000 — and memory grew
// for an hour.)
func TestWebhookStreamsBounded(t *testing.T) {
	c, err := wecom.NewCrypto(hookToken, hookKey, "")
	if err != nil {
		t.Fatal(err)
	}
	bot, err := New(Options{Name: "ai", Token: hookToken, EncodingAESKey: hookKey, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer bot.Close()
	ts := strconv.FormatInt(time.Now().Unix(), 10)
	const n = maxHookReplies + 200
	for i := range n {
		enc, _ := c.Encrypt([]byte(`{"msgid":"M` + strconv.Itoa(i) + `","msgtype":"text","chattype":"single","from":{"userid":"u"},"text":{"content":"x"}}`))
		q := url.Values{"msg_signature": {c.Signature(ts, "n", enc)}, "timestamp": {ts}, "nonce": {"n"}}
		body, _ := json.Marshal(map[string]string{"encrypt": enc})
		if resp, evs, err := bot.HandleWebhook(t.Context(), &adapter.WebhookRequest{Method: "POST", Query: q, Body: body}); err != nil || resp.Status != 200 || len(evs) != 1 {
			t.Fatalf("callback %d = %v, %d events, %v", i, resp, len(evs), err)
		}
	}
	bot.hooks.mu.Lock()
	streams, byEvent := len(bot.hooks.streams), len(bot.hooks.byEvent)
	_, newest := bot.hooks.byEvent[eventID("M"+strconv.Itoa(n-1))]
	_, oldest := bot.hooks.byEvent[eventID("M0")]
	bot.hooks.mu.Unlock()
	if streams > maxHookReplies || byEvent > maxHookReplies || !newest || oldest {
		t.Errorf("after %d unanswered messages the bot keeps %d streams (%d by event; newest kept %v, oldest kept %v); want at most %d, the newest",
			n, streams, byEvent, newest, oldest, maxHookReplies)
	}
}
