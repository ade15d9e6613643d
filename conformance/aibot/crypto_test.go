package aibot_test

import (
	"bytes"
	"encoding/json"
	"net/url"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/seed-a64d9e1f/chatwire/adapter"
	"github.com/seed-a64d9e1f/chatwire/adapter/wecom/aibot"
)

// Vector B (specs/wecom-aibot.md §5).
const (
	vbToken = "aibotSpecTok3n"
	vbKey   = "B4U9TpUs1NdxK5ikMvAO5vLcjeK9Wi3iTsv6NRhjL5M"
	vbSig   = "38c3a98556aaf00b190cb8d1d10621fdc564ec86"
	vbEnc   = "GXd6WVtus+F6/uuOgfAT6lkpNNzIIH5w1uAJFJ/ChC0iACR2LYqgJwwTBGZ83krPVD1EHs59Y/tcIY9ahYQATPyq+7R5y6/7ko4nVOGxe+3q3Q3fTOE3A5UE6WiL+hW8qF8NR/hVsCtWhVldpB5LmPvKmzjPBXv0yBM72gRQgVDRQqsOD0/WnFIXU6nI9JkmgO5U0YwNHrIwnsNVgmx0woBOKoj5aoePQ5gNl5SiGTvGTGp6pbPiR/sVnI5JKPQ7WptHdkAZxgU1NvR1vlk9B2Y5bzdU3ADPgvsAnMUkdKV+/HxFmTZ4snmSyXRput3L7qlHbYDecYJ1CxlgF1zI1IY81p9P030LwcUERt+/jyfB+ihhXaGk2dr+ynnYOe+ZxnD6gHAbs6+y9e6pQYTdqq081cSATe9LQW9hIPQgZ8G1Ax1tJzWywTuE1ZMsNWq73PHBDTvPLP7F3tYXCLHfHA=="
	vbPlain = `{"msgid":"CAIQ16HMjQYY/NGagIOAgAMgq4KM0AI=","aibotid":"aibSPECBOT0001","chatid":"wrkSFfCgAAtestchat","chattype":"group","from":{"userid":"zhangsan"},"response_url":"https://qyapi.weixin.qq.com/cgi-bin/aibot/response?response_code=RESPONSE_CODE","msgtype":"text","text":{"content":"@RobotA hello robot"}}`
)

type cryptoOp struct {
	Op        string `json:"op"`
	Key       string `json:"key,omitempty"`
	Message   string `json:"message,omitempty"`
	ID        string `json:"id"`
	Random    string `json:"random,omitempty"`
	Encrypt   string `json:"encrypt,omitempty"`
	Token     string `json:"token,omitempty"`
	Timestamp string `json:"timestamp,omitempty"`
	Nonce     string `json:"nonce,omitempty"`
}

type cryptoResult struct {
	Encrypt, Message, ID, Random, Signature, Error string
}

// wecomCrypto runs ops through the official @wecom/crypto (node/wecom-crypto.js).
func wecomCrypto(t *testing.T, ops ...cryptoOp) []cryptoResult {
	t.Helper()
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatalf("node is not installed: %s", installHint)
	}
	script, _ := filepath.Abs(filepath.Join("..", "node", "wecom-crypto.js"))
	in, _ := json.Marshal(ops)
	cmd := exec.CommandContext(t.Context(), node, script)
	cmd.Stdin = bytes.NewReader(in)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("node wecom-crypto.js: %v: %s\n%s", err, stderr.Bytes(), installHint)
	}
	var out []cryptoResult
	if err := json.Unmarshal(stdout.Bytes(), &out); err != nil || len(out) != len(ops) {
		t.Fatalf("node output %.200s: %v", stdout.Bytes(), err)
	}
	for i, r := range out {
		if r.Error != "" {
			t.Fatalf("@wecom/crypto %s: %s", ops[i].Op, r.Error)
		}
	}
	return out
}

func TestVectorBWithWecomCrypto(t *testing.T) {
	r := wecomCrypto(t,
		cryptoOp{Op: "decrypt", Key: vbKey, Encrypt: vbEnc},
		cryptoOp{Op: "sign", Token: vbToken, Timestamp: "1700000000", Nonce: "1372623149", Encrypt: vbEnc},
		cryptoOp{Op: "encrypt", Key: vbKey, Message: vbPlain, ID: "", Random: "00112233445566778899aabbccddeeff"})
	if r[0].Message != vbPlain || r[0].ID != "" || r[0].Random != "00112233445566778899aabbccddeeff" {
		t.Errorf("@wecom/crypto decrypts vector B to %q (id %q, random %s)", r[0].Message, r[0].ID, r[0].Random)
	}
	if r[1].Signature != vbSig {
		t.Errorf("@wecom/crypto signs vector B as %s; want %s", r[1].Signature, vbSig)
	}
	if r[2].Encrypt != vbEnc {
		t.Errorf("@wecom/crypto encrypts vector B's plaintext differently:\n%s", r[2].Encrypt)
	}
}

// TestWecomCryptoCallbacksAccepted: callbacks encrypted and signed by @wecom/crypto are
// accepted by the adapter's webhook mode, and its passive replies decrypt and verify with
// @wecom/crypto (receiveid "").
func TestWecomCryptoCallbacksAccepted(t *testing.T) {
	bot, err := aibot.New(aibot.Options{Token: vbToken, EncodingAESKey: vbKey, Welcome: "欢迎"})
	if err != nil {
		t.Fatal(err)
	}
	defer bot.Close()
	ts := strconv.FormatInt(time.Now().Unix(), 10)
	callbacks := []string{
		`{"msgid":"CW1","aibotid":"BOT1","chattype":"single","from":{"userid":"zhangsan"},"response_url":"https://example.invalid/r","msgtype":"text","text":{"content":"你好 <&> \"quoted\""}}`,
		`{"msgid":"CW2","create_time":1700000000,"aibotid":"BOT1","chattype":"single","from":{"userid":"zhangsan"},"msgtype":"event","event":{"eventtype":"enter_chat"}}`,
	}
	ops := []cryptoOp{{Op: "encrypt", Key: vbKey, Message: "echo-1234", ID: ""}}
	for _, c := range callbacks {
		ops = append(ops, cryptoOp{Op: "encrypt", Key: vbKey, Message: c, ID: ""})
	}
	enc := wecomCrypto(t, ops...)
	var signOps []cryptoOp
	for i := range enc {
		signOps = append(signOps, cryptoOp{Op: "sign", Token: vbToken, Timestamp: ts, Nonce: "n" + strconv.Itoa(i), Encrypt: enc[i].Encrypt})
	}
	sig := wecomCrypto(t, signOps...)

	// URL verification with an echostr from @wecom/crypto.
	resp, _, err := bot.HandleWebhook(t.Context(), &adapter.WebhookRequest{Method: "GET",
		Query: url.Values{"msg_signature": {sig[0].Signature}, "timestamp": {ts}, "nonce": {"n0"}, "echostr": {enc[0].Encrypt}}})
	if err != nil || string(resp.Body) != "echo-1234" {
		t.Fatalf("URL verification = %q, %v", resp.Body, err)
	}

	wantText := []string{"你好 <&> \"quoted\"", "enter_chat"}
	var replies []string
	for i := range callbacks {
		body, _ := json.Marshal(map[string]string{"encrypt": enc[i+1].Encrypt})
		resp, evs, err := bot.HandleWebhook(t.Context(), &adapter.WebhookRequest{Method: "POST", Body: body,
			Query: url.Values{"msg_signature": {sig[i+1].Signature}, "timestamp": {ts}, "nonce": {"n" + strconv.Itoa(i+1)}}})
		if err != nil || resp.Status != 200 || len(evs) != 1 || evs[0].Text != wantText[i] {
			t.Fatalf("callback %d: %+v, %+v, %v", i, resp, evs, err)
		}
		var env struct{ Encrypt, Msgsignature, Timestamp, Nonce string }
		if err := json.Unmarshal(resp.Body, &env); err != nil || env.Nonce != "n"+strconv.Itoa(i+1) {
			t.Fatalf("passive reply %d = %s", i, resp.Body)
		}
		r := wecomCrypto(t, cryptoOp{Op: "decrypt", Key: vbKey, Encrypt: env.Encrypt},
			cryptoOp{Op: "sign", Token: vbToken, Timestamp: env.Timestamp, Nonce: env.Nonce, Encrypt: env.Encrypt})
		if r[0].ID != "" || r[1].Signature != env.Msgsignature {
			t.Errorf("passive reply %d: id %q, signature %s; @wecom/crypto signs %s", i, r[0].ID, env.Msgsignature, r[1].Signature)
		}
		replies = append(replies, r[0].Message)
	}
	var stream struct {
		MsgType string `json:"msgtype"`
		Stream  struct {
			ID     string `json:"id"`
			Finish bool   `json:"finish"`
		} `json:"stream"`
	}
	if json.Unmarshal([]byte(replies[0]), &stream) != nil || stream.MsgType != "stream" || stream.Stream.ID == "" || stream.Stream.Finish {
		t.Errorf("reply to a message = %s; want an open stream", replies[0])
	}
	if replies[1] != `{"msgtype":"text","text":{"content":"欢迎"}}` {
		t.Errorf("reply to enter_chat = %s", replies[1])
	}
}
