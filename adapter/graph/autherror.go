package graph

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/seed-a64d9e1f/chatwire/tokenmgr"
)

// AuthError is an error from the Microsoft identity platform (the token, authorize or
// devicecode endpoint), parsed from whatever body it sent: the JSON of spec §1.5, an HTML
// sign-in page, or nothing. It never holds a secret or a token.
type AuthError struct {
	StatusCode int    // HTTP status; 0 for an error delivered on a redirect
	ErrorCode  string // OAuth "error": invalid_client, invalid_grant, …; empty if the body had none
	Code       int    // the AADSTS number (first of error_codes), 0 if none was found
	Codes      []int  // every AADSTS number in error_codes
	// Description is error_description without its Trace ID / Correlation ID / Timestamp lines.
	Description string
	SubError    string        // "consent_required", "basic_action", …
	Claims      string        // the claims challenge some errors carry (JSON)
	TraceID     string        // for support requests
	Hint        string        // what to do about it, in plain words; empty if unknown
	Wait        time.Duration // Retry-After on a 429/5xx, zero if absent
}

// aadHints says in plain words how to fix each AADSTS code of spec §1.6.
var aadHints = map[int]string{
	50011:   "the redirect_uri is not registered for the app: register the exact URI (scheme, host, port, path and trailing slash; matching is case-sensitive) under Authentication in the app registration",
	7000215: "the client secret is wrong: use the secret's Value (shown once when it was created), not its Secret ID; create a new secret if the value was lost",
	7000222: "the client secret has expired: create a new one under Certificates & secrets and update the configuration",
	7000218: "no client secret was sent: set client_secret for a confidential app, or enable public client flows for the app registration",
	700016:  "the app (client_id) was not found in this tenant: check tenant_id and client_id, and that the app is registered or consented in that tenant",
	90002:   "the tenant was not found: check tenant_id (a GUID or a verified domain)",
	900144:  "the request lacks a required parameter: this is a client bug or a misconfiguration (empty client_id or grant_type)",
	9001023: "client credentials need a tenant-specific endpoint: set tenant_id to the tenant GUID or domain, not common or consumers",
	70011:   "the scope is not valid: client credentials need https://graph.microsoft.com/.default; delegated scopes must all be for one resource",
	1002012: "client credential flows need a scope ending in /.default (https://graph.microsoft.com/.default)",
	70008:   "the authorization code or refresh token expired or was revoked: sign in again (graph login)",
	70000:   "the authorization code is not valid or has expired (codes last about 10 minutes): sign in again",
	54005:   "the authorization code was already redeemed: codes are single-use; sign in again or use the stored refresh token",
	501481:  "the PKCE code_verifier does not match the code_challenge: redeem the code with the verifier generated for that sign-in",
	700082:  "the refresh token expired after 90 days without use: sign in again (graph login)",
	700084:  "the single-page-app refresh token passed its fixed 24-hour lifetime: sign in again, or register the redirect URI as a public client (mobile and desktop) instead of SPA",
	50173:   "the refresh token was revoked (password change or reset, admin revoke): sign in again (graph login)",
	50076:   "multi-factor authentication is required: sign in interactively (graph login)",
	50079:   "the user must register for multi-factor authentication: sign in interactively (graph login)",
	50078:   "the multi-factor authentication has expired: sign in interactively again",
	65001:   "the user or an administrator has not consented to the app's permissions: sign in interactively to consent, or have an admin grant consent (/adminconsent or Grant admin consent in the portal)",
	65004:   "the user declined to consent to the app's permissions: sign in again and accept, or have an admin grant consent",
	53003:   "Conditional Access blocked the sign-in: ask an administrator which policy applies to this app and user",
	50058:   "no user is signed in (silent sign-in failed): sign in interactively",
	50034:   "the user account does not exist in this tenant: check the user name and tenant",
	50126:   "wrong user name or password",
	50057:   "the user account is disabled: an administrator must enable it",
	90094:   "an administrator must consent to the requested permissions (Grant admin consent)",
	90095:   "an administrator must consent to the requested permissions (Grant admin consent)",
	50196:   "the client asked for tokens in a loop: cache and reuse tokens instead of requesting a new one per call",
	700025:  "the app is a public client, so no client secret may be sent: remove client_secret, or make the app confidential",
	9002313: "the refresh token is malformed or unknown: sign in again (graph login)",
}

// errorHints covers OAuth error values whose AADSTS code is missing or unknown.
var errorHints = map[string]string{
	"invalid_client":          "the client credentials were rejected: check client_id and the client secret value",
	"invalid_grant":           "the grant (code or refresh token) is no longer valid: sign in again (graph login)",
	"unauthorized_client":     "the app is not allowed to use this flow in this tenant: check client_id, tenant_id and the app registration",
	"invalid_scope":           "the requested scope is not valid for this flow",
	"consent_required":        "consent is required: sign in interactively or ask an admin to grant consent",
	"interaction_required":    "the user must sign in interactively (graph login)",
	"access_denied":           "the sign-in was cancelled or refused: sign in again and accept the requested permissions",
	"authorization_declined":  "the user declined the sign-in",
	"expired_token":           "the device code expired before sign-in finished: start graph login again",
	"bad_verification_code":   "the device code is not recognised: start graph login again",
	"temporarily_unavailable": "the identity platform is temporarily unavailable: retry later",
}

// HintFor returns the plain-words fix for an AADSTS code, or "" if there is none.
func HintFor(code int) string { return aadHints[code] }

var aadstsRE = regexp.MustCompile(`AADSTS(\d{5,8})`)

// maxErrorBody bounds how much of an error body is read.
const maxErrorBody = 64 << 10

// ParseAuthError parses an identity platform error response. It accepts any body: JSON as
// documented, an HTML page or text mentioning an AADSTS code, or nothing at all.
func ParseAuthError(status int, header http.Header, body []byte) *AuthError {
	if len(body) > maxErrorBody {
		body = body[:maxErrorBody]
	}
	e := &AuthError{StatusCode: status, Wait: parseRetryAfter(header.Get("Retry-After"), time.Now())}
	var j struct {
		Error       string          `json:"error"`
		Description string          `json:"error_description"`
		Codes       json.RawMessage `json:"error_codes"`
		SubError    string          `json:"suberror"`
		Claims      string          `json:"claims"`
		TraceID     string          `json:"trace_id"`
	}
	if err := json.Unmarshal(body, &j); err == nil && j.Error != "" {
		e.ErrorCode = j.Error
		e.Description = cleanDescription(j.Description)
		e.SubError, e.Claims, e.TraceID = j.SubError, j.Claims, j.TraceID
		var codes []int
		if json.Unmarshal(j.Codes, &codes) == nil {
			e.Codes = codes
		}
	} else {
		text := string(body)
		if strings.Contains(strings.ToLower(text), "<html") || strings.Contains(text, "<body") {
			text = stripTags(text)
		}
		if m := aadstsRE.FindStringIndex(text); m != nil {
			e.Description = cleanDescription(text[m[0]:])
		} else if t := strings.TrimSpace(text); t != "" && status >= 400 {
			e.Description = truncate(t, 200)
		}
	}
	if len(e.Codes) > 0 {
		e.Code = e.Codes[0]
	} else if m := aadstsRE.FindStringSubmatch(e.Description); m != nil {
		e.Code, _ = strconv.Atoi(m[1])
		e.Codes = []int{e.Code}
	}
	// A more specific known code wins for the hint ([70002, 54005]: 54005 says more).
	for _, c := range e.Codes {
		if h := aadHints[c]; h != "" {
			e.Hint = h
			if e.Code == 0 || aadHints[e.Code] == "" {
				e.Code = c
			}
			break
		}
	}
	if e.Hint == "" {
		e.Hint = errorHints[e.SubError]
	}
	if e.Hint == "" {
		e.Hint = errorHints[e.ErrorCode]
	}
	if e.ErrorCode == "" && e.Description == "" && e.Code == 0 {
		e.Description = fmt.Sprintf("HTTP %d with no error details", status)
	}
	return e
}

// cleanDescription keeps the first line of an error_description: the Trace ID, Correlation ID
// and Timestamp lines that follow are noise in a message (TraceID keeps the trace).
func cleanDescription(s string) string {
	if i := strings.IndexAny(s, "\r\n"); i >= 0 {
		s = s[:i]
	}
	if i := strings.Index(s, " Trace ID:"); i >= 0 {
		s = s[:i]
	}
	return truncate(strings.TrimSpace(s), 400)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && n < len(s) && s[n]&0xC0 == 0x80 { // do not cut a UTF-8 sequence
		n--
	}
	return s[:n] + "…"
}

func stripTags(s string) string {
	var b strings.Builder
	in := false
	for _, r := range s {
		switch {
		case r == '<':
			in = true
		case r == '>':
			in = false
			b.WriteByte(' ')
		case !in:
			b.WriteRune(r)
		}
	}
	return strings.Join(strings.Fields(b.String()), " ")
}

// PlatformCode returns the code to show for e: "AADSTS7000215", else the OAuth error.
func (e *AuthError) PlatformCode() string {
	if e.Code != 0 {
		return fmt.Sprintf("AADSTS%d", e.Code)
	}
	if e.ErrorCode != "" {
		return e.ErrorCode
	}
	return strconv.Itoa(e.StatusCode)
}

// PlatformHint returns e.Hint, so stores that share a failure across hosts (redisstore) can
// pass the fix on without knowing this type.
func (e *AuthError) PlatformHint() string { return e.Hint }

func (e *AuthError) Error() string {
	var b strings.Builder
	b.WriteString("graph: identity platform: ")
	if e.ErrorCode != "" {
		b.WriteString(e.ErrorCode)
	} else {
		fmt.Fprintf(&b, "HTTP %d", e.StatusCode)
	}
	if e.Description != "" {
		b.WriteString(": ")
		b.WriteString(e.Description)
	} else if e.Code != 0 {
		fmt.Fprintf(&b, ": AADSTS%d", e.Code)
	}
	if e.Hint != "" {
		b.WriteString(" (fix: ")
		b.WriteString(e.Hint)
		b.WriteString(")")
	}
	return b.String()
}

// Temporary reports whether retrying later may succeed without a configuration change.
func (e *AuthError) Temporary() bool {
	if e.StatusCode == http.StatusTooManyRequests || e.StatusCode >= 500 {
		return true
	}
	switch e.ErrorCode {
	case "temporarily_unavailable", "server_error", "authorization_pending", "slow_down":
		return true
	}
	return false
}

// Is maps e onto the tokenmgr sentinels: credential and grant errors are
// [tokenmgr.ErrCredentials] (a person must act), 429/5xx and temporarily_unavailable are
// [tokenmgr.ErrTemporary].
func (e *AuthError) Is(target error) bool {
	switch target {
	case tokenmgr.ErrTemporary:
		return e.Temporary()
	case tokenmgr.ErrCredentials:
		return !e.Temporary() && (e.ErrorCode != "" || e.Code != 0 || e.StatusCode/100 == 4)
	}
	return false
}

// RetryAfter returns how long the platform asked to wait (see [tokenmgr.RetryAfter]).
func (e *AuthError) RetryAfter() time.Duration { return e.Wait }

// maxRetryAfter caps a Retry-After (seen in practice: 1 to 315 s, spec §3): a longer one is
// taken as this long, so a bogus value neither is ignored nor stalls refreshes for days.
const maxRetryAfter = time.Hour

// parseRetryAfter reads a Retry-After value: delta-seconds or an HTTP date. It returns zero
// for an absent, unreadable, non-finite, zero or past value, and caps it at maxRetryAfter.
func parseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if f, err := strconv.ParseFloat(v, 64); err == nil || errors.Is(err, strconv.ErrRange) {
		switch {
		case math.IsNaN(f) || math.IsInf(f, 0) && err == nil || f <= 0:
			return 0 // "NaN", "Inf", negative: not a delay
		case f >= maxRetryAfter.Seconds():
			return maxRetryAfter
		}
		return time.Duration(f * float64(time.Second))
	}
	if t, err := http.ParseTime(v); err == nil {
		d := t.Sub(now)
		switch {
		case d <= 0:
			return 0
		case d > maxRetryAfter:
			return maxRetryAfter
		}
		return d
	}
	return 0
}
