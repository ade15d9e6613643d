package redisstore

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/seed-a64d9e1f/chatwire/tokenmgr"
)

// Stored fields start with a format byte:
//
//	'p' + plaintext
//	'e' + key id (8 bytes) + nonce (12 bytes) + AES-256-GCM ciphertext and tag
//
// The key id is the first 8 bytes of SHA-256("chatwire/redisstore key id\x00" + key): it tells
// which key sealed a value, and nothing about the key. The additional data binds a ciphertext
// to its key, field and generation, so a value cannot be moved to another key or replayed as a
// newer generation by someone who can write to Redis but lacks the key.
const (
	formatPlain  = 'p'
	formatSealed = 'e'
	keyIDLen     = 8
)

var errUnreadable = errors.New("redisstore: stored value cannot be read with the configured keys")

// errForeign marks a value sealed with a key this codec does not hold (or sealed while this
// codec has no key at all). Such a value is another host's, probably valid: it is never
// overwritten (see writeScript), unlike a value that is damaged or was planted in the clear.
var errForeign = fmt.Errorf("%w: encrypted with a key this host does not have", errUnreadable)

type sealer struct {
	id   [keyIDLen]byte
	aead cipher.AEAD
}

// codec encodes entry fields, sealing them when a key is configured. It is immutable.
type codec struct {
	seal       *sealer   // nil: store in the clear
	open       []*sealer // keys accepted for reading, the current one first
	readPlain  bool      // with seal: accept values stored in the clear (Options.AcceptPlaintext)
	openKeyIDs string    // the ids of open, concatenated: the sealed values writeScript may replace
}

func newSealer(key []byte) (*sealer, error) {
	if len(key) != 32 {
		return nil, fmt.Errorf("redisstore: encryption key must be 32 bytes (AES-256), got %d", len(key))
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("redisstore: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("redisstore: %w", err)
	}
	s := &sealer{aead: aead}
	sum := sha256.Sum256(append([]byte("chatwire/redisstore key id\x00"), key...))
	copy(s.id[:], sum[:])
	return s, nil
}

func newCodec(key []byte, previous [][]byte, acceptPlain bool) (*codec, error) {
	c := &codec{readPlain: acceptPlain}
	if key == nil {
		if len(previous) > 0 {
			return nil, errors.New("redisstore: PreviousKeys set without EncryptionKey")
		}
		return c, nil
	}
	for i, k := range append([][]byte{key}, previous...) {
		s, err := newSealer(k)
		if err != nil {
			return nil, err
		}
		if i == 0 {
			c.seal = s
		}
		c.open = append(c.open, s)
		c.openKeyIDs += string(s.id[:])
	}
	return c, nil
}

func aad(key, field string, gen uint64) []byte {
	return fmt.Appendf(nil, "chatwire/redisstore\x00%s\x00%s\x00%d", key, field, gen)
}

// encode returns the stored form of plain for field of key at generation gen.
func (c *codec) encode(key, field string, gen uint64, plain []byte) (string, error) {
	if c.seal == nil {
		return string(append([]byte{formatPlain}, plain...)), nil
	}
	nonceSize := c.seal.aead.NonceSize()
	out := make([]byte, 1+keyIDLen+nonceSize, 1+keyIDLen+nonceSize+len(plain)+c.seal.aead.Overhead())
	out[0] = formatSealed
	copy(out[1:], c.seal.id[:])
	nonce := out[1+keyIDLen:]
	if _, err := rand.Read(nonce); err != nil {
		return "", fmt.Errorf("redisstore: nonce: %w", err)
	}
	out = c.seal.aead.Seal(out, nonce, plain, aad(key, field, gen))
	return string(out), nil
}

// decode reverses encode. With a key configured, a value stored in the clear is refused unless
// readPlain is set: it could have been planted by anyone who can write to Redis. A value sealed
// with a key id not among c.open gives errForeign.
func (c *codec) decode(key, field string, gen uint64, stored string) ([]byte, error) {
	if stored == "" {
		return nil, errUnreadable
	}
	b := []byte(stored)
	switch b[0] {
	case formatPlain:
		if c.seal != nil && !c.readPlain {
			return nil, fmt.Errorf("%w: stored in the clear, but encryption is on", errUnreadable)
		}
		return b[1:], nil
	case formatSealed:
		if len(b) < 1+keyIDLen {
			return nil, fmt.Errorf("%w: truncated", errUnreadable)
		}
		id := b[1 : 1+keyIDLen]
		for _, s := range c.open {
			if string(s.id[:]) != string(id) {
				continue
			}
			rest := b[1+keyIDLen:]
			ns := s.aead.NonceSize()
			if len(rest) < ns {
				return nil, fmt.Errorf("%w: truncated", errUnreadable)
			}
			plain, err := s.aead.Open(nil, rest[:ns], rest[ns:], aad(key, field, gen))
			if err != nil {
				return nil, fmt.Errorf("%w: authentication failed", errUnreadable)
			}
			return plain, nil
		}
		if c.seal == nil {
			return nil, fmt.Errorf("%w (none is configured)", errForeign)
		}
		return nil, fmt.Errorf("%w (not EncryptionKey nor one of PreviousKeys)", errForeign)
	}
	return nil, fmt.Errorf("%w: unknown format", errUnreadable)
}

// storedToken is the plaintext of the tok field.
type storedToken struct {
	Value     string    `json:"v"`
	ExpiresAt time.Time `json:"exp,omitzero"`
	Issued    time.Time `json:"iss,omitzero"`
	RefreshAt time.Time `json:"ra,omitzero"` // the platform's refresh hint, if any
}

// fields returns the stored tok and st fields of e (st is "" when e has no state).
func (c *codec) fields(key string, e tokenmgr.Entry) (tok, st string, err error) {
	plain, err := json.Marshal(storedToken{Value: e.Token.Value, ExpiresAt: e.Token.ExpiresAt, Issued: e.Issued, RefreshAt: e.Token.RefreshAt})
	if err != nil {
		return "", "", fmt.Errorf("redisstore: encode token: %w", err)
	}
	if tok, err = c.encode(key, "tok", e.Gen, plain); err != nil {
		return "", "", err
	}
	if len(e.State) > 0 {
		if st, err = c.encode(key, "st", e.Gen, e.State); err != nil {
			return "", "", err
		}
	}
	return tok, st, nil
}

// entry decodes a stored hash. An unreadable field reads as absent and is reported in err
// (wrapping errUnreadable, and errForeign if any field is sealed with a key c lacks) while the
// returned entry keeps its Gen.
func (c *codec) entry(key string, h map[string]string) (tokenmgr.Entry, error) {
	var e tokenmgr.Entry
	g, ok := h["gen"]
	if !ok {
		return e, nil
	}
	gen, err := strconv.ParseUint(g, 10, 64)
	if err != nil {
		return e, fmt.Errorf("%w: bad generation %q", errUnreadable, g)
	}
	e.Gen = gen
	var bad error
	if s, ok := h["tok"]; ok {
		plain, err := c.decode(key, "tok", gen, s)
		var t storedToken
		if err == nil {
			err = json.Unmarshal(plain, &t)
		}
		if err != nil {
			bad = worse(bad, err)
		} else {
			e.Token = tokenmgr.Token{Value: t.Value, ExpiresAt: t.ExpiresAt, RefreshAt: t.RefreshAt}
			e.Issued = t.Issued
		}
	}
	if s, ok := h["st"]; ok {
		plain, err := c.decode(key, "st", gen, s)
		if err != nil {
			bad = worse(bad, err)
		} else {
			e.State = plain
		}
	}
	if bad != nil {
		// Never hand out half an entry: a token whose state cannot be read (or the reverse)
		// is refetched and both are written again.
		e.Token, e.State, e.Issued = tokenmgr.Token{}, nil, time.Time{}
		if !errors.Is(bad, errUnreadable) {
			bad = fmt.Errorf("%w: %v", errUnreadable, bad)
		}
	}
	return e, bad
}

// worse returns the error entry reports when fields fail with a and b (a may be nil): a field
// sealed with a foreign key decides, since it makes the whole entry another host's.
func worse(a, b error) error {
	if a != nil && errors.Is(a, errForeign) {
		return a
	}
	return b
}
