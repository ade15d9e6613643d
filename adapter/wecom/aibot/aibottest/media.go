package aibottest

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"net/http"
	"net/url"
	"strings"
	"time"
)

type mediaFile struct {
	data     []byte // encrypted
	filename string
	at       time.Time
}

// AddMedia stores data as a file named filename, encrypted with a fresh per-URL aeskey as
// the long connection does, and returns its URL (on host, e.g. the httptest listener's
// "127.0.0.1:N") and the 43-character aeskey a callback carries.
func (s *Server) AddMedia(host string, data []byte, filename string) (mediaURL, aeskey string) {
	key := make([]byte, 32)
	rand.Read(key)
	aeskey = base64.RawStdEncoding.EncodeToString(key)
	return s.AddMediaWithKey(host, data, filename, aeskey), aeskey
}

// AddMediaWithKey is AddMedia with a given 43-character key (the webhook's EncodingAESKey).
func (s *Server) AddMediaWithKey(host string, data []byte, filename, aeskey string) string {
	s.init()
	enc, err := EncryptMedia(aeskey, data)
	if err != nil {
		panic("aibottest: " + err.Error())
	}
	id := randHex(12)
	s.mu.Lock()
	s.media[id] = &mediaFile{data: enc, filename: filename, at: time.Now()}
	s.mu.Unlock()
	return "http://" + host + "/media/" + id
}

// EncryptMedia encrypts data as WeCom's media: AES-256-CBC, key = base64(aeskey), IV =
// key[:16], PKCS#7 padding to a multiple of 32.
func EncryptMedia(aeskey string, data []byte) ([]byte, error) {
	key, err := base64.RawStdEncoding.DecodeString(strings.TrimRight(aeskey, "="))
	if err != nil {
		return nil, err
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	pad := 32 - len(data)%32
	buf := append(append([]byte(nil), data...), bytes.Repeat([]byte{byte(pad)}, pad)...)
	cipher.NewCBCEncrypter(block, key[:16]).CryptBlocks(buf, buf)
	return buf, nil
}

func (s *Server) serveMedia(w http.ResponseWriter, r *http.Request) {
	id := strings.TrimPrefix(r.URL.Path, "/media/")
	s.mu.Lock()
	m := s.media[id]
	s.mu.Unlock()
	if m == nil || time.Since(m.at) > or(s.MediaTTL, 5*time.Minute) {
		http.Error(w, "media expired or unknown", http.StatusNotFound)
		return
	}
	// WeCom's form: filename percent-encoded, "+" for a space.
	w.Header().Set("Content-Disposition", `attachment; filename="`+url.QueryEscape(m.filename)+`"`)
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Write(m.data)
}
