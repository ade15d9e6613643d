package wecom_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/seed-a64d9e1f/chatwire/adapter"
	"github.com/seed-a64d9e1f/chatwire/adapter/wecom"
	"github.com/seed-a64d9e1f/chatwire/adapter/wecom/wecomtest"
)

func testCallback(url string) wecomtest.Callback {
	return wecomtest.Callback{URL: url, Token: testToken, EncodingAESKey: testAESKey, CorpID: testCorp, AgentID: testAgent}
}

// webhookHandler serves c.HandleWebhook over HTTP, as a host does, collecting events.
type webhookHandler struct {
	c      *wecom.Client
	mu     sync.Mutex
	events []adapter.Event
	errs   []error
	fail   int // answer 500 to this many requests first
}

func (h *webhookHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	req, err := adapter.NewWebhookRequest(r, 0)
	if err != nil {
		http.Error(w, err.Error(), adapter.HTTPStatus(err))
		return
	}
	h.mu.Lock()
	if h.fail > 0 {
		h.fail--
		h.mu.Unlock()
		http.Error(w, "busy", 500)
		return
	}
	h.mu.Unlock()
	resp, events, err := h.c.HandleWebhook(r.Context(), req)
	h.mu.Lock()
	h.events = append(h.events, events...)
	if err != nil {
		h.errs = append(h.errs, err)
	}
	h.mu.Unlock()
	resp.Write(w)
}

// TestCallbackRoundTrip: the emulator verifies the URL and pushes messages (encrypted and
// signed by silenceper's code) to a real HTTP server running HandleWebhook.
func TestCallbackRoundTrip(t *testing.T) {
	t.Parallel()
	c, _ := setup(t, wecom.Options{})
	h := &webhookHandler{c: c}
	hs := httptest.NewServer(h)
	defer hs.Close()
	srv := &wecomtest.Server{HTTPClient: hs.Client()}
	cb := testCallback(hs.URL + "/webhook/hr")

	if err := srv.VerifyURL(t.Context(), cb); err != nil {
		t.Fatalf("VerifyURL: %v", err)
	}
	now := time.Now()
	msgs := [][]byte{
		wecomtest.TextMessage(testCorp, testAgent, "bono", "你好 <b>&amp;", 7468881572160813124, now),
		wecomtest.EventMessage(testCorp, testAgent, "bono", "click", "menu_1", now),
	}
	for _, m := range msgs {
		p, err := srv.Push(t.Context(), cb, m)
		if err != nil || p.Attempts != 1 || p.Status != 200 || len(p.Reply) != 0 {
			t.Fatalf("Push = %+v, %v", p, err)
		}
	}
	if len(h.errs) != 0 {
		t.Fatalf("webhook errors: %v", h.errs)
	}
	if len(h.events) != 2 {
		t.Fatalf("got %d events; want 2", len(h.events))
	}
	ev := h.events[0]
	if ev.ID != "wecom:7468881572160813124" || ev.Bot != "hr" || ev.Kind != "message" || ev.Text != "你好 <b>&amp;" ||
		ev.Sender.ID != "bono" || ev.Chat != (adapter.Chat{ID: "bono", Type: "direct"}) || !ev.Time.Equal(time.Unix(now.Unix(), 0)) {
		t.Errorf("text event = %+v", ev)
	}
	ev = h.events[1]
	var raw map[string]any
	json.Unmarshal(ev.Raw, &raw)
	if ev.Kind != "event" || ev.Text != "click" || raw["EventKey"] != "menu_1" ||
		!strings.HasPrefix(ev.ID, fmt.Sprintf("wecom:bono:%d:click:", now.Unix())) {
		t.Errorf("event = %+v raw %v", ev, raw)
	}
}

// TestCallbackRetries: WeCom redelivers byte for byte after a non-200; the event id stays the
// same so the host can drop the duplicate.
func TestCallbackRetries(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c, _ := setup(t, wecom.Options{})
		h := &webhookHandler{c: c, fail: 2}
		srv := &wecomtest.Server{HTTPClient: wecomtest.HandlerClient(h), PushRetryDelay: 2 * time.Second}
		start := time.Now()
		p, err := srv.Push(t.Context(), testCallback("http://bot.test/webhook"), wecomtest.TextMessage(testCorp, testAgent, "u", "hi", 42, time.Now()))
		if err != nil || p.Attempts != 3 || p.Status != 200 {
			t.Fatalf("Push = %+v, %v; want success on the 3rd delivery", p, err)
		}
		if d := time.Since(start); d != 4*time.Second {
			t.Errorf("push took %v; want 2 retries 2s apart", d)
		}
		// A second push of the same message (WeCom retrying after a lost answer).
		h.fail = 0
		if _, err := srv.Push(t.Context(), testCallback("http://bot.test/webhook"), wecomtest.TextMessage(testCorp, testAgent, "u", "hi", 42, start)); err != nil {
			t.Fatal(err)
		}
		if len(h.events) != 2 || h.events[0].ID != h.events[1].ID || h.events[0].ID != "wecom:42" {
			t.Errorf("events %+v; want the same id twice", h.events)
		}

		// Every delivery failing: 1 + PushRetries deliveries, then an error.
		h.fail = 100
		p, err = srv.Push(t.Context(), testCallback("http://bot.test/webhook"), wecomtest.TextMessage(testCorp, testAgent, "u", "x", 43, time.Now()))
		if err == nil || p.Attempts != 3 || p.Status != 500 {
			t.Errorf("Push to a failing bot = %+v, %v; want 3 attempts and an error", p, err)
		}
	})
}

// TestCallbackTimeout: a bot slower than 5 s gets the message again.
func TestCallbackTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var calls int
		slow := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			calls++
			if calls == 1 {
				select {
				case <-time.After(10 * time.Second):
				case <-r.Context().Done():
					return
				}
			}
			w.WriteHeader(200)
		})
		srv := &wecomtest.Server{HTTPClient: wecomtest.HandlerClient(slow)}
		p, err := srv.Push(t.Context(), testCallback("http://bot.test/"), []byte("<xml/>"))
		if err != nil || p.Attempts != 2 {
			t.Errorf("Push = %+v, %v; want success on the 2nd delivery after a timeout", p, err)
		}
	})
}

// TestPassiveReply: the pusher verifies and decrypts an encrypted passive reply.
func TestPassiveReply(t *testing.T) {
	t.Parallel()
	cr, _ := wecom.NewCrypto(testToken, testAESKey, testCorp)
	reply := []byte("<xml><Content><![CDATA[pong]]></Content></xml>")
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		enc, _ := cr.Encrypt(reply)
		ts, nonce := "1409659813", "nonce1"
		fmt.Fprintf(w, "<xml><Encrypt><![CDATA[%s]]></Encrypt><MsgSignature><![CDATA[%s]]></MsgSignature><TimeStamp>%s</TimeStamp><Nonce><![CDATA[%s]]></Nonce></xml>",
			enc, cr.Signature(ts, nonce, enc), ts, nonce)
	})
	srv := &wecomtest.Server{HTTPClient: wecomtest.HandlerClient(h)}
	p, err := srv.Push(t.Context(), testCallback("http://bot.test/"), []byte("<xml/>"))
	if err != nil || !bytes.Equal(p.Reply, reply) {
		t.Errorf("Push reply = %q, %v; want %q", p.Reply, err, reply)
	}
	if len(srv.Pushes()) != 1 {
		t.Errorf("Pushes() has %d entries", len(srv.Pushes()))
	}
}

// TestCallbackRefusals: everything untrusted is refused before it is decrypted or parsed,
// with the status and adapter kind a host needs.
func TestCallbackRefusals(t *testing.T) {
	t.Parallel()
	cb := testCallback("")
	now := time.Now().Unix()
	msg := wecomtest.TextMessage(testCorp, testAgent, "u", "hi", 1, time.Now())
	good, q, err := wecomtest.Encrypt(cb, msg, now, "n1")
	if err != nil {
		t.Fatal(err)
	}
	with := func(k, v string) url.Values {
		c := url.Values{}
		for kk, vv := range q {
			c[kk] = vv
		}
		if v == "" {
			c.Del(k)
		} else {
			c.Set(k, v)
		}
		return c
	}
	stale, staleQ, _ := wecomtest.Encrypt(cb, msg, now-400, "n2")
	future, futureQ, _ := wecomtest.Encrypt(cb, msg, now+400, "n3")
	otherCorp := cb
	otherCorp.CorpID = "wwother"
	other, otherQ, _ := wecomtest.Encrypt(otherCorp, msg, now, "n4")
	otherKey := cb
	otherKey.EncodingAESKey = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
	badKey, badKeyQ, _ := wecomtest.Encrypt(otherKey, msg, now, "n5")
	getQ, _ := wecomtest.VerifyQuery(cb, "echo123", now-86400, "n6") // old: GETs are not time-checked
	notMsg, notMsgQ, _ := wecomtest.Encrypt(cb, []byte("<xml><MsgType>text</MsgType>"), now, "n7")
	// Envelopes whose Encrypt cannot be decrypted, with a bad or a good signature: the
	// signature must be checked first (401), and only a signed one reaches decryption (400).
	cr, err := wecom.NewCrypto(testToken, testAESKey, testCorp)
	if err != nil {
		t.Fatal(err)
	}
	envelope := func(enc string) []byte {
		return fmt.Appendf(nil, "<xml><ToUserName><![CDATA[%s]]></ToUserName><Encrypt><![CDATA[%s]]></Encrypt><AgentID><![CDATA[%d]]></AgentID></xml>", testCorp, enc, testAgent)
	}
	signed := func(enc string, sig bool) url.Values {
		v := url.Values{"timestamp": {fmt.Sprint(now)}, "nonce": {"n8"}, "msg_signature": {strings.Repeat("0", 40)}}
		if sig {
			v.Set("msg_signature", cr.Signature(v.Get("timestamp"), "n8", enc))
		}
		return v
	}
	undecryptable := base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{0x5a}, 31)) // not whole AES blocks
	garbage := "!!not base64 at all!!"

	tests := []struct {
		name   string
		method string
		query  url.Values
		body   []byte
		status int
		kind   error
		events int
	}{
		{"good", "POST", q, good, 200, nil, 1},
		{"bad signature", "POST", with("msg_signature", strings.Repeat("0", 40)), good, 401, adapter.ErrUnauthorized, 0},
		{"signature not hex", "POST", with("msg_signature", "zz"), good, 401, adapter.ErrUnauthorized, 0},
		{"tampered timestamp", "POST", with("timestamp", fmt.Sprint(now+1)), good, 401, adapter.ErrUnauthorized, 0},
		{"missing signature", "POST", with("msg_signature", ""), good, 400, adapter.ErrInvalidRequest, 0},
		{"missing nonce", "POST", with("nonce", ""), good, 400, adapter.ErrInvalidRequest, 0},
		{"replay", "POST", staleQ, stale, 403, adapter.ErrUnauthorized, 0},
		{"future", "POST", futureQ, future, 403, adapter.ErrUnauthorized, 0},
		{"other corp", "POST", otherQ, other, 403, adapter.ErrUnauthorized, 0},
		{"other key", "POST", badKeyQ, badKey, 400, adapter.ErrInvalidRequest, 0},
		{"not xml", "POST", q, []byte("{json}"), 400, adapter.ErrInvalidRequest, 0},
		{"no Encrypt", "POST", q, []byte("<xml><ToUserName>x</ToUserName></xml>"), 400, adapter.ErrInvalidRequest, 0},
		{"plaintext not a message", "POST", notMsgQ, notMsg, 400, adapter.ErrInvalidRequest, 0},
		{"bad signature, undecryptable", "POST", signed(undecryptable, false), envelope(undecryptable), 401, adapter.ErrUnauthorized, 0},
		{"bad signature, garbage Encrypt", "POST", signed(garbage, false), envelope(garbage), 401, adapter.ErrUnauthorized, 0},
		{"signed, undecryptable", "POST", signed(undecryptable, true), envelope(undecryptable), 400, adapter.ErrInvalidRequest, 0},
		{"signed, garbage Encrypt", "POST", signed(garbage, true), envelope(garbage), 400, adapter.ErrInvalidRequest, 0},
		{"too large", "POST", q, bytes.Repeat([]byte("x"), 64<<10+1), 413, adapter.ErrTooLarge, 0},
		{"get ok", "GET", getQ, nil, 200, nil, 0},
		{"get bad signature", "GET", func() url.Values {
			v := url.Values{}
			v.Set("msg_signature", strings.Repeat("a", 40))
			v.Set("timestamp", "1")
			v.Set("nonce", "2")
			v.Set("echostr", getQ.Get("echostr"))
			return v
		}(), nil, 401, adapter.ErrUnauthorized, 0},
		{"get no echostr", "GET", func() url.Values {
			v := url.Values{}
			v.Set("msg_signature", "a")
			v.Set("timestamp", "1")
			v.Set("nonce", "2")
			return v
		}(), nil, 400, adapter.ErrInvalidRequest, 0},
		{"put", "PUT", q, good, 405, adapter.ErrInvalidRequest, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var logs bytes.Buffer
			c, _ := setup(t, wecom.Options{Logger: slogJSON(&logs)})
			resp, events, err := c.HandleWebhook(t.Context(), &adapter.WebhookRequest{Method: tc.method, Path: "/webhook/hr", Query: tc.query, Body: tc.body, RemoteAddr: "127.0.0.1:5"})
			if resp == nil || resp.Status != tc.status || len(events) != tc.events {
				t.Fatalf("HandleWebhook = %+v, %d events, %v; want status %d", resp, len(events), err, tc.status)
			}
			if tc.kind == nil {
				if err != nil {
					t.Errorf("error = %v; want nil", err)
				}
				if tc.method == "GET" && string(resp.Body) != "echo123" {
					t.Errorf("GET body = %q; want echo123", resp.Body)
				}
				return
			}
			if !errors.Is(err, tc.kind) {
				t.Errorf("error = %v; want %v", err, tc.kind)
			}
			if !strings.Contains(logs.String(), "callback refused") {
				t.Errorf("refusal not logged: %s", logs.String())
			}
			assertNoSecrets(t, logs.String()+err.Error()+string(resp.Body), testSecret, testToken, testAESKey)
		})
	}
}

func TestCallbackNotConfigured(t *testing.T) {
	t.Parallel()
	srv := &wecomtest.Server{}
	c, err := wecom.New(wecom.Config{CorpID: testCorp, CorpSecret: testSecret, AgentID: 1}, wecom.Options{HTTPClient: srv.Client()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	resp, _, err := c.HandleWebhook(context.Background(), &adapter.WebhookRequest{Method: "GET"})
	if resp.Status != 404 || !errors.Is(err, adapter.ErrNotFound) {
		t.Errorf("HandleWebhook without callback config = %d, %v; want 404 not found", resp.Status, err)
	}
}

func TestParseMessage(t *testing.T) {
	t.Parallel()
	head := "<xml><ToUserName><![CDATA[ww1]]></ToUserName><FromUserName><![CDATA[bono]]></FromUserName><CreateTime>1738984503</CreateTime>"
	tail := "<AgentID>1000002</AgentID></xml>"
	tests := []struct {
		name, body     string
		id, kind, text string
		attach         adapter.Attachment
		rawKey, rawVal string
	}{
		{"text", "<MsgType><![CDATA[text]]></MsgType><Content><![CDATA[nihao]]></Content><MsgId>7468881572160813124</MsgId>",
			"wecom:7468881572160813124", "message", "nihao", adapter.Attachment{}, "MsgType", "text"},
		{"image", "<MsgType><![CDATA[image]]></MsgType><PicUrl><![CDATA[http://p/1.jpg]]></PicUrl><MediaId><![CDATA[m1]]></MediaId><MsgId>2</MsgId>",
			"wecom:2", "message", "", adapter.Attachment{Type: "image", ID: "m1", URL: "http://p/1.jpg"}, "PicUrl", "http://p/1.jpg"},
		{"voice", "<MsgType><![CDATA[voice]]></MsgType><MediaId><![CDATA[v1]]></MediaId><Format><![CDATA[amr]]></Format><MsgId>3</MsgId>",
			"wecom:3", "message", "", adapter.Attachment{Type: "voice", ID: "v1", ContentType: "audio/amr"}, "Format", "amr"},
		{"video", "<MsgType><![CDATA[video]]></MsgType><MediaId><![CDATA[vid]]></MediaId><ThumbMediaId><![CDATA[th]]></ThumbMediaId><MsgId>4</MsgId>",
			"wecom:4", "message", "", adapter.Attachment{Type: "video", ID: "vid"}, "ThumbMediaId", "th"},
		{"location", "<MsgType><![CDATA[location]]></MsgType><Location_X>23.13</Location_X><Location_Y>113.26</Location_Y><Scale>20</Scale><Label><![CDATA[Guangzhou]]></Label><MsgId>5</MsgId>",
			"wecom:5", "message", "Guangzhou", adapter.Attachment{Type: "location", Title: "Guangzhou", Description: "23.13,113.26"}, "Scale", "20"},
		{"link", "<MsgType><![CDATA[link]]></MsgType><Title><![CDATA[T]]></Title><Description><![CDATA[D]]></Description><Url><![CDATA[https://u]]></Url><PicUrl><![CDATA[https://p]]></PicUrl><MsgId>6</MsgId>",
			"wecom:6", "message", "https://u", adapter.Attachment{Type: "link", Title: "T", Description: "D", URL: "https://u"}, "PicUrl", "https://p"},
		{"enter_agent", "<MsgType><![CDATA[event]]></MsgType><Event><![CDATA[enter_agent]]></Event><EventKey><![CDATA[]]></EventKey>",
			"wecom:bono:1738984503:enter_agent:043b62d8d2f46325c52585100c72c596", "event", "enter_agent", adapter.Attachment{}, "EventKey", ""},
		{"subscribe", "<MsgType><![CDATA[event]]></MsgType><Event><![CDATA[subscribe]]></Event>",
			"wecom:bono:1738984503:subscribe:c785ccafbe757d7d2328a4a474cbd5e7", "event", "subscribe", adapter.Attachment{}, "Event", "subscribe"},
		{"LOCATION", "<MsgType><![CDATA[event]]></MsgType><Event><![CDATA[LOCATION]]></Event><Latitude>23.1</Latitude><Longitude>113.3</Longitude><Precision>50</Precision>",
			"wecom:bono:1738984503:LOCATION:efffd938857fb1d2a2d3a4b54f4d6715", "event", "LOCATION", adapter.Attachment{}, "Latitude", "23.1"},
		{"click", "<MsgType><![CDATA[event]]></MsgType><Event><![CDATA[click]]></Event><EventKey><![CDATA[k1]]></EventKey>",
			"wecom:bono:1738984503:click:05dd1ffcf05b758e3f91586d95543099", "event", "click", adapter.Attachment{}, "EventKey", "k1"},
		{"view", "<MsgType><![CDATA[event]]></MsgType><Event><![CDATA[view]]></Event><EventKey><![CDATA[https://x]]></EventKey>",
			"wecom:bono:1738984503:view:6de0d8dbd5920f3340d5d5d288b34851", "event", "view", adapter.Attachment{}, "EventKey", "https://x"},
		{"kf", "<MsgType><![CDATA[event]]></MsgType><Event><![CDATA[kf_msg_or_event]]></Event><Token><![CDATA[tk]]></Token><OpenKfId><![CDATA[wk1]]></OpenKfId>",
			"wecom:bono:1738984503:kf_msg_or_event:1791693dae082008fa60707f6f03444e", "event", "kf_msg_or_event", adapter.Attachment{}, "OpenKfId", "wk1"},
		{"unknown type", "<MsgType><![CDATA[hologram]]></MsgType><MsgId>9</MsgId>",
			"wecom:9", "message", "", adapter.Attachment{}, "MsgType", "hologram"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ev, err := wecom.ParseMessage([]byte(head + tc.body + tail))
			if err != nil {
				t.Fatal(err)
			}
			if ev.ID != tc.id || ev.Kind != tc.kind || ev.Text != tc.text || ev.Platform != "wecom" || ev.Sender.ID != "bono" ||
				!ev.Time.Equal(time.Unix(1738984503, 0)) {
				t.Errorf("ParseMessage = %+v; want id %q kind %q text %q", ev, tc.id, tc.kind, tc.text)
			}
			if tc.attach.Type != "" {
				if len(ev.Attachments) != 1 || !attachEqual(ev.Attachments[0], tc.attach) {
					t.Errorf("Attachments = %+v; want %+v", ev.Attachments, tc.attach)
				}
			} else if len(ev.Attachments) != 0 {
				t.Errorf("Attachments = %+v; want none", ev.Attachments)
			}
			if tc.kind == "event" {
				// The digest is pinned above: a change would make every event redelivered across
				// an upgrade look new. Here: it is the SHA-256 of Raw, as documented.
				sum := sha256.Sum256(ev.Raw)
				if !strings.HasSuffix(ev.ID, ":"+hex.EncodeToString(sum[:16])) {
					t.Errorf("ID %q does not end in the digest of Raw %s", ev.ID, ev.Raw)
				}
			}
			var raw map[string]any
			if err := json.Unmarshal(ev.Raw, &raw); err != nil || raw[tc.rawKey] != tc.rawVal || raw["AgentID"] != "1000002" {
				t.Errorf("Raw = %s; want %s=%q", ev.Raw, tc.rawKey, tc.rawVal)
			}
		})
	}
}

func attachEqual(a, b adapter.Attachment) bool {
	return a.Type == b.Type && a.ID == b.ID && a.URL == b.URL && a.ContentType == b.ContentType && a.Title == b.Title && a.Description == b.Description
}

func TestParseMessageNested(t *testing.T) {
	t.Parallel()
	body := `<xml><ToUserName>ww</ToUserName><FromUserName>u</FromUserName><CreateTime>1</CreateTime><MsgType>event</MsgType>` +
		`<Event>pic_photo_or_album</Event><SendPicsInfo><Count>2</Count><PicList><item><PicMd5Sum>a</PicMd5Sum></item>` +
		`<item><PicMd5Sum>b</PicMd5Sum></item></PicList></SendPicsInfo></xml>`
	ev, err := wecom.ParseMessage([]byte(body))
	if err != nil {
		t.Fatal(err)
	}
	want := `{"CreateTime":"1","Event":"pic_photo_or_album","FromUserName":"u","MsgType":"event",` +
		`"SendPicsInfo":{"Count":"2","PicList":{"item":[{"PicMd5Sum":"a"},{"PicMd5Sum":"b"}]}},"ToUserName":"ww"}`
	if string(ev.Raw) != want {
		t.Errorf("Raw =\n%s\nwant\n%s", ev.Raw, want)
	}
}

func TestParseMessageErrors(t *testing.T) {
	t.Parallel()
	deep := strings.Repeat("<a>", 20) + strings.Repeat("</a>", 20)
	tests := []struct{ name, body string }{
		{"empty", ""},
		{"not xml", "hello"},
		{"unclosed", "<xml><MsgType>text</MsgType>"},
		{"no MsgType", "<xml><CreateTime>1</CreateTime></xml>"},
		{"no CreateTime", "<xml><MsgType>text</MsgType></xml>"},
		{"bad CreateTime", "<xml><MsgType>text</MsgType><CreateTime>soon</CreateTime></xml>"},
		{"too deep", "<xml>" + deep + "</xml>"},
		{"too many", "<xml>" + strings.Repeat("<a/>", 3000) + "</xml>"},
		{"two roots", "<xml><MsgType>text</MsgType><CreateTime>1</CreateTime></xml><xml/>"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if ev, err := wecom.ParseMessage([]byte(tc.body)); err == nil {
				t.Errorf("ParseMessage(%q) = %+v; want an error", tc.body, ev)
			}
		})
	}
}

// changeContact returns the plaintext of a change_contact event as WeCom sends it from "sys"
// (no MsgId, doc 90970): one per member created in a bulk import.
func changeContact(userID string, at time.Time) []byte {
	return fmt.Appendf(nil, "<xml><ToUserName><![CDATA[%s]]></ToUserName><FromUserName><![CDATA[sys]]></FromUserName>"+
		"<CreateTime>%d</CreateTime><MsgType><![CDATA[event]]></MsgType><Event><![CDATA[change_contact]]></Event>"+
		"<ChangeType>create_user</ChangeType><UserID><![CDATA[%s]]></UserID><Name><![CDATA[%s]]></Name></xml>",
		testCorp, at.Unix(), userID, userID)
}

// dedupHandler serves the webhook and keeps events by id, dropping repeated ids as the host
// does, so a count of kept events is a count of messages that reach consumers.
type dedupHandler struct {
	webhookHandler
	ids []string // first-seen order
}

func (h *dedupHandler) kept() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	seen := map[string]bool{}
	h.ids = h.ids[:0]
	for _, ev := range h.events {
		if !seen[ev.ID] {
			seen[ev.ID] = true
			h.ids = append(h.ids, ev.ID)
		}
	}
	return h.ids
}

// TestEventIDsWithoutMsgId (issue 11 item 1): events carry no MsgId, and several distinct
// events can share sender, second and event name. Each must keep an id of its own, while a
// redelivery of one keeps its id and is still dropped as a duplicate.
func TestEventIDsWithoutMsgId(t *testing.T) {
	t.Parallel()
	c, _ := setup(t, wecom.Options{})
	h := &dedupHandler{webhookHandler: webhookHandler{c: c}}
	hs := httptest.NewServer(h)
	defer hs.Close()
	srv := &wecomtest.Server{HTTPClient: hs.Client()}
	cb := testCallback(hs.URL + "/webhook/hr")
	push := func(msg []byte) {
		t.Helper()
		if p, err := srv.Push(t.Context(), cb, msg); err != nil || p.Status != 200 {
			t.Fatalf("Push = %+v, %v", p, err)
		}
	}

	now := time.Now()
	for _, u := range []string{"zhangsan", "lisi", "wangwu"} {
		push(changeContact(u, now))
	}
	if got := h.kept(); len(got) != 3 {
		t.Fatalf("3 change_contact events for 3 users in one second kept %d: %q; want 3", len(got), got)
	}
	push(changeContact("lisi", now)) // WeCom redelivering the second one
	if got := h.kept(); len(got) != 3 {
		t.Errorf("after a redelivery kept %d events: %q; want still 3", len(got), got)
	}
	if n := len(h.events); n != 4 || h.events[3].ID != h.events[1].ID {
		t.Errorf("redelivered event id %q; want the original's %q", h.events[len(h.events)-1].ID, h.events[1].ID)
	}

	// Two clicks on different menu entries in the same second are two events.
	push(wecomtest.EventMessage(testCorp, testAgent, "bono", "click", "menu_1", now))
	push(wecomtest.EventMessage(testCorp, testAgent, "bono", "click", "menu_2", now))
	if got := h.kept(); len(got) != 5 {
		t.Errorf("two clicks with different EventKey kept %d events in all: %q; want 5", len(got), got)
	}
	if len(h.errs) != 0 {
		t.Fatalf("webhook errors: %v", h.errs)
	}
}

// TestEventIDDigest: an event's id covers every field (a change anywhere, even in a nested
// element, gives a new id) but not the XML's layout (a redelivery laid out differently keeps it).
func TestEventIDDigest(t *testing.T) {
	t.Parallel()
	const base = `<xml><ToUserName>ww</ToUserName><FromUserName>sys</FromUserName><CreateTime>1</CreateTime>` +
		`<MsgType>event</MsgType><Event>sys_approval_change</Event><ApprovalInfo><SpNo>%s</SpNo><SpStatus>%s</SpStatus></ApprovalInfo></xml>`
	id := func(body string) string {
		t.Helper()
		ev, err := wecom.ParseMessage([]byte(body))
		if err != nil {
			t.Fatal(err)
		}
		return ev.ID
	}
	a := id(fmt.Sprintf(base, "202601010001", "1"))
	for _, tc := range []struct {
		name, body string
		same       bool
	}{
		{"identical", fmt.Sprintf(base, "202601010001", "1"), true},
		{"laid out on lines", strings.ReplaceAll(fmt.Sprintf(base, "202601010001", "1"), "><", ">\n  <"), true},
		{"other approval", fmt.Sprintf(base, "202601010002", "1"), false},
		{"other status", fmt.Sprintf(base, "202601010001", "2"), false},
	} {
		if b := id(tc.body); (a == b) != tc.same {
			t.Errorf("%s: ParseMessage id %q vs %q; want same=%v", tc.name, b, a, tc.same)
		}
	}
}
