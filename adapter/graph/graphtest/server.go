// Package graphtest is an in-process emulator of the Microsoft identity platform and the parts
// of Microsoft Graph chatwire uses: the token endpoint (client credentials, authorization code
// with PKCE, rotating refresh tokens, device code), Teams chats and channels, Outlook mail,
// change-notification subscriptions and OneDrive upload sessions. A zero [Server] is ready to
// use as an http.Handler; knobs change its behaviour and inspectors report what it saw.
package graphtest

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Server emulates login.microsoftonline.com and graph.microsoft.com on one handler: token
// paths are "/{tenant}/oauth2/v2.0/…", Graph paths "/v1.0/…", upload URLs "/upload/…". Point
// both the login base and the Graph base of a client at it. Its zero value is ready to use; set
// knobs before the first request. All methods are safe for concurrent use.
type Server struct {
	// TokenLifetime is the lifetime of issued access tokens. Zero means 3599 seconds.
	TokenLifetime time.Duration
	// StrictRefresh makes a refresh token unusable once redeemed (AADSTS70008). The real
	// platform keeps old refresh tokens valid; strict mode proves rotation is persisted.
	StrictRefresh bool
	// CAE makes Graph answer a revoked token of a client that declared the cp1 capability (its
	// token request's claims had access_token.xms_cc.values ["cp1"]) with a claims challenge
	// (401, WWW-Authenticate error="insufficient_claims") instead of the plain "expired" 401
	// other clients get (spec §2). Once it has challenged an app or user (client id and user,
	// "" for app-only), Graph answers every cp1 token of that app or user with the same
	// challenge unless the token was requested with the challenge's claims (the claims
	// parameter names every claim the challenge asks for); the first such token presented ends
	// the challenge. This is stricter than the spec says Graph is (§2 says the client must ask
	// with the claims; it does not say a new token issued without them is refused): it proves
	// a client sends them.
	CAE bool
	// StrictUpload makes upload URLs reject requests carrying an Authorization header (401).
	StrictUpload bool
	// UploadSessionLifetime is how long an upload session lives. Zero means 15 minutes.
	UploadSessionLifetime time.Duration
	// LoginUser is the user id the authorize and device endpoints sign in. Empty means
	// "user-1".
	LoginUser string
	// AuthorizeError, if set, makes the authorize endpoint redirect with this error
	// (access_denied, consent_required, interaction_required) instead of a code.
	AuthorizeError string
	// Client delivers change notifications and validation requests. If nil,
	// http.DefaultClient is used.
	Client *http.Client
	// DeliveryTimeout is how long a notification POST may take to be answered; a later
	// answer counts as none. Zero means 3 seconds, as Graph expects (spec §6).
	DeliveryTimeout time.Duration
	// RedeliverBase turns on automatic redelivery, as Graph retries a notification POST that
	// was not acknowledged (a non-2xx answer, or none within DeliveryTimeout) with
	// exponential backoff for up to 4 hours (spec §6): retry n is posted RedeliverBase·2^(n-1)
	// after the previous attempt ended, with the same bytes, until one is acknowledged,
	// RedeliverMax retries were made, or the next would start more than 4 hours after the
	// first attempt; then the notification is dropped. Zero (the default) makes no automatic
	// retry: failed deliveries wait for [Server.Redeliver].
	RedeliverBase time.Duration
	// RedeliverMax caps the automatic retries of one notification POST. Zero means no cap
	// other than the 4 hours.
	RedeliverMax int

	mu          sync.Mutex // guards everything below
	seq         int
	clients     map[string]*client
	tenants     map[string]bool // registered tenants (lower case), and their GUIDs
	tokens      map[string]*accessToken
	refresh     map[string]*refreshToken
	codes       map[string]*authCode
	devices     map[string]*deviceCode
	tokenReqs   []TokenRequest
	graphReqs   []Request
	faults      []fault
	uploadFault []fault
	sent        []Sent
	chats       map[string][]*ChatMessage // chat id or "team/channel" → messages, oldest first
	mail        map[string][]*MailMessage // user → inbox, oldest first
	drafts      map[string]*MailMessage
	files       map[string]*File // "user:path" → file
	sessions    map[string]*uploadSession
	uploadURLs  []string
	uploadReqs  []UploadRequest
	subs        map[string]*Subscription
	challenged  map[principal]bool // CAE: apps and users challenged, until a token with the claims
	pending     []delivery         // failed deliveries, for Redeliver
	last        *delivery
	deliveries  int
	deliverySeq int               // numbers notification POSTs (DeliveryAttempt.Delivery)
	attempts    []DeliveryAttempt // every notification POST, retries included
	closed      bool              // Close was called: no more automatic retries
	stop        chan struct{}     // closed by Close; wakes scheduled retries

	// busy counts background notification deliveries and scheduled retries (guarded by mu,
	// so a retry scheduled by Redeliver cannot race a Flush already waiting, as a
	// WaitGroup.Add from zero would); idle is signalled when it drops to zero.
	busy int
	idle *sync.Cond
}

// principal is whom a token was issued to: an app (user "") or a user of an app.
type principal struct{ client, user string }

type client struct {
	secret    string
	redirects []string
	public    bool
}

// Request is one Graph request the server received.
type Request struct {
	Method, Path string
	// Auth is the bearer token presented ("" if none).
	Auth string
	// Status is 401 for a rejected token, the injected status for a fault, and 200 when the
	// request reached its endpoint (whatever that endpoint then answered).
	Status int
}

// Sent is a message the server accepted for delivery.
type Sent struct {
	Kind      string // "chat", "channel", "reply", "mail"
	ChatID    string // chat messages
	TeamID    string // channel messages
	ChannelID string // channel messages
	ReplyTo   string // replies: the parent message id
	From      string // the sending user id
	ID        string // the message id given back ("" for mail)
	// Raw is the request body as sent (for mail, the message object).
	Raw json.RawMessage
	// Body is the chatMessage or mail body.
	ContentType, Content string
	// Mail fields.
	Subject     string
	To          []string
	Attachments []SentAttachment
}

// SentAttachment is an attachment of a sent message: inline mail bytes, an upload-session
// attachment, or a Teams reference attachment.
type SentAttachment struct {
	ID, Name, ContentType, ContentURL string
	Data                              []byte
}

// ChatMessage is a Teams message held by the server.
type ChatMessage struct {
	ID, ChatID, TeamID, ChannelID, ReplyTo string
	FromID, FromName                       string // empty FromID: a system message (from: null)
	ContentType, Content                   string
	Created                                time.Time
	System                                 bool
}

// MailMessage is an Outlook message held by the server.
type MailMessage struct {
	ID, From, Subject, ContentType, Content string
	To                                      []string
	Received                                time.Time
	Attachments                             []SentAttachment
	IsRead                                  bool
	seq                                     int  // the change that created it
	modSeq                                  int  // the last change (update or deletion)
	deleted                                 bool // a tombstone: delta reports it as @removed
}

// File is a OneDrive item.
type File struct {
	ID, Name, Path, ETag, WebURL string
	Data                         []byte
}

// Subscription is a change-notification subscription.
type Subscription struct {
	ID, Resource, ChangeType, NotificationURL, LifecycleURL, ClientState string
	Expiration                                                           time.Time
	Creator                                                              string
	// App is the client id of the app that created it (applicationId).
	App string
	// LatestSupportedTLSVersion is latestSupportedTlsVersion as asked, "v1_2" by default.
	LatestSupportedTLSVersion string
}

type fault struct {
	status      int
	retryAfter  string // header value, "" for none
	code        string
	drop        bool
	dropAfter   bool
	afterAccept bool
}

type delivery struct {
	url  string
	body []byte
	// Set when the delivery is first posted: its number, the attempts made, and when the
	// first one started.
	id       int
	attempts int
	first    time.Time
}

// DeliveryAttempt is one notification POST the server made: a first delivery or a retry.
type DeliveryAttempt struct {
	// Delivery numbers notification POSTs from 1; the retries of one share its number.
	// DeliverAgain posts under a new number.
	Delivery int
	// Attempt is 1 for the first POST of a delivery, 2 for the first retry, and so on.
	Attempt int
	URL     string
	// Body is the request body as posted; every attempt of a delivery has the same bytes.
	Body    []byte
	Start   time.Time
	Elapsed time.Duration
	// Status is the status answered in time, 0 if none was.
	Status int
	// Err says why no answer came in time ("" if one did).
	Err string
	// Retry is the wait before the automatic retry that follows, 0 if none does.
	Retry time.Duration
	// GaveUp marks the last attempt of a delivery automatic redelivery dropped unacknowledged.
	GaveUp bool
}

// TokenRequest is one request the token endpoint received. It holds no secret.
type TokenRequest struct {
	Tenant    string
	GrantType string
	ClientID  string
	Scope     string
	Claims    string
	// Error is the OAuth error answered, "" on success.
	Error string
}

const graphAppID = "00000003-0000-0000-c000-000000000000"

func (s *Server) initLocked() {
	if s.tokens != nil {
		return
	}
	s.clients = map[string]*client{}
	s.tenants = map[string]bool{}
	s.tokens = map[string]*accessToken{}
	s.refresh = map[string]*refreshToken{}
	s.codes = map[string]*authCode{}
	s.devices = map[string]*deviceCode{}
	s.chats = map[string][]*ChatMessage{}
	s.mail = map[string][]*MailMessage{}
	s.drafts = map[string]*MailMessage{}
	s.files = map[string]*File{}
	s.sessions = map[string]*uploadSession{}
	s.subs = map[string]*Subscription{}
}

// AddClient registers an app. Once any app is registered, the token endpoint accepts only
// registered ones (AADSTS700016 otherwise), checks the secret (AADSTS7000215) and the exact
// redirect URI (AADSTS50011). A public client (secret "") must not send a secret.
func (s *Server) AddClient(id, secret string, redirectURIs ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.initLocked()
	s.clients[id] = &client{secret: secret, redirects: redirectURIs, public: secret == ""}
}

// AddTenant registers tenants (a name such as "contoso.onmicrosoft.com" or an id). Once one
// is registered, the token, authorize and device code endpoints answer AADSTS90002 ("Tenant
// '…' not found") for a tenant that is none of them, the GUID graphtest gives one of them,
// or a multi-tenant endpoint (common, organizations, consumers), as Entra does for a wrong
// tenant_id. With none registered every tenant is accepted.
func (s *Server) AddTenant(ids ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.initLocked()
	for _, id := range ids {
		s.tenants[strings.ToLower(id)] = true
		s.tenants[strings.ToLower(tenantID(id))] = true
	}
}

// unknownTenantLocked reports whether tenant is not registered while some are.
func (s *Server) unknownTenantLocked(tenant string) bool {
	if len(s.tenants) == 0 {
		return false
	}
	switch t := strings.ToLower(tenant); t {
	case "common", "organizations", "consumers":
		return false
	default:
		return !s.tenants[t]
	}
}

// tenantNotFound is Entra's description of AADSTS90002.
func tenantNotFound(tenant string) string {
	return fmt.Sprintf("Tenant '%s' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud. Check with your subscription administrator, this may happen if there are no active subscriptions for the tenant.", tenant)
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p := r.URL.Path
	switch {
	case strings.HasPrefix(p, "/v1.0/"):
		// Graph answers every request with a request-id and echoes the caller's
		// client-request-id (or makes one up), errors and successes alike (spec §2, §9).
		crid := r.Header.Get("client-request-id")
		if crid == "" {
			crid = newGUID()
		}
		w.Header().Set("request-id", newGUID())
		w.Header().Set("client-request-id", crid)
		s.serveGraph(w, r)
	case strings.HasPrefix(p, "/upload/"):
		s.serveUpload(w, r)
	case strings.Contains(p, "/oauth2/v2.0/"), isIdentityPath(p):
		s.serveIdentity(w, r)
	default:
		graphError(w, http.StatusNotFound, "UnknownError", "no such endpoint: "+p)
	}
}

// TokenRequests returns the token endpoint requests received so far.
func (s *Server) TokenRequests() []TokenRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]TokenRequest(nil), s.tokenReqs...)
}

// Requests returns the Graph requests received so far (upload URLs excluded).
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Request(nil), s.graphReqs...)
}

// Sent returns the messages accepted so far: chat, channel and reply posts and sent mail.
func (s *Server) Sent() []Sent {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Sent(nil), s.sent...)
}

// RevokeTokens makes every access token issued so far invalid, as a password reset or an
// admin revoke does. With CAE set, Graph answers them with a claims challenge.
func (s *Server) RevokeTokens() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, t := range s.tokens {
		t.revoked = true
	}
}

// RevokeRefreshTokens makes every refresh token issued so far fail with AADSTS50173.
func (s *Server) RevokeRefreshTokens() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, t := range s.refresh {
		t.revoked = true
	}
}

// InjectThrottle makes the next n Graph requests fail with 429. A zero retryAfter sends no
// Retry-After header.
func (s *Server) InjectThrottle(n int, retryAfter time.Duration) {
	s.InjectStatus(n, http.StatusTooManyRequests, retryAfter)
}

// InjectStatus makes the next n Graph requests fail with status (429, 503, 504, 500…). A zero
// retryAfter sends no Retry-After header.
func (s *Server) InjectStatus(n, status int, retryAfter time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f := fault{status: status, code: codeFor(status)}
	if retryAfter > 0 {
		f.retryAfter = strconv.Itoa(int((retryAfter + time.Second - 1) / time.Second))
	}
	for range n {
		s.faults = append(s.faults, f)
	}
}

// InjectRetryAfterHeader makes the next Graph request fail with status and the Retry-After
// header value given verbatim (seconds or an HTTP date).
func (s *Server) InjectRetryAfterHeader(status int, value string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = append(s.faults, fault{status: status, retryAfter: value, code: codeFor(status)})
}

// InjectUploadFault makes the next n requests to upload URLs fail with status, before any
// byte is accepted.
func (s *Server) InjectUploadFault(n, status int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for range n {
		s.uploadFault = append(s.uploadFault, fault{status: status, code: codeFor(status)})
	}
}

// DropUploadConnections makes the next n requests to upload URLs end with a dropped
// connection (the handler aborts with http.ErrAbortHandler) before any byte is accepted.
func (s *Server) DropUploadConnections(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for range n {
		s.uploadFault = append(s.uploadFault, fault{drop: true})
	}
}

// DropRequests makes the next n Graph requests (after the token check) end with a dropped
// connection, as a reset by a proxy would.
func (s *Server) DropRequests(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for range n {
		s.faults = append(s.faults, fault{drop: true})
	}
}

// DropUploadResponses makes the next n requests to upload URLs accept their bytes and then
// drop the connection before answering, so the client must ask the session what it has.
func (s *Server) DropUploadResponses(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for range n {
		s.uploadFault = append(s.uploadFault, fault{dropAfter: true})
	}
}

// FailUploadResponses makes the next n requests to upload URLs accept their bytes and then
// answer status (a 5xx, as a gateway that lost the backend's answer would): the client sends
// the range again and must handle the 416 that follows.
func (s *Server) FailUploadResponses(n, status int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for range n {
		s.uploadFault = append(s.uploadFault, fault{afterAccept: true, status: status, code: codeFor(status)})
	}
}

func codeFor(status int) string {
	switch status {
	case http.StatusTooManyRequests:
		return "TooManyRequests"
	case http.StatusServiceUnavailable:
		return "serviceNotAvailable"
	case http.StatusGatewayTimeout:
		return "gatewayTimeout"
	}
	return "generalException"
}

func (s *Server) nextIDLocked(prefix string) string {
	s.seq++
	return fmt.Sprintf("%s%d", prefix, s.seq)
}

func randomString(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

func newGUID() string {
	b := make([]byte, 16)
	rand.Read(b)
	h := hex.EncodeToString(b)
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

// graphError writes Graph's OData error envelope with request-id headers.
func graphError(w http.ResponseWriter, status int, code, msg string) {
	rid := w.Header().Get("request-id")
	if rid == "" {
		rid = newGUID()
	}
	crid := w.Header().Get("client-request-id")
	if crid == "" {
		crid = rid
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("request-id", rid)
	w.Header().Set("client-request-id", crid)
	w.Header().Set("x-ms-ags-diagnostic", `{"ServerInfo":{"DataCenter":"emulator"}}`)
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]any{"error": map[string]any{
		"code": code, "message": msg,
		"innerError": map[string]string{"date": time.Now().UTC().Format("2006-01-02T15:04:05"), "request-id": rid, "client-request-id": crid},
	}})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	if w.Header().Get("request-id") == "" {
		w.Header().Set("request-id", newGUID())
	}
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

// readBody reads a request body, inflating gzip is not supported: such bodies get 415 (as
// the real service's compression-handler contract allows).
func readBody(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, bool) {
	if r.Header.Get("Content-Encoding") != "" {
		graphError(w, http.StatusUnsupportedMediaType, "UnsupportedMediaType", "content encoding not supported")
		return nil, false
	}
	buf := bytes.NewBuffer(make([]byte, 0, min(max(r.ContentLength, 0), limit)+1))
	_, err := buf.ReadFrom(io.LimitReader(r.Body, limit+1))
	b := buf.Bytes()
	if err != nil {
		graphError(w, http.StatusBadRequest, "BadRequest", "reading body: "+err.Error())
		return nil, false
	}
	if int64(len(b)) > limit {
		graphError(w, http.StatusRequestEntityTooLarge, "RequestEntityTooLarge", "body too large")
		return nil, false
	}
	return b, true
}

// HandlerTransport returns an http.RoundTripper that serves every request with h in process,
// without a network: with it, clients and emulators run inside a testing/synctest bubble. A
// handler that aborts with http.ErrAbortHandler appears to the client as a dropped connection.
func HandlerTransport(h http.Handler) http.RoundTripper { return handlerTransport{h} }

type handlerTransport struct{ h http.Handler }

// errDropped is what a dropped connection looks like to a client of HandlerTransport.
var errDropped = fmt.Errorf("graphtest: connection reset by peer: %w", io.ErrUnexpectedEOF)

func (t handlerTransport) RoundTrip(req *http.Request) (resp *http.Response, err error) {
	var body []byte
	if req.Body != nil {
		buf := bytes.NewBuffer(make([]byte, 0, max(req.ContentLength, 0)+1))
		_, err = buf.ReadFrom(req.Body)
		req.Body.Close()
		if err != nil {
			return nil, err
		}
		body = buf.Bytes()
	}
	in := req.Clone(req.Context())
	in.Body = io.NopCloser(bytes.NewReader(body))
	in.ContentLength = int64(len(body))
	if in.Host == "" {
		in.Host = req.URL.Host
	}
	in.RequestURI = req.URL.RequestURI()
	rec := newRecorder()
	defer func() {
		if p := recover(); p != nil {
			if p == http.ErrAbortHandler {
				resp, err = nil, errDropped
				return
			}
			panic(p)
		}
	}()
	t.h.ServeHTTP(rec, in)
	return rec.result(req), nil
}

type recorder struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func newRecorder() *recorder { return &recorder{header: http.Header{}} }

func (r *recorder) Header() http.Header { return r.header }
func (r *recorder) WriteHeader(code int) {
	if r.status == 0 {
		r.status = code
	}
}
func (r *recorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	return r.body.Write(b)
}

func (r *recorder) result(req *http.Request) *http.Response {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	return &http.Response{
		Status:        fmt.Sprintf("%d %s", r.status, http.StatusText(r.status)),
		StatusCode:    r.status,
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        r.header,
		Body:          io.NopCloser(bytes.NewReader(r.body.Bytes())),
		ContentLength: int64(r.body.Len()),
		Request:       req,
	}
}
