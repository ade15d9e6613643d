package redisstore

import (
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/seed-a64d9e1f/chatwire/tokenmgr"
)

// failure is what a lock holder publishes about its failed fetch to the processes waiting for
// it, so that they return an error as useful as its own: the kind, the platform's code, the
// hint saying what to fix, and the wait the platform asked for. It never holds a secret: no
// token, no state, and no free text from the platform, only its code and a hint, which is a
// fixed text chosen by the adapter.
type failure struct {
	Credentials bool   `json:"-"` // tokenmgr.ErrCredentials, else ErrTemporary; sent as the gen field
	Platform    string `json:"p,omitempty"`
	Code        string `json:"c,omitempty"`
	Hint        string `json:"h,omitempty"`
	WaitMS      int64  `json:"w,omitempty"`
}

// Bounds on what a failure carries, so a message stays small whatever an error holds.
const (
	maxPlatform = 32
	maxCode     = 64
	maxHint     = 512

	// maxWaitMS bounds the wait a failure asks waiters to keep (1 h). A message comes from
	// anyone who can write to Redis, the threat the encryption guards against, so a wait
	// published as 1e12 ms must not park every waiting host's refresh for decades (nor
	// overflow a time.Duration).
	maxWaitMS = int64(time.Hour / time.Millisecond)
)

// codeInText finds a platform code in an error's text when no error in its chain says it:
// "errcode 40001" (WeCom) or "AADSTS7000215" (Microsoft identity platform). Only the digits
// and the AADSTS prefix are taken, never the text around them.
var codeInText = regexp.MustCompile(`errcode (-?\d{1,12})\b|\b(AADSTS\d{1,12})\b`)

// describe returns the failure to publish for err, a fetch of key failing. The code and hint
// come from a [*tokenmgr.PlatformError] in err's chain, else from errors with the methods
// PlatformCode() string and Hint() string (or PlatformHint() string), else the code from
// the text of err.
func describe(key string, err error) failure {
	f := failure{Credentials: tokenmgr.IsPermanent(err), WaitMS: clampWait(tokenmgr.RetryAfter(err).Milliseconds())}
	var pe *tokenmgr.PlatformError
	if errors.As(err, &pe) {
		f.Platform, f.Code, f.Hint = pe.Platform, pe.Code, pe.Hint
	}
	if f.Code == "" {
		var pc interface{ PlatformCode() string }
		if errors.As(err, &pc) {
			f.Code = pc.PlatformCode()
		}
	}
	if f.Code == "" {
		if m := codeInText.FindStringSubmatch(err.Error()); m != nil {
			f.Code = m[1] + m[2]
		}
	}
	if f.Hint == "" {
		var h interface{ Hint() string }
		if errors.As(err, &h) {
			f.Hint = h.Hint()
		}
	}
	if f.Hint == "" {
		var h interface{ PlatformHint() string } // for errors whose Hint is a field
		if errors.As(err, &h) {
			f.Hint = h.PlatformHint()
		}
	}
	if f.Platform == "" {
		f.Platform, _, _ = strings.Cut(key, "/")
	}
	f.Platform, f.Code, f.Hint = clip(f.Platform, maxPlatform), clip(f.Code, maxCode), clip(f.Hint, maxHint)
	return f
}

// clampWait returns ms bounded to [0, maxWaitMS].
func clampWait(ms int64) int64 { return min(max(ms, 0), maxWaitMS) }

// clip returns s cut to at most n bytes, without a partial rune at the end.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[:n], "")
}

// failureMessage returns the release message telling the waiters for key that its fetch
// failed with err.
func failureMessage(key string, err error) string {
	f := describe(key, err)
	msg := "f 0 " + key
	if f.Credentials {
		msg = "f 1 " + key
	}
	if strings.Contains(key, "\n") || f.Code == "" && f.Hint == "" && f.WaitMS == 0 {
		return msg // nothing more to say, or a key the detail could not be told apart from
	}
	detail, jerr := json.Marshal(f)
	if jerr != nil {
		return msg
	}
	return msg + "\n" + string(detail)
}

// cut returns the key of an f message's rest ("<key>" or "<key>\n<detail>"), cut at its first
// newline, with the detail decoded into f; a rest whose detail is not one is all key.
// failureMessage adds no detail to a key with a newline, and JSON holds none.
func (f *failure) cut(rest string) (key string) {
	if k, detail, ok := strings.Cut(rest, "\n"); ok && f.decode(detail) {
		return k
	}
	return rest
}

// decode reads the detail of an f message into f and reports whether it was one.
func (f *failure) decode(detail string) bool {
	if !strings.HasPrefix(detail, "{") {
		return false
	}
	var d failure
	if json.Unmarshal([]byte(detail), &d) != nil {
		return false
	}
	d.Credentials = f.Credentials
	d.Platform, d.Code, d.Hint = clip(d.Platform, maxPlatform), clip(d.Code, maxCode), clip(d.Hint, maxHint)
	d.WaitMS = clampWait(d.WaitMS)
	*f = d
	return true
}

// err returns the error a waiter returns for f: it matches [tokenmgr.ErrCredentials] or
// [tokenmgr.ErrTemporary] through errors.Is and, when the holder knew them, is a
// [*tokenmgr.PlatformError] with the platform's code, the hint and the wait.
func (f *failure) err(key string) error {
	kind := tokenmgr.ErrTemporary
	if f.Credentials {
		kind = tokenmgr.ErrCredentials
	}
	if f.Code == "" && f.Hint == "" && f.WaitMS == 0 {
		return fmt.Errorf("redisstore: another process failed to refresh %s: %w", key, kind)
	}
	return fmt.Errorf("redisstore: another process failed to refresh %s: %w", key, &tokenmgr.PlatformError{
		Platform: f.Platform,
		Code:     f.Code,
		Message:  "the token fetch failed in another process",
		Hint:     f.Hint,
		Kind:     kind,
		Wait:     time.Duration(f.WaitMS) * time.Millisecond,
	})
}
