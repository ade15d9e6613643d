// Package wecom is the WeCom (企业微信) adapter: a gettoken [TokenSource] for tokenmgr, a
// [Client] that sends app messages, uploads media and handles encrypted callbacks, and the
// callback [Crypto]. Every call honours its ctx and the bot's own API base.
package wecom

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/seed-a64d9e1f/chatwire/adapter"
	"github.com/seed-a64d9e1f/chatwire/internal/backoff"
	"github.com/seed-a64d9e1f/chatwire/tokenmgr"
)

// DefaultAPIBase is WeCom's API host.
const DefaultAPIBase = "https://qyapi.weixin.qq.com"

// Config identifies one WeCom app (one bot). CorpSecret, Token and EncodingAESKey are
// secrets: they never appear in a log, an error or [Client.Status].
type Config struct {
	// Bot is the bot's name, copied into every [adapter.Event].
	Bot        string
	CorpID     string // "ww…"
	CorpSecret string // the app's Secret
	AgentID    int64  // the app's AgentId
	// Token and EncodingAESKey are the app's callback settings. Both empty: the Client
	// cannot receive callbacks (HandleWebhook answers 404).
	Token          string
	EncodingAESKey string
	// APIBase is the scheme and host of the API, optionally with a path prefix; a trailing
	// "/cgi-bin" is accepted. Empty means [DefaultAPIBase].
	APIBase string
}

// key returns the tokenmgr key "wecom/<corpid>/<agentid>".
func (c Config) key() string { return "wecom/" + c.CorpID + "/" + strconv.FormatInt(c.AgentID, 10) }

// Options tune a [Client]. The zero value is ready to use.
type Options struct {
	// HTTPClient makes every request of this Client. If nil, http.DefaultClient is used.
	// Requests carry the caller's ctx, so its Timeout is only a backstop. Its CheckRedirect
	// is not used: the Client never follows a redirect (the token is in the URL), and
	// reports one as an *HTTPError.
	HTTPClient *http.Client
	// Logger receives webhook refusals (Warn) and retries (Debug), never a secret. If nil,
	// nothing is logged.
	Logger *slog.Logger
	// Tokens, if not nil, supplies access tokens (for example a Manager shared with other
	// code); the Client does not close it. If nil, the Client creates a Manager for key
	// "wecom/<corpid>/<agentid>" with TokenOptions, and closes it on Close.
	Tokens *tokenmgr.Manager
	// TokenOptions configure the Manager the Client creates. A nil Logger is replaced by
	// Logger.
	TokenOptions tokenmgr.Options
	// MaxWait is the longest platform-requested wait (WeCom -1 "busy", 45033 "too many
	// concurrent calls") waited out inside a call before retrying; a longer one, or one past
	// the caller's deadline, is returned at once as an error. Zero means 10 seconds.
	// 45009 (a block of 60 s or more) is never waited out.
	MaxWait time.Duration
	// SplitText makes Send split text and markdown longer than 2048 bytes into several
	// messages at line or character boundaries. If false, such content is refused with a
	// too_large error. WeCom itself would silently truncate it.
	SplitText bool
	// DuplicateCheck, if positive, sets enable_duplicate_check on every message/send with
	// duplicate_check_interval DuplicateCheck (whole seconds, at most [MaxDuplicateCheck]):
	// WeCom then accepts a request identical to one it accepted within the interval but
	// does not show it again, so a retry of a send whose answer was lost (a host that
	// crashed between WeCom's acceptance and recording it) is not shown twice. The price: an
	// identical message meant to be shown again within the interval is not. Zero: off.
	// appchat/send has no such check.
	DuplicateCheck time.Duration
	// MaxWebhookBody caps callback bodies. Zero means 64 KiB.
	MaxWebhookBody int64
	// TimestampWindow is how far a callback POST's timestamp may be from now before it is
	// refused as a replay. Zero means 5 minutes; negative disables the check. URL
	// verification GETs are never time-checked.
	TimestampWindow time.Duration
}

// MaxDuplicateCheck is the longest duplicate_check_interval WeCom takes (4 h; its default
// is 1800 s).
const MaxDuplicateCheck = 4 * time.Hour

// Client is a WeCom app: an [adapter.Adapter], [adapter.Uploader] and [adapter.Recaller].
// Its methods are safe for concurrent use.
type Client struct {
	cfg     Config
	base    string // API base ending in "/cgi-bin/"
	hc      *http.Client
	log     *slog.Logger
	tokens  *tokenmgr.Manager
	own     bool    // tokens was created here and is closed by Close
	crypto  *Crypto // nil if callbacks are not configured
	maxWait time.Duration
	split   bool
	dupSecs int // duplicate_check_interval; 0: off
	maxBody int64
	window  time.Duration
}

var (
	_ adapter.Adapter  = (*Client)(nil)
	_ adapter.Uploader = (*Client)(nil)
	_ adapter.Recaller = (*Client)(nil)
	_ tokenmgr.Source  = (*TokenSource)(nil)
)

// New returns a Client for the app cfg. It checks cfg but makes no request; the first call
// fetches a token. Call Close when done.
func New(cfg Config, opts Options) (*Client, error) {
	switch {
	case cfg.CorpID == "":
		return nil, errors.New("wecom: config: corp_id is empty")
	case cfg.CorpSecret == "" && opts.Tokens == nil:
		return nil, errors.New("wecom: config: corp_secret is empty")
	case cfg.AgentID <= 0:
		return nil, errors.New("wecom: config: agent_id must be a positive number")
	case opts.DuplicateCheck < 0 || opts.DuplicateCheck > MaxDuplicateCheck || (opts.DuplicateCheck > 0 && opts.DuplicateCheck < time.Second):
		return nil, fmt.Errorf("wecom: duplicate check interval %v: want 1s to %v", opts.DuplicateCheck, MaxDuplicateCheck)
	}
	base, err := apiBase(cfg.APIBase)
	if err != nil {
		return nil, err
	}
	c := &Client{
		cfg:     cfg,
		base:    base,
		hc:      opts.HTTPClient,
		log:     opts.Logger,
		tokens:  opts.Tokens,
		maxWait: opts.MaxWait,
		split:   opts.SplitText,
		dupSecs: int(opts.DuplicateCheck / time.Second),
		maxBody: opts.MaxWebhookBody,
		window:  opts.TimestampWindow,
	}
	if c.hc == nil {
		c.hc = http.DefaultClient
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	if c.maxWait == 0 {
		c.maxWait = 10 * time.Second
	}
	if c.maxBody <= 0 {
		c.maxBody = 64 << 10
	}
	if c.window == 0 {
		c.window = 5 * time.Minute
	}
	if cfg.Token != "" || cfg.EncodingAESKey != "" {
		c.crypto, err = NewCrypto(cfg.Token, cfg.EncodingAESKey, cfg.CorpID)
		if err != nil {
			return nil, err
		}
	}
	if c.tokens == nil {
		to := opts.TokenOptions
		if to.Logger == nil {
			to.Logger = opts.Logger
		}
		if to.Platform == "" {
			to.Platform = adapter.PlatformWeCom
		}
		src := &TokenSource{APIBase: cfg.APIBase, CorpID: cfg.CorpID, CorpSecret: cfg.CorpSecret, HTTPClient: opts.HTTPClient}
		c.tokens = tokenmgr.New(cfg.key(), src, to)
		c.own = true
	}
	return c, nil
}

// apiBase normalizes a configured API base to ".../cgi-bin/".
func apiBase(s string) (string, error) {
	if s == "" {
		s = DefaultAPIBase
	}
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" {
		return "", fmt.Errorf("wecom: config: api_base %q is not an http(s) URL", s)
	}
	s = strings.TrimSuffix(strings.TrimSuffix(s, "/"), "/cgi-bin")
	return s + "/cgi-bin/", nil
}

// Tokens returns the Manager that supplies the Client's access tokens.
func (c *Client) Tokens() *tokenmgr.Manager { return c.tokens }

// Close closes the token Manager if the Client created it.
func (c *Client) Close() error {
	if c.own {
		return c.tokens.Close()
	}
	return nil
}

// Status reports the token state and whether the Client can send.
func (c *Client) Status(ctx context.Context) (adapter.Status, error) {
	ts := c.tokens.Status()
	st := adapter.Status{Bot: c.cfg.Bot, Platform: adapter.PlatformWeCom, Healthy: true, Tokens: []tokenmgr.Status{ts}}
	switch ts.State {
	case "closed":
		st.Healthy, st.Detail = false, "closed"
	case "empty", "expired", "invalid":
		if ts.LastError != "" {
			st.Healthy, st.Detail = false, "no valid token: "+ts.LastError
		}
	}
	return st, ctx.Err()
}

// TokenSource fetches WeCom access tokens with gettoken, retrying -1 (busy) up to 3 times.
// It is a [tokenmgr.Source]. Its errors are *APIError values that match tokenmgr.ErrCredentials for a wrong corp id or
// secret and tokenmgr.ErrTemporary for -1 and 45009 (with a RetryAfter of 60 s).
type TokenSource struct {
	APIBase    string // as [Config.APIBase]; empty means DefaultAPIBase
	CorpID     string
	CorpSecret string
	HTTPClient *http.Client // nil: http.DefaultClient; redirects are never followed
}

// Token calls gettoken. The token's expiry is the response time plus expires_in.
//
// Whether a repeated gettoken reports the remaining or the full lifetime of a token handed
// back again is not documented. Fetching does not extend a token, so a value seen before must
// keep the expiry it was first given: the [tokenmgr.Manager] does that, from the entry its
// Store holds, so the rule holds across a fleet sharing tokens (see [tokenmgr.Source]).
func (s *TokenSource) Token(ctx context.Context) (tokenmgr.Token, error) {
	base, err := apiBase(s.APIBase)
	if err != nil {
		return tokenmgr.Token{}, err
	}
	q := url.Values{"corpid": {s.CorpID}, "corpsecret": {s.CorpSecret}}
	var out struct {
		AccessToken string `json:"access_token"`
		ExpiresIn   int64  `json:"expires_in"`
	}
	hc := s.HTTPClient
	if hc == nil {
		hc = http.DefaultClient
	}
	// -1 (busy) is retried here, at most 3 times with backoff, as WeCom advises; anything
	// else goes back to the Manager, which backs off by itself.
	busy := backoff.Backoff{Base: 500 * time.Millisecond, Max: 2 * time.Second, Jitter: 0.5}
	for {
		err = roundTrip(ctx, hc, http.MethodGet, base, EndpointGetToken, q, nil, &out)
		var apiErr *APIError
		if err == nil || busy.Attempts() == 3 || !errors.As(err, &apiErr) || apiErr.Code != -1 {
			break
		}
		if backoff.Sleep(ctx, busy.Next()) != nil {
			return tokenmgr.Token{}, err
		}
	}
	if err != nil {
		return tokenmgr.Token{}, err
	}
	if out.AccessToken == "" {
		return tokenmgr.Token{}, fmt.Errorf("wecom: gettoken: %w: no access_token in the answer", tokenmgr.ErrTemporary)
	}
	if out.ExpiresIn <= 0 {
		return tokenmgr.Token{}, fmt.Errorf("wecom: gettoken: %w: answer has expires_in %d", tokenmgr.ErrTemporary, out.ExpiresIn)
	}
	return tokenmgr.Token{Value: out.AccessToken, ExpiresAt: time.Now().Add(time.Duration(out.ExpiresIn) * time.Second)}, nil
}

// maxResponse bounds JSON answers read into memory.
const maxResponse = 1 << 20

// body is a request body that can be sent again (T5 retries, -1 retries).
type body struct {
	data        []byte
	contentType string
}

// roundTrip makes one request to base+endpoint and decodes a JSON answer into out (if not
// nil) after checking errcode. Errors never contain the URL's secrets.
func roundTrip(ctx context.Context, hc *http.Client, method, base, endpoint string, q url.Values, b *body, out any) error {
	resp, err := send(ctx, hc, method, base, endpoint, q, b)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxResponse))
	if err != nil {
		return fmt.Errorf("wecom: %s: %w: reading answer: %w", endpoint, tokenmgr.ErrTemporary, sanitizeErr(err))
	}
	return decode(endpoint, data, out)
}

// send makes one request and checks the HTTP status.
func send(ctx context.Context, hc *http.Client, method, base, endpoint string, q url.Values, b *body) (*http.Response, error) {
	u := base + endpoint
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	var rd io.Reader
	if b != nil {
		rd = bytes.NewReader(b.data)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return nil, fmt.Errorf("wecom: %s: %w", endpoint, sanitizeErr(&url.Error{Op: method, URL: u, Err: err}))
	}
	if b != nil && b.contentType != "" {
		req.Header.Set("Content-Type", b.contentType)
	}
	resp, err := noRedirects(hc).Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("wecom: %s: %w", endpoint, ctx.Err())
		}
		return nil, fmt.Errorf("wecom: %s: %w: %w", endpoint, tokenmgr.ErrTemporary, sanitizeErr(err))
	}
	if resp.StatusCode >= 300 && resp.StatusCode < 400 {
		resp.Body.Close()
		return nil, &HTTPError{Endpoint: endpoint, StatusCode: resp.StatusCode, Redirect: redirectTarget(resp)}
	}
	if resp.StatusCode != http.StatusOK {
		snippet, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		resp.Body.Close()
		// A proxy's error page might echo the URL: redact it like the URL itself.
		snippet = redactSecrets(snippet)
		return nil, &HTTPError{Endpoint: endpoint, StatusCode: resp.StatusCode, Body: snippet}
	}
	return resp, nil
}

// noRedirects returns a copy of hc that does not follow redirects. Every request carries a
// secret in its URL (access_token, or corpsecret for gettoken), which a redirect would hand
// to its target, in the query and in Referer: an API base that redirects is an error.
func noRedirects(hc *http.Client) *http.Client {
	c := *hc
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return &c
}

// redirectTarget returns the scheme and host a redirect points to (never its path or
// query, which may echo the token), or "another location".
func redirectTarget(resp *http.Response) string {
	u, err := resp.Location()
	if err != nil || u.Host == "" {
		return "another location"
	}
	return u.Scheme + "://" + u.Host
}

// decode checks errcode in data and decodes data into out.
func decode(endpoint string, data []byte, out any) error {
	if a, ok := out.(answer); ok {
		return decodeOnce(endpoint, data, a)
	}
	var st apiStatus
	if err := json.Unmarshal(data, &st); err != nil {
		return fmt.Errorf("wecom: %s: %w: answer is not JSON: %w", endpoint, tokenmgr.ErrTemporary, err)
	}
	if err := st.err(endpoint); err != nil {
		return err
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("wecom: %s: %w: bad answer: %w", endpoint, tokenmgr.ErrTemporary, err)
		}
	}
	return nil
}

// apiStatus is the part of every WeCom answer that says how the call went.
type apiStatus struct {
	ErrCode *int   `json:"errcode"`
	ErrMsg  string `json:"errmsg"`
	User    string `json:"invaliduser"`
	Party   string `json:"invalidparty"`
	Tag     string `json:"invalidtag"`
}

// An answer embeds apiStatus, so [decode] reads it in one pass instead of two (message/send's
// answer, once per send: half of reading it).
type answer interface{ status() *apiStatus }

func (s *apiStatus) status() *apiStatus { return s }

// decodeOnce is decode for an answer: the same errors, from one json.Unmarshal (which
// completes after a field of the wrong type and reports it).
func decodeOnce(endpoint string, data []byte, out answer) error {
	err := json.Unmarshal(data, out)
	var te *json.UnmarshalTypeError
	if err != nil && (!errors.As(err, &te) || statusField(te.Field)) {
		return fmt.Errorf("wecom: %s: %w: answer is not JSON: %w", endpoint, tokenmgr.ErrTemporary, err)
	}
	if err := out.status().err(endpoint); err != nil {
		return err
	}
	if err != nil {
		return fmt.Errorf("wecom: %s: %w: bad answer: %w", endpoint, tokenmgr.ErrTemporary, err)
	}
	return nil
}

// statusField reports whether a field path of a json.UnmarshalTypeError names one of
// apiStatus's fields ("apiStatus.errcode": the embedded struct is part of the path).
func statusField(f string) bool {
	switch strings.TrimPrefix(f, "apiStatus.") {
	case "errcode", "errmsg", "invaliduser", "invalidparty", "invalidtag":
		return true
	}
	return false
}

// err returns the answer's WeCom error, or nil.
func (st *apiStatus) err(endpoint string) error {
	if st.ErrCode != nil && *st.ErrCode != 0 {
		e := &APIError{Code: *st.ErrCode, Msg: truncate(st.ErrMsg, 300), Endpoint: endpoint}
		if e.Code == 81013 || e.Code == 82001 {
			e.Invalid = invalidList(st.User, st.Party, st.Tag)
		}
		return e
	}
	return nil
}

// HTTPError is an answer with an HTTP status other than 200 (WeCom reports its own errors
// with 200 and an errcode, so this means a proxy or outage). 5xx statuses match
// adapter.ErrUnavailable and tokenmgr.ErrTemporary. A redirect (3xx) is never followed:
// every request carries the access token or the corp secret in its URL.
type HTTPError struct {
	Endpoint   string
	StatusCode int
	Body       []byte // the first 512 bytes, secrets redacted; empty for a redirect
	// Redirect is, for a 3xx answer, the scheme and host its Location points to ("another
	// location" if it has none); empty otherwise.
	Redirect string
}

// Error returns "wecom: <endpoint>: HTTP <status>: <start of the body>", or for a redirect
// "wecom: <endpoint>: HTTP <status>: redirect to <scheme://host> refused …".
func (e *HTTPError) Error() string {
	if e.Redirect != "" {
		return fmt.Sprintf("wecom: %s: HTTP %d: redirect to %s refused (API requests carry the token in the URL and never follow redirects; check api_base)",
			e.Endpoint, e.StatusCode, e.Redirect)
	}
	return fmt.Sprintf("wecom: %s: HTTP %d: %s", e.Endpoint, e.StatusCode, truncate(string(e.Body), 200))
}

// Is maps 5xx and 429 onto temporary kinds, 404 onto not found, anything else onto
// unavailable too (a proxy in the way).
func (e *HTTPError) Is(target error) bool {
	switch target {
	case tokenmgr.ErrTemporary:
		return e.StatusCode >= 500 || e.StatusCode == 429
	case adapter.ErrRateLimited:
		return e.StatusCode == 429
	case adapter.ErrNotFound:
		return e.StatusCode == 404
	case adapter.ErrUnavailable:
		return e.StatusCode != 429 && e.StatusCode != 404
	}
	return false
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}

func utf8RuneStart(b byte) bool { return b&0xC0 != 0x80 }

// invalidList turns "a|b", "2", "1" into ["user:a", "user:b", "party:2", "tag:1"].
func invalidList(users, parties, tags string) []string {
	var out []string
	for _, p := range []struct{ kind, list string }{{"user", users}, {"party", parties}, {"tag", tags}} {
		for _, id := range strings.Split(p.list, "|") {
			if id != "" {
				out = append(out, p.kind+":"+id)
			}
		}
	}
	return out
}

// call makes an authenticated call: it adds the access token, retries once with a fresh
// token when WeCom rejects it (T5), and waits out -1 and 45033 answers within MaxWait and the
// ctx deadline. The error is an *adapter.Error.
func (c *Client) call(ctx context.Context, method, endpoint string, q url.Values, b *body, out any) error {
	err := c.tokens.Do(ctx, func(ctx context.Context, tok tokenmgr.Token) error {
		return c.retrying(ctx, endpoint, func() error {
			qq := url.Values{"access_token": {tok.Value}}
			for k, v := range q {
				qq[k] = v
			}
			return roundTrip(ctx, c.hc, method, c.base, endpoint, qq, b, out)
		})
	})
	return wrapErr(endpoint, err)
}

// retrying calls f, and again after a backoff while it fails with -1 (at most 3 retries) or
// 45033 (at most 2), as long as the wait fits MaxWait and ctx's deadline.
// The waits are 500ms, 1s, 2s after -1 and 1s, 2s after 45033, each jittered down to half.
func (c *Client) retrying(ctx context.Context, endpoint string, f func() error) error {
	busy := backoff.Backoff{Base: 500 * time.Millisecond, Max: 2 * time.Second, Jitter: 0.5} // -1
	limited := backoff.Backoff{Base: time.Second, Max: 2 * time.Second, Jitter: 0.5}         // 45033
	for attempt := 1; ; attempt++ {
		err := f()
		var apiErr *APIError
		if err == nil || !errors.As(err, &apiErr) {
			return err
		}
		var wait time.Duration
		switch {
		case apiErr.Code == -1 && busy.Attempts() < 3:
			wait = busy.Next()
		case apiErr.Code == 45033 && limited.Attempts() < 2:
			wait = limited.Next()
		default:
			return err
		}
		if wait > c.maxWait {
			return err
		}
		c.log.LogAttrs(ctx, slog.LevelDebug, "wecom: retrying", slog.String("platform", adapter.PlatformWeCom),
			slog.String("key", c.tokens.Key()), slog.String("endpoint", endpoint), slog.Int("errcode", apiErr.Code),
			slog.Int("attempt", attempt), slog.Duration("wait", wait))
		if backoff.Sleep(ctx, wait) != nil { // ctx ended, or its deadline comes before the wait ends
			return err
		}
	}
}
