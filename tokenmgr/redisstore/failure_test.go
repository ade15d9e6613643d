package redisstore

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/seed-a64d9e1f/chatwire/tokenmgr"
)

// fieldHintError is shaped like graph.AuthError: its hint is a field, offered through
// PlatformHint, and it says whether it is permanent through Is.
type fieldHintError struct{ hint string }

func (e *fieldHintError) Error() string        { return "identity platform: SECRET-free-text (AADSTS7000215)" }
func (e *fieldHintError) PlatformCode() string { return "AADSTS7000215" }
func (e *fieldHintError) PlatformHint() string { return e.hint }
func (e *fieldHintError) Is(target error) bool { return target == tokenmgr.ErrCredentials }

// TestFailureMessageRoundTrip: what a holder publishes about its failed fetch comes back to a
// waiter as an error of the same kind with the code and the hint, for each way an adapter
// states them, and never with the error's free text.
func TestFailureMessageRoundTrip(t *testing.T) {
	const key = "graph/t/c/app"
	const hint = "use the client secret's Value, not its Secret ID"
	for name, err := range map[string]error{
		"PlatformHint method": fmt.Errorf("fetch: %w", &fieldHintError{hint: hint}),
		"PlatformError": &tokenmgr.PlatformError{Platform: "graph", Code: "AADSTS7000215", Message: "SECRET-free-text",
			Hint: hint, Kind: tokenmgr.ErrCredentials},
	} {
		t.Run(name, func(t *testing.T) {
			msg := failureMessage(key, err)
			if strings.Contains(msg, "SECRET-") {
				t.Fatalf("message carries the error's free text: %q", msg)
			}
			head, detail, ok := strings.Cut(msg, "\n")
			if !ok || head != "f 1 "+key {
				t.Fatalf("message = %q; want a credentials failure with detail", msg)
			}
			f := failure{Credentials: true}
			if !f.decode(detail) {
				t.Fatalf("detail %q not decoded", detail)
			}
			got := f.err(key)
			var pe *tokenmgr.PlatformError
			if !errors.Is(got, tokenmgr.ErrCredentials) || !errors.As(got, &pe) {
				t.Fatalf("waiter's error %v: want ErrCredentials and a *PlatformError", got)
			}
			if pe.Code != "AADSTS7000215" || pe.Hint != hint || pe.Platform != "graph" {
				t.Errorf("waiter's error has platform %q code %q hint %q", pe.Platform, pe.Code, pe.Hint)
			}
		})
	}
}

// TestFailureWaitIsBounded: a wait published by whoever can write to Redis, or asked by a
// platform, reaches a waiter as at most an hour and never negative, however large it was.
func TestFailureWaitIsBounded(t *testing.T) {
	const key = "graph/t/c/app"
	for _, tc := range []struct {
		detail string
		want   time.Duration
	}{
		{`{"c":"x","w":1000000000000}`, time.Hour},
		{`{"c":"x","w":9300000000000}`, time.Hour}, // overflows a Duration in ms
		{`{"c":"x","w":9223372036854775807}`, time.Hour},
		{`{"c":"x","w":-5}`, 0},
		{`{"c":"x","w":1500}`, 1500 * time.Millisecond},
	} {
		f := failure{}
		if !f.decode(tc.detail) {
			t.Fatalf("detail %q not decoded", tc.detail)
		}
		var pe *tokenmgr.PlatformError
		if !errors.As(f.err(key), &pe) || pe.Wait != tc.want {
			t.Errorf("detail %q: waiter's error %v with wait %v; want %v", tc.detail, f.err(key), pe, tc.want)
		}
	}
	f := describe(key, &tokenmgr.PlatformError{Code: "429", Kind: tokenmgr.ErrTemporary, Wait: 1000 * time.Hour})
	if f.WaitMS != int64(time.Hour/time.Millisecond) {
		t.Errorf("describe kept a wait of %d ms; want at most an hour", f.WaitMS)
	}
}

// TestFailureMessageCut: a waiter cuts an f message into the key and the detail the holder
// published, also when the hint holds a newline, and takes a message without detail as all key.
func TestFailureMessageCut(t *testing.T) {
	const key = "graph/t/c/app"
	err := &tokenmgr.PlatformError{Platform: "graph", Code: "AADSTS7000215", Hint: "line one\nline two", Kind: tokenmgr.ErrCredentials}
	rest, ok := strings.CutPrefix(failureMessage(key, err), "f 1 ")
	if !ok {
		t.Fatalf("message %q; want a credentials failure", failureMessage(key, err))
	}
	f := failure{Credentials: true}
	if got := f.cut(rest); got != key || f.Code != "AADSTS7000215" || f.Hint != "line one\nline two" {
		t.Errorf("cut(%q) = key %q, code %q, hint %q; want %q with the code and the hint", rest, got, f.Code, f.Hint, key)
	}
	plain := failureMessage(key, errors.New("SECRET-no-detail"))
	rest, _ = strings.CutPrefix(plain, "f 0 ")
	f = failure{}
	if got := f.cut(rest); got != key || f.Code != "" {
		t.Errorf("cut(%q) = key %q, code %q; want %q and no code", rest, got, f.Code, key)
	}
	f = failure{}
	if got := f.cut("a\nb"); got != "a\nb" {
		t.Errorf("cut of a key with a newline and no detail = %q; want all of it", got)
	}
}
