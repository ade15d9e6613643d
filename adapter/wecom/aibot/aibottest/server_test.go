package aibottest_test

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/seed-a64d9e1f/chatwire/adapter/wecom/aibot/aibottest"
)

type client struct {
	t  *testing.T
	ws *websocket.Conn
}

func dial(t *testing.T, s *aibottest.Server) (*client, *httptest.Server) {
	t.Helper()
	srv := httptest.NewServer(s)
	t.Cleanup(srv.Close)
	return dialURL(t, srv), srv
}

func dialURL(t *testing.T, srv *httptest.Server) *client {
	t.Helper()
	ws, _, err := websocket.Dial(t.Context(), aibottest.WSURL(srv.URL), nil)
	if err != nil {
		t.Fatal(err)
	}
	ws.SetReadLimit(4 << 20)
	t.Cleanup(func() { ws.CloseNow() })
	return &client{t, ws}
}

func (c *client) send(s string) {
	c.t.Helper()
	if err := c.ws.Write(c.t.Context(), websocket.MessageText, []byte(s)); err != nil {
		c.t.Fatal(err)
	}
}

func (c *client) read() string {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(c.t.Context(), 10*time.Second)
	defer cancel()
	_, b, err := c.ws.Read(ctx)
	if err != nil {
		c.t.Fatal(err)
	}
	return string(b)
}

// call sends a frame and returns the ack's errcode.
func (c *client) call(cmd, reqID, body string) int {
	c.t.Helper()
	c.send(fmt.Sprintf(`{"cmd":%q,"headers":{"req_id":%q},"body":%s}`, cmd, reqID, body))
	var ack struct {
		Headers struct {
			ReqID string `json:"req_id"`
		} `json:"headers"`
		Errcode *int `json:"errcode"`
	}
	raw := c.read()
	if err := json.Unmarshal([]byte(raw), &ack); err != nil || ack.Errcode == nil || ack.Headers.ReqID != reqID {
		c.t.Fatalf("ack of %s %s = %s; want {headers:{req_id:%q},errcode:N}", cmd, reqID, raw, reqID)
	}
	return *ack.Errcode
}

func (c *client) subscribe(bot, secret string) int {
	return c.call("aibot_subscribe", "aibot_subscribe_1", fmt.Sprintf(`{"bot_id":%q,"secret":%q}`, bot, secret))
}

func TestVectorA(t *testing.T) {
	s := &aibottest.Server{}
	c, _ := dial(t, s)
	c.send(`{"cmd":"aibot_subscribe","headers":{"req_id":"aibot_subscribe_1796411236498_f8e71843"},"body":{"bot_id":"BOT1","secret":"S1"}}`)
	if got, want := c.read(), `{"headers":{"req_id":"aibot_subscribe_1796411236498_f8e71843"},"errcode":0,"errmsg":"ok"}`; got != want {
		t.Fatalf("subscribe ack = %s; want %s", got, want)
	}
	body := `{"msgid":"M1","aibotid":"BOT1","chattype":"single","from":{"userid":"u1"},"msgtype":"text","text":{"content":"hello"}}`
	if _, err := s.Push("aibot_msg_callback", "REQ_MSG_1", json.RawMessage(body)); err != nil {
		t.Fatal(err)
	}
	if got, want := c.read(), `{"cmd":"aibot_msg_callback","headers":{"req_id":"REQ_MSG_1"},"body":`+body+`}`; got != want {
		t.Fatalf("push = %s; want %s", got, want)
	}
	c.send(`{"cmd":"aibot_respond_msg","headers":{"req_id":"REQ_MSG_1"},"body":{"msgtype":"stream","stream":{"id":"stream_A","finish":false,"content":"part","feedback":{"id":"FB1"}}}}`)
	if got, want := c.read(), `{"headers":{"req_id":"REQ_MSG_1"},"errcode":0,"errmsg":"ok"}`; got != want {
		t.Fatalf("first frame ack = %s; want %s", got, want)
	}
	c.send(`{"cmd":"aibot_respond_msg","headers":{"req_id":"REQ_MSG_1"},"body":{"msgtype":"stream","stream":{"id":"stream_A","finish":true,"content":"part two done","msg_item":[{"msgtype":"image","image":{"base64":"QQ==","md5":"7fc56270e7a70fa81a5935b72eacbe29"}}]}}}`)
	if got, want := c.read(), `{"headers":{"req_id":"REQ_MSG_1"},"errcode":0,"errmsg":"ok"}`; got != want {
		t.Fatalf("final frame ack = %s; want %s", got, want)
	}
	bs := s.Bubbles()
	if len(bs) != 1 || bs[0].Content != "part two done" || !bs[0].Finished || len(bs[0].Frames) != 2 || bs[0].Frames[0].Content != "part" {
		t.Fatalf("Bubbles() = %+v; want one finished bubble part → part two done", bs)
	}
	if got := s.Shown("u1"); len(got) != 1 || got[0] != "part two done" {
		t.Errorf("Shown(u1) = %q; want [part two done]", got)
	}
}

func TestSubscribe(t *testing.T) {
	s := &aibottest.Server{BotID: "B", Secret: "right"}
	c, _ := dial(t, s)
	if code := c.subscribe("B", "wrong"); code != aibottest.CodeBadSecret {
		t.Errorf("subscribe with a wrong secret = %d; want 853000", code)
	}
	s.FailSubscribes(aibottest.CodeFreq)
	if code := c.subscribe("B", "right"); code != aibottest.CodeFreq {
		t.Errorf("subscribe after FailSubscribes(45009) = %d; want 45009", code)
	}
	if code := c.subscribe("B", "right"); code != 0 {
		t.Errorf("subscribe = %d; want 0", code)
	}
	if code := c.call("ping", "ping_1", "null"); code != 0 {
		t.Errorf("ping = %d; want 0", code)
	}
	if s.Connections() != 1 || s.Subscribes() != 3 {
		t.Errorf("Connections, Subscribes = %d, %d; want 1, 3", s.Connections(), s.Subscribes())
	}
}

func TestFrameBeforeSubscribeClosesTheSocket(t *testing.T) {
	c, _ := dial(t, &aibottest.Server{})
	c.send(`{"cmd":"ping","headers":{"req_id":"ping_1"}}`)
	_, _, err := c.ws.Read(t.Context())
	if websocket.CloseStatus(err) != websocket.StatusPolicyViolation {
		t.Fatalf("read after a ping before subscribe: %v; want close 1008", err)
	}
}

func TestReqIDRules(t *testing.T) {
	s := &aibottest.Server{}
	c, _ := dial(t, s)
	c.subscribe("BOT1", "S1")
	u := aibottest.Conv{User: "u1"}
	enter, _ := s.PushEvent(u, "enter_chat", nil)
	c.read()
	msg, _ := s.PushText(u, "hi")
	c.read()
	card, _ := s.PushEvent(u, "template_card_event", map[string]any{"card_type": "button_interaction", "event_key": "k", "task_id": "t"})
	c.read()
	fb, _ := s.PushEvent(u, "feedback_event", map[string]any{"id": "f", "type": 1})
	c.read()
	stream := `{"msgtype":"stream","stream":{"id":"s1","finish":false,"content":"x"}}`
	tests := []struct {
		name, cmd, reqID, body string
		want                   int
	}{
		{"stream to enter_chat", "aibot_respond_msg", enter.ReqID, stream, aibottest.CodeInvalidReqID},
		{"welcome to a message", "aibot_respond_welcome_msg", msg.ReqID, `{"msgtype":"text","text":{"content":"hi"}}`, aibottest.CodeInvalidReqID},
		{"reply to feedback", "aibot_respond_msg", fb.ReqID, stream, aibottest.CodeInvalidReqID},
		{"unknown req_id", "aibot_respond_msg", "nope", stream, aibottest.CodeInvalidReqID},
		{"welcome", "aibot_respond_welcome_msg", enter.ReqID, `{"msgtype":"text","text":{"content":"welcome"}}`, 0},
		{"second welcome", "aibot_respond_welcome_msg", enter.ReqID, `{"msgtype":"text","text":{"content":"again"}}`, aibottest.CodeResponded},
		{"card update", "aibot_respond_update_msg", card.ReqID, `{"response_type":"update_template_card","template_card":{"card_type":"text_notice"}}`, 0},
		{"template card reply", "aibot_respond_msg", msg.ReqID, `{"msgtype":"template_card","template_card":{"card_type":"text_notice"}}`, 0},
		{"reply after a card", "aibot_respond_msg", msg.ReqID, `{"msgtype":"markdown","markdown":{"content":"x"}}`, aibottest.CodeResponded},
		{"send to a chat that messaged", "aibot_send_msg", "send_1", `{"chatid":"u1","msgtype":"markdown","markdown":{"content":"push"}}`, 0},
		{"send to a stranger", "aibot_send_msg", "send_2", `{"chatid":"U1","msgtype":"markdown","markdown":{"content":"push"}}`, aibottest.CodeInvalidChat},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := c.call(tc.cmd, tc.reqID, tc.body); got != tc.want {
				t.Errorf("%s = %d; want %d", tc.cmd, got, tc.want)
			}
		})
	}
	if got := s.Shown("u1"); strings.Join(got, "|") != "welcome|||push" {
		t.Errorf("Shown = %q; want welcome, update, card, push", got)
	}
}

func TestEventReplyWindow(t *testing.T) {
	s := &aibottest.Server{EventReplyWindow: time.Nanosecond}
	c, _ := dial(t, s)
	c.subscribe("BOT1", "S1")
	enter, _ := s.PushEvent(aibottest.Conv{User: "u"}, "enter_chat", nil)
	c.read()
	if got := c.call("aibot_respond_welcome_msg", enter.ReqID, `{"msgtype":"text","text":{"content":"late"}}`); got != aibottest.CodeInvalidReqID {
		t.Errorf("late welcome = %d; want 846605", got)
	}
}

func TestStreams(t *testing.T) {
	s := &aibottest.Server{}
	c, _ := dial(t, s)
	c.subscribe("BOT1", "S1")
	m, _ := s.PushText(aibottest.Conv{User: "u", Chat: "G"}, "@bot hi")
	c.read()
	frame := func(id string, finish bool, content string) int {
		b, _ := json.Marshal(map[string]any{"msgtype": "stream", "stream": map[string]any{"id": id, "finish": finish, "content": content}})
		return c.call("aibot_respond_msg", m.ReqID, string(b))
	}
	big := strings.Repeat("é", aibottest.MaxStreamBytes/2)
	steps := []struct {
		name    string
		id      string
		finish  bool
		content string
		want    int
	}{
		{"first", "a", false, "1", 0},
		{"cumulative", "a", false, "123", 0},
		{"at the limit", "a", false, big, 0},
		{"over the limit", "a", false, big + "x", aibottest.CodeBadParam},
		{"finish", "a", true, "done", 0},
		{"after finish", "a", false, "more", aibottest.CodeBadParam},
		{"second stream on the req_id", "b", false, "b1", 0},
	}
	for _, st := range steps {
		if got := frame(st.id, st.finish, st.content); got != st.want {
			t.Errorf("%s: errcode %d; want %d", st.name, got, st.want)
		}
	}
	s.ExpireStreams()
	if got := frame("b", true, "b2"); got != aibottest.CodeExpired {
		t.Errorf("frame on an expired stream = %d; want 846608", got)
	}
	if got := frame("c", true, "c"); got != 0 {
		t.Errorf("new stream after expiry = %d; want 0", got)
	}
	if got := s.Shown("G"); strings.Join(got, "|") != "done|b1|c" {
		t.Errorf("Shown(G) = %q; want done, b1, c", got)
	}
	if n := len(s.Refused()); n != 3 {
		t.Errorf("Refused() has %d frames; want 3", n)
	}
}

func TestStreamTTL(t *testing.T) {
	s := &aibottest.Server{StreamTTL: time.Nanosecond}
	c, _ := dial(t, s)
	c.subscribe("BOT1", "S1")
	m, _ := s.PushText(aibottest.Conv{User: "u"}, "hi")
	c.read()
	if got := c.call("aibot_respond_msg", m.ReqID, `{"msgtype":"stream","stream":{"id":"a","content":"1"}}`); got != 0 {
		t.Fatalf("first frame = %d", got)
	}
	if got := c.call("aibot_respond_msg", m.ReqID, `{"msgtype":"stream","stream":{"id":"a","content":"12"}}`); got != aibottest.CodeExpired {
		t.Errorf("frame after the TTL = %d; want 846608", got)
	}
}

func TestRateLimit(t *testing.T) {
	s := &aibottest.Server{PerMinute: 2}
	c, _ := dial(t, s)
	c.subscribe("BOT1", "S1")
	s.PushText(aibottest.Conv{User: "u"}, "hi")
	c.read()
	for i, want := range []int{0, 0, aibottest.CodeRateLimited} {
		if got := c.call("aibot_send_msg", fmt.Sprint("s", i), `{"chatid":"u","msgtype":"markdown","markdown":{"content":"x"}}`); got != want {
			t.Errorf("send %d = %d; want %d", i, got, want)
		}
	}
}

func TestSecondSubscribeKicksTheFirst(t *testing.T) {
	s := &aibottest.Server{}
	c1, srv := dial(t, s)
	c1.subscribe("BOT1", "S1")
	c2 := dialURL(t, srv)
	c2.subscribe("BOT1", "S1")
	ev := c1.read()
	if !strings.Contains(ev, `"cmd":"aibot_event_callback"`) || !strings.Contains(ev, `"eventtype":"disconnected_event"`) || strings.Contains(ev, `"from"`) {
		t.Fatalf("old connection got %s; want a disconnected_event without from", ev)
	}
	if _, _, err := c1.ws.Read(t.Context()); websocket.CloseStatus(err) != websocket.StatusNormalClosure {
		t.Fatalf("old connection: %v; want closed", err)
	}
	if _, err := s.PushText(aibottest.Conv{User: "u"}, "to the newest"); err != nil {
		t.Fatal(err)
	}
	if got := c2.read(); !strings.Contains(got, "to the newest") {
		t.Errorf("newest connection got %s", got)
	}
}

func TestNoPingClosesTheSocket(t *testing.T) {
	s := &aibottest.Server{PingTimeout: 50 * time.Millisecond}
	c, _ := dial(t, s)
	c.subscribe("BOT1", "S1")
	_, _, err := c.ws.Read(t.Context())
	if websocket.CloseStatus(err) != websocket.StatusPolicyViolation {
		t.Fatalf("read without pings: %v; want close 1008", err)
	}
}

func TestLargeFrame(t *testing.T) {
	s := &aibottest.Server{}
	c, _ := dial(t, s)
	c.subscribe("BOT1", "S1")
	s.PushText(aibottest.Conv{User: "u"}, "hi")
	c.read()
	big := strings.Repeat("A", 1<<20)
	if got := c.call("aibot_send_msg", "s1", `{"chatid":"u","msgtype":"markdown","markdown":{"content":"`+big+`"}}`); got != aibottest.CodeBadParam {
		t.Errorf("1 MiB markdown = %d; want 40058 (read, then refused as over 20480 bytes)", got)
	}
}

func TestRefuseConnections(t *testing.T) {
	s := &aibottest.Server{}
	srv := httptest.NewServer(s)
	defer srv.Close()
	s.RefuseConnections(1)
	if _, _, err := websocket.Dial(t.Context(), aibottest.WSURL(srv.URL), nil); err == nil {
		t.Fatal("refused handshake succeeded")
	}
	c := dialURL(t, srv)
	if code := c.subscribe("BOT1", "S1"); code != 0 {
		t.Fatalf("subscribe after the refusal = %d", code)
	}
	if n := len(s.Handshakes()); n != 2 {
		t.Errorf("Handshakes() = %d; want 2", n)
	}
}

func TestUpload(t *testing.T) {
	s := &aibottest.Server{}
	c, _ := dial(t, s)
	c.subscribe("BOT1", "S1")
	s.PushText(aibottest.Conv{User: "u"}, "hi")
	c.read()
	callBody := func(cmd, reqID, body string) (int, map[string]string) {
		c.send(fmt.Sprintf(`{"cmd":%q,"headers":{"req_id":%q},"body":%s}`, cmd, reqID, body))
		var ack struct {
			Errcode int               `json:"errcode"`
			Body    map[string]string `json:"body"`
		}
		json.Unmarshal([]byte(c.read()), &ack)
		return ack.Errcode, ack.Body
	}
	part := func(b byte, n int) string { return base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{b}, n)) }
	data := append(bytes.Repeat([]byte{'a'}, aibottest.MaxChunkBytes), 'b', 'b')
	sum := md5.Sum(data)
	code, init := callBody("aibot_upload_media_init", "i1", fmt.Sprintf(`{"type":"file","filename":"f.txt","total_size":%d,"total_chunks":2,"md5":%q}`, len(data), hex.EncodeToString(sum[:])))
	id := init["upload_id"]
	if code != 0 || id == "" {
		t.Fatalf("init = %d %v", code, init)
	}
	steps := []struct {
		name, body string
		want       int
	}{
		{"finish before the chunks", `{"upload_id":"` + id + `"}`, aibottest.CodeBadParam},
		{"chunk 1 first", `{"upload_id":"` + id + `","chunk_index":1,"base64_data":"` + part('b', 2) + `"}`, 0},
		{"1-based index out of range", `{"upload_id":"` + id + `","chunk_index":2,"base64_data":"` + part('b', 2) + `"}`, aibottest.CodeBadParam},
		{"chunk over 512 KB", `{"upload_id":"` + id + `","chunk_index":0,"base64_data":"` + part('a', aibottest.MaxChunkBytes+1) + `"}`, aibottest.CodeBadParam},
		{"chunk 0 (a ≈700 KB frame)", `{"upload_id":"` + id + `","chunk_index":0,"base64_data":"` + part('a', aibottest.MaxChunkBytes) + `"}`, 0},
		{"duplicate chunk ignored", `{"upload_id":"` + id + `","chunk_index":1,"base64_data":"` + part('x', 2) + `"}`, 0},
	}
	for _, st := range steps {
		cmd := "aibot_upload_media_chunk"
		if strings.HasPrefix(st.name, "finish") {
			cmd = "aibot_upload_media_finish"
		}
		if got, _ := callBody(cmd, "c", st.body); got != st.want {
			t.Errorf("%s: %d; want %d", st.name, got, st.want)
		}
	}
	code, fin := callBody("aibot_upload_media_finish", "f1", `{"upload_id":"`+id+`"}`)
	if code != 0 || fin["media_id"] == "" || fin["type"] != "file" || fin["created_at"] == "" {
		t.Fatalf("finish = %d %v", code, fin)
	}
	if m := s.Uploaded(fin["media_id"]); m == nil || !bytes.Equal(m.Data, data) {
		t.Fatalf("Uploaded = %+v", m)
	}
	if got := c.call("aibot_send_msg", "s1", `{"chatid":"u","msgtype":"file","file":{"media_id":"`+fin["media_id"]+`"}}`); got != 0 {
		t.Errorf("send of the uploaded file = %d", got)
	}
	if got := c.call("aibot_send_msg", "s2", `{"chatid":"u","msgtype":"file","file":{"media_id":"nope"}}`); got != aibottest.CodeInvalidMedia {
		t.Errorf("send of an unknown media_id = %d; want 40007", got)
	}
	_, init = callBody("aibot_upload_media_init", "i2", `{"type":"image","filename":"x","total_size":3,"total_chunks":1,"md5":"00000000000000000000000000000000"}`)
	callBody("aibot_upload_media_chunk", "c2", `{"upload_id":"`+init["upload_id"]+`","chunk_index":0,"base64_data":"`+part('z', 3)+`"}`)
	if code, _ := callBody("aibot_upload_media_finish", "f2", `{"upload_id":"`+init["upload_id"]+`"}`); code != aibottest.CodeBadParam {
		t.Errorf("finish with a wrong md5 = %d; want 40058", code)
	}
}
