package main

import (
	"bufio"
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/seed-a64d9e1f/chatwire/adapter/wecom/wecomtest"
	"github.com/seed-a64d9e1f/chatwire/internal/redistest"
)

const (
	corpID  = "wwbaseline0001"
	secret  = "corp-secret-baseline"
	token   = "tokBaseline"
	aesKey  = "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C"
	apiKey  = "api-key-baseline"
	agentID = 1000002
)

// TestBaseline: the baseline keeps the guarantees bench/load compares the host on: a signed,
// encrypted callback is answered 200 and its event reaches the SSE stream once, a
// redelivery is answered 200 and not stored again, a bad signature or an old timestamp is
// refused, a send reaches the platform and answers with its message id.
func TestBaseline(t *testing.T) {
	rds := redistest.Start(t)
	emu := &wecomtest.Server{LenientAgentID: true, MemberLimit: -1}
	emu.AddApp(corpID, secret, agentID)
	api := httptest.NewServer(emu)
	defer api.Close()
	s, err := newServer("hr", corpID, agentID, api.URL, secret, token, aesKey, apiKey, rds.Addr())
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(s.routes())
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	req, _ := http.NewRequestWithContext(ctx, "GET", srv.URL+"/v1/bots/hr/events", nil)
	req.Header.Set("Authorization", "Bearer "+apiKey)
	sse, err := http.DefaultClient.Do(req)
	if err != nil || sse.StatusCode != 200 {
		t.Fatalf("SSE: %v %v", err, sse)
	}
	defer sse.Body.Close()
	lines := bufio.NewScanner(sse.Body)
	lines.Scan() // the opening comment: the stream is read from here on

	cb := wecomtest.Callback{Token: token, EncodingAESKey: aesKey, CorpID: corpID, AgentID: agentID}
	msg := wecomtest.TextMessage(corpID, agentID, "zhangsan", "hello baseline", 7000000000000001, time.Now())
	body, q, err := wecomtest.Encrypt(cb, msg, time.Now().Unix(), "nonce1")
	if err != nil {
		t.Fatal(err)
	}
	post := func(query string, body []byte) int {
		resp, err := http.Post(srv.URL+"/webhook/hr?"+query, "text/xml", bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	for range 2 { // WeCom redelivers the same callback
		if got := post(q.Encode(), body); got != 200 {
			t.Fatalf("callback: %d, want 200", got)
		}
	}
	var data []string
	for lines.Scan() {
		if d, ok := strings.CutPrefix(lines.Text(), "data: "); ok {
			data = append(data, d)
			break
		}
	}
	if len(data) != 1 || !strings.Contains(data[0], `"text":"hello baseline"`) || !strings.Contains(data[0], `"id":"wecom:7000000000000001"`) {
		t.Fatalf("SSE data %q", data)
	}
	if n := s.rdb.XLen(ctx, s.stream()).Val(); n != 1 {
		t.Errorf("stream holds %d events after a redelivery, want 1", n)
	}
	bad := strings.Replace(q.Encode(), "msg_signature=", "msg_signature=0", 1)
	if got := post(bad, body); got != http.StatusUnauthorized {
		t.Errorf("bad signature: %d, want 401", got)
	}
	oldBody, oldQ, _ := wecomtest.Encrypt(cb, msg, time.Now().Add(-time.Hour).Unix(), "nonce2")
	if got := post(oldQ.Encode(), oldBody); got != http.StatusForbidden {
		t.Errorf("hour-old timestamp: %d, want 403", got)
	}

	req, _ = http.NewRequestWithContext(ctx, "POST", srv.URL+"/v1/bots/hr/messages", strings.NewReader(`{"to":{"user":"zhangsan"},"text":"hi there"}`))
	req.Header.Set("Authorization", "Bearer "+apiKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	out.ReadFrom(resp.Body)
	resp.Body.Close()
	sent := emu.Sent()
	if resp.StatusCode != 200 || len(sent) != 1 || sent[0].Content != "hi there" || !strings.Contains(out.String(), `"id":"`+sent[0].MsgID+`"`) {
		t.Errorf("send: %d %s; emulator got %+v", resp.StatusCode, out.String(), sent)
	}
	req, _ = http.NewRequestWithContext(ctx, "POST", srv.URL+"/v1/bots/hr/messages", strings.NewReader(`{"to":{"user":"zhangsan"},"text":"x"}`))
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("send without the API key: %v %v, want 401", err, resp)
	}
}
