// Package wecomtest is a WeCom server emulator for tests: an http.Handler that answers
// gettoken, message/send, message/recall, appchat, and media like WeCom does (HTTP 200 and an
// errcode), with knobs for early token invalidation, rate limits and injected failures,
// inspectors for what it received, and a callback pusher that signs, encrypts and retries
// like WeCom. Its zero value is ready to use: httptest.NewServer(&wecomtest.Server{}).
package wecomtest

import (
	"cmp"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Server emulates WeCom's API. Its methods are safe for concurrent use. Set the exported
// fields before the first request; change them later only while no request is in flight.
//
// With no app registered (AddApp), any non-empty corpid and corpsecret get a token and any
// agentid is accepted; with no users, parties or tags registered, every recipient exists.
type Server struct {
	// TokenLifetime is the lifetime of issued tokens. Zero means 7200 s.
	TokenLifetime time.Duration
	// ReportRemaining makes a repeated gettoken report the remaining lifetime as expires_in
	// rather than the full lifetime (real WeCom's behaviour here is unverified).
	ReportRemaining bool
	// ReissueExpired makes gettoken hand back the value of an app's token that has expired
	// (or has under a second left), with a fresh full lifetime, instead of a new value: a
	// client must not keep the old expiry for a value it has seen before. Revoked tokens are
	// never reissued.
	ReissueExpired bool
	// MediaLifetime is how long an uploaded media_id stays valid. Zero means 72 hours.
	MediaLifetime time.Duration
	// LenientAgentID accepts agentid sent as a numeric string ("1000002"), as silenceper
	// sends it. If false, only a JSON number is accepted (40056 otherwise).
	LenientAgentID bool
	// MemberLimit is how many messages one member receives from one app per minute; more are
	// dropped silently (recorded with Dropped set). Zero means 30; negative means no limit.
	MemberLimit int
	// MemberLimitCode, if not zero, makes a message/send that would exceed MemberLimit for
	// any recipient fail with this errcode (45009, say) instead of dropping silently. Whether
	// real WeCom errors here is unverified.
	MemberLimitCode int
	// IgnoreDuplicateCheck makes message/send deliver a request identical to an earlier one
	// even when it sets enable_duplicate_check (as if WeCom had no such check). If false, such
	// a request within duplicate_check_interval is accepted, answered with the first
	// message's msgid, recorded with Duplicate set, and not delivered.
	IgnoreDuplicateCheck bool
	// Now, if not nil, is the clock of message delivery (MemberLimit windows, duplicate_check
	// intervals, Sent.Time), so a test can shorten time as the sender's pacing does. nil:
	// time.Now.
	Now func() time.Time
	// PushTimeout bounds each callback delivery. Zero means 5 s.
	PushTimeout time.Duration
	// PushRetries is how many times a failed callback delivery (non-200 or timeout) is
	// retried. Zero means 2 (3 deliveries in all); negative means none.
	PushRetries int
	// PushRetryDelay is the wait between callback deliveries. Zero means 1 s.
	PushRetryDelay time.Duration
	// HTTPClient makes callback deliveries. If nil, http.DefaultClient is used.
	HTTPClient *http.Client
	// OtherAgentCode is the errcode agent/get answers for an agentid that is not the
	// token's app. Zero means 301002 ("not allow operate another agent with this
	// accesstoken", as WeCom answers a token used for another app's id); whether WeCom
	// answers 40056 instead for an id no app of the corp has is unverified, so a test can
	// set 40056.
	OtherAgentCode int

	mu       sync.Mutex        // guards the fields below
	apps     map[string]*app   // by corpid+"\x00"+secret
	corps    map[string]bool   // registered corp ids
	tokens   map[string]*token // by value
	current  map[string]*token // by app key: the token gettoken hands out while valid
	users    map[string]bool   // lower-cased
	parties  map[string]bool
	tags     map[string]bool
	fails    []*failure
	limits   map[string]int // endpoint → calls left before 45009
	calls    map[string]int
	tokenReq int
	issued   int
	sent     []Sent
	byMsgID  map[string]int // msgid → index in sent
	media    map[string]*Media
	images   map[string]*Media // media/uploadimg uploads, by URL path
	chats    map[string]*Chat
	pushes   []Push
	recv     map[string][]time.Time // agentid/user → delivery times in the last minute
}

type app struct {
	corpID, secret string
	agentID        int64 // 0: any
}

type token struct {
	value   string
	app     string
	agentID int64
	issued  time.Time
	expires time.Time
	revoked int // errcode answered after RevokeTokens; 0 while valid
}

type failure struct {
	endpoint string
	code     int
	left     int // < 0: forever
}

// Sent is a message the Server accepted on message/send or appchat/send.
type Sent struct {
	Endpoint string // "message/send" or "appchat/send"
	AgentID  int64
	MsgType  string
	ToUser   string
	ToParty  string
	ToTag    string
	ChatID   string
	// Content is the text or markdown content as delivered: truncated to 2048 bytes if longer.
	Content   string
	Truncated bool
	MediaID   string
	// Delivered lists the members the message reached; Dropped those over MemberLimit.
	Delivered []string
	Dropped   []string
	// Duplicate is set on a request WeCom accepted but did not show, as identical to one
	// shown within its duplicate_check_interval; MsgID is then the first message's.
	Duplicate bool
	Invalid   []string // "user:x", "party:2", "tag:1"
	MsgID     string
	Recalled  bool
	Time      time.Time
	Body      json.RawMessage // the request body as sent
}

// Media is an uploaded temporary media file.
type Media struct {
	ID          string
	Type        string
	Name        string
	ContentType string
	Data        []byte
	Created     time.Time
	FileLength  string // the filelength parameter, if the client sent one
}

// Chat is an app chat created through appchat/create.
type Chat struct {
	ID      string
	Name    string
	Owner   string
	Users   []string
	AgentID int64 // the app that created it
}

func (s *Server) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

// defaults
func (s *Server) tokenLifetime() time.Duration {
	if s.TokenLifetime > 0 {
		return s.TokenLifetime
	}
	return 7200 * time.Second
}

func (s *Server) mediaLifetime() time.Duration {
	if s.MediaLifetime > 0 {
		return s.MediaLifetime
	}
	return 72 * time.Hour
}

// initLocked makes the maps of a zero Server.
func (s *Server) initLocked() {
	if s.tokens != nil {
		return
	}
	s.apps = map[string]*app{}
	s.corps = map[string]bool{}
	s.tokens = map[string]*token{}
	s.current = map[string]*token{}
	s.users = map[string]bool{}
	s.parties = map[string]bool{}
	s.tags = map[string]bool{}
	s.limits = map[string]int{}
	s.calls = map[string]int{}
	s.byMsgID = map[string]int{}
	s.media = map[string]*Media{}
	s.images = map[string]*Media{}
	s.chats = map[string]*Chat{}
	s.recv = map[string][]time.Time{}
}

// AddApp registers an app. Once one is registered, gettoken answers 40013 for an unknown
// corpid and 40001 for a wrong secret, and message/send requires the token's agentid.
func (s *Server) AddApp(corpID, secret string, agentID int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.initLocked()
	s.apps[corpID+"\x00"+secret] = &app{corpID: corpID, secret: secret, agentID: agentID}
	s.corps[corpID] = true
}

// AddUsers registers members. Once any is registered, unknown user ids are invalid
// recipients.
func (s *Server) AddUsers(ids ...string) { s.add(func() map[string]bool { return s.users }, ids, true) }

// AddParties registers departments. Once any is registered, unknown ones are invalid.
func (s *Server) AddParties(ids ...string) {
	s.add(func() map[string]bool { return s.parties }, ids, false)
}

// AddTags registers tags. Once any is registered, unknown ones are invalid.
func (s *Server) AddTags(ids ...string) { s.add(func() map[string]bool { return s.tags }, ids, false) }

func (s *Server) add(set func() map[string]bool, ids []string, lower bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.initLocked()
	m := set()
	for _, id := range ids {
		if lower {
			id = strings.ToLower(id)
		}
		m[id] = true
	}
}

// RevokeTokens invalidates every token issued so far before its expiry, as WeCom may do. Later
// calls with one answer code: 42001 (expired) or 40014 (invalid); 0 means 42001. The next
// gettoken issues a new token.
func (s *Server) RevokeTokens(code int) {
	if code == 0 {
		code = 42001
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.initLocked()
	for _, t := range s.tokens {
		if t.revoked == 0 {
			t.revoked = code
		}
	}
	clear(s.current)
}

// Fail makes the next n calls of endpoint ("gettoken", "message/send", …; "" for every
// endpoint) answer errcode code: -1 (busy), 45009, 45033, 60020 (IP not allowed), or any
// other. A negative n fails every call until ClearFailures; zero does nothing.
func (s *Server) Fail(endpoint string, code, n int) {
	if n == 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.initLocked()
	s.fails = append(s.fails, &failure{endpoint: endpoint, code: code, left: n})
}

// LimitCalls lets endpoint ("" for all) be called n more times; after that it answers 45009
// until ClearFailures.
func (s *Server) LimitCalls(endpoint string, n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.initLocked()
	s.limits[endpoint] = n
}

// ClearFailures removes every Fail and LimitCalls knob.
func (s *Server) ClearFailures() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.initLocked()
	s.fails = nil
	clear(s.limits)
}

// TokenRequests returns how many gettoken calls the Server answered, successful or not.
func (s *Server) TokenRequests() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.tokenReq
}

// TokensIssued returns how many distinct tokens the Server has issued.
func (s *Server) TokensIssued() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.issued
}

// Calls returns how many calls endpoint ("message/send", …) received, failed ones included.
func (s *Server) Calls(endpoint string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls[endpoint]
}

// Sent returns the messages accepted so far, oldest first.
func (s *Server) Sent() []Sent {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Sent(nil), s.sent...)
}

// Media returns the uploaded media with id, or nil.
func (s *Server) Media(id string) *Media {
	s.mu.Lock()
	defer s.mu.Unlock()
	if m, ok := s.media[id]; ok {
		c := *m
		return &c
	}
	return nil
}

// Image returns the image uploaded with media/uploadimg whose returned url is u, or nil.
func (s *Server) Image(u string) *Media {
	p, err := url.Parse(u)
	if err != nil {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if m, ok := s.images[p.Path]; ok {
		c := *m
		return &c
	}
	return nil
}

// Chat returns the app chat with id, or nil.
func (s *Server) Chat(id string) *Chat {
	s.mu.Lock()
	defer s.mu.Unlock()
	if c, ok := s.chats[id]; ok {
		cc := *c
		return &cc
	}
	return nil
}

// Client returns an http.Client whose requests the Server answers in process, without a
// network: usable inside a testing/synctest bubble, where a real listener would keep the
// fake clock from advancing.
func (s *Server) Client() *http.Client { return HandlerClient(s) }

// HandlerClient returns an http.Client whose requests h answers in process (see
// [Server.Client]); use it as [Server.HTTPClient] to push callbacks to a handler without a
// network.
func HandlerClient(h http.Handler) *http.Client { return &http.Client{Transport: handlerTransport{h}} }

// handlerTransport serves requests with an http.Handler in process.
type handlerTransport struct{ h http.Handler }

func (t handlerTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if err := req.Context().Err(); err != nil {
		if req.Body != nil {
			req.Body.Close()
		}
		return nil, err
	}
	rec := httptest.NewRecorder()
	t.h.ServeHTTP(rec, req)
	if req.Body != nil {
		req.Body.Close()
	}
	if err := req.Context().Err(); err != nil {
		return nil, err // the client gave up before the handler answered
	}
	resp := rec.Result()
	resp.Request = req
	return resp, nil
}

// errmsgs gives WeCom's English errmsg texts.
var errmsgs = map[int]string{
	-1:     "system busy",
	40001:  "invalid credential",
	40003:  "invalid userid",
	40005:  "invalid media type",
	40006:  "invalid file size",
	40007:  "invalid media_id",
	40008:  "invalid message type",
	40009:  "invalid image size",
	40011:  "invalid video size",
	40013:  "invalid corpid",
	40014:  "invalid access_token",
	40056:  "invalid agentid",
	41001:  "access_token missing",
	41002:  "corpid missing",
	41004:  "corpsecret missing",
	41009:  "missing touser, toparty and totag",
	41011:  "agentid missing",
	41033:  "description missing",
	42001:  "access_token expired",
	43001:  "message not found or older than 24 hours",
	44001:  "empty media data",
	44004:  "empty content",
	45001:  "media size out of limit",
	45008:  "article size out of limit",
	45009:  "api freq out of limit",
	45033:  "api concurrent out of limit",
	47001:  "data format error",
	48001:  "api unauthorized",
	60020:  "not allow to access from your ip",
	81013:  "user & party & tag all invalid",
	86001:  "invalid chatid",
	301002: "not allow operate another agent with this accesstoken",
	86003:  "chatid not found",
	86004:  "invalid userlist",
}

// errBody is an error answer in WeCom's format.
func errBody(code int, extra map[string]any) map[string]any {
	msg := errmsgs[code]
	if msg == "" {
		msg = "error"
	}
	m := map[string]any{
		"errcode": code,
		"errmsg": fmt.Sprintf("%s, hint: [%d%s], from ip: 127.0.0.1, more info at https://open.work.weixin.qq.com/devtool/query?e=%d",
			msg, time.Now().Unix(), randHex(4), code),
	}
	for k, v := range extra {
		m[k] = v
	}
	return m
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json; charset=UTF-8")
	w.WriteHeader(http.StatusOK)
	json.NewEncoder(w).Encode(v)
}

func randHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// ServeHTTP answers the WeCom API under /cgi-bin/, and GETs of the permanent image URLs
// media/uploadimg returned.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if strings.HasPrefix(r.URL.Path, imagePath) && (r.Method == http.MethodGet || r.Method == http.MethodHead) {
		s.serveImage(w, r)
		return
	}
	endpoint, ok := strings.CutPrefix(r.URL.Path, "/cgi-bin/")
	if !ok {
		http.NotFound(w, r)
		return
	}
	// Read the body before locking: the client may be slow.
	var data []byte
	if r.Body != nil {
		var err error
		data, err = io.ReadAll(io.LimitReader(r.Body, 32<<20))
		if err != nil {
			http.Error(w, "read error", http.StatusBadRequest)
			return
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.initLocked()
	s.calls[endpoint]++
	if endpoint == "gettoken" {
		s.tokenReq++
	}
	if code := s.injectedLocked(endpoint); code != 0 {
		writeJSON(w, errBody(code, nil))
		return
	}
	if endpoint == "gettoken" {
		writeJSON(w, s.getTokenLocked(r))
		return
	}
	tok, code := s.authLocked(r)
	if code != 0 {
		writeJSON(w, errBody(code, nil))
		return
	}
	var resp map[string]any
	switch endpoint {
	case "message/send":
		resp = s.sendLocked(tok, data, false)
	case "appchat/send":
		resp = s.sendLocked(tok, data, true)
	case "appchat/create":
		resp = s.createChatLocked(tok, data)
	case "message/recall":
		resp = s.recallLocked(data)
	case "media/upload":
		resp = s.uploadLocked(r, data)
	case "media/uploadimg":
		resp = s.uploadImgLocked(r, data)
	case "agent/get":
		resp = s.agentLocked(tok, r.URL.Query().Get("agentid"))
	case "media/get":
		m, code := s.mediaLocked(r.URL.Query().Get("media_id"))
		if code != 0 {
			resp = errBody(code, nil)
			break
		}
		w.Header().Set("Content-Type", m.ContentType)
		cd := mime.FormatMediaType("attachment", map[string]string{"filename": m.Name})
		if cd == "" { // a name FormatMediaType cannot encode (control characters)
			cd = "attachment"
		}
		w.Header().Set("Content-Disposition", cd)
		w.Header().Set("Content-Length", strconv.Itoa(len(m.Data)))
		w.WriteHeader(http.StatusOK)
		w.Write(m.Data)
		return
	default:
		resp = errBody(48001, nil)
	}
	writeJSON(w, resp)
}

// agentLocked answers agent/get: a corp may read only the app its token belongs to (doc
// 90227: "企业仅可获取当前凭证对应的应用").
func (s *Server) agentLocked(tok *token, raw string) map[string]any {
	if raw == "" {
		return errBody(41011, nil)
	}
	id, err := strconv.ParseInt(raw, 10, 64)
	if err != nil || id <= 0 {
		return errBody(40056, nil)
	}
	if tok.agentID != 0 && id != tok.agentID {
		return errBody(cmp.Or(s.OtherAgentCode, 301002), nil)
	}
	users := []map[string]string{}
	for u := range s.users {
		users = append(users, map[string]string{"userid": u})
	}
	sort.Slice(users, func(i, j int) bool { return users[i]["userid"] < users[j]["userid"] })
	return map[string]any{"errcode": 0, "errmsg": "ok", "agentid": id, "name": "emulated app " + raw,
		"square_logo_url": "", "description": "", "allow_userinfos": map[string]any{"user": users},
		"allow_partys": map[string]any{"partyid": []int{}}, "allow_tags": map[string]any{"tagid": []int{}},
		"close": 0, "redirect_domain": "", "report_location_flag": 0, "isreportenter": 0, "home_url": ""}
}

// serveImage serves an image uploaded with media/uploadimg; the URL needs no token and
// never expires.
func (s *Server) serveImage(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.initLocked()
	m := s.images[r.URL.Path]
	s.mu.Unlock()
	if m == nil {
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Content-Type", m.ContentType)
	w.Header().Set("Content-Length", strconv.Itoa(len(m.Data)))
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodGet {
		w.Write(m.Data)
	}
}

// injectedLocked returns the errcode a Fail or LimitCalls knob imposes on this call, or 0.
func (s *Server) injectedLocked(endpoint string) int {
	for i, f := range s.fails {
		if f.endpoint != "" && f.endpoint != endpoint {
			continue
		}
		if f.left > 0 {
			f.left--
			if f.left == 0 {
				s.fails = append(s.fails[:i:i], s.fails[i+1:]...)
			}
		}
		return f.code
	}
	for _, ep := range []string{endpoint, ""} {
		if n, ok := s.limits[ep]; ok {
			if n <= 0 {
				return 45009
			}
			s.limits[ep] = n - 1
		}
	}
	return 0
}

func (s *Server) getTokenLocked(r *http.Request) map[string]any {
	q := r.URL.Query()
	corp, secret := q.Get("corpid"), q.Get("corpsecret")
	switch {
	case corp == "":
		return errBody(41002, nil)
	case secret == "":
		return errBody(41004, nil)
	}
	key := corp + "\x00" + secret
	var agentID int64
	if len(s.apps) > 0 {
		if !s.corps[corp] {
			return errBody(40013, nil)
		}
		a, ok := s.apps[key]
		if !ok {
			return errBody(40001, nil)
		}
		agentID = a.agentID
	}
	now := time.Now()
	life := s.tokenLifetime()
	// The current token is handed out again while it has at least a second left; in its
	// last second a new one is issued (both work until the old one expires).
	if t := s.current[key]; t != nil && t.revoked == 0 && t.expires.Sub(now) >= time.Second {
		exp := life
		if s.ReportRemaining {
			exp = t.expires.Sub(now)
		}
		return map[string]any{"errcode": 0, "errmsg": "ok", "access_token": t.value, "expires_in": int64(exp / time.Second)}
	}
	if t := s.current[key]; t != nil && t.revoked == 0 && s.ReissueExpired {
		t.issued, t.expires = now, now.Add(life)
		return map[string]any{"errcode": 0, "errmsg": "ok", "access_token": t.value, "expires_in": int64(life / time.Second)}
	}
	t := &token{value: "emu-" + randHex(24), app: key, agentID: agentID, issued: now, expires: now.Add(life)}
	s.tokens[t.value] = t
	s.current[key] = t
	s.issued++
	return map[string]any{"errcode": 0, "errmsg": "ok", "access_token": t.value, "expires_in": int64(life / time.Second)}
}

// authLocked checks the access_token parameter.
func (s *Server) authLocked(r *http.Request) (*token, int) {
	v := r.URL.Query().Get("access_token")
	if v == "" {
		return nil, 41001
	}
	t, ok := s.tokens[v]
	switch {
	case !ok:
		return nil, 40014
	case t.revoked != 0:
		return nil, t.revoked
	case !time.Now().Before(t.expires):
		return nil, 42001
	}
	return t, 0
}
