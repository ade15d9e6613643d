package wecom_test

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/seed-a64d9e1f/chatwire/adapter/wecom"
	"github.com/seed-a64d9e1f/chatwire/adapter/wecom/wecomtest"
)

// checkScan asserts the fast scanner agrees with encoding/xml wherever it does not defer to
// it, and that appendJSON agrees with encoding/json.
func checkScan(t *testing.T, data []byte) (fast bool) {
	t.Helper()
	got, err := wecom.ScanXML(data)
	want, werr := wecom.ParseXMLSlow(data)
	if err == wecom.ErrSlowPath {
		return false
	}
	switch {
	case err != nil && werr == nil:
		t.Fatalf("scanXML(%q) error %v; encoding/xml accepts it: %v", data, err, want)
	case err == nil && werr != nil:
		t.Fatalf("scanXML(%q) = %v; encoding/xml says %v", data, got, werr)
	case err == nil && !reflect.DeepEqual(got, want):
		t.Fatalf("scanXML(%q) =\n%#v\nencoding/xml:\n%#v", data, got, want)
	}
	if err == nil {
		js, _ := json.Marshal(got)
		if mine := wecom.AppendJSON(nil, got); string(mine) != string(js) {
			t.Fatalf("appendJSON = %s; encoding/json = %s", mine, js)
		}
	}
	return true
}

func TestScanXML(t *testing.T) {
	now := time.Unix(1738984503, 0)
	tests := []struct {
		name string
		in   string
		fast bool
	}{
		{"text", string(wecomtest.TextMessage("ww", 1, "bono", "nihao", 7468881572160813124, now)), true},
		{"event", string(wecomtest.EventMessage("ww", 1, "bono", "click", "k", now)), true},
		{"declaration", `<?xml version="1.0" encoding="UTF-8"?><xml><A>1</A></xml>`, true},
		{"other encoding", `<?xml version="1.0" encoding="GBK"?><xml><A>1</A></xml>`, false},
		{"entities", `<xml><A>&lt;b&gt; &amp; &quot;&apos; &#20320;&#x597d;</A></xml>`, true},
		{"unknown entity", `<xml><A>&nbsp;</A></xml>`, false},
		{"nested and repeated", `<xml><L><i>a</i><i>b</i><i><j>c</j></i></L><E/></xml>`, true},
		{"whitespace", "<xml>\n  <A>x</A>\n</xml>\n", true},
		{"carriage return", "<xml>\r\n<A>x\r</A></xml>", false},
		{"attribute", `<xml><A k="v">x</A></xml>`, false},
		{"comment", `<xml><!-- c --><A>x</A></xml>`, false},
		{"json escapes", "<xml><A><![CDATA[<\"\\\t\n\u2028é]]></A></xml>", true},
		{"mismatched", `<xml><A>x</B></xml>`, false},
		{"unclosed", `<xml><A>x</A>`, false},
		{"control char", "<xml><A>\x01</A></xml>", false},
		{"bad utf8", "<xml><A>\xff</A></xml>", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if fast := checkScan(t, []byte(tc.in)); fast != tc.fast {
				t.Errorf("fast path taken = %v; want %v", fast, tc.fast)
			}
		})
	}
}

// FuzzScanXML: the fast scanner and encoding/xml agree on every input the scanner accepts
// or rejects by itself.
func FuzzScanXML(f *testing.F) {
	now := time.Unix(1738984503, 0)
	f.Add(wecomtest.TextMessage("ww", 1, "bono", "nihao", 1, now))
	f.Add(wecomtest.EventMessage("ww", 1, "bono", "click", "k", now))
	f.Add([]byte(`<xml><A>&lt;&#x597d;&#20320;</A><L><i>a</i><i/></L></xml>`))
	f.Add([]byte("<xml><A><![CDATA[<\"\\\t\n\u2028]]></A></xml>"))
	f.Add([]byte(`<?xml version="1.0"?><xml/>`))
	f.Add([]byte(strings.Repeat("<a>", 9) + strings.Repeat("</a>", 9)))
	f.Fuzz(func(t *testing.T, data []byte) { checkScan(t, data) })
}
