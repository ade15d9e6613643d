package graph

import (
	"bytes"
	"cmp"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/seed-a64d9e1f/chatwire/adapter"
	"github.com/seed-a64d9e1f/chatwire/internal/backoff"
	"github.com/seed-a64d9e1f/chatwire/tokenmgr"
)

// APIError is an error answer from Microsoft Graph (or an upload URL), with Graph's error
// code verbatim. It maps onto tokenmgr sentinels through Is: a 401 InvalidAuthenticationToken
// is [tokenmgr.ErrInvalid], 429/5xx are [tokenmgr.ErrTemporary].
type APIError struct {
	StatusCode int
	Code       string // "InvalidAuthenticationToken", "TooManyRequests", "itemNotFound", …
	Message    string
	// RetryAfter is how long Graph asked to wait (Retry-After), or the backoff the client
	// would have used; zero if neither applies.
	RetryAfter time.Duration
	InnerCode  string // innerError.code, e.g. "fragmentOverlap"
	RequestID  string // request-id header, for support
	// Claims is the decoded claims challenge of a CAE 401 (error="insufficient_claims").
	Claims string
	// Hint says what to do, in plain words; empty if nothing useful can be said.
	Hint string
}

func (e *APIError) Error() string {
	msg := fmt.Sprintf("graph: %d %s: %s", e.StatusCode, e.Code, e.Message)
	if e.RetryAfter > 0 {
		msg += fmt.Sprintf(" (retry after %s)", e.RetryAfter)
	}
	if e.Hint != "" {
		msg += " (" + e.Hint + ")"
	}
	return msg
}

// Is maps e onto [tokenmgr.ErrInvalid] (a rejected token) and [tokenmgr.ErrTemporary]
// (throttling, unavailability).
func (e *APIError) Is(target error) bool {
	switch target {
	case tokenmgr.ErrInvalid:
		return e.StatusCode == http.StatusUnauthorized && e.Code == "InvalidAuthenticationToken"
	case tokenmgr.ErrTemporary:
		return e.Temporary()
	}
	return e.isAdapterKind(target)
}

// Temporary reports whether the request may succeed later unchanged (429, 5xx).
func (e *APIError) Temporary() bool {
	return e.StatusCode == http.StatusTooManyRequests || e.StatusCode >= 500
}

// parseAPIError reads Graph's OData error envelope from a response (body already read).
func parseAPIError(resp *http.Response, body []byte, now time.Time) *APIError {
	e := &APIError{StatusCode: resp.StatusCode, RequestID: resp.Header.Get("request-id"),
		RetryAfter: parseRetryAfter(resp.Header.Get("Retry-After"), now)}
	var env struct {
		Error struct {
			Code       string `json:"code"`
			Message    string `json:"message"`
			InnerError struct {
				Code string `json:"code"`
			} `json:"innerError"`
		} `json:"error"`
	}
	if json.Unmarshal(body, &env) == nil && env.Error.Code != "" {
		e.Code, e.Message, e.InnerCode = env.Error.Code, truncate(env.Error.Message, 500), env.Error.InnerError.Code
	} else {
		e.Code = strings.ReplaceAll(http.StatusText(resp.StatusCode), " ", "")
		e.Message = truncate(strings.TrimSpace(stripTags(string(body))), 200)
		if e.Message == "" {
			e.Message = http.StatusText(resp.StatusCode)
		}
	}
	if c, ok := claimsChallenge(resp.Header); ok {
		e.Claims = c
	}
	switch {
	case e.StatusCode == 401 && strings.Contains(e.Message, "Access token is empty"):
		e.Hint = "no bearer token reached Graph: a proxy or an HTTP client dropped the Authorization header"
	case e.StatusCode == 401 && strings.Contains(e.Message, "application-only context only for import"):
		e.Hint = "Teams messages cannot be posted with client credentials: use delegated auth (graph login)"
	case e.StatusCode == 401 && strings.Contains(e.Message, "Access token validation failure"):
		e.Hint = "the token is not for Graph (wrong audience or tenant): request https://graph.microsoft.com scopes"
	case e.Code == "NoPermissionsInAccessToken":
		e.Hint = "the app token carries no application permission: grant admin consent for the needed Graph permissions"
	case e.Code == "ErrorAccessDenied" || e.Code == "accessDenied" || e.Code == "Forbidden":
		e.Hint = "permission denied: check the app's Graph permissions (delegated vs application) and admin consent"
	}
	return e
}

// claimsChallenge reports a CAE claims challenge in WWW-Authenticate and returns the decoded
// claims JSON.
func claimsChallenge(h http.Header) (string, bool) {
	for _, v := range h.Values("WWW-Authenticate") {
		if !strings.Contains(v, `insufficient_claims`) {
			continue
		}
		raw := authParam(v, "claims")
		if raw == "" {
			return "", false
		}
		for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
			if b, err := enc.DecodeString(raw); err == nil && json.Valid(b) {
				return string(b), true
			}
		}
		return "", false
	}
	return "", false
}

// authParam returns the value of name="value" in a WWW-Authenticate header.
func authParam(h, name string) string {
	i := strings.Index(h, name+`="`)
	for i > 0 && h[i-1] != ' ' && h[i-1] != ',' {
		j := strings.Index(h[i+1:], name+`="`)
		if j < 0 {
			return ""
		}
		i += 1 + j
	}
	if i < 0 {
		return ""
	}
	rest := h[i+len(name)+2:]
	end := strings.IndexByte(rest, '"')
	if end < 0 {
		return ""
	}
	return rest[:end]
}

// ClientOptions configure a [Client]. The zero value is ready to use.
type ClientOptions struct {
	// GraphBase is Graph's base URL, without /v1.0. Empty means DefaultGraphBase.
	GraphBase string
	// HTTPClient sends requests; the Client adds the bearer token itself. Nil means
	// http.DefaultClient. It must not add an Authorization header of its own.
	HTTPClient *http.Client
	// MaxRetryWait is the longest throttling or unavailability wait taken inside a call;
	// a longer Retry-After is returned at once as an error. Zero means 10 seconds.
	MaxRetryWait time.Duration
	// MaxRetries bounds the retries of one call on 429/503/504 (and connection errors on
	// idempotent requests). Zero means 4.
	MaxRetries int
	// BackoffBase is the first backoff when Graph gives no Retry-After; it doubles per
	// attempt, jittered. Zero means 1 second.
	BackoffBase time.Duration
	// Logger receives one line per retry. Nil means no logging.
	Logger *slog.Logger
}

// Client is a thin Microsoft Graph client over net/http. It never sends a request without a
// non-empty bearer token; on 401 InvalidAuthenticationToken it invalidates that token
// (compare-and-invalidate) and retries once; on a CAE claims challenge (401, or 403 under
// Conditional Access) it asks for a token carrying the claims and retries once; on 429/503/504 it waits (Retry-After or jittered
// exponential backoff) while the wait fits MaxRetryWait and ctx. Safe for concurrent use.
type Client struct {
	base   string
	hc     *http.Client
	tokens tokenmgr.Provider
	claims ClaimsSetter // may be nil
	opts   ClientOptions
	log    *slog.Logger
}

// NewClient returns a Client authenticating with tokens. If claims is not nil, CAE claims
// challenges are answered through it (pass the token source, e.g. a *RefreshSource).
func NewClient(tokens tokenmgr.Provider, claims ClaimsSetter, opts ClientOptions) *Client {
	if opts.GraphBase == "" {
		opts.GraphBase = DefaultGraphBase
	}
	if opts.HTTPClient == nil {
		opts.HTTPClient = http.DefaultClient
	}
	if opts.MaxRetryWait <= 0 {
		opts.MaxRetryWait = 10 * time.Second
	}
	if opts.MaxRetries <= 0 {
		opts.MaxRetries = 4
	}
	if opts.BackoffBase <= 0 {
		opts.BackoffBase = time.Second
	}
	c := &Client{base: strings.TrimRight(opts.GraphBase, "/") + "/v1.0", hc: opts.HTTPClient, tokens: tokens, claims: claims, opts: opts, log: opts.Logger}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	return c
}

// ErrNoToken is returned instead of sending a Graph request with an empty access token.
var ErrNoToken = tokenmgr.ErrNoToken

// Do sends method path (relative to /v1.0, e.g. "/me/chats", or an absolute URL such as an
// @odata.nextLink on Graph's host) with in as JSON (nil: no body) and decodes a JSON answer
// into out (nil: discard). It returns an *APIError for an error status.
func (c *Client) Do(ctx context.Context, method, path string, in, out any) error {
	var body []byte
	if in != nil {
		var err error
		if body, err = json.Marshal(in); err != nil {
			return fmt.Errorf("graph: encoding %s %s: %w", method, path, err)
		}
	}
	resp, err := c.send(ctx, method, path, body, "application/json")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out == nil {
		io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
		return nil
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 64<<20)).Decode(out); err != nil && err != io.EOF {
		return fmt.Errorf("graph: decoding %s %s: %w", method, redactURL(path), err)
	}
	return nil
}

func (c *Client) url(path string) string {
	if strings.HasPrefix(path, "http://") || strings.HasPrefix(path, "https://") {
		return path
	}
	return c.base + path
}

// sameHost reports whether u is on the Graph base's scheme and host (links such as
// @odata.nextLink must not carry our token elsewhere).
func (c *Client) sameHost(u string) bool {
	b, err1 := url.Parse(c.base)
	x, err2 := url.Parse(u)
	return err1 == nil && err2 == nil && strings.EqualFold(b.Scheme, x.Scheme) && strings.EqualFold(b.Host, x.Host)
}

func idempotent(method string) bool {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodPut, http.MethodDelete, http.MethodOptions:
		return true
	}
	return false
}

// send performs one logical request with the retry rules; a 2xx response is returned open.
func (c *Client) send(ctx context.Context, method, path string, body []byte, contentType string) (*http.Response, error) {
	authRetried, caeRetried := false, false
	retries := 0
	bo := c.backoffs()
	for {
		tok, err := c.tokens.Token(ctx)
		if err != nil {
			return nil, err
		}
		if tok.Value == "" {
			return nil, fmt.Errorf("%w (%s %s)", ErrNoToken, method, redactURL(c.url(path)))
		}
		if !c.sameHost(c.url(path)) {
			return nil, fmt.Errorf("graph: refusing to send a token to %s: not the Graph host", redactURL(path))
		}
		var rd io.Reader
		if body != nil {
			rd = bytes.NewReader(body)
		}
		req, err := http.NewRequestWithContext(ctx, method, c.url(path), rd)
		if err != nil {
			return nil, fmt.Errorf("graph: %s %s: %w", method, redactURL(path), err)
		}
		req.Header.Set("Authorization", "Bearer "+tok.Value)
		req.Header.Set("Accept", "application/json")
		req.Header.Set("Prefer", "include-unknown-enum-members")
		if body != nil {
			req.Header.Set("Content-Type", contentType)
		}
		resp, err := bearerStaysHome(c.hc).Do(req)
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			uerr := redactURLError(err)
			if idempotent(method) && retries < c.opts.MaxRetries {
				retries++
				if c.wait(ctx, bo.Next(), method, path, retries, 0) {
					continue
				}
			}
			return nil, &APIError{StatusCode: http.StatusBadGateway, Code: "connectionError", Message: uerr.Error()}
		}
		if resp.StatusCode < 300 {
			return resp, nil
		}
		raw, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
		resp.Body.Close()
		apiErr := parseAPIError(resp, raw, time.Now())
		switch {
		case (resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden) &&
			apiErr.Claims != "" && !caeRetried && c.claims != nil:
			// A CAE claims challenge; under Conditional Access Graph may send it on a 403
			// (spec §2).
			caeRetried = true
			c.claims.SetClaims(apiErr.Claims)
			c.tokens.Invalidate(tok.Value)
			c.log.LogAttrs(ctx, slog.LevelInfo, "graph claims challenge: refreshing token with claims",
				slog.String("platform", "graph"), slog.String("fp", tokenmgr.Fingerprint(tok.Value)))
			continue
		case resp.StatusCode == http.StatusUnauthorized && apiErr.Code == "InvalidAuthenticationToken" && !authRetried:
			authRetried = true
			c.tokens.Invalidate(tok.Value)
			c.log.LogAttrs(ctx, slog.LevelInfo, "graph rejected token: invalidated, retrying once",
				slog.String("platform", "graph"), slog.String("fp", tokenmgr.Fingerprint(tok.Value)))
			continue
		case resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusServiceUnavailable ||
			resp.StatusCode == http.StatusGatewayTimeout:
			d := bo.NextAfter(apiErr.RetryAfter) // Retry-After wins
			if retries < c.opts.MaxRetries && c.wait(ctx, d, method, path, retries+1, resp.StatusCode) {
				retries++
				continue
			}
			apiErr.RetryAfter = d
			return nil, apiErr
		}
		return nil, apiErr
	}
}

// backoffs returns the retry waits of one call: BackoffBase doubling up to MaxRetryWait,
// each jittered down to half.
func (c *Client) backoffs() backoff.Backoff {
	return backoff.Backoff{Base: c.opts.BackoffBase, Max: c.opts.MaxRetryWait, Jitter: 0.5}
}

// backoff returns the jittered exponential wait before retry n (n >= 1), in [d/2, d].
func (c *Client) backoff(n int) time.Duration {
	bo := c.backoffs()
	return bo.Nth(n)
}

// wait sleeps d if d fits MaxRetryWait and ctx's deadline; it reports whether it did.
func (c *Client) wait(ctx context.Context, d time.Duration, method, path string, attempt, status int) bool {
	if d > c.opts.MaxRetryWait {
		return false
	}
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) < d {
		return false
	}
	c.log.LogAttrs(ctx, slog.LevelDebug, "graph retry",
		slog.String("platform", "graph"), slog.String("method", method), slog.String("path", redactURL(path)),
		slog.Int("status", status), slog.Int("attempt", attempt), slog.Duration("wait", d))
	return backoff.Sleep(ctx, d) == nil
}

// errorsAs is errors.As with a type parameter.
func errorsAs[T error](err error) (T, bool) {
	var t T
	ok := errors.As(err, &t)
	return t, ok
}

// Kind classifies e as an adapter error kind.
func (e *APIError) Kind() adapter.Kind {
	switch {
	case e.StatusCode == http.StatusTooManyRequests:
		return adapter.KindRateLimited
	case e.StatusCode == http.StatusUnauthorized && e.Code == "InvalidAuthenticationToken":
		return adapter.KindTokenExpired
	case e.StatusCode == http.StatusUnauthorized || e.StatusCode == http.StatusForbidden:
		return adapter.KindUnauthorized
	case e.StatusCode == http.StatusNotFound:
		return adapter.KindNotFound
	case e.StatusCode == http.StatusRequestEntityTooLarge || e.StatusCode == http.StatusInsufficientStorage:
		return adapter.KindTooLarge
	case e.StatusCode >= 500:
		return adapter.KindUnavailable
	case e.StatusCode >= 400:
		if e.Code == "ErrorInvalidRecipients" {
			return adapter.KindInvalidRecipient
		}
		return adapter.KindInvalidRequest
	}
	return adapter.KindInternal
}

func (e *APIError) isAdapterKind(target error) bool { return target == e.Kind().Err() }

// Kind classifies e as an adapter error kind: unauthorized for credential errors, unavailable
// for temporary ones, rate limited for a 429.
func (e *AuthError) Kind() adapter.Kind {
	switch {
	case e.StatusCode == http.StatusTooManyRequests:
		return adapter.KindRateLimited
	case e.Temporary():
		return adapter.KindUnavailable
	}
	return adapter.KindUnauthorized
}

// toAdapterError converts an error from this package into an *adapter.Error that keeps the
// platform code, the retry-after and the cause. Other errors are classified by adapter.KindOf.
func toAdapterError(err error, format string, args ...any) error {
	if err == nil {
		return nil
	}
	var ae *adapter.Error
	if errors.As(err, &ae) {
		return err
	}
	msg := strings.TrimPrefix(fmt.Sprintf(format, args...), "graph: ") // adapter.Error adds the platform
	if msg != "" {
		msg += ": "
	}
	if e, ok := errorsAs[*APIError](err); ok {
		return &adapter.Error{Kind: e.Kind(), Platform: adapter.PlatformGraph, Code: e.Code,
			Message: msg + strings.TrimPrefix(e.Error(), "graph: "), RetryAfter: e.RetryAfter, Err: err}
	}
	if e, ok := errorsAs[*AuthError](err); ok {
		return &adapter.Error{Kind: e.Kind(), Platform: adapter.PlatformGraph, Code: e.PlatformCode(),
			// tokenmgr.RetryAfter: while the token manager backs off after this failure, the
			// time left rather than the wait the failure first asked for.
			Message: msg + strings.TrimPrefix(e.Error(), "graph: "), RetryAfter: cmp.Or(tokenmgr.RetryAfter(err), e.Wait), Err: err}
	}
	k := adapter.KindOf(err)
	if errors.Is(err, ErrNoToken) {
		k = adapter.KindUnauthorized
	}
	return &adapter.Error{Kind: k, Platform: adapter.PlatformGraph, Message: msg + strings.TrimPrefix(err.Error(), "graph: "),
		RetryAfter: tokenmgr.RetryAfter(err), Err: err}
}

// bearerStaysHome returns a copy of hc (made per request, so a caller that changes its client
// later is heard) whose redirects never carry the Authorization header to
// another origin (scheme, host and port). Graph redirects downloads to pre-authenticated URLs
// on other hosts, which need no token; Go's client already drops the header for another
// domain, but keeps it for the same host on another port or scheme, which is another server.
// The caller's own CheckRedirect, if any, still decides whether to follow.
func bearerStaysHome(hc *http.Client) *http.Client {
	cp := *hc
	prev := hc.CheckRedirect
	cp.CheckRedirect = func(req *http.Request, via []*http.Request) error {
		if o := via[0].URL; req.URL.Scheme != o.Scheme || req.URL.Host != o.Host {
			req.Header.Del("Authorization")
		}
		if prev != nil {
			return prev(req, via)
		}
		if len(via) >= 10 {
			return errors.New("stopped after 10 redirects")
		}
		return nil
	}
	return &cp
}
