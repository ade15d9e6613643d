package aibottest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/seed-a64d9e1f/chatwire/adapter/wecom"
)

// Webhook plays WeCom's side of a bot in webhook mode: it signs and encrypts callbacks
// (receiveid ""), POSTs them to the bot's URL, checks and decrypts the passive replies, and
// polls streams. Its zero value is not usable: set URL, Token and EncodingAESKey.
type Webhook struct {
	URL            string // the bot's callback URL
	Token          string
	EncodingAESKey string
	BotID          string       // aibotid put in callbacks; "" means "BOT1"
	Client         *http.Client // nil: http.DefaultClient
	// Server, if set, is told about messages (so its response_url endpoint knows the
	// conversation) and records what polls show in its inspectors.
	Server *Server
	// Retries is how many times a POST answered with a non-200 status or not answered
	// within Timeout is sent again, byte for byte, as WeCom redelivers. Zero: none.
	Retries int
	// Timeout bounds each POST. Zero means 5 s.
	Timeout time.Duration

	mu           sync.Mutex // protects redeliveries
	redeliveries int
}

// ErrPassiveReply means a passive reply was malformed: bad JSON, wrong nonce, a signature
// that does not verify, or a payload that does not decrypt.
var ErrPassiveReply = errors.New("aibottest: bad passive reply")

func (w *Webhook) crypto() (*wecom.Crypto, error) {
	return wecom.NewCrypto(w.Token, w.EncodingAESKey, "")
}

func (w *Webhook) client() *http.Client {
	if w.Client != nil {
		return w.Client
	}
	return http.DefaultClient
}

func nonce() string {
	b := make([]byte, 4)
	rand.Read(b)
	return strconv.FormatUint(uint64(b[0])<<24|uint64(b[1])<<16|uint64(b[2])<<8|uint64(b[3]), 10)
}

// VerifyURL runs URL verification: GET with an encrypted echostr; the bot must answer the
// bare plaintext.
func (w *Webhook) VerifyURL(ctx context.Context) error {
	c, err := w.crypto()
	if err != nil {
		return err
	}
	plain := "echo" + hex.EncodeToString([]byte(nonce()))
	echo, _ := c.Encrypt([]byte(plain))
	ts, n := strconv.FormatInt(time.Now().Unix(), 10), nonce()
	q := url.Values{"msg_signature": {c.Signature(ts, n, echo)}, "timestamp": {ts}, "nonce": {n}, "echostr": {echo}}
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, w.URL+"?"+q.Encode(), nil)
	resp, err := w.client().Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || string(body) != plain {
		return fmt.Errorf("aibottest: URL verification answered %d %q; want 200 %q", resp.StatusCode, body, plain)
	}
	return nil
}

// PostRaw POSTs plaintext as an encrypted callback with timestamp ts (zero: now) and
// returns the HTTP status and the decrypted passive reply (nil for an empty body).
func (w *Webhook) PostRaw(ctx context.Context, plaintext []byte, ts time.Time) (int, []byte, error) {
	c, err := w.crypto()
	if err != nil {
		return 0, nil, err
	}
	if ts.IsZero() {
		ts = time.Now()
	}
	enc, _ := c.Encrypt(plaintext)
	tss, n := strconv.FormatInt(ts.Unix(), 10), nonce()
	q := url.Values{"msg_signature": {c.Signature(tss, n, enc)}, "timestamp": {tss}, "nonce": {n}}
	body, _ := json.Marshal(map[string]string{"encrypt": enc})
	timeout := w.Timeout
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	var status int
	var raw []byte
	for try := 0; ; try++ {
		status, raw, err = w.post(ctx, w.URL+"?"+q.Encode(), body, timeout)
		if err == nil && status == http.StatusOK || try >= w.Retries || ctx.Err() != nil {
			break
		}
		w.mu.Lock()
		w.redeliveries++
		w.mu.Unlock()
	}
	if err != nil || status != http.StatusOK {
		return status, nil, err
	}
	reply, err := openPassive(c, raw, n)
	return status, reply, err
}

func (w *Webhook) post(ctx context.Context, u string, body []byte, timeout time.Duration) (int, []byte, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	resp, err := w.client().Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, raw, nil
}

// Redeliveries returns how many POSTs were sent again after a failure.
func (w *Webhook) Redeliveries() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.redeliveries
}

// openPassive checks a passive reply: an empty body, or {"encrypt","msgsignature",
// "timestamp" (string or number),"nonce"} with the callback's nonce.
func openPassive(c *wecom.Crypto, raw []byte, wantNonce string) ([]byte, error) {
	if len(bytes.TrimSpace(raw)) == 0 {
		return nil, nil
	}
	var env struct {
		Encrypt      string          `json:"encrypt"`
		MsgSignature string          `json:"msgsignature"`
		Timestamp    json.RawMessage `json:"timestamp"`
		Nonce        string          `json:"nonce"`
	}
	if err := json.Unmarshal(raw, &env); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrPassiveReply, err)
	}
	ts := strings.Trim(string(env.Timestamp), `"`)
	if env.Nonce != wantNonce {
		return nil, fmt.Errorf("%w: nonce %q; want the callback's %q", ErrPassiveReply, env.Nonce, wantNonce)
	}
	if !c.Verify(env.MsgSignature, ts, env.Nonce, env.Encrypt) {
		return nil, fmt.Errorf("%w: signature does not verify", ErrPassiveReply)
	}
	plain, err := c.Decrypt(env.Encrypt)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrPassiveReply, err)
	}
	return plain, nil
}

// A StreamReply is a passive reply of msgtype stream.
type StreamReply struct {
	MsgType string `json:"msgtype"`
	Stream  struct {
		ID      string `json:"id"`
		Finish  bool   `json:"finish"`
		Content string `json:"content"`
	} `json:"stream"`
}

// Message POSTs a text message from conv (with a response_url on the Server, if set) and
// returns its msgid and the decrypted passive reply.
func (w *Webhook) Message(ctx context.Context, conv Conv, text string) (msgid string, reply []byte, err error) {
	msgid = "WH" + hex.EncodeToString([]byte(nonce()))
	body := map[string]any{"msgid": msgid, "aibotid": or(w.BotID, "BOT1"), "chattype": "single", "from": map[string]string{"userid": conv.User},
		"msgtype": "text", "text": map[string]string{"content": text}}
	if conv.Chat != "" {
		body["chatid"], body["chattype"] = conv.Chat, "group"
	}
	if w.Server != nil {
		body["response_url"] = w.Server.ResponseURL(conv)
		w.Server.init()
		w.Server.mu.Lock()
		w.Server.chats[conv.key()] = true
		w.Server.mu.Unlock()
	}
	plain, _ := json.Marshal(body)
	status, reply, err := w.PostRaw(ctx, plain, time.Time{})
	if err == nil && status != http.StatusOK {
		err = fmt.Errorf("aibottest: callback answered HTTP %d", status)
	}
	return msgid, reply, err
}

// Refresh POSTs one stream-refresh callback for streamID and returns the reply.
func (w *Webhook) Refresh(ctx context.Context, conv Conv, streamID string) (StreamReply, error) {
	body := map[string]any{"msgid": "R" + hex.EncodeToString([]byte(nonce())), "aibotid": or(w.BotID, "BOT1"), "chattype": "single",
		"from": map[string]string{"userid": conv.User}, "msgtype": "stream", "stream": map[string]string{"id": streamID}}
	if conv.Chat != "" {
		body["chatid"], body["chattype"] = conv.Chat, "group"
	}
	plain, _ := json.Marshal(body)
	status, reply, err := w.PostRaw(ctx, plain, time.Time{})
	var r StreamReply
	if err != nil {
		return r, err
	}
	if status != http.StatusOK {
		return r, fmt.Errorf("aibottest: refresh answered HTTP %d", status)
	}
	if err := json.Unmarshal(reply, &r); err != nil || r.MsgType != "stream" {
		return r, fmt.Errorf("%w: refresh reply %q is not a stream", ErrPassiveReply, reply)
	}
	return r, nil
}

// PollStream polls streamID every interval until a reply has finish:true or max passes
// (zero: 6 minutes), and returns the last reply and how many polls it took. Each reply
// must show content that extends the previous one.
func (w *Webhook) PollStream(ctx context.Context, conv Conv, streamID string, interval, max time.Duration) (StreamReply, int, error) {
	if max <= 0 {
		max = 6 * time.Minute
	}
	deadline := time.Now().Add(max)
	var last StreamReply
	for polls := 1; ; polls++ {
		r, err := w.Refresh(ctx, conv, streamID)
		if err != nil {
			return last, polls, err
		}
		if !strings.HasPrefix(r.Stream.Content, last.Stream.Content) {
			return r, polls, fmt.Errorf("aibottest: poll %d shows %q after %q: not cumulative", polls, r.Stream.Content, last.Stream.Content)
		}
		last = r
		if r.Stream.Finish || time.Now().After(deadline) {
			return r, polls, nil
		}
		t := time.NewTimer(interval)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return last, polls, ctx.Err()
		}
	}
}
