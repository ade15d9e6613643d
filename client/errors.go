package client

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/seed-a64d9e1f/chatwire/adapter"
	"github.com/seed-a64d9e1f/chatwire/tokenmgr"
)

// KindConflict is the kind of a send refused because its idempotency key was used for
// another message, or its first request never finished (409); nothing was sent. The
// other kinds are [adapter.Kind]'s.
const KindConflict adapter.Kind = "conflict"

// Sentinel errors of this package.
var (
	// ErrConflict matches an *Error of [KindConflict] with errors.Is.
	ErrConflict = errors.New("client: idempotency key conflict")
	// ErrSignature is the error [VerifySignature] wraps for a missing, malformed or wrong
	// signature.
	ErrSignature = errors.New("client: bad webhook signature")
)

// Error is a host's error answer: {"error": {"kind", "message", "platform_code"}} with its
// HTTP status and Retry-After. An answer that is not the host's error JSON (a proxy's page)
// gets the kind its status implies.
//
// errors.Is(err, k.Err()) holds for its Kind's sentinel (adapter.ErrRateLimited,
// adapter.ErrUnavailable, ...; [ErrConflict] for KindConflict), and rate_limited and
// unavailable errors also match tokenmgr.ErrTemporary. Kind is the host's kind verbatim, so a
// kind newer than this package is kept (and matches adapter.ErrInternal).
type Error struct {
	StatusCode int          // the HTTP status, e.g. 429
	Kind       adapter.Kind // adapter.KindRateLimited, ...
	// Message is the host's description, in plain words; never a secret.
	Message string
	// PlatformCode is the platform's own code, verbatim ("45009", "AADSTS7000215"); empty if
	// it gave none.
	PlatformCode string
	// RetryAfter is how long the host asked callers to wait (its Retry-After header); zero
	// if it did not say.
	RetryAfter time.Duration
	// Body is the start (up to 64 KiB) of the answer's body, as received.
	Body []byte
}

// Error returns "client: <message> (<kind>, HTTP <status>[, platform code <code>][, retry after <d>])".
func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("client: ")
	b.WriteString(e.Message)
	fmt.Fprintf(&b, " (%s, HTTP %d", e.Kind, e.StatusCode)
	if e.PlatformCode != "" {
		b.WriteString(", platform code " + e.PlatformCode)
	}
	if e.RetryAfter > 0 {
		b.WriteString(", retry after " + e.RetryAfter.String())
	}
	b.WriteString(")")
	return b.String()
}

// Is reports whether target is the sentinel of e's Kind, or tokenmgr.ErrTemporary for a
// rate_limited or unavailable error.
func (e *Error) Is(target error) bool {
	switch {
	case e.Kind == KindConflict:
		return target == ErrConflict
	case target == e.Kind.Err():
		return true
	case target == tokenmgr.ErrTemporary:
		return e.Temporary()
	}
	return false
}

// Temporary reports whether the same request may succeed later: the host was rate limited or
// unavailable (wait RetryAfter first).
func (e *Error) Temporary() bool {
	return e.Kind == adapter.KindRateLimited || e.Kind == adapter.KindUnavailable
}

// CheckResponse returns nil for a 2xx answer, else the answer as an *Error (reading at most
// 64 KiB of its body). It does not close the body.
func CheckResponse(resp *http.Response) error {
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return nil
	}
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	e := &Error{StatusCode: resp.StatusCode, RetryAfter: parseRetryAfter(resp.Header.Get("Retry-After"), time.Now()), Body: data}
	var body struct {
		Error *struct {
			Kind         string `json:"kind"`
			Message      string `json:"message"`
			PlatformCode string `json:"platform_code"`
		} `json:"error"`
	}
	if json.Unmarshal(data, &body) == nil && body.Error != nil && body.Error.Kind != "" {
		e.Kind = adapter.Kind(body.Error.Kind)
		e.Message = body.Error.Message
		e.PlatformCode = body.Error.PlatformCode
	} else {
		e.Kind = kindOfStatus(resp.StatusCode)
		e.Message = "host answered " + resp.Status
		if text := strings.TrimSpace(string(data)); text != "" {
			e.Message += ": " + clip(text, 200)
		}
	}
	if e.Message == "" {
		e.Message = string(e.Kind)
	}
	return e
}

// kindOfStatus is the kind an HTTP status implies when the body does not say.
func kindOfStatus(status int) adapter.Kind {
	switch status {
	case http.StatusConflict:
		return KindConflict
	case http.StatusBadRequest, http.StatusRequestTimeout, http.StatusUnsupportedMediaType:
		return adapter.KindInvalidRequest
	case http.StatusUnauthorized, http.StatusForbidden:
		return adapter.KindUnauthorized
	case http.StatusNotFound:
		return adapter.KindNotFound
	case http.StatusRequestEntityTooLarge:
		return adapter.KindTooLarge
	case http.StatusTooManyRequests:
		return adapter.KindRateLimited
	case http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return adapter.KindUnavailable
	}
	return adapter.KindInternal
}

// parseRetryAfter reads a Retry-After header: delay-seconds or an HTTP date. Zero if absent
// or unreadable.
func parseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if secs, err := strconv.ParseInt(v, 10, 64); err == nil {
		if secs <= 0 {
			return 0
		}
		return time.Duration(min(secs, int64(24*time.Hour/time.Second))) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now).Round(time.Second)
	}
	return 0
}

// clip returns s cut to at most n bytes.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[:n], "") + "…"
}
