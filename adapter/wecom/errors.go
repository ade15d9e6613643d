package wecom

import (
	"cmp"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/seed-a64d9e1f/chatwire/adapter"
	"github.com/seed-a64d9e1f/chatwire/tokenmgr"
)

// Endpoint names, as kept in [APIError.Endpoint].
const (
	EndpointGetToken    = "gettoken"
	EndpointSend        = "message/send"
	EndpointRecall      = "message/recall"
	EndpointAppChatSend = "appchat/send"
	EndpointAppChatMake = "appchat/create"
	EndpointMediaUpload = "media/upload"
	EndpointMediaGet    = "media/get"
)

// RateLimitWait is the retry-after given for errcode 45009: WeCom blocks an over-limit caller
// for at least a minute (longer for hourly and daily limits).
const RateLimitWait = 60 * time.Second

// APIError is an error WeCom reported as a non-zero errcode in an HTTP 200 body. It keeps the
// code verbatim and never holds a URL, a token or a secret.
//
// It matches, through errors.Is, tokenmgr.ErrInvalid for 40014, 41001 and 42001 (and 40001 from
// any endpoint but gettoken: WeCom reports some bad tokens that way), tokenmgr.ErrCredentials
// for gettoken's 40001 and for 40013, 41002, 41004 and 60020, tokenmgr.ErrTemporary for -1,
// 45009 and 45033, and the adapter sentinel of [APIError.Kind].
type APIError struct {
	Code     int    // errcode
	Msg      string // errmsg, verbatim
	Endpoint string // e.g. "message/send"
	// Invalid lists the recipients WeCom named in an 81013 answer ("user:x", "party:2").
	Invalid []string
}

// Error returns "wecom: <endpoint>: errcode <code>: <errmsg> (<hint>)".
func (e *APIError) Error() string {
	s := fmt.Sprintf("wecom: %s: errcode %d: %s", e.Endpoint, e.Code, e.Msg)
	if h := e.Hint(); h != "" {
		s += " (" + h + ")"
	}
	return s
}

// Is reports whether target is a sentinel e maps onto; see [APIError].
func (e *APIError) Is(target error) bool {
	switch target {
	case tokenmgr.ErrInvalid:
		return e.tokenInvalid()
	case tokenmgr.ErrCredentials:
		return e.Code == 40001 && e.Endpoint == EndpointGetToken ||
			e.Code == 40013 || e.Code == 41002 || e.Code == 41004 || e.Code == 60020
	case tokenmgr.ErrTemporary:
		return e.Code == -1 || e.Code == 45009 || e.Code == 45033
	}
	return target == e.Kind().Err()
}

func (e *APIError) tokenInvalid() bool {
	switch e.Code {
	case 40014, 41001, 42001:
		return true
	case 40001:
		return e.Endpoint != EndpointGetToken
	}
	return false
}

// RetryAfter returns how long WeCom wants callers to wait: [RateLimitWait] for 45009, one
// second for 45033 (too many concurrent calls), zero otherwise.
func (e *APIError) RetryAfter() time.Duration {
	switch e.Code {
	case 45009:
		return RateLimitWait
	case 45033:
		return time.Second
	}
	return 0
}

// Kind classifies e for callers of the adapter.
func (e *APIError) Kind() adapter.Kind {
	if e.tokenInvalid() {
		return adapter.KindTokenExpired
	}
	switch e.Code {
	case -1:
		return adapter.KindUnavailable
	case 45009, 45033:
		return adapter.KindRateLimited
	case 40001, 40013, 41002, 41004, 60020, 48002, 50003:
		return adapter.KindUnauthorized
	case 81013, 82001, 40003, 60111, 60011, 50002:
		return adapter.KindInvalidRecipient
	case 40007, 86003:
		return adapter.KindNotFound
	case 40006, 40009, 40011, 45001, 45002:
		return adapter.KindTooLarge
	}
	return adapter.KindInvalidRequest
}

// hints explains permanent codes in plain words.
var hints = map[int]string{
	-1:     "WeCom is busy; retry in a few seconds",
	40001:  "the corp secret is wrong: copy the app's Secret from the WeCom admin console", // from gettoken; see Hint
	40003:  "a user id does not exist",
	40004:  "media type not allowed",
	40005:  "bad media type parameter",
	40006:  "file size not allowed",
	40007:  "media_id unknown or expired (media lasts 3 days): upload it again",
	40008:  "bad msgtype",
	40009:  "image too large (10 MB max)",
	40011:  "video too large (10 MB max)",
	40013:  "the corp id is wrong: copy it from My Company in the WeCom admin console",
	40014:  "access token invalid",
	40056:  "agent id is wrong: copy the app's AgentId from the admin console",
	301002: "agent_id is not the app of this corp_secret: copy the AgentId from the same app page as the Secret",
	41001:  "access token missing",
	41002:  "corp id missing",
	41004:  "corp secret missing",
	41011:  "agent id missing",
	41033:  "textcard needs a description",
	42001:  "access token expired",
	44001:  "empty media file",
	44004:  "text content is empty",
	45001:  "file too large (image/voice 10/2 MB, video 10 MB, file 20 MB)",
	45002:  "message content too long",
	45009:  "API call limit reached: WeCom blocks for a minute or more; do not retry at once",
	45033:  "too many concurrent calls: back off briefly",
	48002:  "the app lacks permission for this API: grant it in the admin console",
	50002:  "the recipient is outside the app's visible range",
	50003:  "the app is disabled",
	60011:  "no permission for the member, department or tag: widen the app's visible range",
	60020:  "this server's IP is not in the app's trusted IP list: add it in the admin console",
	60111:  "user id does not exist",
	81013:  "every recipient is invalid or outside the app's visible range",
	82001:  "every recipient is invalid",
	86001:  "bad chat id",
	86003:  "chat does not exist or was not created by this app",
}

// hint40001Token explains 40001 from an API other than gettoken, where WeCom means the
// access token, not the secret (spec §2).
const hint40001Token = "the access token was refused as an invalid credential; it is refreshed and the call retried once, " +
	"so if this persists the token is not this app's (check corp_id and agent_id of a shared token store)"

// Hint says what to do about e in plain words; empty if nothing useful can be said. 40001
// blames the secret only when gettoken answered it.
func (e *APIError) Hint() string {
	if e.Code == 40001 && e.Endpoint != EndpointGetToken {
		return hint40001Token
	}
	return hints[e.Code]
}

// wrapErr turns any error from a call to endpoint into an *adapter.Error (keeping err in the
// chain) so callers can branch on adapter kinds. nil stays nil.
func wrapErr(endpoint string, err error) error {
	if err == nil {
		return nil
	}
	var ae *adapter.Error
	if errors.As(err, &ae) {
		return err
	}
	out := &adapter.Error{Platform: adapter.PlatformWeCom, Err: err}
	msg := strings.TrimPrefix(err.Error(), "wecom: ")
	var apiErr *APIError
	if errors.As(err, &apiErr) {
		out.Kind = apiErr.Kind()
		out.Code = strconv.Itoa(apiErr.Code)
		// The outermost wait: while the token manager backs off after a failed gettoken, the
		// time left rather than the 60 s a 45009 first asked for.
		out.RetryAfter = cmp.Or(tokenmgr.RetryAfter(err), apiErr.RetryAfter())
		msg = apiErr.Endpoint + ": " + apiErr.Msg
		if h := apiErr.Hint(); h != "" {
			msg += " (" + h + ")"
		}
	} else {
		out.Kind = adapter.KindOf(err)
		out.RetryAfter = tokenmgr.RetryAfter(err)
	}
	if endpoint != "" && !strings.HasPrefix(msg, endpoint+":") {
		msg = endpoint + ": " + msg
	}
	out.Message = msg
	return out
}

// redacted lists the query parameters that carry secrets.
var redacted = []string{"access_token", "corpsecret"}

// sanitizeURL returns u with secret query values replaced by REDACTED (as go-github's
// sanitizeURL does), for errors and logs.
func sanitizeURL(u *url.URL) *url.URL {
	if u == nil {
		return nil
	}
	q := u.Query()
	changed := false
	for _, k := range redacted {
		if q.Has(k) {
			q.Set(k, "REDACTED")
			changed = true
		}
	}
	if !changed {
		return u
	}
	c := *u
	c.RawQuery = q.Encode()
	return &c
}

// sanitizeErr removes secrets from an error of the HTTP client (a *url.Error carries the URL).
func sanitizeErr(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		u, perr := url.Parse(ue.URL)
		if perr != nil {
			return &url.Error{Op: ue.Op, URL: "(unparsable url)", Err: ue.Err}
		}
		return &url.Error{Op: ue.Op, URL: sanitizeURL(u).String(), Err: ue.Err}
	}
	return err
}
