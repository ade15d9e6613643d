package plugin

import (
	"context"
	"errors"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/seed-a64d9e1f/chatwire/adapter"
	"github.com/seed-a64d9e1f/chatwire/tokenmgr"
)

func TestErrorRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want []error // sentinels errors.Is must match after the round trip
	}{
		{"invalid request", &adapter.Error{Kind: adapter.KindInvalidRequest, Message: "no text"}, []error{adapter.ErrInvalidRequest}},
		{"invalid recipient", &adapter.Error{Kind: adapter.KindInvalidRecipient, Platform: "wecom", Code: "81013"}, []error{adapter.ErrInvalidRecipient}},
		{"not found", &adapter.Error{Kind: adapter.KindNotFound, Platform: "graph", Code: "NotFound"}, []error{adapter.ErrNotFound}},
		{"too large", &adapter.Error{Kind: adapter.KindTooLarge, Code: "40058"}, []error{adapter.ErrTooLarge}},
		{"unauthorized", &adapter.Error{Kind: adapter.KindUnauthorized, Platform: "graph", Code: "AADSTS7000215"}, []error{adapter.ErrUnauthorized, tokenmgr.ErrCredentials}},
		{"rate limited", &adapter.Error{Kind: adapter.KindRateLimited, Platform: "wecom", Code: "45009", RetryAfter: 60 * time.Second}, []error{adapter.ErrRateLimited, tokenmgr.ErrTemporary}},
		{"unavailable", &adapter.Error{Kind: adapter.KindUnavailable, Code: "-1"}, []error{adapter.ErrUnavailable, tokenmgr.ErrTemporary}},
		{"token expired", &adapter.Error{Kind: adapter.KindTokenExpired, Platform: "graph", Code: "InvalidAuthenticationToken"}, []error{adapter.ErrTokenExpired, tokenmgr.ErrInvalid}},
		{"internal", &adapter.Error{Kind: adapter.KindInternal, Message: "bug"}, []error{adapter.ErrInternal}},
		{"wrapped", errors.Join(errors.New("ctx"), &adapter.Error{Kind: adapter.KindRateLimited, Code: "429", RetryAfter: 3 * time.Second}), []error{adapter.ErrRateLimited}},
		{"plain tokenmgr error", tokenmgr.ErrCredentials, []error{adapter.ErrUnauthorized, tokenmgr.ErrCredentials}},
		{"unclassified", errors.New("boom"), []error{adapter.ErrInternal}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := fromStatus(context.Background(), toStatus(tc.err))
			for _, w := range tc.want {
				if !errors.Is(got, w) {
					t.Errorf("errors.Is(fromStatus(toStatus(%v)), %v) = false; want true", tc.err, w)
				}
			}
			if g, w := adapter.Code(got), adapter.Code(tc.err); g != w {
				t.Errorf("Code = %q; want %q", g, w)
			}
			if g, w := adapter.RetryAfter(got), adapter.RetryAfter(tc.err); g != w {
				t.Errorf("RetryAfter = %v; want %v", g, w)
			}
			if g, w := adapter.KindOf(got), adapter.KindOf(tc.err); g != w {
				t.Errorf("KindOf = %q; want %q", g, w)
			}
		})
	}
}

func TestEveryKindHasACode(t *testing.T) {
	for _, k := range adapter.Kinds() {
		if _, ok := grpcCodes[k]; !ok {
			t.Errorf("grpcCodes[%q] missing", k)
		}
	}
}

func TestFromStatusWithoutDetail(t *testing.T) {
	tests := []struct {
		code codes.Code
		want adapter.Kind
	}{
		{codes.Unavailable, adapter.KindUnavailable}, // a crashed plugin
		{codes.ResourceExhausted, adapter.KindTooLarge},
		{codes.Unimplemented, adapter.KindInternal},
		{codes.NotFound, adapter.KindNotFound},
	}
	for _, tc := range tests {
		got := fromStatus(context.Background(), status.Error(tc.code, "x"))
		if k := adapter.KindOf(got); k != tc.want {
			t.Errorf("fromStatus(%v) kind = %q; want %q", tc.code, k, tc.want)
		}
	}
}

func TestFromStatusCallerCtxDone(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	got := fromStatus(ctx, status.Error(codes.Canceled, "context canceled"))
	if !errors.Is(got, context.Canceled) || !errors.Is(got, adapter.ErrUnavailable) {
		t.Errorf("fromStatus(canceled) = %v; want unavailable wrapping context.Canceled", got)
	}
}
