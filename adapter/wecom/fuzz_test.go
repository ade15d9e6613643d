package wecom_test

import (
	"net/url"
	"testing"
	"time"

	"github.com/seed-a64d9e1f/chatwire/adapter"
	"github.com/seed-a64d9e1f/chatwire/adapter/wecom"
	"github.com/seed-a64d9e1f/chatwire/adapter/wecom/wecomtest"
)

// FuzzParseMessage: the callback parser never panics, and whatever it accepts has an id,
// a kind and a JSON Raw.
func FuzzParseMessage(f *testing.F) {
	now := time.Unix(1738984503, 0)
	f.Add(wecomtest.TextMessage("ww1", 1, "bono", "nihao", 7468881572160813124, now))
	f.Add(wecomtest.EventMessage("ww1", 1, "bono", "click", "k", now))
	f.Add([]byte("<xml><MsgType>image</MsgType><CreateTime>1</CreateTime><PicUrl>u</PicUrl><MediaId>m</MediaId><MsgId>1</MsgId></xml>"))
	f.Add([]byte("<xml><MsgType>location</MsgType><CreateTime>1</CreateTime><Location_X>1</Location_X></xml>"))
	f.Add([]byte("<xml><MsgType>event</MsgType><CreateTime>1</CreateTime><SendPicsInfo><PicList><item>a</item><item>b</item></PicList></SendPicsInfo></xml>"))
	f.Add([]byte("<?xml version=\"1.0\" encoding=\"GBK\"?><xml/>"))
	f.Add([]byte("<xml><![CDATA[x]]>&amp;&#x0;</xml>"))
	f.Add([]byte(""))
	f.Fuzz(func(t *testing.T, data []byte) {
		ev, err := wecom.ParseMessage(data)
		if err != nil {
			return
		}
		if ev.ID == "" || (ev.Kind != adapter.EventMessage && ev.Kind != adapter.EventNotice) || len(ev.Raw) == 0 {
			t.Errorf("ParseMessage(%q) accepted an event without id, kind or raw: %+v", data, ev)
		}
	})
}

// FuzzDecrypt: decryption of arbitrary input never panics and never returns a message for
// the wrong receiveid.
func FuzzDecrypt(f *testing.F) {
	c, _ := wecom.NewCrypto(vecToken, vecAESKey, vecCorpID)
	f.Add(vecEchostr)
	f.Add(c.EncryptWith([]byte("0123456789abcdef"), []byte("<xml/>")))
	f.Add(c.EncryptWith([]byte("0123456789abcdef"), make([]byte, 44)))
	f.Add("")
	f.Add("AAAA")
	f.Add("////////////////////////////////////////////////////////////////////////////w==")
	f.Fuzz(func(t *testing.T, s string) {
		msg, err := c.Decrypt(s)
		if err == nil && len(msg) > len(s) {
			t.Errorf("Decrypt(%q) returned %d bytes from %d bytes of input", s, len(msg), len(s))
		}
	})
}

// FuzzHandleWebhook: the whole callback path (verify, window, decrypt, parse) never panics
// and always answers with a status; only correctly signed input yields events.
func FuzzHandleWebhook(f *testing.F) {
	cb := wecomtest.Callback{Token: testToken, EncodingAESKey: testAESKey, CorpID: testCorp, AgentID: testAgent}
	now := time.Now()
	body, q, err := wecomtest.Encrypt(cb, wecomtest.TextMessage(testCorp, testAgent, "u", "hi", 1, now), now.Unix(), "n")
	if err != nil {
		f.Fatal(err)
	}
	f.Add("POST", q.Encode(), body)
	gq, _ := wecomtest.VerifyQuery(cb, "echo", now.Unix(), "n")
	f.Add("GET", gq.Encode(), []byte(nil))
	f.Add("POST", "msg_signature=x&timestamp=1&nonce=2", []byte("<xml><Encrypt>AAAA</Encrypt></xml>"))
	f.Add("POST", "", []byte("<xml>"))
	c, err := wecom.New(testConfig(), wecom.Options{TimestampWindow: -1})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { c.Close() })
	f.Fuzz(func(t *testing.T, method, query string, body []byte) {
		qv, _ := url.ParseQuery(query)
		resp, events, err := c.HandleWebhook(t.Context(), &adapter.WebhookRequest{Method: method, Query: qv, Body: body})
		if resp == nil || resp.Status == 0 {
			t.Fatalf("HandleWebhook answered no status")
		}
		if err != nil && (resp.Status < 400 || len(events) != 0) {
			t.Errorf("refusal with status %d and %d events", resp.Status, len(events))
		}
		if err == nil && resp.Status != 200 {
			t.Errorf("status %d without an error", resp.Status)
		}
	})
}
