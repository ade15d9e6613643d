package wecom_test

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/xml"
	"io"
	"net/http"
	"net/url"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/seed-a64d9e1f/chatwire/adapter"
	"github.com/seed-a64d9e1f/chatwire/adapter/wecom"
	"github.com/seed-a64d9e1f/chatwire/adapter/wecom/wecomtest"
)

// app is one WeCom app's callback settings, fresh for each test.
type app struct {
	token, key, corp string
	agent            int64
}

func newApp(t *testing.T) app {
	var k [32]byte
	rand.Read(k[:])
	key := strings.TrimSuffix(base64.StdEncoding.EncodeToString(k[:]), "=")
	if len(key) != 43 {
		t.Fatalf("key %d chars", len(key))
	}
	return app{token: "tok" + hex.EncodeToString(k[:4]), key: key, corp: caseCorp, agent: caseAgent}
}

func (a app) client(t *testing.T) *wecom.Client {
	t.Helper()
	c, err := wecom.New(wecom.Config{Bot: "conf", CorpID: a.corp, CorpSecret: "unused", AgentID: a.agent,
		Token: a.token, EncodingAESKey: a.key}, wecom.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func (a app) callback(u string) wecomtest.Callback {
	return wecomtest.Callback{URL: u, Token: a.token, EncodingAESKey: a.key, CorpID: a.corp, AgentID: a.agent}
}

// envelope is the POST body WeCom sends (spec §5.2; order as in the official sample).
func envelope(corp, encrypted string, agent int64) []byte {
	return []byte("<xml><ToUserName><![CDATA[" + corp + "]]></ToUserName><Encrypt><![CDATA[" + encrypted +
		"]]></Encrypt><AgentID><![CDATA[" + strconv.FormatInt(agent, 10) + "]]></AgentID></xml>")
}

// vendorSeal encrypts and signs every plaintext with the official @wecom/crypto package and
// returns the POST bodies and queries WeCom would send.
func vendorSeal(t *testing.T, a app, plains []string, ts int64) (bodies [][]byte, queries []url.Values) {
	t.Helper()
	ops := make([]nodeOp, len(plains))
	for i, p := range plains {
		ops[i] = nodeOp{Op: "encrypt", Key: a.key, Message: p, ID: a.corp}
	}
	enc := wecomCrypto(t, ops)
	tss := strconv.FormatInt(ts, 10)
	for i, r := range enc {
		if r.Error != "" || r.Encrypt == "" {
			t.Fatalf("@wecom/crypto encrypt #%d: %q", i, r.Error)
		}
		ops[i] = nodeOp{Op: "sign", Token: a.token, Timestamp: tss, Nonce: "n" + strconv.Itoa(i), Encrypt: r.Encrypt}
	}
	sig := wecomCrypto(t, ops)
	for i, r := range sig {
		if r.Error != "" || len(r.Signature) != 40 {
			t.Fatalf("@wecom/crypto sign #%d: %q", i, r.Error)
		}
		bodies = append(bodies, envelope(a.corp, enc[i].Encrypt, a.agent))
		queries = append(queries, url.Values{"msg_signature": {r.Signature}, "timestamp": {tss}, "nonce": {ops[i].Nonce}})
	}
	return bodies, queries
}

// TestVendorEncryptedCallbacksParse: callbacks encrypted and signed by @wecom/crypto are
// accepted by chatwire, and every field of the event is what encoding/xml reads from the
// plaintext.
func TestVendorEncryptedCallbacksParse(t *testing.T) {
	a := newApp(t)
	c := a.client(t)
	cases := callbackCases(t)
	plains := make([]string, len(cases))
	for i, cs := range cases {
		plains[i] = cs.plain
	}
	bodies, queries := vendorSeal(t, a, plains, time.Now().Unix())
	for i, cs := range cases {
		t.Run(cs.name, func(t *testing.T) {
			resp, events, err := c.HandleWebhook(context.Background(), &adapter.WebhookRequest{
				Method: http.MethodPost, Path: "/webhook/conf", Query: queries[i], Body: bodies[i]})
			if err != nil || resp.Status != http.StatusOK || len(events) != 1 {
				t.Fatalf("HandleWebhook = %+v, %d events, %v; want 200 and one event", resp, len(events), err)
			}
			checkEvent(t, []byte(cs.plain), events[0])
		})
	}
}

// checkEvent compares an event with what encoding/xml reads from its plaintext.
func checkEvent(t *testing.T, plain []byte, ev adapter.Event) {
	t.Helper()
	want, err := oracleParse(plain)
	if err != nil {
		t.Fatalf("encoding/xml: %v", err)
	}
	var raw map[string]any
	if err := json.Unmarshal(ev.Raw, &raw); err != nil {
		t.Fatalf("Raw is not a JSON object: %v: %.200s", err, ev.Raw)
	}
	if !reflect.DeepEqual(raw, want) {
		t.Errorf("Raw differs from encoding/xml:\n got %.600v\nwant %.600v", raw, want)
	}
	s := func(k string) string { v, _ := want[k].(string); return v }
	if ev.Sender.ID != s("FromUserName") {
		t.Errorf("Sender.ID = %q; want %q", ev.Sender.ID, s("FromUserName"))
	}
	if ct, _ := strconv.ParseInt(s("CreateTime"), 10, 64); !ev.Time.Equal(time.Unix(ct, 0)) {
		t.Errorf("Time = %v; want CreateTime %d", ev.Time, ct)
	}
	if id := s("MsgId"); id != "" && !strings.Contains(ev.ID, id) {
		t.Errorf("ID = %q; want it to carry MsgId %s exactly", ev.ID, id)
	}
	att := func() adapter.Attachment {
		if len(ev.Attachments) != 1 {
			t.Fatalf("%d attachments; want 1", len(ev.Attachments))
		}
		return ev.Attachments[0]
	}
	switch typ := s("MsgType"); typ {
	case "text":
		if ev.Text != s("Content") {
			t.Errorf("Text = %.80q; want Content %.80q", ev.Text, s("Content"))
		}
	case "image":
		if a := att(); a.Type != adapter.AttachImage || a.ID != s("MediaId") || a.URL != s("PicUrl") {
			t.Errorf("attachment = %+v; want image %s at %s", a, s("MediaId"), s("PicUrl"))
		}
	case "voice", "video":
		if a := att(); a.Type != typ || a.ID != s("MediaId") {
			t.Errorf("attachment = %+v; want %s %s", a, typ, s("MediaId"))
		}
	case "location":
		if a := att(); a.Type != adapter.AttachLocation || a.Title != s("Label") ||
			a.Description != s("Location_X")+","+s("Location_Y") {
			t.Errorf("attachment = %+v; want location %s", a, s("Label"))
		}
	case "link":
		if a := att(); a.Type != adapter.AttachLink || a.URL != s("Url") || a.Title != s("Title") || a.Description != s("Description") {
			t.Errorf("attachment = %+v; want link %s", a, s("Url"))
		}
	case "event":
		if ev.Kind != adapter.EventNotice || ev.Text != s("Event") {
			t.Errorf("Kind %q Text %q; want notice %q", ev.Kind, ev.Text, s("Event"))
		}
	default:
		t.Fatalf("fixture has MsgType %q", typ)
	}
}

// TestVendorEchostrVerifies: URL verification GETs built with @wecom/crypto (the official
// vector A of spec §6 among them) are answered with the decrypted echo.
func TestVendorEchostrVerifies(t *testing.T) {
	// Vector A: the official WXBizMsgCrypt sample's config and GET (spec §6).
	const vecToken, vecKey, vecCorp = "QDG6eK", "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C", "wx5823bf96d3bd56c7"
	const vecEcho = "P9nAzCzyDtyTWESHep1vC5X9xho/qYX3Zpb4yKa9SKld1DsH3Iyt3tP3zNdtp+4RPcs8TgAE7OaBO+FZXvnaqQ=="
	a := newApp(t)
	echoes := []string{"1616140317555161061", "5927782489442352469", "中文 echo", "a+b/c=d&e"}
	ops := []nodeOp{
		{Op: "decrypt", Key: vecKey, Encrypt: vecEcho},
		{Op: "sign", Token: vecToken, Timestamp: "1409659589", Nonce: "263014780", Encrypt: vecEcho},
	}
	for _, e := range echoes {
		ops = append(ops, nodeOp{Op: "encrypt", Key: a.key, Message: e, ID: a.corp})
	}
	res := wecomCrypto(t, ops)
	if res[0].Message != "1616140317555161061" || res[0].ID != vecCorp || res[1].Signature != "5c45ff5e21c57e6ad56bac8758b79b1d9ac89fd3" {
		t.Fatalf("@wecom/crypto disagrees with the official vector A: %+v %+v", res[0], res[1])
	}
	type get struct {
		c    *wecom.Client
		q    url.Values
		want string
	}
	gets := []get{{
		c: app{token: vecToken, key: vecKey, corp: vecCorp, agent: 1}.client(t),
		q: url.Values{"msg_signature": {"5c45ff5e21c57e6ad56bac8758b79b1d9ac89fd3"}, "timestamp": {"1409659589"},
			"nonce": {"263014780"}, "echostr": {vecEcho}},
		want: "1616140317555161061",
	}}
	var sign []nodeOp
	for i, r := range res[2:] {
		sign = append(sign, nodeOp{Op: "sign", Token: a.token, Timestamp: "1700000000", Nonce: strconv.Itoa(i), Encrypt: r.Encrypt})
	}
	c := a.client(t)
	for i, r := range wecomCrypto(t, sign) {
		gets = append(gets, get{c: c, want: echoes[i], q: url.Values{"msg_signature": {r.Signature},
			"timestamp": {"1700000000"}, "nonce": {sign[i].Nonce}, "echostr": {sign[i].Encrypt}}})
	}
	for _, g := range gets {
		// Through a real query string, as WeCom percent-encodes it (spec §5.1).
		q, _ := url.ParseQuery(g.q.Encode())
		resp, _, err := g.c.HandleWebhook(context.Background(), &adapter.WebhookRequest{Method: http.MethodGet, Path: "/w", Query: q})
		if err != nil || resp.Status != http.StatusOK || string(resp.Body) != g.want {
			t.Errorf("GET verify = %+v, %v; want 200 %q", resp, err, g.want)
		}
	}
}

// TestChatwireEncryptionMatchesVendor: chatwire's Crypto encrypts byte for byte as
// @wecom/crypto does with the same random, its output decrypts with @wecom/crypto, and its
// signatures are the vendor's.
func TestChatwireEncryptionMatchesVendor(t *testing.T) {
	a := newApp(t)
	cr, err := wecom.NewCrypto(a.token, a.key, a.corp)
	if err != nil {
		t.Fatal(err)
	}
	cases := callbackCases(t)
	var ops []nodeOp
	var ours []string
	for i, cs := range cases {
		random := make([]byte, 16)
		rand.Read(random)
		enc := cr.EncryptWith(random, []byte(cs.plain))
		enc2, err := cr.Encrypt([]byte(cs.plain))
		if err != nil {
			t.Fatal(err)
		}
		ours = append(ours, enc, cr.Signature("1700000000", "nonce"+strconv.Itoa(i), enc))
		ops = append(ops,
			nodeOp{Op: "encrypt", Key: a.key, Message: cs.plain, ID: a.corp, Random: hex.EncodeToString(random)},
			nodeOp{Op: "decrypt", Key: a.key, Encrypt: enc2},
			nodeOp{Op: "sign", Token: a.token, Timestamp: "1700000000", Nonce: "nonce" + strconv.Itoa(i), Encrypt: enc})
	}
	res := wecomCrypto(t, ops)
	for i, cs := range cases {
		vEnc, vDec, vSig := res[3*i], res[3*i+1], res[3*i+2]
		if vEnc.Encrypt != ours[2*i] {
			t.Errorf("%s: chatwire ciphertext differs from @wecom/crypto's with the same random", cs.name)
		}
		if vDec.Error != "" || vDec.Message != cs.plain || vDec.ID != a.corp {
			t.Errorf("%s: @wecom/crypto decrypts chatwire's output to %.80q for %q (%s)", cs.name, vDec.Message, vDec.ID, vDec.Error)
		}
		if vSig.Signature != ours[2*i+1] {
			t.Errorf("%s: signature %s; @wecom/crypto says %s", cs.name, ours[2*i+1], vSig.Signature)
		}
	}
}

// capture is a callback endpoint that records each POST and answers 200 with reply.
type capture struct {
	mu    sync.Mutex
	reqs  []*http.Request
	body  [][]byte
	reply func(i int) []byte
}

func (c *capture) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	c.mu.Lock()
	i := len(c.reqs)
	c.reqs, c.body = append(c.reqs, r), append(c.body, b)
	c.mu.Unlock()
	if c.reply != nil {
		w.Write(c.reply(i))
	}
}

// TestVendorDecryptsEmulatorPushes: every callback wecomtest pushes (the plaintexts of the
// suite, and the messages its own TextMessage and EventMessage build) has a signature
// @wecom/crypto computes the same, decrypts with @wecom/crypto to the plaintext and corp id,
// and the plaintext is XML whose fields encoding/xml reads as given.
func TestVendorDecryptsEmulatorPushes(t *testing.T) {
	a := newApp(t)
	var plains []string
	for _, cs := range callbackCases(t) {
		plains = append(plains, cs.plain)
	}
	// The emulator's own message builders, with the text edge cases (item 18 of issue 11:
	// "]]>" inside CDATA must be split, never written raw).
	at := time.Unix(caseTime, 0)
	type built struct{ content, key string }
	var builts []built
	for _, s := range []string{"a]]>b", "]]>", "x]]]]>y", "<b>&amp;\"'</b>", "你好 👍🏽", exactly(2048), "end]]"} {
		plains = append(plains, string(wecomtest.TextMessage(a.corp, a.agent, "bono", s, 7468881572160813124, at)))
		builts = append(builts, built{content: s})
		plains = append(plains, string(wecomtest.EventMessage(a.corp, a.agent, "bono", "click", s, at)))
		builts = append(builts, built{key: s})
	}
	firstBuilt := len(plains) - len(builts)

	cp := &capture{}
	srv := &wecomtest.Server{HTTPClient: wecomtest.HandlerClient(cp), PushRetries: -1}
	for _, p := range plains {
		if _, err := srv.Push(context.Background(), a.callback("http://bot.test/webhook"), []byte(p)); err != nil {
			t.Fatal(err)
		}
	}
	var ops []nodeOp
	var sigs []string
	for i, r := range cp.reqs {
		var env struct {
			ToUserName, Encrypt, AgentID string
		}
		if err := xml.Unmarshal(cp.body[i], &env); err != nil {
			t.Fatalf("push %d: envelope is not XML: %v", i, err)
		}
		if env.ToUserName != a.corp || env.AgentID != strconv.FormatInt(a.agent, 10) {
			t.Errorf("push %d: envelope %+v", i, env)
		}
		q := r.URL.Query()
		sigs = append(sigs, q.Get("msg_signature"))
		ops = append(ops, nodeOp{Op: "decrypt", Key: a.key, Encrypt: env.Encrypt},
			nodeOp{Op: "sign", Token: a.token, Timestamp: q.Get("timestamp"), Nonce: q.Get("nonce"), Encrypt: env.Encrypt})
	}
	res := wecomCrypto(t, ops)
	for i, p := range plains {
		dec, sig := res[2*i], res[2*i+1]
		if sig.Signature != sigs[i] {
			t.Errorf("push %d: msg_signature %s; @wecom/crypto computes %s", i, sigs[i], sig.Signature)
		}
		if dec.Error != "" || dec.Message != p || dec.ID != a.corp {
			t.Errorf("push %d: @wecom/crypto decrypts %.80q for %q (%s); want %.80q", i, dec.Message, dec.ID, dec.Error, p)
			continue
		}
		m, err := oracleParse([]byte(dec.Message))
		if err != nil {
			t.Errorf("push %d: the decrypted plaintext is not XML (encoding/xml: %v): %.200q", i, err, dec.Message)
			continue
		}
		if j := i - firstBuilt; j >= 0 {
			b := builts[j]
			if b.key == "" && m["Content"] != b.content {
				t.Errorf("wecomtest.TextMessage(%.40q): encoding/xml reads Content %.40q", b.content, m["Content"])
			}
			if b.key != "" && m["EventKey"] != b.key {
				t.Errorf("wecomtest.EventMessage(key %.40q): encoding/xml reads EventKey %.40q", b.key, m["EventKey"])
			}
		}
	}
}

// TestEmulatorOpensVendorReplies: a passive reply (spec §5.6) encrypted and signed by
// @wecom/crypto is verified and decrypted by wecomtest's pusher.
func TestEmulatorOpensVendorReplies(t *testing.T) {
	a := newApp(t)
	replies := []string{
		"<xml><ToUserName><![CDATA[zhangsan]]></ToUserName><FromUserName><![CDATA[" + a.corp + "]]></FromUserName><CreateTime>1348831860</CreateTime><MsgType><![CDATA[text]]></MsgType><Content><![CDATA[你好 👍 a]]]]><![CDATA[>b]]></Content></xml>",
		"<xml><ToUserName><![CDATA[zhangsan]]></ToUserName><FromUserName><![CDATA[" + a.corp + "]]></FromUserName><CreateTime>1348831860</CreateTime><MsgType><![CDATA[image]]></MsgType><Image><MediaId><![CDATA[media_id]]></MediaId></Image></xml>",
	}
	var ops []nodeOp
	for _, r := range replies {
		ops = append(ops, nodeOp{Op: "encrypt", Key: a.key, Message: r, ID: a.corp})
	}
	enc := wecomCrypto(t, ops)
	ops = ops[:0]
	for i, e := range enc {
		ops = append(ops, nodeOp{Op: "sign", Token: a.token, Timestamp: "1409659813", Nonce: "nonce" + strconv.Itoa(i), Encrypt: e.Encrypt})
	}
	sig := wecomCrypto(t, ops)
	cp := &capture{reply: func(i int) []byte {
		return []byte("<xml><Encrypt><![CDATA[" + enc[i].Encrypt + "]]></Encrypt><MsgSignature><![CDATA[" + sig[i].Signature +
			"]]></MsgSignature><TimeStamp>1409659813</TimeStamp><Nonce><![CDATA[" + ops[i].Nonce + "]]></Nonce></xml>")
	}}
	srv := &wecomtest.Server{HTTPClient: wecomtest.HandlerClient(cp), PushRetries: -1}
	for i, want := range replies {
		p, err := srv.Push(context.Background(), a.callback("http://bot.test/webhook"), []byte(text("hi", "1")))
		if err != nil || string(p.Reply) != want {
			t.Errorf("reply %d: %q, %v; want %q", i, p.Reply, err, want)
		}
	}
}

// TestVendorDecryptsEmulatorEchostr: the URL-verification GET wecomtest builds (VerifyQuery,
// used by Server.VerifyURL) carries an echostr that @wecom/crypto decrypts to the echo and a
// signature it computes the same; and Server.VerifyURL succeeds against chatwire.
func TestVendorDecryptsEmulatorEchostr(t *testing.T) {
	a := newApp(t)
	echoes := []string{"1616140317555161061", "5927782489442352469", "中文", "a+b/c=d&e"}
	var ops []nodeOp
	var qs []url.Values
	for i, e := range echoes {
		q, err := wecomtest.VerifyQuery(a.callback(""), e, 1409659589+int64(i), "263014780")
		if err != nil {
			t.Fatal(err)
		}
		// As the bot's server sees it: through a real URL query.
		q, _ = url.ParseQuery(q.Encode())
		qs = append(qs, q)
		ops = append(ops, nodeOp{Op: "decrypt", Key: a.key, Encrypt: q.Get("echostr")},
			nodeOp{Op: "sign", Token: a.token, Timestamp: q.Get("timestamp"), Nonce: q.Get("nonce"), Encrypt: q.Get("echostr")})
	}
	res := wecomCrypto(t, ops)
	for i, e := range echoes {
		if d := res[2*i]; d.Message != e || d.ID != a.corp {
			t.Errorf("echostr for %q: @wecom/crypto decrypts %q for %q (%s)", e, d.Message, d.ID, d.Error)
		}
		if s := res[2*i+1].Signature; s != qs[i].Get("msg_signature") {
			t.Errorf("echostr for %q: msg_signature %s; @wecom/crypto computes %s", e, qs[i].Get("msg_signature"), s)
		}
	}
	c := a.client(t)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		req, err := adapter.NewWebhookRequest(r, 0)
		if err != nil {
			http.Error(w, err.Error(), 400)
			return
		}
		resp, _, _ := c.HandleWebhook(r.Context(), req)
		resp.Write(w)
	})
	srv := &wecomtest.Server{HTTPClient: wecomtest.HandlerClient(h)}
	if err := srv.VerifyURL(context.Background(), a.callback("http://bot.test/webhook")); err != nil {
		t.Errorf("wecomtest VerifyURL against chatwire: %v", err)
	}
}
