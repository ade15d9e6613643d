// Command baseline is the least code that does the work chatwire's host does for one WeCom
// bot, for bench/load to measure the host against (issue 18). It keeps the host's guarantees
// where they are cheap: a callback is answered 200 only after Redis has the event (and a
// redelivery of the same MsgId is dropped in the same round trip); an SSE client reads the
// stream from Last-Event-ID; a send is answered with the platform's message id.
//
// What it leaves out, on purpose: a plugin process, per-chat ordering of webhook deliveries,
// consumer groups, metrics, logging per request, Graph, attachments, every recipient kind
// but users, every message kind but text.
//
//	POST /webhook/{bot}          WeCom callback: msg_signature (SHA-1), timestamp window,
//	                             AES-256-CBC decrypt, encoding/xml, one EVAL (SET NX + XADD)
//	GET  /v1/bots/{bot}/events   Server-Sent Events fed by XREAD BLOCK
//	POST /v1/bots/{bot}/messages {"to":{"user":U},"text":T} → one POST to message/send
//
// Secrets come from the environment: BASELINE_CORP_SECRET, BASELINE_TOKEN,
// BASELINE_AES_KEY, BASELINE_API_KEY.
package main

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/sha1"
	"crypto/subtle"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"encoding/xml"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:8090", "HTTP listen address (loopback)")
	redisAddr := flag.String("redis", "127.0.0.1:6379", "Redis address")
	bot := flag.String("bot", "hr", "the bot's name in the URL paths")
	corpID := flag.String("corp-id", "", "WeCom corp id (the callback receiveid)")
	agentID := flag.Int64("agent-id", 0, "WeCom agent id")
	apiBase := flag.String("api-base", "https://qyapi.weixin.qq.com", "WeCom API base URL")
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "Usage: baseline [flags]\n\nSecrets from the environment: BASELINE_CORP_SECRET, BASELINE_TOKEN, BASELINE_AES_KEY, BASELINE_API_KEY.\n\nFlags:\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	s, err := newServer(*bot, *corpID, *agentID, *apiBase, os.Getenv("BASELINE_CORP_SECRET"), os.Getenv("BASELINE_TOKEN"),
		os.Getenv("BASELINE_AES_KEY"), os.Getenv("BASELINE_API_KEY"), *redisAddr)
	if err != nil {
		log.Fatalf("baseline: %v", err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := s.rdb.Ping(ctx).Err(); err != nil {
		log.Fatalf("baseline: redis: %v", err)
	}
	mux := s.routes()
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatalf("baseline: %v", err)
	}
	srv := &http.Server{Handler: mux, BaseContext: func(net.Listener) context.Context { return ctx }}
	go func() { <-ctx.Done(); srv.Close() }()
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		log.Fatalf("baseline: %v", err)
	}
}

func newServer(bot, corpID string, agentID int64, apiBase, corpSecret, token, aesKey, apiKey, redisAddr string) (*server, error) {
	key, err := base64.StdEncoding.DecodeString(aesKey + "=")
	if err != nil || len(key) != 32 {
		return nil, errors.New("BASELINE_AES_KEY must be 43 base64 characters")
	}
	if corpID == "" || corpSecret == "" || token == "" {
		return nil, errors.New("--corp-id, BASELINE_CORP_SECRET and BASELINE_TOKEN are required")
	}
	block, _ := aes.NewCipher(key)
	return &server{
		bot: bot, corpID: corpID, agentID: agentID, apiBase: strings.TrimSuffix(apiBase, "/"),
		corpSecret: corpSecret, token: token, apiKey: apiKey, block: block, iv: key[:16],
		rdb:  redis.NewClient(&redis.Options{Addr: redisAddr, PoolSize: 64}),
		http: &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 64}},
	}, nil
}

func (s *server) routes() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /webhook/{bot}", s.webhook)
	mux.HandleFunc("GET /v1/bots/{bot}/events", s.auth(s.events))
	mux.HandleFunc("POST /v1/bots/{bot}/messages", s.auth(s.send))
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok\n") })
	return mux
}

type server struct {
	bot, corpID, apiBase, corpSecret, token, apiKey string
	agentID                                         int64
	block                                           cipher.Block
	iv                                              []byte
	rdb                                             *redis.Client
	http                                            *http.Client

	mu          sync.Mutex // guards accessToken, expires
	accessToken string
	expires     time.Time
}

func (s *server) stream() string { return "baseline:" + s.bot + ":events" }

func (s *server) auth(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		got, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if s.apiKey != "" && subtle.ConstantTimeCompare([]byte(got), []byte(s.apiKey)) != 1 {
			http.Error(w, `{"error":{"kind":"unauthorized"}}`, http.StatusUnauthorized)
			return
		}
		if r.PathValue("bot") != s.bot {
			http.Error(w, `{"error":{"kind":"not_found"}}`, http.StatusNotFound)
			return
		}
		next(w, r)
	}
}

// envelope is the outer callback body; message the decrypted one.
type envelope struct {
	Encrypt string `xml:"Encrypt"`
}

type message struct {
	ToUserName   string `xml:"ToUserName" json:"ToUserName,omitempty"`
	FromUserName string `xml:"FromUserName" json:"FromUserName,omitempty"`
	CreateTime   string `xml:"CreateTime" json:"CreateTime,omitempty"`
	MsgType      string `xml:"MsgType" json:"MsgType,omitempty"`
	Content      string `xml:"Content" json:"Content,omitempty"`
	MsgID        string `xml:"MsgId" json:"MsgId,omitempty"`
	AgentID      string `xml:"AgentID" json:"AgentID,omitempty"`
	Event        string `xml:"Event" json:"Event,omitempty"`
	EventKey     string `xml:"EventKey" json:"EventKey,omitempty"`
}

// event is the host's event JSON.
type event struct {
	ID       string `json:"id"`
	Bot      string `json:"bot"`
	Platform string `json:"platform"`
	Kind     string `json:"kind"`
	Chat     struct {
		ID   string `json:"id"`
		Type string `json:"type"`
	} `json:"chat"`
	Sender struct {
		ID   string `json:"id"`
		Name string `json:"name"`
	} `json:"sender"`
	Text string    `json:"text"`
	Time time.Time `json:"time"`
	Raw  *message  `json:"raw"`
}

// appendNew stores an event unless its id was stored before, in one round trip.
var appendNew = redis.NewScript(`
if redis.call('SET', KEYS[1], '1', 'NX', 'EX', 86400) then
  return redis.call('XADD', KEYS[2], 'MAXLEN', '~', 100000, '*', 'k', ARGV[1], 'd', ARGV[2])
end
return false`)

func (s *server) webhook(w http.ResponseWriter, r *http.Request) {
	if r.PathValue("bot") != s.bot {
		http.NotFound(w, r)
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		http.Error(w, "read error", http.StatusBadRequest)
		return
	}
	var env envelope
	if err := xml.Unmarshal(body, &env); err != nil || env.Encrypt == "" {
		http.Error(w, "not a WeCom callback", http.StatusBadRequest)
		return
	}
	q := r.URL.Query()
	ts, nonce := q.Get("timestamp"), q.Get("nonce")
	parts := []string{s.token, ts, nonce, env.Encrypt}
	sort.Strings(parts)
	sum := sha1.Sum([]byte(strings.Join(parts, "")))
	if subtle.ConstantTimeCompare([]byte(hex.EncodeToString(sum[:])), []byte(q.Get("msg_signature"))) != 1 {
		http.Error(w, "bad signature", http.StatusUnauthorized)
		return
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if d := time.Since(time.Unix(sec, 0)); err != nil || d > 5*time.Minute || d < -5*time.Minute {
		http.Error(w, "replayed timestamp", http.StatusForbidden)
		return
	}
	plain, err := s.decrypt(env.Encrypt)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	var m message
	if err := xml.Unmarshal(plain, &m); err != nil || m.MsgType == "" {
		http.Error(w, "bad message", http.StatusBadRequest)
		return
	}
	ct, _ := strconv.ParseInt(m.CreateTime, 10, 64)
	ev := event{ID: "wecom:" + m.MsgID, Bot: s.bot, Platform: "wecom", Kind: "message", Text: m.Content, Time: time.Unix(ct, 0).UTC(), Raw: &m}
	if m.MsgID == "" { // events have no MsgId
		h := sha1.Sum(plain)
		ev.ID, ev.Kind, ev.Text = "wecom:"+m.FromUserName+":"+m.CreateTime+":"+m.Event+":"+hex.EncodeToString(h[:]), "notice", m.Event
	}
	ev.Chat.ID, ev.Chat.Type, ev.Sender.ID = m.FromUserName, "direct", m.FromUserName
	data, _ := json.Marshal(ev)
	err = appendNew.Run(r.Context(), s.rdb, []string{"baseline:" + s.bot + ":seen:" + ev.ID, s.stream()}, ev.Kind, data).Err()
	if err != nil && !errors.Is(err, redis.Nil) { // redis.Nil: seen before, already stored
		http.Error(w, "event not stored; redeliver", http.StatusServiceUnavailable)
		return
	}
	io.WriteString(w, "success")
}

// decrypt opens a WeCom Encrypt field: AES-256-CBC, IV = key[:16], PKCS#7 to 32 bytes;
// 16 random bytes, a 4-byte length, the message, the receiveid.
func (s *server) decrypt(b64 string) ([]byte, error) {
	ct, err := base64.StdEncoding.DecodeString(b64)
	if err != nil || len(ct) == 0 || len(ct)%aes.BlockSize != 0 {
		return nil, errors.New("bad ciphertext")
	}
	cipher.NewCBCDecrypter(s.block, s.iv).CryptBlocks(ct, ct)
	pad := int(ct[len(ct)-1])
	if pad < 1 || pad > 32 || pad > len(ct) {
		return nil, errors.New("bad padding")
	}
	ct = ct[:len(ct)-pad]
	if len(ct) < 20 {
		return nil, errors.New("short plaintext")
	}
	n := int(binary.BigEndian.Uint32(ct[16:20]))
	if n > len(ct)-20 {
		return nil, errors.New("bad length")
	}
	if string(ct[20+n:]) != s.corpID {
		return nil, errors.New("another corp's message")
	}
	return ct[20 : 20+n], nil
}

func (s *server) events(w http.ResponseWriter, r *http.Request) {
	last := r.Header.Get("Last-Event-ID")
	if last == "" {
		// Start after the newest event stored now. Resolved before the client sees the
		// headers: XREAD "$" would mean "after the newest at the time of the read", and an
		// event stored between the headers and the first read would be lost.
		last = "0-0"
		msgs, err := s.rdb.XRevRangeN(r.Context(), s.stream(), "+", "-", 1).Result()
		if err != nil {
			http.Error(w, `{"error":{"kind":"unavailable"}}`, http.StatusServiceUnavailable)
			return
		}
		if len(msgs) == 1 {
			last = msgs[0].ID
		}
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	io.WriteString(w, ": baseline events\n\n")
	rc := http.NewResponseController(w)
	if rc.Flush() != nil {
		return
	}
	var buf bytes.Buffer
	idle := 0
	for {
		// go-redis does not abort a blocked read when the context ends, so block 1 s at a
		// time to notice a client that went away; ping the client every 15 s.
		res, err := s.rdb.XRead(r.Context(), &redis.XReadArgs{Streams: []string{s.stream(), last}, Count: 100, Block: time.Second}).Result()
		if r.Context().Err() != nil {
			return
		}
		if errors.Is(err, redis.Nil) {
			if idle++; idle%15 != 0 {
				continue
			}
			io.WriteString(w, ": ping\n\n")
		} else if err != nil {
			time.Sleep(100 * time.Millisecond)
			continue
		}
		buf.Reset()
		for _, st := range res {
			for _, m := range st.Messages {
				fmt.Fprintf(&buf, "id: %s\nevent: %s\ndata: %s\n\n", m.ID, m.Values["k"], m.Values["d"])
				last = m.ID
			}
		}
		w.Write(buf.Bytes())
		if rc.Flush() != nil {
			return
		}
	}
}

type sendRequest struct {
	To struct {
		User string `json:"user"`
	} `json:"to"`
	Text string `json:"text"`
}

func (s *server) send(w http.ResponseWriter, r *http.Request) {
	var req sendRequest
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&req); err != nil || req.To.User == "" || req.Text == "" {
		http.Error(w, `{"error":{"kind":"invalid_request","message":"want {\"to\":{\"user\":U},\"text\":T}"}}`, http.StatusBadRequest)
		return
	}
	body, _ := json.Marshal(map[string]any{"touser": req.To.User, "msgtype": "text", "agentid": s.agentID, "text": map[string]string{"content": req.Text}})
	var out struct {
		ErrCode     int    `json:"errcode"`
		ErrMsg      string `json:"errmsg"`
		MsgID       string `json:"msgid"`
		InvalidUser string `json:"invaliduser"`
	}
	for attempt := 0; ; attempt++ {
		tok, err := s.tokenFor(r.Context(), attempt > 0)
		if err != nil {
			http.Error(w, `{"error":{"kind":"unavailable"}}`, http.StatusBadGateway)
			return
		}
		resp, err := s.http.Post(s.apiBase+"/cgi-bin/message/send?access_token="+url.QueryEscape(tok), "application/json", bytes.NewReader(body))
		if err != nil {
			http.Error(w, `{"error":{"kind":"unavailable"}}`, http.StatusBadGateway)
			return
		}
		err = json.NewDecoder(resp.Body).Decode(&out)
		resp.Body.Close()
		if err == nil && (out.ErrCode == 40014 || out.ErrCode == 42001) && attempt == 0 {
			continue // the token was revoked or expired early: fetch a new one once
		}
		if err != nil || out.ErrCode != 0 {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusBadGateway)
			fmt.Fprintf(w, `{"error":{"kind":"unavailable","platform_code":"%d"}}`+"\n", out.ErrCode)
			return
		}
		break
	}
	invalid := []string{}
	if out.InvalidUser != "" {
		invalid = strings.Split(out.InvalidUser, "|")
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]any{"id": out.MsgID, "bot": s.bot, "platform": "wecom", "invalid": invalid})
}

// tokenFor returns a cached access token, fetching one when there is none, it is about to
// expire, or fresh is set.
func (s *server) tokenFor(ctx context.Context, fresh bool) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !fresh && s.accessToken != "" && time.Now().Before(s.expires) {
		return s.accessToken, nil
	}
	req, _ := http.NewRequestWithContext(ctx, "GET", s.apiBase+"/cgi-bin/gettoken?corpid="+url.QueryEscape(s.corpID)+"&corpsecret="+url.QueryEscape(s.corpSecret), nil)
	resp, err := s.http.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var out struct {
		ErrCode     int    `json:"errcode"`
		AccessToken string `json:"access_token"`
		ExpiresIn   int    `json:"expires_in"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || out.ErrCode != 0 || out.AccessToken == "" {
		return "", fmt.Errorf("gettoken: errcode %d", out.ErrCode)
	}
	s.accessToken, s.expires = out.AccessToken, time.Now().Add(time.Duration(out.ExpiresIn)*time.Second*4/5)
	return s.accessToken, nil
}
