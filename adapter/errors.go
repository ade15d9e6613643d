package adapter

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/seed-a64d9e1f/chatwire/tokenmgr"
)

// A Kind classifies an error for callers: what went wrong, whatever the platform. Its string
// is the "kind" of the host's error JSON.
type Kind string

// Error kinds. See [Kind.HTTPStatus] for the HTTP status of each.
const (
	KindInvalidRequest   Kind = "invalid_request"   // the message or request is malformed; fix it
	KindInvalidRecipient Kind = "invalid_recipient" // no recipient exists or is allowed (WeCom 81013)
	KindNotFound         Kind = "not_found"         // the bot, chat, message or media does not exist
	KindTooLarge         Kind = "too_large"         // content over the platform's size limit
	KindUnauthorized     Kind = "unauthorized"      // the platform rejected the credentials, a signature, or a permission
	KindRateLimited      Kind = "rate_limited"      // slow down; RetryAfter says how long
	KindUnavailable      Kind = "unavailable"       // the platform failed or could not be reached; retry later
	KindTokenExpired     Kind = "token_expired"     // a token was rejected even after one refresh
	KindInternal         Kind = "internal"          // a bug or an unclassified failure
)

// Sentinel errors, one per [Kind]: errors.Is(err, ErrRateLimited) reports whether err is (or
// wraps) an [*Error] of KindRateLimited. Platform error types may map onto them through an Is
// method.
var (
	ErrInvalidRequest   = errors.New("adapter: invalid request")
	ErrInvalidRecipient = errors.New("adapter: invalid recipient")
	ErrNotFound         = errors.New("adapter: not found")
	ErrTooLarge         = errors.New("adapter: too large")
	ErrUnauthorized     = errors.New("adapter: unauthorized")
	ErrRateLimited      = errors.New("adapter: rate limited")
	ErrUnavailable      = errors.New("adapter: unavailable")
	ErrTokenExpired     = errors.New("adapter: token expired")
	ErrInternal         = errors.New("adapter: internal error")
)

// kinds is the one table of kinds: sentinel, HTTP status, and the kind the host's error JSON
// shows (token_expired is not part of the HTTP contract and is shown as unavailable).
var kinds = map[Kind]struct {
	err    error
	status int
	public Kind
}{
	KindInvalidRequest:   {ErrInvalidRequest, http.StatusBadRequest, KindInvalidRequest},
	KindInvalidRecipient: {ErrInvalidRecipient, http.StatusBadRequest, KindInvalidRecipient},
	KindNotFound:         {ErrNotFound, http.StatusNotFound, KindNotFound},
	KindTooLarge:         {ErrTooLarge, http.StatusRequestEntityTooLarge, KindTooLarge},
	KindUnauthorized:     {ErrUnauthorized, http.StatusUnauthorized, KindUnauthorized},
	KindRateLimited:      {ErrRateLimited, http.StatusTooManyRequests, KindRateLimited},
	KindUnavailable:      {ErrUnavailable, http.StatusServiceUnavailable, KindUnavailable},
	KindTokenExpired:     {ErrTokenExpired, http.StatusBadGateway, KindUnavailable},
	KindInternal:         {ErrInternal, http.StatusInternalServerError, KindInternal},
}

// Kinds lists every Kind, in a fixed order (for tests and mapping tables).
func Kinds() []Kind {
	return []Kind{KindInvalidRequest, KindInvalidRecipient, KindNotFound, KindTooLarge, KindUnauthorized,
		KindRateLimited, KindUnavailable, KindTokenExpired, KindInternal}
}

// ParseKind returns the Kind named s, or KindInternal if s names none.
func ParseKind(s string) Kind {
	if _, ok := kinds[Kind(s)]; ok {
		return Kind(s)
	}
	return KindInternal
}

// Err returns k's sentinel error (ErrInternal for an unknown kind).
func (k Kind) Err() error {
	if info, ok := kinds[k]; ok {
		return info.err
	}
	return ErrInternal
}

// HTTPStatus returns the HTTP status a host answers with for an error of kind k: 400 invalid
// request or recipient, 401 unauthorized, 404 not found, 413 too large, 429 rate limited
// (with Retry-After), 502 token expired, 503 unavailable, 500 internal or unknown.
func (k Kind) HTTPStatus() int {
	if info, ok := kinds[k]; ok {
		return info.status
	}
	return http.StatusInternalServerError
}

// Public returns the kind to show in the host's error JSON, which has no token_expired
// (shown as unavailable); unknown kinds become internal.
func (k Kind) Public() Kind {
	if info, ok := kinds[k]; ok {
		return info.public
	}
	return KindInternal
}

// Error is an error with a [Kind], the platform's code kept verbatim, and a retry-after where
// the platform asked for one. Adapters return it (or wrap it) from every method. It never
// holds a secret or a token.
//
// errors.Is(err, k.Err()) holds for its Kind's sentinel; an Error of KindTokenExpired also
// matches tokenmgr.ErrInvalid, KindUnauthorized matches tokenmgr.ErrCredentials, and
// KindUnavailable and KindRateLimited match tokenmgr.ErrTemporary. errors.Is and errors.As
// also see through Err.
type Error struct {
	Kind     Kind
	Platform string // "wecom", "graph"; empty for errors not from a platform
	// Code is the platform's code as it sent it: "45009", "AADSTS7000215",
	// "InvalidAuthenticationToken"; empty if none.
	Code string
	// Message says what went wrong in plain words, and what to do about it if the caller
	// can do something. It is the whole description: if empty, Err's text is used instead.
	Message string
	// RetryAfter is how long the platform asked callers to wait (rate limits); zero if it
	// did not say.
	RetryAfter time.Duration
	// Err is the underlying error, if any.
	Err error
}

// Error returns "<platform>: <message> (code <code>; retry after <d>)".
func (e *Error) Error() string {
	prefix := e.Platform
	if prefix == "" {
		prefix = "adapter"
	}
	msg := e.Message
	if msg == "" && e.Err != nil {
		msg = e.Err.Error()
	}
	if msg == "" {
		msg = string(e.Kind)
	}
	s := prefix + ": " + msg
	switch {
	case e.Code != "" && e.RetryAfter > 0:
		s += fmt.Sprintf(" (code %s; retry after %s)", e.Code, e.RetryAfter)
	case e.Code != "":
		s += " (code " + e.Code + ")"
	case e.RetryAfter > 0:
		s += fmt.Sprintf(" (retry after %s)", e.RetryAfter)
	}
	return s
}

// Unwrap returns Err.
func (e *Error) Unwrap() error { return e.Err }

// Is reports whether target is the sentinel of e's Kind, or the tokenmgr sentinel that kind
// corresponds to.
func (e *Error) Is(target error) bool {
	switch {
	case target == e.Kind.Err():
		return true
	case target == tokenmgr.ErrInvalid:
		return e.Kind == KindTokenExpired
	case target == tokenmgr.ErrCredentials:
		return e.Kind == KindUnauthorized
	case target == tokenmgr.ErrTemporary:
		return e.Kind == KindUnavailable || e.Kind == KindRateLimited
	}
	return false
}

// Errorf returns an *Error of kind k whose Message is formatted from format and args. A %w
// verb sets Err as in fmt.Errorf.
func Errorf(k Kind, format string, args ...any) *Error {
	err := fmt.Errorf(format, args...)
	return &Error{Kind: k, Message: err.Error(), Err: errors.Unwrap(err)}
}

// KindOf classifies err: the Kind of the first *Error in its chain; else the Kind whose
// sentinel it matches (so platform error types with an Is method onto the sentinels work);
// else tokenmgr's ErrInvalid → KindTokenExpired, ErrCredentials → KindUnauthorized,
// ErrTemporary, ErrClosed and context errors → KindUnavailable. nil has the empty Kind;
// anything else is KindInternal.
func KindOf(err error) Kind {
	if err == nil {
		return ""
	}
	var e *Error
	if errors.As(err, &e) {
		if _, ok := kinds[e.Kind]; ok {
			return e.Kind
		}
		return KindInternal
	}
	for _, k := range Kinds() {
		if errors.Is(err, k.Err()) {
			return k
		}
	}
	switch {
	case errors.Is(err, tokenmgr.ErrInvalid):
		return KindTokenExpired
	case errors.Is(err, tokenmgr.ErrCredentials):
		return KindUnauthorized
	case errors.Is(err, tokenmgr.ErrTemporary), errors.Is(err, tokenmgr.ErrClosed),
		errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		return KindUnavailable
	}
	return KindInternal
}

// HTTPStatus returns the HTTP status for err: KindOf(err).HTTPStatus(), or 200 for nil.
func HTTPStatus(err error) int {
	if err == nil {
		return http.StatusOK
	}
	return KindOf(err).HTTPStatus()
}

// RetryAfter returns how long err asks callers to wait: the RetryAfter of the first *Error in
// its chain that has one, else [tokenmgr.RetryAfter] (any error with a RetryAfter method).
func RetryAfter(err error) time.Duration {
	for e := err; e != nil; {
		var ae *Error
		if !errors.As(e, &ae) {
			break
		}
		if ae.RetryAfter > 0 {
			return ae.RetryAfter
		}
		e = ae.Err
	}
	return tokenmgr.RetryAfter(err)
}

// Code returns the platform code of the first *Error in err's chain that has one, or "".
func Code(err error) string {
	for e := err; e != nil; {
		var ae *Error
		if !errors.As(e, &ae) {
			break
		}
		if ae.Code != "" {
			return ae.Code
		}
		e = ae.Err
	}
	return ""
}
