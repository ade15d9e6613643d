package wecomtest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/silenceper/wechat/v2/util"
)

// Callback is a bot's callback configuration, as set in the WeCom admin console.
type Callback struct {
	URL            string // the bot's callback URL, without query
	Token          string
	EncodingAESKey string // 43 characters
	CorpID         string // the receiveid
	AgentID        int64
}

// Push records one callback push.
type Push struct {
	URL      string
	Attempts int    // deliveries made
	Status   int    // HTTP status of the last delivery; 0 if it failed without one
	Body     []byte // the request body, identical in every delivery
	Query    string // the request query, identical in every delivery
	Reply    []byte // the decrypted passive reply, or the raw 200 body if not encrypted
	Err      error
}

// The pusher encrypts and signs with silenceper's util package: an implementation separate
// from the adapter's, so tests of one against the other mean something.

// Encrypt returns the envelope body and the query of a callback POST carrying msg, signed
// and encrypted for cb, with the given timestamp and nonce.
func Encrypt(cb Callback, msg []byte, timestamp int64, nonce string) (body []byte, query url.Values, err error) {
	random := make([]byte, 16)
	rand.Read(random)
	enc, err := util.EncryptMsg(random, msg, cb.CorpID, cb.EncodingAESKey)
	if err != nil {
		return nil, nil, fmt.Errorf("wecomtest: encrypt: %w", err)
	}
	ts := strconv.FormatInt(timestamp, 10)
	sig := util.Signature(cb.Token, ts, nonce, string(enc))
	body = fmt.Appendf(nil, "<xml><ToUserName>%s</ToUserName><Encrypt><![CDATA[%s]]></Encrypt><AgentID><![CDATA[%d]]></AgentID></xml>",
		CDATA(cb.CorpID), enc, cb.AgentID)
	return body, url.Values{"msg_signature": {sig}, "timestamp": {ts}, "nonce": {nonce}}, nil
}

// VerifyQuery returns the query of a URL-verification GET for cb whose echostr decrypts to
// echo.
func VerifyQuery(cb Callback, echo string, timestamp int64, nonce string) (url.Values, error) {
	random := make([]byte, 16)
	rand.Read(random)
	enc, err := util.EncryptMsg(random, []byte(echo), cb.CorpID, cb.EncodingAESKey)
	if err != nil {
		return nil, fmt.Errorf("wecomtest: encrypt: %w", err)
	}
	ts := strconv.FormatInt(timestamp, 10)
	sig := util.Signature(cb.Token, ts, nonce, string(enc))
	return url.Values{"msg_signature": {sig}, "timestamp": {ts}, "nonce": {nonce}, "echostr": {string(enc)}}, nil
}

func (s *Server) client() *http.Client {
	if s.HTTPClient != nil {
		return s.HTTPClient
	}
	return http.DefaultClient
}

// VerifyURL does what WeCom does when an admin saves a callback URL: a GET with an
// encrypted echostr, expecting the decrypted echo as the whole body within 1 second.
func (s *Server) VerifyURL(ctx context.Context, cb Callback) error {
	echo := strconv.FormatUint(randUint(), 10)
	q, err := VerifyQuery(cb, echo, time.Now().Unix(), strconv.FormatUint(randUint()%1e9, 10))
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, cb.URL+"?"+q.Encode(), nil)
	if err != nil {
		return err
	}
	resp, err := s.client().Do(req)
	if err != nil {
		return fmt.Errorf("wecomtest: verify url: %w", err)
	}
	defer resp.Body.Close()
	got, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("wecomtest: verify url: HTTP %d", resp.StatusCode)
	}
	if string(got) != echo {
		return fmt.Errorf("wecomtest: verify url: body %q; want %q", got, echo)
	}
	return nil
}

// Push delivers the plaintext message msg (see TextMessage, EventMessage) to cb like WeCom:
// encrypted and signed, each delivery bounded by PushTimeout, redelivered byte for byte
// after PushRetryDelay while the answer is not HTTP 200, at most PushRetries times. A 200
// with an empty body means "no reply"; an encrypted passive reply is verified and
// decrypted into Push.Reply. The returned error is set if no delivery got a 200, or the
// reply failed verification.
func (s *Server) Push(ctx context.Context, cb Callback, msg []byte) (Push, error) {
	body, q, err := Encrypt(cb, msg, time.Now().Unix(), strconv.FormatUint(randUint()%1e9, 10))
	if err != nil {
		return Push{}, err
	}
	p := Push{URL: cb.URL, Body: body, Query: q.Encode()}
	retries := s.PushRetries
	if retries == 0 {
		retries = 2
	}
	timeout := s.PushTimeout
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	delay := s.PushRetryDelay
	if delay <= 0 {
		delay = time.Second
	}
	for attempt := 0; ; attempt++ {
		var reply []byte
		p.Attempts++
		p.Status, reply, p.Err = s.deliver(ctx, timeout, cb.URL+"?"+p.Query, body)
		if p.Err == nil && p.Status == http.StatusOK {
			p.Err = nil
			if len(reply) > 0 {
				p.Reply, p.Err = openReply(cb, reply)
			}
			break
		}
		if p.Err == nil {
			p.Err = fmt.Errorf("wecomtest: push: HTTP %d", p.Status)
		}
		if attempt >= retries || ctx.Err() != nil {
			break
		}
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
		}
	}
	s.mu.Lock()
	s.pushes = append(s.pushes, p)
	s.mu.Unlock()
	return p, p.Err
}

func (s *Server) deliver(ctx context.Context, timeout time.Duration, u string, body []byte) (int, []byte, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Content-Type", "text/xml")
	resp, err := s.client().Do(req)
	if err != nil {
		return 0, nil, fmt.Errorf("wecomtest: push: %w", err)
	}
	defer resp.Body.Close()
	reply, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return 0, nil, fmt.Errorf("wecomtest: push: reading reply: %w", err)
	}
	return resp.StatusCode, reply, nil
}

// openReply verifies and decrypts a passive reply envelope (spec §5.6); a body that is not
// an envelope is returned as is.
func openReply(cb Callback, body []byte) ([]byte, error) {
	var env struct {
		Encrypt      string `xml:"Encrypt"`
		MsgSignature string `xml:"MsgSignature"`
		TimeStamp    string `xml:"TimeStamp"`
		Nonce        string `xml:"Nonce"`
	}
	if err := xml.Unmarshal(body, &env); err != nil || env.Encrypt == "" {
		return body, nil
	}
	if util.Signature(cb.Token, env.TimeStamp, env.Nonce, env.Encrypt) != env.MsgSignature {
		return nil, errors.New("wecomtest: passive reply signature mismatch")
	}
	_, plain, err := util.DecryptMsg(cb.CorpID, env.Encrypt, cb.EncodingAESKey)
	if err != nil {
		return nil, fmt.Errorf("wecomtest: passive reply: %w", err)
	}
	return plain, nil
}

// Pushes returns the callback pushes made so far.
func (s *Server) Pushes() []Push {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Push(nil), s.pushes...)
}

func randUint() uint64 {
	var b [8]byte
	rand.Read(b[:])
	var n uint64
	for _, c := range b {
		n = n<<8 | uint64(c)
	}
	return n >> 1
}

// CDATA returns s as an XML CDATA section. A "]]>" inside s would end the section early
// (malformed XML that WeCom's own parsers reject), so it is split across two sections as
// WeCom's libraries and every XML writer do: "]]" closes one, ">" opens the next
// ("a]]>b" → "<![CDATA[a]]]]><![CDATA[>b]]>"). Parsers join the sections back into s.
func CDATA(s string) string {
	return "<![CDATA[" + strings.ReplaceAll(s, "]]>", "]]]]><![CDATA[>") + "]]>"
}

// TextMessage returns the plaintext XML of a text message from user to the app, as WeCom
// sends it (no newlines).
func TextMessage(corpID string, agentID int64, from, content string, msgID int64, at time.Time) []byte {
	return fmt.Appendf(nil, "<xml><ToUserName>%s</ToUserName><FromUserName>%s</FromUserName><CreateTime>%d</CreateTime><MsgType><![CDATA[text]]></MsgType><Content>%s</Content><MsgId>%d</MsgId><AgentID>%d</AgentID></xml>",
		CDATA(corpID), CDATA(from), at.Unix(), CDATA(content), msgID, agentID)
}

// EventMessage returns the plaintext XML of an event (click, enter_agent, subscribe, …)
// from user, with an optional EventKey.
func EventMessage(corpID string, agentID int64, from, event, key string, at time.Time) []byte {
	return fmt.Appendf(nil, "<xml><ToUserName>%s</ToUserName><FromUserName>%s</FromUserName><CreateTime>%d</CreateTime><MsgType><![CDATA[event]]></MsgType><Event>%s</Event><EventKey>%s</EventKey><AgentID>%d</AgentID></xml>",
		CDATA(corpID), CDATA(from), at.Unix(), CDATA(event), CDATA(key), agentID)
}
