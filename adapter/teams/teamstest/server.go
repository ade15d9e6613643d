// Package teamstest is an in-process emulator of the Microsoft Teams side of a bot: the Bot
// Framework identity plane (OpenID metadata and JWKS with endorsements and key rollover), an
// Entra token endpoint for the bot's client credentials, the Bot Connector REST API with
// Teams' status codes, error bodies and per-thread throttling, and Teams itself delivering
// signed activities to the bot as users in personal chats, group chats and channels
// (redelivering after a slow answer). A zero [Server] is ready to use as an http.Handler once
// its URL is set; knobs change its behaviour and inspectors report what it saw.
package teamstest

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"math/big"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Values of the Bot Framework identity plane the emulator reproduces (spec §0, §1.2, §3.1).
const (
	ChannelIssuer   = "https://api.botframework.com"
	ConnectorScope  = "https://api.botframework.com/.default"
	MetadataPath    = "/v1/.well-known/openidconfiguration"
	MetadataPathAlt = "/v1/.well-known/openid-configuration" // the Teams .NET spelling
	KeysPath        = "/v1/.well-known/keys"
	// MultiTenantAuthority is the legacy authority of multi-tenant bots.
	MultiTenantAuthority = "botframework.com"
	// DeniedBody is the connector front door's answer to a bad bot token (spec §3.4, §6.2).
	DeniedBody = `{"message":"Authorization has been denied for this request."}`
)

// Server emulates login.botframework.com, login.microsoftonline.com, the Bot Connector
// (smba.trafficmanager.net) and Teams' delivery of activities, all on one handler. Set URL to
// where clients reach it (httptest.Server.URL) before delivering activities; other knobs
// before the first request. All methods are safe for concurrent use.
type Server struct {
	// URL is the emulator's base URL as the bot reaches it, e.g. "http://127.0.0.1:41234".
	// Activities carry URL+"/amer/<tenant>/" as serviceUrl and the metadata points at
	// URL+KeysPath. Empty means it is taken from the Host of each identity request, and
	// activities cannot be delivered.
	URL string
	// Client delivers activities to bots. Nil means a client with no timeout of its own
	// (DeliveryTimeout bounds each attempt).
	Client *http.Client
	// DeliveryTimeout is how long a bot has to answer an activity before Teams gives up on
	// the attempt and redelivers it (spec §1.5). Zero means 15 seconds.
	DeliveryTimeout time.Duration
	// Redeliveries is how many times an activity whose delivery timed out or got a 5xx is
	// delivered again, with the same id. Zero means 1; negative means none.
	Redeliveries int
	// InvokeTimeout is how long Teams waits for an invoke's answer before showing an error
	// (spec §1.5, [U]). Zero means 5 seconds. Invokes are not redelivered on timeout.
	InvokeTimeout time.Duration
	// TokenLifetime is the lifetime of connector access tokens. Zero means 3599 seconds.
	TokenLifetime time.Duration
	// ChannelTokenLifetime is the lifetime of the tokens signing activities. Zero means 1 hour.
	ChannelTokenLifetime time.Duration
	// MaxMessageBytes is the largest message the connector accepts, counted as UTF-16 bytes
	// of its text and attachments, base64 images excluded (spec §3.5). Zero means 100 KB.
	MaxMessageBytes int
	// NoThrottle turns off the per-thread limits of spec §3.5 (7/1 s, 8/2 s, 60/30 s,
	// 1800/h per bot and conversation).
	NoThrottle bool
	// Now is the clock of the connector's streaming rules and of the timestamps of
	// [StreamUpdate]s. Nil means time.Now. Tests share a virtual clock with the bot here.
	Now func() time.Time
	// StreamInterval is the least time between two streaming requests in one conversation
	// (spec §4: at most 1 request per second); a faster request gets 429. Zero means 1 s.
	StreamInterval time.Duration
	// StreamTimeout is the longest a stream may last from its first request (spec §4: 2
	// minutes); a later request gets 403 "Content stream finished due to exceeded streaming
	// time." and the stream ends with the text streamed so far. Zero means 2 minutes.
	StreamTimeout time.Duration
	// StrictStream refuses (400) a final stream message that carries streamSequence, as the
	// documentation says it must not (the Teams SDK sends one, spec §4).
	StrictStream bool
	// RefuseStreams answers every streaming request with 403 "Content stream is not
	// allowed", as Teams does where streaming is not enabled for the bot or client.
	RefuseStreams bool
	// OnStream, if not nil, is called after every streaming request (accepted or refused),
	// outside the server's lock.
	OnStream func(StreamUpdate)

	mu          sync.Mutex // guards everything below
	inited      bool
	bots        map[string]*Bot // by app id
	keys        []*signingKey   // published keys, oldest first
	hidden      map[string]*signingKey
	signKid     string
	unendorsed  string // kid of a published key endorsing only "webchat"
	entraKey    *rsa.PrivateKey
	tokens      map[string]*issued // access tokens issued by the token endpoint
	users       map[string]User    // by MRI
	convs       map[string]*conversation
	personal    map[string]string // appID|MRI → personal conversation id (created on install)
	installed   map[string]bool   // appID|MRI → the app is installed in the user's personal scope
	blocked     map[string]bool   // appID|MRI → the user blocked the bot
	windows     map[string][]time.Time
	faults      []Fault
	streams     map[string]*streamState // by stream id
	streamOrder []string
	streamLast  map[string]time.Time // conversation → last streaming request
	streamAll   []StreamUpdate
	onStreamQ   []StreamUpdate // for OnStream, called after the request
	lastID      int64
	seq         int
	sent        []Sent
	requests    []Request
	tokenReqs   []TokenRequest
	attempts    []Attempt
	keyFetches  int
	metaFetches int
}

// A Bot is an app registered with the emulator: its Entra app (id, password, tenant) and its
// Azure Bot messaging endpoint.
type Bot struct {
	AppID    string
	Password string
	// TenantID is the home tenant; single-tenant bots get tokens only from its authority.
	TenantID string
	// MultiTenant makes the app a legacy multi-tenant one: tokens come from the
	// "botframework.com" authority (and, unlike real Entra, also from the tenant's).
	MultiTenant bool
	// Name is the bot's display name, used in <at> mentions. Empty means "Bot".
	Name string
	// Endpoint is the bot's messaging endpoint (the Azure Bot resource's
	// "Messaging endpoint"), e.g. "http://127.0.0.1:8080/webhook/tbot".
	Endpoint string
}

// ID returns the bot's channel account id, "28:<appId>".
func (b Bot) ID() string { return "28:" + b.AppID }

func (b Bot) name() string {
	if b.Name == "" {
		return "Bot"
	}
	return b.Name
}

// A User is a Teams user: a pairwise MRI ("29:…") and a stable Entra object id.
type User struct {
	ID          string // "29:…"
	Name        string
	AADObjectID string
	TenantID    string
}

type signingKey struct {
	kid          string
	x5t          string
	key          *rsa.PrivateKey
	cert         []byte
	endorsements []string
}

type issued struct {
	appID, tenant string
	exp           time.Time
	revoked       bool
}

// Request is one connector request the server received.
type Request struct {
	Method string
	// Path is the path as sent (escaped), e.g. "/amer/t/v3/conversations/a%3A1/activities".
	Path string
	// TokenOK reports whether the bearer token was one the emulator issued and still valid.
	TokenOK bool
	Status  int
}

// TokenRequest is one request to the token endpoint.
type TokenRequest struct {
	Tenant    string // the authority's tenant segment
	GrantType string
	ClientID  string
	Scope     string
	Status    int
	Error     string // the OAuth error, if any
}

// Sent is a write the connector accepted from a bot.
type Sent struct {
	Kind           string // "send", "reply", "update", "delete", "create"
	AppID          string
	ConversationID string // as addressed, ";messageid=" included
	// ActivityID is the id given back (send, reply, create with an activity) or addressed
	// (update, delete).
	ActivityID string
	ReplyToID  string // replies: the activity answered
	Activity   Activity
	Raw        json.RawMessage
}

// Fault is an injected connector answer (see [Server.Inject]).
type Fault struct {
	Status int
	// Code and Message form the error envelope; empty means Teams' own for Status.
	Code, Message string
	// RetryAfter is sent as Retry-After seconds when positive.
	RetryAfter time.Duration
	// Deliver makes the connector accept the write and still answer Status ("accepted then
	// 5xx", spec §5): the message is posted, the bot sees an error.
	Deliver bool
}

func (s *Server) initLocked() {
	if s.inited {
		return
	}
	s.inited = true
	s.bots = map[string]*Bot{}
	s.hidden = map[string]*signingKey{}
	s.tokens = map[string]*issued{}
	s.users = map[string]User{}
	s.convs = map[string]*conversation{}
	s.personal = map[string]string{}
	s.installed = map[string]bool{}
	s.blocked = map[string]bool{}
	s.windows = map[string][]time.Time{}
	s.streams = map[string]*streamState{}
	s.streamLast = map[string]time.Time{}
	s.entraKey = newRSAKey()
	k := newSigningKey("msteams")
	s.keys = append(s.keys, k)
	s.signKid = k.kid
	u := newSigningKey("webchat", "directline")
	s.keys = append(s.keys, u)
	s.unendorsed = u.kid
}

func newRSAKey() *rsa.PrivateKey {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic("teamstest: generating an RSA key: " + err.Error())
	}
	return k
}

func newSigningKey(endorsements ...string) *signingKey {
	k := newRSAKey()
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: "api.botframework.com"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * 365 * time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		panic("teamstest: self-signing a certificate: " + err.Error())
	}
	sum := sha1.Sum(der)
	x5t := base64.RawURLEncoding.EncodeToString(sum[:])
	return &signingKey{kid: x5t, x5t: x5t, key: k, cert: der, endorsements: endorsements}
}

// AddBot registers an app and its messaging endpoint.
func (s *Server) AddBot(b Bot) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.initLocked()
	s.bots[b.AppID] = &b
}

// SetEndpoint changes a registered bot's messaging endpoint.
func (s *Server) SetEndpoint(appID, endpoint string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.initLocked()
	if b := s.bots[appID]; b != nil {
		b.Endpoint = endpoint
	}
}

// ServiceURL returns the serviceUrl activities of tenant carry: URL+"/amer/<tenant>/".
func (s *Server) ServiceURL(tenant string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.serviceURLLocked(tenant)
}

func (s *Server) serviceURLLocked(tenant string) string {
	return strings.TrimRight(s.URL, "/") + "/amer/" + tenant + "/"
}

// MetadataURL returns the OpenID metadata URL bots should be configured with.
func (s *Server) MetadataURL() string { return strings.TrimRight(s.URL, "/") + MetadataPath }

// RolloverKey publishes a new signing key endorsing msteams, keeping the old ones, and
// returns its kid. Activities are signed with it from now on if sign is true; otherwise it is
// only published (publish-then-sign, spec §5) until [Server.SignWith] selects it.
func (s *Server) RolloverKey(sign bool) string {
	k := newSigningKey("msteams")
	s.mu.Lock()
	defer s.mu.Unlock()
	s.initLocked()
	s.keys = append(s.keys, k)
	if sign {
		s.signKid = k.kid
	}
	return k.kid
}

// NewUnpublishedKey creates a signing key endorsing msteams that the JWKS does not list yet,
// selects it for signing and returns its kid: a key Teams started using before the bot's
// cache knows it. [Server.PublishKey] publishes it.
func (s *Server) NewUnpublishedKey() string {
	k := newSigningKey("msteams")
	s.mu.Lock()
	defer s.mu.Unlock()
	s.initLocked()
	s.hidden[k.kid] = k
	s.signKid = k.kid
	return k.kid
}

// PublishKey adds a key made by NewUnpublishedKey to the JWKS.
func (s *Server) PublishKey(kid string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.initLocked()
	if k := s.hidden[kid]; k != nil {
		delete(s.hidden, kid)
		s.keys = append(s.keys, k)
	}
}

// RetireKey removes a key from the JWKS.
func (s *Server) RetireKey(kid string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.initLocked()
	for i, k := range s.keys {
		if k.kid == kid {
			s.keys = append(s.keys[:i:i], s.keys[i+1:]...)
			return
		}
	}
}

// SignWith selects the key activities are signed with.
func (s *Server) SignWith(kid string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.initLocked()
	s.signKid = kid
}

// SigningKey returns the kid activities are currently signed with.
func (s *Server) SigningKey() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.initLocked()
	return s.signKid
}

// KeyFetches returns how many times the JWKS was fetched, and the metadata.
func (s *Server) KeyFetches() (keys, metadata int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.keyFetches, s.metaFetches
}

// JWKS returns the published key set as served (a JSON object with "keys").
func (s *Server) JWKS() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.initLocked()
	return s.jwksLocked()
}

func (s *Server) jwksLocked() []byte {
	type jwk struct {
		Kty          string   `json:"kty"`
		Use          string   `json:"use"`
		Kid          string   `json:"kid"`
		X5t          string   `json:"x5t"`
		N            string   `json:"n"`
		E            string   `json:"e"`
		X5c          []string `json:"x5c"`
		Endorsements []string `json:"endorsements"`
	}
	var out struct {
		Keys []jwk `json:"keys"`
	}
	out.Keys = []jwk{}
	for _, k := range s.keys {
		pub := k.key.PublicKey
		out.Keys = append(out.Keys, jwk{Kty: "RSA", Use: "sig", Kid: k.kid, X5t: k.x5t,
			N:   base64.RawURLEncoding.EncodeToString(pub.N.Bytes()),
			E:   base64.RawURLEncoding.EncodeToString(big.NewInt(int64(pub.E)).Bytes()),
			X5c: []string{base64.StdEncoding.EncodeToString(k.cert)}, Endorsements: k.endorsements})
	}
	b, _ := json.Marshal(out)
	return b
}

// Inject makes the next connector requests (after the token check) answer with the given
// faults, one request each, in order.
func (s *Server) Inject(faults ...Fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = append(s.faults, faults...)
}

// RevokeTokens makes every connector token issued so far invalid (the connector answers 401),
// as a rotated app password or a revoked grant would.
func (s *Server) RevokeTokens() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, t := range s.tokens {
		t.revoked = true
	}
}

// Sent returns the writes the connector accepted, oldest first.
func (s *Server) Sent() []Sent {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Sent(nil), s.sent...)
}

// Requests returns every connector request, oldest first.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Request(nil), s.requests...)
}

// TokenRequests returns every token endpoint request, oldest first.
func (s *Server) TokenRequests() []TokenRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]TokenRequest(nil), s.tokenReqs...)
}

// Attempts returns every delivery attempt to a bot, oldest first.
func (s *Server) Attempts() []Attempt {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Attempt(nil), s.attempts...)
}

// ServeHTTP serves the identity endpoints (/v1/.well-known/…), the token endpoint
// (/{tenant}/oauth2/v2.0/token) and the connector (any path containing /v3/conversations).
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("MS-CV", randomHex(11)+".0")
	p := r.URL.Path
	switch {
	case p == MetadataPath || p == MetadataPathAlt:
		s.serveMetadata(w, r)
	case p == KeysPath:
		s.serveKeys(w, r)
	case strings.HasSuffix(p, "/oauth2/v2.0/token"):
		s.serveToken(w, r, strings.Trim(strings.TrimSuffix(p, "/oauth2/v2.0/token"), "/"))
	case strings.Contains(r.URL.EscapedPath(), "/v3/conversations"):
		s.serveConnector(w, r)
	default:
		connectorError(w, http.StatusNotFound, "NotFound", "no such endpoint: "+p)
	}
}

func (s *Server) base(r *http.Request) string {
	if s.URL != "" {
		return strings.TrimRight(s.URL, "/")
	}
	return "http://" + r.Host
}

func (s *Server) serveMetadata(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.initLocked()
	s.metaFetches++
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, map[string]any{
		"issuer":                                ChannelIssuer,
		"authorization_endpoint":                "https://invalid.botframework.com",
		"jwks_uri":                              s.base(r) + KeysPath,
		"id_token_signing_alg_values_supported": []string{"RS256"},
		"token_endpoint_auth_methods_supported": []string{"private_key_jwt"},
	})
}

func (s *Server) serveKeys(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.initLocked()
	s.keyFetches++
	b := s.jwksLocked()
	s.mu.Unlock()
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Write(b)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, _ := json.Marshal(v)
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	w.Write(b)
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

func newGUID() string {
	h := randomHex(16)
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

// nextIDLocked returns a message id: epoch milliseconds, unique and increasing.
func (s *Server) nextIDLocked() string {
	id := time.Now().UnixMilli()
	if id <= s.lastID {
		id = s.lastID + 1
	}
	s.lastID = id
	return strconv.FormatInt(id, 10)
}
