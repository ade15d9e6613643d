package adapter_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/seed-a64d9e1f/chatwire/adapter"
	"github.com/seed-a64d9e1f/chatwire/tokenmgr"
)

func TestErrorIs(t *testing.T) {
	tests := []struct {
		kind     adapter.Kind
		sentinel error
		status   int
		public   adapter.Kind
		tokenmgr error // the tokenmgr sentinel it must also match, if any
	}{
		{adapter.KindInvalidRequest, adapter.ErrInvalidRequest, 400, adapter.KindInvalidRequest, nil},
		{adapter.KindInvalidRecipient, adapter.ErrInvalidRecipient, 400, adapter.KindInvalidRecipient, nil},
		{adapter.KindNotFound, adapter.ErrNotFound, 404, adapter.KindNotFound, nil},
		{adapter.KindTooLarge, adapter.ErrTooLarge, 413, adapter.KindTooLarge, nil},
		{adapter.KindUnauthorized, adapter.ErrUnauthorized, 401, adapter.KindUnauthorized, tokenmgr.ErrCredentials},
		{adapter.KindRateLimited, adapter.ErrRateLimited, 429, adapter.KindRateLimited, tokenmgr.ErrTemporary},
		{adapter.KindUnavailable, adapter.ErrUnavailable, 503, adapter.KindUnavailable, tokenmgr.ErrTemporary},
		{adapter.KindTokenExpired, adapter.ErrTokenExpired, 502, adapter.KindUnavailable, tokenmgr.ErrInvalid},
		{adapter.KindInternal, adapter.ErrInternal, 500, adapter.KindInternal, nil},
	}
	if len(tests) != len(adapter.Kinds()) {
		t.Fatalf("table has %d kinds; adapter.Kinds() has %d", len(tests), len(adapter.Kinds()))
	}
	tmSentinels := []error{tokenmgr.ErrInvalid, tokenmgr.ErrCredentials, tokenmgr.ErrTemporary}
	for _, tc := range tests {
		t.Run(string(tc.kind), func(t *testing.T) {
			var err error = &adapter.Error{Kind: tc.kind, Platform: "wecom", Code: "1", Message: "m"}
			wrapped := fmt.Errorf("send: %w", err)
			for _, e := range []error{err, wrapped} {
				for _, k := range adapter.Kinds() {
					if got, want := errors.Is(e, k.Err()), k == tc.kind; got != want {
						t.Errorf("errors.Is(%v, %v) = %v; want %v", e, k.Err(), got, want)
					}
				}
				for _, s := range tmSentinels {
					if got, want := errors.Is(e, s), s == tc.tokenmgr; got != want {
						t.Errorf("errors.Is(%v, %v) = %v; want %v", e, s, got, want)
					}
				}
				if got := adapter.KindOf(e); got != tc.kind {
					t.Errorf("KindOf(%v) = %q; want %q", e, got, tc.kind)
				}
				if got := adapter.HTTPStatus(e); got != tc.status {
					t.Errorf("HTTPStatus(%v) = %d; want %d", e, got, tc.status)
				}
				if got := adapter.Code(e); got != "1" {
					t.Errorf("Code(%v) = %q; want %q", e, got, "1")
				}
			}
			if got := tc.kind.Public(); got != tc.public {
				t.Errorf("%q.Public() = %q; want %q", tc.kind, got, tc.public)
			}
			if got := adapter.ParseKind(string(tc.kind)); got != tc.kind {
				t.Errorf("ParseKind(%q) = %q", tc.kind, got)
			}
		})
	}
}

// platformErr stands for a platform's error type mapping onto adapter sentinels through Is.
type platformErr struct{ target error }

func (e platformErr) Error() string        { return "platform" }
func (e platformErr) Is(target error) bool { return target == e.target }

func TestKindOf(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want adapter.Kind
	}{
		{"nil", nil, ""},
		{"plain", errors.New("boom"), adapter.KindInternal},
		{"sentinel", adapter.ErrRateLimited, adapter.KindRateLimited},
		{"platform type via Is", fmt.Errorf("x: %w", platformErr{adapter.ErrNotFound}), adapter.KindNotFound},
		{"tokenmgr invalid", fmt.Errorf("x: %w", tokenmgr.ErrInvalid), adapter.KindTokenExpired},
		{"tokenmgr credentials", &tokenmgr.PlatformError{Platform: "wecom", Code: "40001", Kind: tokenmgr.ErrCredentials}, adapter.KindUnauthorized},
		{"tokenmgr temporary", &tokenmgr.PlatformError{Platform: "wecom", Code: "-1", Kind: tokenmgr.ErrTemporary}, adapter.KindUnavailable},
		{"deadline", fmt.Errorf("x: %w", context.DeadlineExceeded), adapter.KindUnavailable},
		{"canceled", context.Canceled, adapter.KindUnavailable},
		{"closed", fmt.Errorf("x: %w", tokenmgr.ErrClosed), adapter.KindUnavailable},
		{"unknown kind", &adapter.Error{Kind: "bogus"}, adapter.KindInternal},
		{"outer Error wins", &adapter.Error{Kind: adapter.KindRateLimited, Err: tokenmgr.ErrInvalid}, adapter.KindRateLimited},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := adapter.KindOf(tc.err); got != tc.want {
				t.Errorf("KindOf(%v) = %q; want %q", tc.err, got, tc.want)
			}
		})
	}
	if got := adapter.HTTPStatus(nil); got != http.StatusOK {
		t.Errorf("HTTPStatus(nil) = %d; want 200", got)
	}
	if got := adapter.ParseKind("nonsense"); got != adapter.KindInternal {
		t.Errorf("ParseKind(nonsense) = %q; want internal", got)
	}
}

func TestErrorText(t *testing.T) {
	base := errors.New("dial tcp: refused")
	tests := []struct {
		name string
		err  *adapter.Error
		want string
	}{
		{"code and retry", &adapter.Error{Kind: adapter.KindRateLimited, Platform: "wecom", Code: "45009", Message: "api freq out of limit", RetryAfter: time.Minute},
			"wecom: api freq out of limit (code 45009; retry after 1m0s)"},
		{"message from Err", &adapter.Error{Kind: adapter.KindUnavailable, Platform: "graph", Err: base}, "graph: dial tcp: refused"},
		{"kind only", &adapter.Error{Kind: adapter.KindNotFound}, "adapter: not_found"},
		{"retry only", &adapter.Error{Kind: adapter.KindRateLimited, Message: "slow down", RetryAfter: 2 * time.Second}, "adapter: slow down (retry after 2s)"},
		{"Errorf", adapter.Errorf(adapter.KindUnavailable, "wecom: send: %w", base), "adapter: wecom: send: dial tcp: refused"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.err.Error(); got != tc.want {
				t.Errorf("Error() = %q; want %q", got, tc.want)
			}
		})
	}
	if err := adapter.Errorf(adapter.KindUnavailable, "x: %w", base); !errors.Is(err, base) {
		t.Errorf("Errorf with %%w does not wrap its argument")
	}
}

func TestRetryAfter(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want time.Duration
	}{
		{"nil", nil, 0},
		{"Error", &adapter.Error{Kind: adapter.KindRateLimited, RetryAfter: time.Minute}, time.Minute},
		{"wrapped", fmt.Errorf("x: %w", &adapter.Error{Kind: adapter.KindRateLimited, RetryAfter: 3 * time.Second}), 3 * time.Second},
		{"inner Error", &adapter.Error{Kind: adapter.KindRateLimited, Err: &adapter.Error{Kind: adapter.KindRateLimited, RetryAfter: time.Hour}}, time.Hour},
		{"tokenmgr", &adapter.Error{Kind: adapter.KindRateLimited, Err: &tokenmgr.PlatformError{Wait: 90 * time.Second}}, 90 * time.Second},
		{"none", errors.New("x"), 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := adapter.RetryAfter(tc.err); got != tc.want {
				t.Errorf("RetryAfter(%v) = %v; want %v", tc.err, got, tc.want)
			}
		})
	}
}
