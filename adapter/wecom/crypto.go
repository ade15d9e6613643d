package wecom

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha1"
	"crypto/subtle"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
)

// Errors of [Crypto]. They say what failed, never what the key or token is.
var (
	ErrSignature = errors.New("wecom: callback signature mismatch")
	ErrDecrypt   = errors.New("wecom: callback payload does not decrypt")
	ErrReceiveID = errors.New("wecom: callback is for another corp (receiveid mismatch)")
)

// Crypto signs, verifies, encrypts and decrypts WeCom callback payloads (WXBizMsgCrypt:
// SHA-1 signatures over the sorted token, timestamp, nonce and ciphertext; AES-256-CBC with
// IV = key[:16], PKCS#7 padding to 32 bytes, plaintext random(16)|len(4, BE)|msg|receiveid).
// It is compatible with silenceper's util.EncryptMsg/DecryptMsg (tested), but keeps the
// cipher ready instead of decoding the key on every message. Safe for concurrent use.
type Crypto struct {
	token     string
	receiveID string
	block     cipher.Block
	iv        []byte
}

// NewCrypto returns a Crypto for the callback Token and 43-character EncodingAESKey, checking
// receiveID (the corp id for app callbacks) on decryption.
func NewCrypto(token, encodingAESKey, receiveID string) (*Crypto, error) {
	if token == "" {
		return nil, errors.New("wecom: config: callback token is empty")
	}
	if len(encodingAESKey) != 43 {
		return nil, fmt.Errorf("wecom: config: encoding_aes_key has %d characters; want 43", len(encodingAESKey))
	}
	key, err := base64.StdEncoding.DecodeString(encodingAESKey + "=")
	if err != nil || len(key) != 32 {
		return nil, errors.New("wecom: config: encoding_aes_key is not valid base64 of 32 bytes")
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("wecom: config: encoding_aes_key: %w", err)
	}
	return &Crypto{token: token, receiveID: receiveID, block: block, iv: key[:16]}, nil
}

// Signature returns the lower-case hex SHA-1 signature of timestamp, nonce and encrypted
// (the ciphertext of a POST, or the echostr of a GET).
func (c *Crypto) Signature(timestamp, nonce, encrypted string) string {
	var sum [sha1.Size]byte
	c.sign(&sum, timestamp, nonce, encrypted)
	return hex.EncodeToString(sum[:])
}

func (c *Crypto) sign(sum *[sha1.Size]byte, timestamp, nonce, encrypted string) {
	p := [4]string{c.token, timestamp, nonce, encrypted}
	// Insertion sort: four strings, no allocation.
	for i := 1; i < len(p); i++ {
		for j := i; j > 0 && p[j] < p[j-1]; j-- {
			p[j], p[j-1] = p[j-1], p[j]
		}
	}
	n := len(p[0]) + len(p[1]) + len(p[2]) + len(p[3])
	var stack [512]byte
	buf := stack[:0]
	if n > len(stack) {
		buf = make([]byte, 0, n)
	}
	for _, s := range p {
		buf = append(buf, s...)
	}
	*sum = sha1.Sum(buf)
}

// Verify reports whether signature is the signature of timestamp, nonce and encrypted,
// comparing in constant time.
func (c *Crypto) Verify(signature, timestamp, nonce, encrypted string) bool {
	if len(signature) != 2*sha1.Size {
		return false
	}
	var want, got [sha1.Size]byte
	if _, err := hex.Decode(got[:], []byte(signature)); err != nil {
		return false
	}
	c.sign(&want, timestamp, nonce, encrypted)
	return subtle.ConstantTimeCompare(want[:], got[:]) == 1
}

const padBlock = 32

// Decrypt decodes and decrypts a base64 payload and returns its message, after checking the
// padding, the length field and that the receiveid is this Crypto's. It never panics.
func (c *Crypto) Decrypt(encrypted string) ([]byte, error) {
	buf := make([]byte, base64.StdEncoding.DecodedLen(len(encrypted)))
	n, err := base64.StdEncoding.Decode(buf, []byte(encrypted))
	if err != nil {
		return nil, fmt.Errorf("%w: bad base64", ErrDecrypt)
	}
	buf = buf[:n]
	if len(buf) < padBlock || len(buf)%aes.BlockSize != 0 {
		return nil, fmt.Errorf("%w: ciphertext length %d", ErrDecrypt, len(buf))
	}
	cipher.NewCBCDecrypter(c.block, c.iv).CryptBlocks(buf, buf)
	pad := int(buf[len(buf)-1])
	if pad < 1 || pad > padBlock || pad > len(buf) {
		return nil, fmt.Errorf("%w: bad padding", ErrDecrypt)
	}
	buf = buf[:len(buf)-pad]
	if len(buf) < 20 {
		return nil, fmt.Errorf("%w: plaintext too short", ErrDecrypt)
	}
	size := binary.BigEndian.Uint32(buf[16:20])
	if uint64(size) > uint64(len(buf)-20) {
		return nil, fmt.Errorf("%w: bad length field", ErrDecrypt)
	}
	msg, rid := buf[20:20+size], buf[20+size:]
	if string(rid) != c.receiveID {
		return nil, ErrReceiveID
	}
	return msg[:len(msg):len(msg)], nil
}

// Encrypt encrypts msg for this Crypto's receiveid with 16 random bytes and returns the
// base64 ciphertext.
func (c *Crypto) Encrypt(msg []byte) (string, error) {
	var random [16]byte
	if _, err := rand.Read(random[:]); err != nil {
		return "", err
	}
	return c.EncryptWith(random[:], msg), nil
}

// EncryptWith is Encrypt with the caller's 16 random bytes (for reproducible tests).
func (c *Crypto) EncryptWith(random, msg []byte) string {
	n := 20 + len(msg) + len(c.receiveID)
	pad := padBlock - n%padBlock
	buf := make([]byte, n+pad)
	copy(buf[:16], random)
	binary.BigEndian.PutUint32(buf[16:20], uint32(len(msg)))
	copy(buf[20:], msg)
	copy(buf[20+len(msg):], c.receiveID)
	for i := n; i < len(buf); i++ {
		buf[i] = byte(pad)
	}
	cipher.NewCBCEncrypter(c.block, c.iv).CryptBlocks(buf, buf)
	return base64.StdEncoding.EncodeToString(buf)
}
