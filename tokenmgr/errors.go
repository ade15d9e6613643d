package tokenmgr

import (
	"errors"
	"fmt"
	"time"
)

// Errors callers branch on with errors.Is. Platform errors map onto them through an Is method,
// as [PlatformError] does.
var (
	// ErrInvalid means the platform rejected a token as invalid or expired (WeCom 40014, 41001,
	// 42001; Graph 401 InvalidAuthenticationToken). Invalidate that token and retry once.
	ErrInvalid = errors.New("tokenmgr: token invalid or expired")
	// ErrCredentials means the platform rejected the app's credentials (WeCom 40001/40013,
	// AADSTS7000215, invalid_client, invalid_grant). Retrying will not help: a person must fix
	// the configuration. The Manager fails fast and retries slowly.
	ErrCredentials = errors.New("tokenmgr: credentials rejected")
	// ErrTemporary means the failure may go away by itself (network, 5xx, rate limit).
	ErrTemporary = errors.New("tokenmgr: temporary failure")
	// ErrClosed is returned by a Manager after Close.
	ErrClosed = errors.New("tokenmgr: manager closed")
)

// PlatformError is an error a platform reported, with its code kept verbatim. Sources and
// adapters without an error type of their own can use it.
type PlatformError struct {
	Platform string // "wecom", "graph"
	Code     string // the platform's code as it sent it: "40001", "AADSTS7000215", "invalid_client"
	Message  string // the platform's message; must not contain a secret or a token
	Hint     string // what to do about it, in plain words; empty if nothing useful can be said
	// Kind is ErrInvalid, ErrCredentials, ErrTemporary or nil; errors.Is(err, Kind) reports true.
	Kind error
	// Wait is how long the platform asked callers to wait before trying again; zero if it did not.
	Wait time.Duration
}

func (e *PlatformError) Error() string {
	msg := e.Platform + ": " + e.Message
	if e.Code != "" {
		msg = fmt.Sprintf("%s: error %s: %s", e.Platform, e.Code, e.Message)
	}
	if e.Hint != "" {
		msg += " (" + e.Hint + ")"
	}
	return msg
}

// Is reports whether target is e's Kind.
func (e *PlatformError) Is(target error) bool { return e.Kind != nil && target == e.Kind }

// RetryAfter returns how long the platform asked callers to wait.
func (e *PlatformError) RetryAfter() time.Duration { return e.Wait }

// RetryAfter returns the wait asked for by the first error in err's chain that has a method
// RetryAfter() time.Duration, or zero.
func RetryAfter(err error) time.Duration {
	var ra interface{ RetryAfter() time.Duration }
	if errors.As(err, &ra) {
		return ra.RetryAfter()
	}
	return 0
}

// IsPermanent reports whether err is a credentials error: retrying without a configuration
// change will not succeed.
func IsPermanent(err error) bool { return errors.Is(err, ErrCredentials) }

// backoffError is the last refresh failure, handed to a caller that arrives while the Manager
// waits before trying again: errors.Is and errors.As see the failure, and RetryAfter is the
// time left until the next attempt (not the wait the failure asked for when it happened).
type backoffError struct {
	err  error
	left time.Duration
}

func (e *backoffError) Error() string             { return e.err.Error() }
func (e *backoffError) Unwrap() error             { return e.err }
func (e *backoffError) RetryAfter() time.Duration { return e.left }
