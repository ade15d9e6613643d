package wecom_test

import (
	"testing"
	"time"

	"github.com/seed-a64d9e1f/chatwire/adapter"
	"github.com/seed-a64d9e1f/chatwire/adapter/wecom"
	"github.com/seed-a64d9e1f/chatwire/adapter/wecom/wecomtest"
	"github.com/silenceper/wechat/v2/util"
)

// benchPush returns a real callback POST: a text message like the captured one in spec §5.4.
func benchPush(b *testing.B) (*adapter.WebhookRequest, string) {
	b.Helper()
	cb := wecomtest.Callback{Token: testToken, EncodingAESKey: testAESKey, CorpID: testCorp, AgentID: testAgent}
	msg := wecomtest.TextMessage(testCorp, testAgent, "bono", "nihao", 7468881572160813124, time.Now())
	body, q, err := wecomtest.Encrypt(cb, msg, time.Now().Unix(), "263014780")
	if err != nil {
		b.Fatal(err)
	}
	var env struct{ Encrypt string }
	// The ciphertext alone, for the silenceper baseline.
	start := len("<xml><ToUserName><![CDATA[" + testCorp + "]]></ToUserName><Encrypt><![CDATA[")
	end := start
	for end < len(body) && body[end] != ']' {
		end++
	}
	env.Encrypt = string(body[start:end])
	return &adapter.WebhookRequest{Method: "POST", Path: "/webhook/hr", Query: q, Body: body}, env.Encrypt
}

// BenchmarkCallback is the whole inbound path: parse the envelope, verify msg_signature,
// check the timestamp, decrypt, check receiveid, parse the message into an event.
func BenchmarkCallback(b *testing.B) {
	req, _ := benchPush(b)
	c, err := wecom.New(testConfig(), wecom.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	b.ReportAllocs()
	start := time.Now()
	for b.Loop() {
		_, events, err := c.HandleWebhook(b.Context(), req)
		if err != nil || len(events) != 1 {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "ops/s")
}

// BenchmarkDecrypt is this package's decryption alone, to compare with silenceper's.
func BenchmarkDecrypt(b *testing.B) {
	_, enc := benchPush(b)
	cr, _ := wecom.NewCrypto(testToken, testAESKey, testCorp)
	b.ReportAllocs()
	start := time.Now()
	for b.Loop() {
		if _, err := cr.Decrypt(enc); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "ops/s")
}

// BenchmarkSilenceperDecryptMsg is silenceper's util.DecryptMsg alone (no signature check,
// no parsing): the baseline.
func BenchmarkSilenceperDecryptMsg(b *testing.B) {
	_, enc := benchPush(b)
	b.ReportAllocs()
	start := time.Now()
	for b.Loop() {
		if _, _, err := util.DecryptMsg(testCorp, enc, testAESKey); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "ops/s")
}
