package teams

import (
	"context"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"golang.org/x/sync/singleflight"

	"github.com/seed-a64d9e1f/chatwire/adapter"
	"github.com/seed-a64d9e1f/chatwire/tokenmgr"
)

// ChannelTeams is the channel id of Teams activities, which the signing key must endorse.
const ChannelTeams = "msteams"

// A signingKey is one JWK of the Bot Framework key set.
type signingKey struct {
	pub          *rsa.PublicKey
	endorsements []string
}

// keySet fetches and caches the connector's signing keys by hand (spec §1.3: the metadata is
// not OIDC-discovery compliant): the whole set is refreshed when older than refresh, and an
// unknown kid causes a refetch at most once per unknownEvery. Fetches are shared
// (singleflight) and never hold the mutex.
type keySet struct {
	metadataURL  string
	hc           *http.Client
	refresh      time.Duration
	unknownEvery time.Duration
	// fetch replaces fetchKeys in tests; nil means fetchKeys.
	fetch func(ctx context.Context) (map[string]signingKey, error)

	mu          sync.Mutex // guards keys, fetched, lastAttempt and lastFailure
	keys        map[string]signingKey
	fetched     time.Time // last successful fetch
	lastAttempt time.Time // last fetch started
	lastFailure time.Time // last fetch failed; no new fetch for failureFloor after it
	group       singleflight.Group
}

var (
	errUnknownKey = errors.New("signing key not found in the connector's key set")
	// errKeysUnavailable wraps a failed key fetch when no cached key can stand in: the
	// request is answered 503 so Teams redelivers it, not 401.
	errKeysUnavailable = errors.New("the connector's signing keys could not be fetched")
)

// failureFloor is the least time between a failed key fetch and the next one.
const failureFloor = 10 * time.Second

// key returns the key kid.
func (ks *keySet) key(ctx context.Context, kid string) (signingKey, error) {
	now := time.Now()
	ks.mu.Lock()
	k, ok := ks.keys[kid]
	stale := ks.fetched.IsZero() || now.Sub(ks.fetched) >= ks.refresh
	mayRefetch := ks.lastAttempt.IsZero() || now.Sub(ks.lastAttempt) >= ks.unknownEvery
	failing := !ks.lastFailure.IsZero() && now.Sub(ks.lastFailure) < failureFloor
	ks.mu.Unlock()
	if ok && !stale {
		return k, nil
	}
	if !ok && !stale && !mayRefetch {
		return signingKey{}, errUnknownKey // refetched for an unknown kid less than unknownEvery ago
	}
	if failing {
		// The key endpoint failed moments ago: do not hammer it on every request.
		if ok {
			return k, nil
		}
		if stale {
			return signingKey{}, fmt.Errorf("%w: the last fetch failed less than %s ago", errKeysUnavailable, failureFloor)
		}
		return signingKey{}, errUnknownKey
	}
	ch := ks.group.DoChan("keys", func() (any, error) {
		ks.mu.Lock()
		ks.lastAttempt = time.Now()
		ks.mu.Unlock()
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		fetch := ks.fetch
		if fetch == nil {
			fetch = ks.fetchKeys
		}
		keys, err := fetch(fctx)
		if err != nil {
			ks.mu.Lock()
			ks.lastFailure = time.Now()
			ks.mu.Unlock()
			return nil, err
		}
		ks.mu.Lock()
		ks.keys, ks.fetched = keys, time.Now()
		ks.mu.Unlock()
		return nil, nil
	})
	var err error
	select {
	case r := <-ch:
		err = r.Err
	case <-ctx.Done():
		return signingKey{}, ctx.Err()
	}
	ks.mu.Lock()
	nk, found := ks.keys[kid]
	ks.mu.Unlock()
	switch {
	case found:
		return nk, nil
	case ok:
		return k, nil // the refresh failed or dropped the key: keep serving what we had
	case err != nil:
		return signingKey{}, fmt.Errorf("%w: %w", errKeysUnavailable, err)
	}
	return signingKey{}, errUnknownKey
}

// fetchKeys reads the OpenID metadata, then its jwks_uri.
func (ks *keySet) fetchKeys(ctx context.Context) (map[string]signingKey, error) {
	var meta struct {
		JWKSURI string `json:"jwks_uri"`
	}
	if err := ks.getJSON(ctx, ks.metadataURL, &meta); err != nil {
		return nil, err
	}
	if meta.JWKSURI == "" {
		return nil, fmt.Errorf("metadata %s has no jwks_uri", ks.metadataURL)
	}
	var set struct {
		Keys []struct {
			Kty          string   `json:"kty"`
			Kid          string   `json:"kid"`
			N            string   `json:"n"`
			E            string   `json:"e"`
			Endorsements []string `json:"endorsements"`
		} `json:"keys"`
	}
	if err := ks.getJSON(ctx, meta.JWKSURI, &set); err != nil {
		return nil, err
	}
	keys := map[string]signingKey{}
	for _, k := range set.Keys {
		if k.Kty != "RSA" || k.Kid == "" {
			continue
		}
		n, err1 := base64.RawURLEncoding.DecodeString(strings.TrimRight(k.N, "="))
		e, err2 := base64.RawURLEncoding.DecodeString(strings.TrimRight(k.E, "="))
		if err1 != nil || err2 != nil || len(n) < 256 || len(e) == 0 || len(e) > 4 {
			continue // not a usable RSA key (2048 bits at least)
		}
		keys[k.Kid] = signingKey{pub: &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: int(new(big.Int).SetBytes(e).Int64())},
			endorsements: k.Endorsements}
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("key set %s has no usable RSA key", meta.JWKSURI)
	}
	return keys, nil
}

func (ks *keySet) getJSON(ctx context.Context, u string, v any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := ks.hc.Do(req)
	if err != nil {
		return fmt.Errorf("GET %s: %w", u, unwrapURLError(err))
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: HTTP %d", u, resp.StatusCode)
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(v); err != nil {
		return fmt.Errorf("GET %s: %w", u, err)
	}
	return nil
}

// authError is why an inbound request was refused; it never holds the token.
type authError struct {
	reason string
	kid    string
	fp     string // token fingerprint
	err    error
}

func (e *authError) Error() string {
	s := "teams: activity refused: " + e.reason
	if e.kid != "" {
		s += " (kid " + e.kid + ")"
	}
	if e.fp != "" {
		s += " (token fp " + e.fp + ")"
	}
	return s
}

func (e *authError) Unwrap() error { return e.err }

// inbound is the part of the body the checks of §1.2 steps 7 and 8 need.
type inbound struct {
	ServiceURL string `json:"serviceUrl"`
	ChannelID  string `json:"channelId"`
}

// authenticate runs every check of spec §1.2 in order. body must be the request's bytes.
func (a *Adapter) authenticate(ctx context.Context, header http.Header, body []byte) error {
	h := header.Get("Authorization")
	// 1. The scheme is exactly "Bearer".
	if !strings.HasPrefix(h, "Bearer ") || strings.TrimSpace(h[len("Bearer "):]) == "" {
		reason := "no Bearer token in Authorization"
		if h != "" {
			reason = "Authorization is not \"Bearer <token>\""
		}
		return &authError{reason: reason}
	}
	raw := strings.TrimSpace(h[len("Bearer "):])
	fail := &authError{fp: tokenmgr.Fingerprint(raw)}
	var key signingKey
	claims := jwt.MapClaims{}
	parser := jwt.NewParser(
		jwt.WithValidMethods([]string{"RS256"}), // 2. alg
		jwt.WithIssuer(a.opts.ChannelIssuer),    // 4. iss exactly
		jwt.WithAudience(a.opts.AppID),          // 5. aud = app id
		jwt.WithExpirationRequired(),            // 6. exp required,
		jwt.WithLeeway(a.opts.ClockSkew),        //    with 5 minutes of skew
		jwt.WithTimeFunc(time.Now),
	)
	_, err := parser.ParseWithClaims(raw, claims, func(t *jwt.Token) (any, error) {
		kid, _ := t.Header["kid"].(string) // 2. kid selects the key
		fail.kid = kid
		if kid == "" {
			return nil, errors.New("token header has no kid")
		}
		k, err := a.keys.key(ctx, kid)
		if err != nil {
			return nil, err
		}
		key = k
		return k.pub, nil // 3. the signature is checked with it
	})
	if errors.Is(err, errKeysUnavailable) {
		return &adapter.Error{Kind: adapter.KindUnavailable, Platform: Platform, Code: "KeysUnavailable",
			Message: "cannot check the activity's signature: " + err.Error() + " (" + a.opts.OpenIDMetadataURL + ")", Err: err}
	}
	if err != nil {
		fail.reason, fail.err = jwtReason(err), err
		return fail
	}
	var act inbound
	if err := json.Unmarshal(body, &act); err != nil {
		return errBadBody("body is not an activity (JSON object)")
	}
	// 7. serviceurl claim == the activity's serviceUrl (exact, or modulo one trailing "/").
	su, _ := claims["serviceurl"].(string)
	if su == "" {
		fail.reason = "token has no serviceurl claim"
		return fail
	}
	if su != act.ServiceURL && strings.TrimSuffix(su, "/") != strings.TrimSuffix(act.ServiceURL, "/") {
		fail.reason = fmt.Sprintf("serviceurl claim %q does not match the activity's serviceUrl %q", clip(su, 200), clip(act.ServiceURL, 200))
		return fail
	}
	// 8. The signing key endorses the activity's channel, which must be Teams.
	if !slices.Contains(key.endorsements, act.ChannelID) {
		fail.reason = fmt.Sprintf("signing key does not endorse channel %q (endorsements %v)", clip(act.ChannelID, 64), key.endorsements)
		return fail
	}
	if act.ChannelID != ChannelTeams {
		fail.reason = fmt.Sprintf("channel %q is not msteams", clip(act.ChannelID, 64))
		return fail
	}
	return nil
}

func jwtReason(err error) string {
	switch {
	case errors.Is(err, errUnknownKey):
		return "signing key (kid) unknown"
	case errors.Is(err, jwt.ErrTokenMalformed):
		return "token malformed"
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		return "signature invalid"
	case errors.Is(err, jwt.ErrTokenUnverifiable):
		return "token unverifiable: " + err.Error()
	case errors.Is(err, jwt.ErrTokenInvalidIssuer):
		return "issuer is not the channel issuer (" + DefaultIssuer + " in the public cloud)"
	case errors.Is(err, jwt.ErrTokenInvalidAudience):
		return "audience is not this bot's app id"
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing):
		return "token has no exp"
	case errors.Is(err, jwt.ErrTokenExpired):
		return "token expired"
	case errors.Is(err, jwt.ErrTokenNotValidYet):
		return "token not valid yet"
	}
	return "token invalid: " + err.Error()
}

func clip(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}
