package teams

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
	"syscall"
	"time"

	"github.com/seed-a64d9e1f/chatwire/adapter"
	"github.com/seed-a64d9e1f/chatwire/internal/backoff"
	"github.com/seed-a64d9e1f/chatwire/tokenmgr"
)

// APIError is an error answer of the Bot Connector, with its code verbatim (spec §3.4).
type APIError struct {
	StatusCode int
	// Code is error.code ("BotNotInConversationRoster", "Throttled", …), the subCode of a
	// blocked user ("MessageWritesBlocked"), or "Unauthorized" for the front door's 401.
	Code    string
	Message string
	// RetryAfter is the Retry-After the connector sent, or the backoff the client would have
	// used; zero if neither applies.
	RetryAfter time.Duration
	MSCV       string // the MS-CV correlation header, for support
}

func (e *APIError) Error() string {
	s := fmt.Sprintf("teams: connector %d %s: %s", e.StatusCode, e.Code, e.Message)
	if h := e.hint(); h != "" {
		s += " (" + h + ")"
	}
	return s
}

// codeInfo is what chatwire knows about one connector error code (spec §3.4, §6).
type codeInfo struct {
	kind adapter.Kind
	// forget: the condition stays until the bot is installed again (or the conversation is
	// gone), so the conversation reference is dropped.
	forget bool
	hint   string
}

// codes is the one table of the connector's error codes; statusInfo covers the rest by status.
var codes = map[string]codeInfo{
	"BotNotInConversationRoster":     {adapter.KindInvalidRecipient, true, "the bot was removed from the conversation; the reference was forgotten and comes back when the bot is installed again"},
	"MessageWritesBlocked":           {adapter.KindInvalidRecipient, true, "the user blocked or uninstalled the bot; the reference was forgotten"},
	"ConversationBlockedByUser":      {adapter.KindInvalidRecipient, true, "the user blocked the bot; the reference was forgotten"},
	"ForbiddenOperationException":    {adapter.KindInvalidRecipient, false, "the bot is not installed for this user or team (install it first), or the operation is not allowed (a bot cannot edit or delete users' messages)"},
	"BotDisabledByAdmin":             {adapter.KindInvalidRecipient, true, "an administrator disabled the bot in this tenant"},
	"ConversationNotFound":           {adapter.KindNotFound, true, "the conversation does not exist (any more); the reference was forgotten"},
	"ActivityNotFoundInConversation": {adapter.KindNotFound, false, ""},
	"NotEnoughPermissions":           {adapter.KindUnauthorized, false, "the bot lacks a permission (RSC) for this operation"},
	"InvalidBotApiHost":              {adapter.KindUnauthorized, false, "wrong cloud: use the serviceUrl of the tenant's cloud (GCC, GCC-High, DoD)"},
	"BotNotRegistered":               {adapter.KindUnauthorized, false, "the app id is not a registered bot, or the Teams channel is not enabled on the Azure Bot"},
	"PreconditionFailed":             {adapter.KindUnavailable, false, "concurrent operations on this conversation; not retried: try again later"},
	"MessageSizeTooBig":              {adapter.KindTooLarge, false, "shorten the message (Teams takes about 100 KB, 80 KB to be safe)"},
	"BadArgument":                    {adapter.KindInvalidRequest, false, ""},
	"BadSyntax":                      {adapter.KindInvalidRequest, false, ""},
}

func statusInfo(status int) codeInfo {
	switch {
	case status == http.StatusTooManyRequests:
		return codeInfo{kind: adapter.KindRateLimited}
	case status == http.StatusUnauthorized:
		return codeInfo{kind: adapter.KindUnauthorized, hint: "the connector refused the bot token: check app_id, app_password and tenant_id, and that the Teams channel is enabled on the Azure Bot"}
	case status == http.StatusForbidden:
		return codeInfo{kind: adapter.KindUnauthorized}
	case status == http.StatusNotFound:
		return codeInfo{kind: adapter.KindNotFound}
	case status == http.StatusRequestEntityTooLarge:
		return codes["MessageSizeTooBig"]
	case status == http.StatusPreconditionFailed:
		return codes["PreconditionFailed"]
	case status >= 500:
		return codeInfo{kind: adapter.KindUnavailable}
	case status >= 400:
		return codeInfo{kind: adapter.KindInvalidRequest}
	}
	return codeInfo{kind: adapter.KindInternal}
}

func (e *APIError) info() codeInfo {
	if c, ok := codes[e.Code]; ok && e.StatusCode >= 400 && e.StatusCode != http.StatusUnauthorized && e.StatusCode != http.StatusTooManyRequests {
		return c
	}
	return statusInfo(e.StatusCode)
}

func (e *APIError) hint() string { return e.info().hint }

// forgetReference reports an error after which the conversation reference is dropped
// (spec §6.3: permanent until the bot is installed again).
func (e *APIError) forgetReference() bool { return e.info().forget }

// Is maps a 401 onto [tokenmgr.ErrInvalid] and 429/5xx onto [tokenmgr.ErrTemporary].
func (e *APIError) Is(target error) bool {
	switch target {
	case tokenmgr.ErrInvalid:
		return e.StatusCode == http.StatusUnauthorized
	case tokenmgr.ErrTemporary:
		return e.StatusCode == http.StatusTooManyRequests || e.StatusCode >= 500
	}
	return target == e.Kind().Err()
}

// Kind classifies e.
func (e *APIError) Kind() adapter.Kind { return e.info().kind }

func parseAPIError(resp *http.Response, body []byte) *APIError {
	e := &APIError{StatusCode: resp.StatusCode, MSCV: resp.Header.Get("MS-CV"), RetryAfter: parseRetryAfter(resp.Header.Get("Retry-After"))}
	var env struct {
		Error *struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
		ErrorCode int    `json:"errorCode"`
		Message   string `json:"message"`
	}
	json.Unmarshal(body, &env)
	switch {
	case env.Error != nil && env.Error.Code != "":
		e.Code, e.Message = env.Error.Code, env.Error.Message
	case env.ErrorCode != 0:
		// {"errorCode":209,"message":"{…\"subCode\":\"MessageWritesBlocked\"…}"} (spec §3.4)
		var inner struct {
			Message string `json:"message"`
			SubCode string `json:"subCode"`
		}
		json.Unmarshal([]byte(env.Message), &inner)
		e.Code, e.Message = inner.SubCode, inner.Message
		if e.Code == "" {
			e.Code = strconv.Itoa(env.ErrorCode)
		}
		if e.Message == "" {
			e.Message = env.Message
		}
	case env.Message != "":
		e.Message = env.Message
	}
	if e.Code == "" {
		e.Code = strings.ReplaceAll(http.StatusText(resp.StatusCode), " ", "")
	}
	if e.Message == "" {
		e.Message = clip(strings.TrimSpace(string(body)), 200)
	}
	e.Message = clip(e.Message, 500)
	return e
}

// parseRetryAfter reads delta-seconds (the format Teams uses, spec §8) or an HTTP date.
func parseRetryAfter(v string) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if n, err := strconv.ParseFloat(v, 64); err == nil {
		if !(n > 0) {
			return 0
		}
		return min(time.Duration(min(n, 3600)*float64(time.Second)), time.Hour)
	}
	if t, err := http.ParseTime(v); err == nil {
		return min(max(time.Until(t), 0), time.Hour)
	}
	return 0
}

// connector sends Bot Connector requests with the bot's token: it retries once with a fresh
// token after a 401 (compare-and-invalidate), waits out a 429's Retry-After when it fits,
// retries 502/503/504 only for requests that can be repeated, and never retries a 412.
type connector struct {
	tokens   tokenmgr.Provider
	hc       *http.Client
	log      *slog.Logger
	maxWait  time.Duration
	retries  int
	backoff0 time.Duration
	post5xx  bool
	trusted  func(serviceURL string) bool
}

// do sends method serviceURL+path with in as JSON and decodes a JSON answer into out.
func (c *connector) do(ctx context.Context, method, serviceURL, path string, in, out any) error {
	if !c.trusted(serviceURL) {
		return &adapter.Error{Kind: adapter.KindInvalidRequest, Platform: Platform, Code: "UntrustedServiceUrl",
			Message: fmt.Sprintf("refusing to send the bot token to %s: not an allowed connector host (service_hosts)", clip(serviceURL, 200))}
	}
	var body []byte
	if in != nil {
		var err error
		if body, err = json.Marshal(in); err != nil {
			return fmt.Errorf("teams: encoding %s %s: %w", method, path, err)
		}
	}
	u := strings.TrimRight(serviceURL, "/") + "/" + strings.TrimLeft(path, "/")
	authRetried := false
	retries := 0
	for {
		tok, err := c.tokens.Token(ctx)
		if err != nil {
			return err
		}
		if tok.Value == "" {
			return tokenmgr.ErrNoToken
		}
		var rd io.Reader
		if body != nil {
			rd = bytes.NewReader(body)
		}
		req, err := http.NewRequestWithContext(ctx, method, u, rd)
		if err != nil {
			return fmt.Errorf("teams: %s %s: %w", method, clip(u, 200), err)
		}
		req.Header.Set("Authorization", "Bearer "+tok.Value)
		req.Header.Set("Accept", "application/json")
		if body != nil {
			req.Header.Set("Content-Type", "application/json; charset=utf-8")
		}
		resp, err := c.hc.Do(req)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			// A refused connection never reached the connector: safe to retry even a POST.
			if (method != http.MethodPost || errors.Is(err, syscall.ECONNREFUSED)) && retries < c.retries {
				retries++
				if c.wait(ctx, c.jitter(retries), method, path, 0) {
					continue
				}
			}
			return &adapter.Error{Kind: adapter.KindUnavailable, Platform: Platform, Code: "ConnectionError",
				Message: fmt.Sprintf("%s %s: %v", method, path, unwrapURLError(err)), Err: tokenmgr.ErrTemporary}
		}
		raw, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		resp.Body.Close()
		if resp.StatusCode < 300 {
			if out != nil && len(bytes.TrimSpace(raw)) > 0 {
				if err := json.Unmarshal(raw, out); err != nil {
					return fmt.Errorf("teams: decoding the answer to %s %s: %w", method, path, err)
				}
			}
			return nil
		}
		apiErr := parseAPIError(resp, raw)
		switch {
		case resp.StatusCode == http.StatusUnauthorized && !authRetried:
			authRetried = true
			c.tokens.Invalidate(tok.Value)
			c.log.LogAttrs(ctx, slog.LevelInfo, "teams connector rejected token: invalidated, retrying once",
				slog.String("platform", Platform), slog.String("fp", tokenmgr.Fingerprint(tok.Value)))
			continue
		case resp.StatusCode == http.StatusTooManyRequests,
			(resp.StatusCode == http.StatusBadGateway || resp.StatusCode == http.StatusServiceUnavailable ||
				resp.StatusCode == http.StatusGatewayTimeout) && (method != http.MethodPost || c.post5xx):
			d := apiErr.RetryAfter
			if d <= 0 {
				d = c.jitter(retries + 1)
			}
			if retries < c.retries && c.wait(ctx, d, method, path, resp.StatusCode) {
				retries++
				continue
			}
			apiErr.RetryAfter = d
		}
		return apiErr
	}
}

func (c *connector) jitter(n int) time.Duration {
	bo := backoff.Backoff{Base: c.backoff0, Max: c.maxWait, Jitter: 0.5}
	return bo.Nth(n)
}

// wait sleeps d if it fits maxWait and ctx's deadline; it reports whether it did.
func (c *connector) wait(ctx context.Context, d time.Duration, method, path string, status int) bool {
	if d > c.maxWait {
		return false
	}
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) < d {
		return false
	}
	c.log.LogAttrs(ctx, slog.LevelDebug, "teams connector retry", slog.String("platform", Platform),
		slog.String("method", method), slog.String("path", path), slog.Int("status", status), slog.Duration("wait", d))
	return backoff.Sleep(ctx, d) == nil
}

// convPath returns "v3/conversations/{id}" with the id percent-encoded as botbuilder does.
func convPath(conv string) string {
	return "v3/conversations/" + url.PathEscape(conv)
}

// toAdapterError converts err into an *adapter.Error keeping the connector's code.
func toAdapterError(err error, format string, args ...any) error {
	if err == nil {
		return nil
	}
	var ae *adapter.Error
	if errors.As(err, &ae) {
		return err
	}
	msg := fmt.Sprintf(format, args...)
	var api *APIError
	if errors.As(err, &api) {
		return &adapter.Error{Kind: api.Kind(), Platform: Platform, Code: api.Code, RetryAfter: api.RetryAfter,
			Message: msg + ": " + strings.TrimPrefix(api.Error(), "teams: "), Err: err}
	}
	var auth *AuthError
	if errors.As(err, &auth) {
		k := adapter.KindUnauthorized
		if auth.Temporary() {
			k = adapter.KindUnavailable
		}
		return &adapter.Error{Kind: k, Platform: Platform, Code: auth.PlatformCode(), RetryAfter: tokenmgr.RetryAfter(err),
			Message: msg + ": " + strings.TrimPrefix(auth.Error(), "teams: "), Err: err}
	}
	k := adapter.KindOf(err)
	if errors.Is(err, tokenmgr.ErrNoToken) {
		k = adapter.KindUnauthorized
	}
	return &adapter.Error{Kind: k, Platform: Platform, Message: msg + ": " + strings.TrimPrefix(err.Error(), "teams: "),
		RetryAfter: tokenmgr.RetryAfter(err), Err: err}
}
