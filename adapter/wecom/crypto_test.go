package wecom_test

import (
	"bytes"
	"errors"
	"net/url"
	"strings"
	"testing"

	"github.com/seed-a64d9e1f/chatwire/adapter"
	"github.com/seed-a64d9e1f/chatwire/adapter/wecom"
	"github.com/silenceper/wechat/v2/util"
)

// Official vector A (spec §6): URL verification from the WXBizMsgCrypt samples.
const (
	vecToken   = "QDG6eK"
	vecAESKey  = "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C"
	vecCorpID  = "wx5823bf96d3bd56c7"
	vecQuery   = "msg_signature=5c45ff5e21c57e6ad56bac8758b79b1d9ac89fd3&timestamp=1409659589&nonce=263014780&echostr=P9nAzCzyDtyTWESHep1vC5X9xho%2FqYX3Zpb4yKa9SKld1DsH3Iyt3tP3zNdtp%2B4RPcs8TgAE7OaBO%2BFZXvnaqQ%3D%3D"
	vecEchostr = "P9nAzCzyDtyTWESHep1vC5X9xho/qYX3Zpb4yKa9SKld1DsH3Iyt3tP3zNdtp+4RPcs8TgAE7OaBO+FZXvnaqQ=="
	vecPlain   = "1616140317555161061"
)

func TestVectorA(t *testing.T) {
	c, err := wecom.NewCrypto(vecToken, vecAESKey, vecCorpID)
	if err != nil {
		t.Fatal(err)
	}
	if got := c.Signature("1409659589", "263014780", vecEchostr); got != "5c45ff5e21c57e6ad56bac8758b79b1d9ac89fd3" {
		t.Errorf("Signature = %s; want 5c45ff5e…", got)
	}
	if !c.Verify("5c45ff5e21c57e6ad56bac8758b79b1d9ac89fd3", "1409659589", "263014780", vecEchostr) {
		t.Errorf("Verify(vector A) = false")
	}
	msg, err := c.Decrypt(vecEchostr)
	if err != nil || string(msg) != vecPlain {
		t.Errorf("Decrypt(vector A) = %q, %v; want %q", msg, err, vecPlain)
	}

	// The same request through the Client's webhook handler: the body is the bare plaintext.
	client, err := wecom.New(wecom.Config{CorpID: vecCorpID, CorpSecret: "x", AgentID: 1, Token: vecToken, EncodingAESKey: vecAESKey}, wecom.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	q, _ := url.ParseQuery(vecQuery)
	resp, events, err := client.HandleWebhook(t.Context(), &adapter.WebhookRequest{Method: "GET", Path: "/cgi-bin/wxpush", Query: q})
	if err != nil || resp.Status != 200 || string(resp.Body) != vecPlain || len(events) != 0 {
		t.Errorf("HandleWebhook(vector A) = %d %q, %d events, %v; want 200 %q", resp.Status, resp.Body, len(events), err, vecPlain)
	}
}

func TestSignatureMatchesSilenceper(t *testing.T) {
	if got := util.Signature("a", "b", "c"); got != "a9993e364706816aba3e25717850c26c9cd0d89d" {
		t.Fatalf("util.Signature(a,b,c) = %s", got)
	}
	c, _ := wecom.NewCrypto("tok", vecAESKey, vecCorpID)
	for i, in := range [][3]string{{"1", "2", "3"}, {"", "", ""}, {"zzz", "AAA", "mmm"}, {"1409659589", "263014780", vecEchostr}} {
		if got, want := c.Signature(in[0], in[1], in[2]), util.Signature("tok", in[0], in[1], in[2]); got != want {
			t.Errorf("case %d: Signature = %s; silenceper says %s", i, got, want)
		}
	}
}

// TestCryptoCompat encrypts with one implementation and decrypts with the other, across the
// padding boundaries (a plaintext of a multiple of 32 bytes gets a full pad block).
func TestCryptoCompat(t *testing.T) {
	c, _ := wecom.NewCrypto(vecToken, vecAESKey, vecCorpID)
	random := []byte("0123456789abcdef")
	for n := 0; n <= 130; n++ {
		msg := bytes.Repeat([]byte{'x'}, n)
		ours := c.EncryptWith(random, msg)
		theirs, err := util.EncryptMsg(random, msg, vecCorpID, vecAESKey)
		if err != nil {
			t.Fatal(err)
		}
		if ours != string(theirs) {
			t.Fatalf("len %d: EncryptWith differs from util.EncryptMsg", n)
		}
		if _, got, err := util.DecryptMsg(vecCorpID, ours, vecAESKey); err != nil || !bytes.Equal(got, msg) {
			t.Fatalf("len %d: util.DecryptMsg(ours) = %q, %v", n, got, err)
		}
		if got, err := c.Decrypt(string(theirs)); err != nil || !bytes.Equal(got, msg) {
			t.Fatalf("len %d: Decrypt(silenceper's) = %q, %v", n, got, err)
		}
	}
	enc, err := c.Encrypt([]byte("random each time"))
	if err != nil {
		t.Fatal(err)
	}
	enc2, _ := c.Encrypt([]byte("random each time"))
	if enc == enc2 {
		t.Errorf("Encrypt used the same random prefix twice")
	}
}

func TestDecryptErrors(t *testing.T) {
	c, _ := wecom.NewCrypto(vecToken, vecAESKey, vecCorpID)
	other, _ := wecom.NewCrypto(vecToken, vecAESKey, "wwSomeoneElse")
	random := []byte("0123456789abcdef")
	tests := []struct {
		name string
		in   string
		want error
	}{
		{"not base64", "***", wecom.ErrDecrypt},
		{"empty", "", wecom.ErrDecrypt},
		{"short", "AAAA", wecom.ErrDecrypt},
		{"not block multiple", "QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQQ==", wecom.ErrDecrypt},
		{"garbage blocks", strings.Repeat("A", 64), wecom.ErrDecrypt},
		{"other corp", other.EncryptWith(random, []byte("hi")), wecom.ErrReceiveID},
		{"truncated", vecEchostr[:44], wecom.ErrDecrypt},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := c.Decrypt(tc.in); !errors.Is(err, tc.want) {
				t.Errorf("Decrypt(%q) error = %v; want %v", tc.in, err, tc.want)
			}
		})
	}
}

func TestNewCryptoErrors(t *testing.T) {
	tests := []struct{ token, key string }{
		{"", vecAESKey},
		{"t", "short"},
		{"t", strings.Repeat("!", 43)},
	}
	for _, tc := range tests {
		_, err := wecom.NewCrypto(tc.token, tc.key, "c")
		if err == nil {
			t.Errorf("NewCrypto(%q, %q) = nil error", tc.token, tc.key)
		}
		if err != nil && tc.key != "short" && strings.Contains(err.Error(), tc.key) {
			t.Errorf("error leaks the key: %v", err)
		}
	}
}
