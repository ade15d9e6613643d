package wecom

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/seed-a64d9e1f/chatwire/tokenmgr"
)

// sendAnswer is message/send's answer as the emulator gives it.
const sendAnswer = `{"errcode":0,"errmsg":"ok","invaliduser":"","invalidparty":"","invalidtag":"","unlicenseduser":"","msgid":"bd6f1e5a0c0e6a3c8d1f2b7e","response_code":""}`

// TestDecodeSendAnswer pins how message/send's answers are read: fields, WeCom's errors
// (with the recipients of an 81013), and what is not an answer (temporary errors).
func TestDecodeSendAnswer(t *testing.T) {
	var ok sendResponse
	if err := decode(EndpointSend, []byte(`{"errcode":0,"errmsg":"ok","invaliduser":"a|B","invalidparty":"2","invalidtag":"","msgid":"m1","response_code":"rc"}`), &ok); err != nil {
		t.Fatal(err)
	}
	if ok.MsgID != "m1" || ok.ResponseCode != "rc" || ok.User != "a|B" || ok.Party != "2" {
		t.Errorf("decoded %+v", ok)
	}
	var none sendResponse // no errcode at all: an answer with its fields
	if err := decode(EndpointSend, []byte(`{"msgid":"m2"}`), &none); err != nil || none.MsgID != "m2" {
		t.Errorf("no errcode: %+v, %v", none, err)
	}
	for _, c := range []struct {
		body      string
		code      int      // APIError's, or 0
		invalid   []string // APIError's
		temporary string   // else: a temporary error containing this
	}{
		{`{"errcode":81013,"errmsg":"user & party & tag all invalid","invaliduser":"x|y","msgid":""}`, 81013, []string{"user:x", "user:y"}, ""},
		{`{"errcode":40014,"errmsg":"invalid access_token","invaliduser":"x"}`, 40014, nil, ""},
		{`{"errcode":45009,"errmsg":"api freq out of limit","msgid":5}`, 45009, nil, ""}, // the error wins over a bad field
		{`<html>502 Bad Gateway</html>`, 0, nil, "answer is not JSON"},
		{`{"errcode":0,"msgid":"m"`, 0, nil, "answer is not JSON"},
		{`{"errcode":"0","msgid":"m"}`, 0, nil, "answer is not JSON"},
		{`{"errcode":0,"msgid":7}`, 0, nil, "bad answer"},
	} {
		var out sendResponse
		err := decode(EndpointSend, []byte(c.body), &out)
		var api *APIError
		switch {
		case c.code != 0:
			if !errors.As(err, &api) || api.Code != c.code || !slices.Equal(api.Invalid, c.invalid) || api.Endpoint != EndpointSend {
				t.Errorf("%s: %v (%#v); want errcode %d, invalid %v", c.body, err, api, c.code, c.invalid)
			}
		case err == nil || errors.As(err, &api) || !errors.Is(err, tokenmgr.ErrTemporary) || !strings.Contains(err.Error(), c.temporary):
			t.Errorf("%s: %v; want a temporary error saying %q", c.body, err, c.temporary)
		}
	}
}

// BenchmarkDecodeSendAnswer: reading message/send's answer, once per send.
func BenchmarkDecodeSendAnswer(b *testing.B) {
	data := []byte(sendAnswer)
	b.ReportAllocs()
	for b.Loop() {
		var out sendResponse
		if err := decode(EndpointSend, data, &out); err != nil {
			b.Fatal(err)
		}
	}
}
