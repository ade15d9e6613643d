package wecom_test

import (
	"context"
	"math/rand/v2"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/seed-a64d9e1f/chatwire/adapter"
)

// randomContent writes text of random pieces that stress an XML reader: the three forms of
// character data (CDATA, escaped text, character references) mixed in one element, "]]>"
// split across sections, white space and line ends, multi-byte and astral characters.
func randomContent(r *rand.Rand) (xmlForm string) {
	pieces := []func() string{
		func() string { return cdata(randomText(r)) },
		func() string { return escape(randomText(r)) },
		func() string { return "&#" + []string{"20320", "x597D", "128512", "38", "60", "x3E"}[r.IntN(6)] + ";" },
		func() string { return []string{" ", "\n", "\r\n", "\t", "  \n  "}[r.IntN(5)] },
		func() string { return "<![CDATA[]]>" },
	}
	var b strings.Builder
	for n := r.IntN(6); n >= 0; n-- {
		b.WriteString(pieces[r.IntN(len(pieces))]())
	}
	return b.String()
}

func randomText(r *rand.Rand) string {
	atoms := []string{"a", "Z", "0", " ", "<", ">", "&", "\"", "'", "]", "]]", "]]>", "[", "<![CDATA[", "&amp;",
		"你好", "企业微信", "😀", "👍🏽", "é", "\n", "\r\n", "\r", "\t", "=", "/", "</Content>", "<xml>"}
	var b strings.Builder
	for n := r.IntN(12); n >= 0; n-- {
		b.WriteString(atoms[r.IntN(len(atoms))])
	}
	return b.String()
}

// escape writes s as XML character data without CDATA.
func escape(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;", "\"", "&quot;", "'", "&apos;", "\r", "&#13;").Replace(s)
}

// TestRandomCallbacksParseAsEncodingXML: 400 messages with random content (text and
// events, leaves and nested elements, empty and self-closing elements, white space between
// elements), encrypted and signed by @wecom/crypto, parse in chatwire exactly as encoding/xml
// reads them. The seed is logged so that a failure can be replayed.
func TestRandomCallbacksParseAsEncodingXML(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	r := rand.New(rand.NewPCG(seed, 0x5eed))
	var plains []string
	for i := 0; i < 400; i++ {
		sep := []string{"", "\n", "\n   ", " "}[r.IntN(4)]
		fields := []string{
			el("ToUserName", cdata(caseCorp)), el("FromUserName", cdata("user"+randomIDSuffix(r))),
			el("CreateTime", "1738984503"),
		}
		if r.IntN(2) == 0 {
			fields = append(fields, el("MsgType", cdata("text")), el("Content", randomContent(r)), el("MsgId", "7468881572160813124"))
		} else {
			fields = append(fields, el("MsgType", cdata("event")), el("Event", cdata("click")),
				el("EventKey", randomContent(r)), "<Empty/>", el("Blank", ""),
				el("Nested", sep+el("A", randomContent(r))+sep+el("B", randomContent(r))+sep+el("B", cdata("x"))+sep))
		}
		fields = append(fields, el("AgentID", "1000002"))
		plains = append(plains, "<xml>"+sep+strings.Join(fields, sep)+sep+"</xml>")
	}
	a := newApp(t)
	c := a.client(t)
	bodies, queries := vendorSeal(t, a, plains, time.Now().Unix())
	fails := 0
	for i, p := range plains {
		resp, events, err := c.HandleWebhook(context.Background(), &adapter.WebhookRequest{
			Method: http.MethodPost, Path: "/w", Query: queries[i], Body: bodies[i]})
		if err != nil || resp.Status != http.StatusOK || len(events) != 1 {
			t.Errorf("case %d refused: %v\n%q", i, err, p)
			fails++
		} else {
			ok := t.Run("", func(t *testing.T) { checkEvent(t, []byte(p), events[0]) })
			if !ok {
				t.Errorf("case %d differs from encoding/xml:\n%q", i, p)
				fails++
			}
		}
		if fails >= 5 {
			t.Fatal("stopping after 5 failures")
		}
	}
}

func randomIDSuffix(r *rand.Rand) string {
	return string(rune('a' + r.IntN(26)))
}
