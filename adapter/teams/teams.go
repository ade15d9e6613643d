// Package teams is the Microsoft Teams bot adapter of chatwire over the Bot Connector of Azure
// Bot Service: Teams POSTs signed activities to the bot's messaging endpoint, and the bot
// answers through the activity's serviceUrl with a client-credentials token kept by tokenmgr
// (specs/botconnector.md). Package teamstest emulates Teams, the connector and the identity
// plane.
package teams

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/seed-a64d9e1f/chatwire/adapter"
	"github.com/seed-a64d9e1f/chatwire/tokenmgr"
)

// Platform is the platform name of Teams bots in events, errors and configuration.
const Platform = adapter.PlatformTeams

// DefaultServiceHosts are the connector hosts the bot token may be sent to (spec §6.4).
var DefaultServiceHosts = []string{"smba.trafficmanager.net", "*.teams.microsoft.com", "*.teams.microsoft.us", "canary.botapi.skype.com"}

// Options configure an [Adapter]. Zero values are documented per field.
type Options struct {
	// Bot is the configured bot name, copied into events and status.
	Bot string
	// AppID is the Azure Bot's Microsoft App ID. Required.
	AppID string
	// AppPassword is the app registration's client secret value. Required.
	AppPassword string
	// TenantID is the app's tenant. Required for single-tenant bots.
	TenantID string
	// AppType is AppSingleTenant, AppMultiTenant or AppUserAssignedMSI. Empty means
	// AppSingleTenant.
	AppType string
	// MSIEndpoint and MSIHeader are the identity endpoint and its header value (a secret) of a
	// managed identity bot (App Service's IDENTITY_ENDPOINT and IDENTITY_HEADER). Empty means
	// the Instance Metadata Service.
	MSIEndpoint, MSIHeader string
	// LoginBase is the identity platform's base URL. Empty means DefaultLoginBase.
	LoginBase string
	// OpenIDMetadataURL is where the connector's signing keys are described. Empty means
	// DefaultMetadataURL.
	OpenIDMetadataURL string
	// ChannelIssuer is the issuer of inbound tokens. Empty means DefaultIssuer.
	ChannelIssuer string
	// ServiceHosts are the hosts the bot token may be sent to: exact names, "*.suffix" or
	// "host:port". Nil means DefaultServiceHosts.
	ServiceHosts []string
	// DefaultServiceURL is used for proactive messages to a conversation or user the bot has
	// no reference for (spec §3.3: https://smba.trafficmanager.net/teams/). Empty means such
	// sends fail.
	DefaultServiceURL string
	// HTTPClient makes token, key and connector requests. Nil means http.DefaultClient.
	HTTPClient *http.Client
	// Store keeps tokens. Nil means a MemoryStore private to this adapter.
	Store tokenmgr.Store
	// References keeps conversation references. Nil means MemoryReferences.
	References ReferenceStore
	// Logger receives operational logs; never a token or secret. Nil means none.
	Logger *slog.Logger
	// TokenOptions are passed to the token manager (Store and Logger are set from above).
	TokenOptions tokenmgr.Options

	// ClockSkew is the leeway on exp and nbf of inbound tokens. Zero means 5 minutes.
	ClockSkew time.Duration
	// KeyRefresh is the longest the signing keys are cached. Zero means 24 hours.
	KeyRefresh time.Duration
	// UnknownKeyInterval is the least time between two key fetches caused by an unknown
	// kid. Zero means 5 minutes.
	UnknownKeyInterval time.Duration

	// OnInvoke, if not nil, answers adaptiveCard/action invokes inline. It must return
	// within InvokeTimeout; otherwise, or when it is nil or fails, the adapter answers with
	// a message response of InvokeMessage. The invoke is an event either way.
	OnInvoke func(ctx context.Context, inv Invoke) (*InvokeResponse, error)
	// InvokeTimeout bounds OnInvoke. Zero means 4 seconds (Teams waits about 5, spec §1.5).
	InvokeTimeout time.Duration
	// InvokeMessage is the text of the default invoke answer. Empty means "Received.".
	InvokeMessage string

	// MaxRetryWait bounds a throttling wait inside a call; a longer Retry-After is returned
	// as a rate-limited error. Zero means 10 seconds.
	MaxRetryWait time.Duration
	// MaxRetries bounds the retries of one call. Zero means 3.
	MaxRetries int
	// BackoffBase is the first backoff without a Retry-After. Zero means 1 second.
	BackoffBase time.Duration
	// RetryPostOn5xx retries sends after 502/503/504 too (at least once: a 5xx after the
	// connector accepted the message duplicates it, spec §3.4). False means only 429 and
	// refused connections are retried for sends.
	RetryPostOn5xx bool
	// MaxMessageBytes is the largest message sent, counted as UTF-16 bytes of its text and
	// attachments without base64 images (spec §3.5). Zero means 100 KB.
	MaxMessageBytes int
}

// Invoke is an adaptiveCard/action invoke (Action.Execute, spec §2.4).
type Invoke struct {
	Event    adapter.Event
	Activity Activity
	Verb     string
	Data     json.RawMessage
}

// InvokeResponse is an invoke's answer: its HTTP status is StatusCode and its body the
// JSON of the response (spec §2.4).
type InvokeResponse struct {
	StatusCode int    `json:"statusCode"`
	Type       string `json:"type"` // application/vnd.microsoft.card.adaptive, …activity.message, …error
	Value      any    `json:"value"`
}

// Adapter is a Teams bot over the Bot Connector. It implements [adapter.Adapter],
// [adapter.Recaller] and [adapter.Streamer]. Its methods are safe for concurrent use.
type Adapter struct {
	opts   Options
	tokens *tokenmgr.Manager
	conn   *connector
	keys   *keySet
	refs   ReferenceStore
	log    *slog.Logger
	clock  clock // of streams

	invokeMu sync.Mutex // guards invokes
	invokes  map[string]invokeAnswer

	closeOnce sync.Once
	closed    chan struct{}
}

type invokeAnswer struct {
	resp *adapter.WebhookResponse
	at   time.Time
}

var (
	_ adapter.Adapter  = (*Adapter)(nil)
	_ adapter.Recaller = (*Adapter)(nil)
)

// New returns an Adapter. It makes no network call. Close it when done.
func New(opts Options) (*Adapter, error) {
	if opts.AppID == "" {
		return nil, adapter.Errorf(adapter.KindInvalidRequest, "teams: app_id is required")
	}
	if opts.AppPassword == "" && opts.AppType != AppUserAssignedMSI {
		return nil, adapter.Errorf(adapter.KindInvalidRequest, "teams: app_password is required (or app_type %s)", AppUserAssignedMSI)
	}
	authority := opts.TenantID
	switch opts.AppType {
	case AppUserAssignedMSI:
		if opts.TenantID == "" {
			return nil, adapter.Errorf(adapter.KindInvalidRequest, "teams: tenant_id is required for a managed identity bot")
		}
	case "", AppSingleTenant:
		opts.AppType = AppSingleTenant
		if opts.TenantID == "" {
			return nil, adapter.Errorf(adapter.KindInvalidRequest, "teams: tenant_id is required for a single-tenant bot (bots created after July 2025 are single-tenant)")
		}
	case AppMultiTenant:
		authority = MultiTenantAuthority
	default:
		return nil, adapter.Errorf(adapter.KindInvalidRequest, "teams: app_type %q: want %s, %s or %s", opts.AppType, AppSingleTenant, AppMultiTenant, AppUserAssignedMSI)
	}
	if opts.OpenIDMetadataURL == "" {
		opts.OpenIDMetadataURL = DefaultMetadataURL
	}
	if opts.ChannelIssuer == "" {
		opts.ChannelIssuer = DefaultIssuer
	}
	if opts.ServiceHosts == nil {
		opts.ServiceHosts = DefaultServiceHosts
	}
	if opts.HTTPClient == nil {
		opts.HTTPClient = http.DefaultClient
	}
	if opts.Store == nil {
		opts.Store = new(tokenmgr.MemoryStore)
	}
	if opts.References == nil {
		opts.References = new(MemoryReferences)
	}
	opts.ClockSkew = orDefault(opts.ClockSkew, 5*time.Minute)
	opts.KeyRefresh = orDefault(opts.KeyRefresh, 24*time.Hour)
	opts.UnknownKeyInterval = orDefault(opts.UnknownKeyInterval, 5*time.Minute)
	opts.InvokeTimeout = orDefault(opts.InvokeTimeout, 4*time.Second)
	opts.MaxRetryWait = orDefault(opts.MaxRetryWait, 10*time.Second)
	opts.BackoffBase = orDefault(opts.BackoffBase, time.Second)
	if opts.MaxRetries <= 0 {
		opts.MaxRetries = 3
	}
	if opts.MaxMessageBytes <= 0 {
		opts.MaxMessageBytes = 100 * 1024
	}
	if opts.InvokeMessage == "" {
		opts.InvokeMessage = "Received."
	}
	a := &Adapter{opts: opts, log: opts.Logger, refs: opts.References, invokes: map[string]invokeAnswer{}, closed: make(chan struct{}), clock: realClock{}}
	if a.log == nil {
		a.log = slog.New(slog.DiscardHandler)
	}
	var src tokenmgr.Source = &ClientCredentials{AppID: opts.AppID, Password: opts.AppPassword, Authority: authority, LoginBase: opts.LoginBase, HTTPClient: opts.HTTPClient}
	if opts.AppType == AppUserAssignedMSI {
		src = &ManagedIdentity{ClientID: opts.AppID, Endpoint: opts.MSIEndpoint, Header: opts.MSIHeader, HTTPClient: opts.HTTPClient}
	}
	tmo := opts.TokenOptions
	tmo.Store, tmo.Logger = opts.Store, opts.Logger
	if tmo.Platform == "" {
		tmo.Platform = Platform
	}
	a.tokens = tokenmgr.New("teams/"+authority+"/"+opts.AppID+"/app", src, tmo)
	a.conn = &connector{tokens: a.tokens, hc: opts.HTTPClient, log: a.log, maxWait: opts.MaxRetryWait, retries: opts.MaxRetries,
		backoff0: opts.BackoffBase, post5xx: opts.RetryPostOn5xx, trusted: a.trustedServiceURL}
	a.keys = &keySet{metadataURL: opts.OpenIDMetadataURL, hc: opts.HTTPClient, refresh: opts.KeyRefresh, unknownEvery: opts.UnknownKeyInterval}
	return a, nil
}

func orDefault(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}

// Tokens returns the adapter's token manager.
func (a *Adapter) Tokens() *tokenmgr.Manager { return a.tokens }

// References returns the adapter's reference store.
func (a *Adapter) References() ReferenceStore { return a.refs }

func (a *Adapter) botID() string { return "28:" + a.opts.AppID }

// trustedServiceURL reports whether the bot token may be sent to serviceURL (spec §6.4).
func (a *Adapter) trustedServiceURL(serviceURL string) bool {
	u, err := url.Parse(serviceURL)
	if err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") {
		return false
	}
	host := strings.ToLower(u.Hostname())
	for _, h := range a.opts.ServiceHosts {
		h = strings.ToLower(h)
		switch {
		case strings.Contains(h, ":") && strings.EqualFold(u.Host, h):
			return true
		case strings.HasPrefix(h, "*.") && strings.HasSuffix(host, h[1:]):
			return u.Scheme == "https"
		case h == host:
			return u.Scheme == "https" || net.ParseIP(host).IsLoopback()
		}
	}
	return false
}

func (a *Adapter) isClosed() bool {
	select {
	case <-a.closed:
		return true
	default:
		return false
	}
}

// Status reports the adapter's health and token state.
func (a *Adapter) Status(ctx context.Context) (adapter.Status, error) {
	st := a.tokens.Status()
	s := adapter.Status{Bot: a.opts.Bot, Platform: Platform, Tokens: []tokenmgr.Status{st}, Healthy: true}
	switch {
	case a.isClosed():
		s.Healthy, s.Detail = false, "closed"
	case st.State == "fresh" || st.State == "refreshing" || st.State == "failing":
	case st.State == "empty" && st.LastError == "":
	default:
		s.Healthy, s.Detail = false, "token "+st.State
		if st.LastError != "" {
			s.Detail += ": " + st.LastError
		}
	}
	return s, nil
}

// Close stops token refreshes.
func (a *Adapter) Close() error {
	a.closeOnce.Do(func() {
		close(a.closed)
		a.tokens.Close()
	})
	return nil
}

// refusal is a refused request's answer: the status and its text as a plain-text body (the
// reason itself is logged, not told to the caller).
func refusal(status int, h http.Header) *adapter.WebhookResponse {
	if h == nil {
		h = http.Header{}
	}
	h.Set("Content-Type", "text/plain; charset=utf-8")
	return &adapter.WebhookResponse{Status: status, Header: h, Body: []byte(http.StatusText(status) + "\n")}
}

func errBadBody(msg string) error {
	return &adapter.Error{Kind: adapter.KindInvalidRequest, Platform: Platform, Message: "activity refused: " + msg}
}

// HandleWebhook validates one activity POSTed to the messaging endpoint (every check of spec
// §1.2, in order) and turns it into events. A refused token gives 401 and an *adapter.Error
// of KindUnauthorized saying why (the host logs it once); a malformed activity 400.
// Activities are answered 200 with an empty body, invokes with their invoke response.
func (a *Adapter) HandleWebhook(ctx context.Context, req *adapter.WebhookRequest) (*adapter.WebhookResponse, []adapter.Event, error) {
	if a.isClosed() {
		return refusal(http.StatusServiceUnavailable, nil), nil, adapter.Errorf(adapter.KindUnavailable, "teams: adapter closed")
	}
	if req.Method != http.MethodPost {
		return refusal(http.StatusMethodNotAllowed, http.Header{"Allow": {"POST"}}), nil,
			&adapter.Error{Kind: adapter.KindInvalidRequest, Platform: Platform, Message: "the messaging endpoint takes POST only"}
	}
	if err := a.authenticate(ctx, req.Header, req.Body); err != nil {
		var ae *authError
		if errors.As(err, &ae) {
			return refusal(http.StatusUnauthorized, nil), nil,
				&adapter.Error{Kind: adapter.KindUnauthorized, Platform: Platform, Code: "Unauthorized", Message: strings.TrimPrefix(ae.Error(), "teams: "), Err: err}
		}
		if adapter.KindOf(err) == adapter.KindUnavailable {
			return refusal(http.StatusServiceUnavailable, http.Header{"Retry-After": {"5"}}), nil, err
		}
		return refusal(http.StatusBadRequest, nil), nil, err
	}
	// 9. Only now is the body parsed.
	var act Activity
	if err := json.Unmarshal(req.Body, &act); err != nil {
		return refusal(http.StatusBadRequest, nil), nil, errBadBody("body is not an activity: " + err.Error())
	}
	if act.Type == "" || act.Conversation == nil || act.Conversation.ID == "" {
		return refusal(http.StatusBadRequest, nil), nil, errBadBody("activity without type or conversation.id")
	}
	if act.ID == "" {
		return refusal(http.StatusBadRequest, nil), nil, errBadBody("activity without id")
	}
	a.remember(ctx, &act)
	ev := a.toEvent(&act, req.Body)
	var events []adapter.Event
	if ev != nil {
		events = append(events, *ev)
	}
	if act.Type == "invoke" {
		return a.invoke(ctx, &act, ev), events, nil
	}
	return &adapter.WebhookResponse{Status: http.StatusOK}, events, nil
}

// invoke answers an invoke (spec §2.4): adaptiveCard/action through OnInvoke or the default
// message response; other names 501 as botbuilder does. A redelivered invoke gets the same
// answer.
func (a *Adapter) invoke(ctx context.Context, act *Activity, ev *adapter.Event) *adapter.WebhookResponse {
	key := act.Conversation.ID + "|" + act.ID
	a.invokeMu.Lock()
	if prev, ok := a.invokes[key]; ok {
		a.invokeMu.Unlock()
		return prev.resp
	}
	a.invokeMu.Unlock()
	resp := a.answerInvoke(ctx, act, ev)
	a.invokeMu.Lock()
	now := time.Now()
	for k, v := range a.invokes {
		if now.Sub(v.at) > 10*time.Minute {
			delete(a.invokes, k)
		}
	}
	a.invokes[key] = invokeAnswer{resp: resp, at: now}
	a.invokeMu.Unlock()
	return resp
}

func invokeResponse(r InvokeResponse) *adapter.WebhookResponse {
	b, _ := json.Marshal(r)
	return &adapter.WebhookResponse{Status: r.StatusCode, Header: http.Header{"Content-Type": {"application/json; charset=utf-8"}}, Body: b}
}

func (a *Adapter) answerInvoke(ctx context.Context, act *Activity, ev *adapter.Event) *adapter.WebhookResponse {
	if act.Name != "adaptiveCard/action" {
		return &adapter.WebhookResponse{Status: http.StatusNotImplemented}
	}
	var v struct {
		Action struct {
			Type string          `json:"type"`
			Verb string          `json:"verb"`
			Data json.RawMessage `json:"data"`
		} `json:"action"`
	}
	json.Unmarshal(act.Value, &v)
	if v.Action.Type != "Action.Execute" {
		return invokeResponse(InvokeResponse{StatusCode: http.StatusBadRequest, Type: "application/vnd.microsoft.error",
			Value: map[string]string{"code": "NotSupported", "message": fmt.Sprintf("%s is not a supported action type", clip(v.Action.Type, 64))}})
	}
	def := InvokeResponse{StatusCode: http.StatusOK, Type: "application/vnd.microsoft.activity.message", Value: a.opts.InvokeMessage}
	if a.opts.OnInvoke == nil || ev == nil {
		return invokeResponse(def)
	}
	ictx, cancel := context.WithTimeout(ctx, a.opts.InvokeTimeout)
	defer cancel()
	type result struct {
		r   *InvokeResponse
		err error
	}
	ch := make(chan result, 1)
	go func() {
		r, err := a.opts.OnInvoke(ictx, Invoke{Event: *ev, Activity: *act, Verb: v.Action.Verb, Data: v.Action.Data})
		ch <- result{r, err}
	}()
	select {
	case res := <-ch:
		if res.err != nil || res.r == nil || res.r.StatusCode == 0 {
			if res.err != nil {
				a.log.Warn("teams: invoke handler failed; answering with the default", "platform", Platform, "error", res.err)
			}
			return invokeResponse(def)
		}
		return invokeResponse(*res.r)
	case <-ictx.Done():
		a.log.Warn("teams: invoke handler too slow; answering with the default", "platform", Platform, "timeout", a.opts.InvokeTimeout)
		return invokeResponse(def)
	}
}

// A Limit is a number of requests allowed per period.
type Limit struct {
	N   int
	Per time.Duration
}

// ThreadLimits are Teams' published limits for one bot sending to one conversation (spec §3.5:
// "for estimation only"), for a sender that paces its own sends (the outbox). The connector
// answers 429 with Retry-After beyond them, which [Adapter.Send] honours.
var ThreadLimits = []Limit{{7, time.Second}, {8, 2 * time.Second}, {60, 30 * time.Second}, {1800, time.Hour}}
