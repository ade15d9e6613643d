package tokenmgr

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"time"
)

// Token is an access token and the time it stops being valid.
type Token struct {
	// Value is the access token itself. It is a secret: log [Fingerprint](Value) instead.
	Value string
	// ExpiresAt is when the platform stops accepting Value. The zero time means the platform
	// gave no expiry: such a token is replaced only when it is invalidated.
	ExpiresAt time.Time
	// RefreshAt, if not zero, is when the platform asks for the token to be refreshed (Entra's
	// refresh_in, read by MSAL as a refresh hint). The Manager refreshes ahead no later than
	// then; a refresh point it computes earlier still wins. The token stays valid until
	// ExpiresAt.
	RefreshAt time.Time

	// Token is 64 bytes (16 + 24 + 24): too large to live in registers, so every caller of
	// Manager.Token copies it through the stack, as four disjoint 16-byte moves. A size that
	// is not a multiple of 16 copies as overlapping moves, which defeat store-to-load
	// forwarding (40 bytes cost 6.9 ns a call against 3.0 ns for 48, BenchmarkFreshToken,
	// amd64): pad a new field to keep it a multiple of 16. Use keyed literals.
}

// A Source fetches a new token from the platform. Token must be safe for concurrent use and
// must send ctx along with any request it makes. Errors should match [ErrCredentials],
// [ErrInvalid] or [ErrTemporary] through errors.Is where the platform says which, and must never
// contain a secret or a token.
//
// Fetching is taken not to extend a token: when a Source hands back a value the [Store] holds
// (or the Manager holds) with a later expiry than the one known for it, while that one is still
// ahead, the token keeps its known expiry. A platform such as WeCom may hand back its current
// token on a repeated fetch with a full lifetime; whichever process of a fleet fetches it again,
// the token is never kept past its real end. Once the known expiry has passed, the same value is
// a new issue and its own expiry is believed.
type Source interface {
	Token(ctx context.Context) (Token, error)
}

// A StatefulSource is a Source whose fetch consumes and produces state that must outlive the
// process, such as an OAuth refresh token that rotates on every use. The [Manager] passes the
// state it has (nil at first) and persists the returned state in the same [Store] write as the
// new token, so a rotated refresh token is never lost or redeemed twice. A nil returned state
// keeps the previous one.
type StatefulSource interface {
	Source
	TokenState(ctx context.Context, state []byte) (Token, []byte, error)
}

// SourceFunc adapts a function to a [Source].
type SourceFunc func(ctx context.Context) (Token, error)

// Token calls f(ctx).
func (f SourceFunc) Token(ctx context.Context) (Token, error) { return f(ctx) }

// Fingerprint returns the first 8 hex digits of the SHA-256 of a token or secret: enough to tell
// two tokens apart in a log, useless to an attacker. The empty string has the empty fingerprint.
func Fingerprint(secret string) string {
	if secret == "" {
		return ""
	}
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:4])
}
