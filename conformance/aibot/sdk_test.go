// Package aibot_test drives chatwire's AI Bot emulator (adapter/wecom/aibot/aibottest) with the
// official @wecom/aibot-node-sdk, and the adapter's webhook mode with @wecom/crypto: vector A,
// the SDK's §6 timings, and vector B (specs/wecom-aibot.md).
package aibot_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http/httptest"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/seed-a64d9e1f/chatwire/adapter/wecom/aibot/aibottest"
)

const installHint = "run `make deps` (Debian: apt-get install nodejs npm; then cd conformance/node && npm ci)"

// sdkEvent is one line node/aibot-sdk.js writes.
type sdkEvent struct {
	Ev      string          `json:"ev"`
	T       int64           `json:"t"` // ms since the epoch
	Reason  string          `json:"reason"`
	Message string          `json:"message"`
	Code    json.RawMessage `json:"code"`
	Attempt int             `json:"attempt"`
	Frame   json.RawMessage `json:"frame"`
	ID      int             `json:"id"`
	OK      bool            `json:"ok"`
	Error   string          `json:"error"`
}

func (e sdkEvent) time() time.Time { return time.UnixMilli(e.T) }

// sdk is one node process running the official SDK's WSClient.
type sdk struct {
	t      *testing.T
	stdin  io.WriteCloser
	events chan sdkEvent
	id     int
	stderr *bytes.Buffer
}

// startSDK starts a WSClient with opts (botId, secret, wsUrl, intervals) against the emulator.
func startSDK(t *testing.T, opts map[string]any) *sdk {
	t.Helper()
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatalf("node is not installed: %s", installHint)
	}
	script, err := filepath.Abs(filepath.Join("..", "node", "aibot-sdk.js"))
	if err != nil {
		t.Fatal(err)
	}
	arg, _ := json.Marshal(opts)
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, node, script, string(arg))
	s := &sdk{t: t, events: make(chan sdkEvent, 1000), stderr: &bytes.Buffer{}}
	cmd.Stderr = s.stderr
	s.stdin, _ = cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 1<<20), 8<<20)
		for sc.Scan() {
			var e sdkEvent
			if json.Unmarshal(sc.Bytes(), &e) == nil {
				s.events <- e
			}
		}
		close(s.events)
	}()
	t.Cleanup(func() {
		s.stdin.Close()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
		}
		cancel()
		cmd.Wait()
	})
	return s
}

// wait returns the next event named ev (up to 30 s), skipping others.
func (s *sdk) wait(ev string) sdkEvent {
	s.t.Helper()
	timeout := time.After(30 * time.Second)
	for {
		select {
		case e, ok := <-s.events:
			if !ok {
				s.t.Fatalf("node exited waiting for %s: %s\n%s", ev, s.stderr, installHint)
			}
			if e.Ev == ev {
				return e
			}
		case <-timeout:
			s.t.Fatalf("no %s from the SDK in 30 s", ev)
		}
	}
}

// do sends a command and returns its id.
func (s *sdk) do(cmd map[string]any) int {
	s.t.Helper()
	s.id++
	cmd["id"] = s.id
	b, _ := json.Marshal(cmd)
	if _, err := s.stdin.Write(append(b, '\n')); err != nil {
		s.t.Fatal(err)
	}
	return s.id
}

// result waits for the result of command id.
func (s *sdk) result(id int) sdkEvent {
	s.t.Helper()
	for {
		e := s.wait("result")
		if e.ID == id {
			return e
		}
	}
}

func emulator(t *testing.T, s *aibottest.Server) string {
	t.Helper()
	srv := httptest.NewServer(s)
	t.Cleanup(srv.Close)
	return aibottest.WSURL(srv.URL)
}

func vectorAOpts(url string) map[string]any {
	return map[string]any{"botId": "BOT1", "secret": "S1", "wsUrl": url}
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

// TestVectorA: the official SDK subscribes, receives vector A's message and streams the two
// replies of vector A, byte for byte, the second only after the first is acked.
func TestVectorA(t *testing.T) {
	s := &aibottest.Server{}
	c := startSDK(t, vectorAOpts(emulator(t, s)))
	c.wait("authenticated")
	sub := frames(s, "aibot_subscribe")
	if len(sub) != 1 {
		t.Fatalf("%d subscribe frames; want 1", len(sub))
	}
	want := fmt.Sprintf(`{"cmd":"aibot_subscribe","headers":{"req_id":%q},"body":{"bot_id":"BOT1","secret":"S1"}}`, sub[0].ReqID)
	if string(sub[0].Raw) != want {
		t.Errorf("subscribe frame = %s\nwant %s", sub[0].Raw, want)
	}
	body := `{"msgid":"M1","aibotid":"BOT1","chattype":"single","from":{"userid":"u1"},"msgtype":"text","text":{"content":"hello"}}`
	if _, err := s.Push("aibot_msg_callback", "REQ_MSG_1", json.RawMessage(body)); err != nil {
		t.Fatal(err)
	}
	msg := c.wait("message")
	want = `{"cmd":"aibot_msg_callback","headers":{"req_id":"REQ_MSG_1"},"body":` + body + `}`
	var got, exp any
	json.Unmarshal(msg.Frame, &got)
	json.Unmarshal([]byte(want), &exp)
	if fmt.Sprint(got) != fmt.Sprint(exp) {
		t.Errorf("SDK saw %s; want %s", msg.Frame, want)
	}
	const ackDelay = 300 * time.Millisecond
	s.DelayAcks(ackDelay)
	id1 := c.do(map[string]any{"op": "replyStream", "reqId": "REQ_MSG_1", "streamId": "stream_A", "content": "part", "finish": false, "feedback": map[string]string{"id": "FB1"}})
	id2 := c.do(map[string]any{"op": "replyStream", "reqId": "REQ_MSG_1", "streamId": "stream_A", "content": "part two done", "finish": true,
		"msgItem": json.RawMessage(`[{"msgtype":"image","image":{"base64":"QQ==","md5":"7fc56270e7a70fa81a5935b72eacbe29"}}]`)})
	for _, id := range []int{id1, id2} {
		if r := c.result(id); !r.OK {
			t.Fatalf("replyStream %d: %s", id, r.Error)
		}
	}
	replies := frames(s, "aibot_respond_msg")
	wantReplies := []string{
		`{"cmd":"aibot_respond_msg","headers":{"req_id":"REQ_MSG_1"},"body":{"msgtype":"stream","stream":{"id":"stream_A","finish":false,"content":"part","feedback":{"id":"FB1"}}}}`,
		`{"cmd":"aibot_respond_msg","headers":{"req_id":"REQ_MSG_1"},"body":{"msgtype":"stream","stream":{"id":"stream_A","finish":true,"content":"part two done","msg_item":[{"msgtype":"image","image":{"base64":"QQ==","md5":"7fc56270e7a70fa81a5935b72eacbe29"}}]}}}`,
	}
	if len(replies) != 2 {
		t.Fatalf("%d reply frames; want 2", len(replies))
	}
	for i, w := range wantReplies {
		if string(replies[i].Raw) != w {
			t.Errorf("reply %d = %s\nwant %s", i, replies[i].Raw, w)
		}
	}
	if gap := replies[1].At.Sub(replies[0].At); gap < ackDelay {
		t.Errorf("second frame %s after the first; want ≥ the %s ack delay (one frame in flight per req_id)", gap, ackDelay)
	}
	if got := s.Shown("u1"); len(got) != 1 || got[0] != "part two done" {
		t.Errorf("Shown = %q", got)
	}
	for _, f := range s.Refused() {
		t.Errorf("emulator refused %s: %d %s", f.Cmd, f.Errcode, f.Reason)
	}
}

// TestSDKSendMessageErrors: aibot_send_msg to a chat that messaged is acked; to another, the
// SDK rejects with the raw ack frame, errcode included.
func TestSDKSendMessageErrors(t *testing.T) {
	s := &aibottest.Server{}
	c := startSDK(t, vectorAOpts(emulator(t, s)))
	c.wait("authenticated")
	s.PushText(aibottest.Conv{User: "u1"}, "hi")
	c.wait("message")
	md := map[string]any{"msgtype": "markdown", "markdown": map[string]string{"content": "push"}}
	if r := c.result(c.do(map[string]any{"op": "sendMessage", "chatid": "u1", "body": md})); !r.OK {
		t.Errorf("sendMessage to u1: %s", r.Error)
	}
	r := c.result(c.do(map[string]any{"op": "sendMessage", "chatid": "U1", "body": md}))
	var ack struct {
		Errcode int `json:"errcode"`
	}
	if r.OK || json.Unmarshal([]byte(r.Error), &ack) != nil || ack.Errcode != aibottest.CodeInvalidChat {
		t.Errorf("sendMessage to a stranger: ok %v, error %s; want the raw ack with errcode 93006", r.OK, r.Error)
	}
}

// TestSDKBadSecret: 853000 from the emulator is an auth failure to the SDK, which retries on
// its own counter and then gives up with WS_AUTH_FAILURE_EXHAUSTED.
func TestSDKBadSecret(t *testing.T) {
	s := &aibottest.Server{}
	c := startSDK(t, map[string]any{"botId": "BOT1", "secret": "wrong", "wsUrl": emulator(t, s), "reconnectInterval": 50, "maxAuthFailureAttempts": 2})
	for {
		e := c.wait("error")
		if string(e.Code) == `"WS_AUTH_FAILURE_EXHAUSTED"` {
			break
		}
	}
	refused := s.Refused()
	if len(refused) != 3 {
		t.Errorf("%d refused subscribes; want 3 (the first and 2 retries)", len(refused))
	}
	for _, f := range refused {
		if f.Cmd != "aibot_subscribe" || f.Errcode != aibottest.CodeBadSecret {
			t.Errorf("refused %s with %d; want aibot_subscribe 853000", f.Cmd, f.Errcode)
		}
	}
}
