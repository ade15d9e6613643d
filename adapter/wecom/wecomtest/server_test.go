package wecomtest_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/textproto"
	"net/url"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/seed-a64d9e1f/chatwire/adapter/wecom/wecomtest"
)

const base = "http://wecom.test/cgi-bin/"

// call makes one request to srv in process and decodes the JSON answer. It fails the test
// unless the status is 200, as with the real WeCom.
func call(t *testing.T, srv *wecomtest.Server, method, endpoint string, q url.Values, body string) map[string]any {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, _ := http.NewRequest(method, base+endpoint+"?"+q.Encode(), rd) // no Content-Type, as silenceper
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("%s: HTTP %d; WeCom answers 200", endpoint, resp.StatusCode)
	}
	var out map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatalf("%s: %v", endpoint, err)
	}
	return out
}

func code(m map[string]any) int { n, _ := m["errcode"].(float64); return int(n) }

func getToken(t *testing.T, srv *wecomtest.Server, corp, secret string) (string, int, map[string]any) {
	t.Helper()
	m := call(t, srv, "GET", "gettoken", url.Values{"corpid": {corp}, "corpsecret": {secret}}, "")
	tok, _ := m["access_token"].(string)
	return tok, code(m), m
}

func send(t *testing.T, srv *wecomtest.Server, tok, body string) map[string]any {
	t.Helper()
	return call(t, srv, "POST", "message/send", url.Values{"access_token": {tok}}, body)
}

func TestZeroValueToken(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var srv wecomtest.Server
		tok1, c, m := getToken(t, &srv, "ww1", "s")
		if c != 0 || tok1 == "" || m["expires_in"] != float64(7200) || m["errmsg"] != "ok" {
			t.Fatalf("gettoken = %v", m)
		}
		time.Sleep(time.Hour)
		tok2, _, m := getToken(t, &srv, "ww1", "s")
		if tok2 != tok1 || m["expires_in"] != float64(7200) {
			t.Errorf("repeat gettoken = %v; want the same token, expires_in 7200", m)
		}
		if r := send(t, &srv, tok1, `{"touser":"u","msgtype":"text","agentid":1,"text":{"content":"x"}}`); code(r) != 0 {
			t.Errorf("send = %v", r)
		}
		time.Sleep(time.Hour)
		if r := send(t, &srv, tok1, `{"touser":"u","msgtype":"text","agentid":1,"text":{"content":"x"}}`); code(r) != 42001 {
			t.Errorf("send with expired token = %v; want 42001", r)
		}
		tok3, _, _ := getToken(t, &srv, "ww1", "s")
		if tok3 == tok1 || srv.TokensIssued() != 2 || srv.TokenRequests() != 3 {
			t.Errorf("after expiry: new token %v, issued %d, requests %d", tok3 != tok1, srv.TokensIssued(), srv.TokenRequests())
		}
	})
}

func TestTokenLifetimeAndRemaining(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := &wecomtest.Server{TokenLifetime: 10 * time.Second, ReportRemaining: true}
		_, _, m := getToken(t, srv, "ww1", "s")
		if m["expires_in"] != float64(10) {
			t.Errorf("expires_in = %v; want 10", m["expires_in"])
		}
		time.Sleep(4 * time.Second)
		_, _, m = getToken(t, srv, "ww1", "s")
		if m["expires_in"] != float64(6) {
			t.Errorf("repeat expires_in = %v; want 6 (remaining)", m["expires_in"])
		}
	})
}

func TestReissueExpired(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := &wecomtest.Server{TokenLifetime: 100 * time.Second, ReissueExpired: true}
		tok1, _, _ := getToken(t, srv, "ww1", "s")
		time.Sleep(100 * time.Second)
		msg := `{"touser":"u","msgtype":"text","agentid":1,"text":{"content":"x"}}`
		if r := send(t, srv, tok1, msg); code(r) != 42001 {
			t.Errorf("send with expired token = %v; want 42001", r)
		}
		tok2, _, m := getToken(t, srv, "ww1", "s")
		if tok2 != tok1 || m["expires_in"] != float64(100) || srv.TokensIssued() != 1 {
			t.Errorf("gettoken after expiry = %v (same value %v, %d issued); want the same value, expires_in 100", m, tok2 == tok1, srv.TokensIssued())
		}
		if r := send(t, srv, tok1, msg); code(r) != 0 {
			t.Errorf("send with the reissued token = %v", r)
		}
		srv.RevokeTokens(42001)
		if tok3, _, _ := getToken(t, srv, "ww1", "s"); tok3 == tok1 {
			t.Errorf("a revoked token was reissued")
		}
	})
}

func TestRevokeTokens(t *testing.T) {
	for _, c := range []int{0, 42001, 40014} {
		t.Run(fmt.Sprint(c), func(t *testing.T) {
			srv := &wecomtest.Server{}
			tok, _, _ := getToken(t, srv, "ww1", "s")
			srv.RevokeTokens(c)
			want := c
			if want == 0 {
				want = 42001
			}
			if r := send(t, srv, tok, `{"touser":"u","msgtype":"text","agentid":1,"text":{"content":"x"}}`); code(r) != want {
				t.Errorf("send with revoked token = %v; want %d", r, want)
			}
			if tok2, _, _ := getToken(t, srv, "ww1", "s"); tok2 == tok {
				t.Errorf("gettoken after revocation returned the revoked token")
			}
		})
	}
}

func TestCredentialErrors(t *testing.T) {
	srv := &wecomtest.Server{}
	srv.AddApp("ww1", "right", 1000002)
	tests := []struct {
		corp, secret string
		want         int
	}{
		{"ww1", "right", 0},
		{"ww1", "wrong", 40001},
		{"ww2", "right", 40013},
		{"", "right", 41002},
		{"ww1", "", 41004},
	}
	for _, tc := range tests {
		if _, c, m := getToken(t, srv, tc.corp, tc.secret); c != tc.want {
			t.Errorf("gettoken(%q, %q) = %v; want errcode %d", tc.corp, tc.secret, m, tc.want)
		} else if c != 0 {
			msg, _ := m["errmsg"].(string)
			if !strings.Contains(msg, "more info at https://open.work.weixin.qq.com/devtool/query?e="+fmt.Sprint(c)) {
				t.Errorf("errmsg %q not in WeCom's format", msg)
			}
		}
	}
}

func TestAuthErrors(t *testing.T) {
	srv := &wecomtest.Server{}
	if r := send(t, srv, "", `{}`); code(r) != 41001 {
		t.Errorf("no token: %v; want 41001", r)
	}
	if r := send(t, srv, "forged", `{}`); code(r) != 40014 {
		t.Errorf("unknown token: %v; want 40014", r)
	}
	if r := call(t, srv, "POST", "no/such/api", url.Values{"access_token": {"x"}}, ""); code(r) != 40014 {
		t.Errorf("unknown endpoint with bad token: %v", r)
	}
	tok, _, _ := getToken(t, srv, "ww1", "s")
	if r := call(t, srv, "POST", "no/such/api", url.Values{"access_token": {tok}}, ""); code(r) != 48001 {
		t.Errorf("unknown endpoint: %v; want 48001", r)
	}
}

func TestFailAndLimit(t *testing.T) {
	srv := &wecomtest.Server{}
	srv.Fail("gettoken", -1, 2)
	for i, want := range []int{-1, -1, 0} {
		if _, c, _ := getToken(t, srv, "ww1", "s"); c != want {
			t.Errorf("gettoken %d: errcode %d; want %d", i, c, want)
		}
	}
	tok, _, _ := getToken(t, srv, "ww1", "s")
	body := `{"touser":"u","msgtype":"text","agentid":1,"text":{"content":"x"}}`
	srv.LimitCalls("message/send", 2)
	for i, want := range []int{0, 0, 45009, 45009} {
		if r := send(t, srv, tok, body); code(r) != want {
			t.Errorf("send %d: %v; want %d", i, r, want)
		}
	}
	srv.ClearFailures()
	if r := send(t, srv, tok, body); code(r) != 0 {
		t.Errorf("after ClearFailures: %v", r)
	}
	srv.Fail("", 60020, -1)
	if _, c, _ := getToken(t, srv, "ww1", "s"); c != 60020 {
		t.Errorf("gettoken with Fail(\"\", 60020): %d", c)
	}
	if r := send(t, srv, tok, body); code(r) != 60020 {
		t.Errorf("send with Fail(\"\", 60020): %v", r)
	}
	if srv.Calls("message/send") != 6 {
		t.Errorf("Calls(message/send) = %d; want 6", srv.Calls("message/send"))
	}
}

func TestSendValidation(t *testing.T) {
	long := strings.Repeat("é", 1100) // 2200 bytes
	tests := []struct {
		name    string
		lenient bool
		body    string
		want    int
	}{
		{"ok", false, `{"touser":"u","msgtype":"text","agentid":1000002,"text":{"content":"x"}}`, 0},
		{"string agentid strict", false, `{"touser":"u","msgtype":"text","agentid":"1000002","text":{"content":"x"}}`, 40056},
		{"string agentid lenient", true, `{"touser":"u","msgtype":"text","agentid":"1000002","text":{"content":"x"}}`, 0},
		{"no agentid", false, `{"touser":"u","msgtype":"text","text":{"content":"x"}}`, 41011},
		{"other app's agentid", false, `{"touser":"u","msgtype":"text","agentid":7,"text":{"content":"x"}}`, 40056},
		{"bad json", false, `{"touser":`, 47001},
		{"bad msgtype", false, `{"touser":"u","msgtype":"fax","agentid":1000002}`, 40008},
		{"empty text", false, `{"touser":"u","msgtype":"text","agentid":1000002,"text":{"content":""}}`, 44004},
		{"no recipients", false, `{"msgtype":"text","agentid":1000002,"text":{"content":"x"}}`, 41009},
		{"all invalid", false, `{"touser":"Ghost","toparty":"99","msgtype":"text","agentid":1000002,"text":{"content":"x"}}`, 81013},
		{"textcard no description", false, `{"touser":"u","msgtype":"textcard","agentid":1000002,"textcard":{"title":"t","url":"https://x"}}`, 41033},
		{"news 9 articles", false, `{"touser":"u","msgtype":"news","agentid":1000002,"news":{"articles":[{},{},{},{},{},{},{},{},{}]}}`, 45008},
		{"image unknown media", false, `{"touser":"u","msgtype":"image","agentid":1000002,"image":{"media_id":"nope"}}`, 40007},
		{"long text truncated", false, `{"touser":"u","msgtype":"text","agentid":1000002,"text":{"content":"` + long + `"}}`, 0},
		{"template card", false, `{"touser":"u","msgtype":"template_card","agentid":1000002,"template_card":{"card_type":"button_interaction"}}`, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := &wecomtest.Server{LenientAgentID: tc.lenient}
			srv.AddApp("ww1", "s", 1000002)
			srv.AddUsers("u")
			srv.AddParties("1")
			tok, _, _ := getToken(t, srv, "ww1", "s")
			r := send(t, srv, tok, tc.body)
			if code(r) != tc.want {
				t.Fatalf("send = %v; want errcode %d", r, tc.want)
			}
			switch tc.name {
			case "all invalid":
				if r["invaliduser"] != "ghost" || r["invalidparty"] != "99" {
					t.Errorf("81013 answer = %v; want invaliduser ghost (lower-cased), invalidparty 99", r)
				}
			case "long text truncated":
				s := srv.Sent()[0]
				if !s.Truncated || len(s.Content) != 2048 || !strings.HasPrefix(long, s.Content) {
					t.Errorf("truncated=%v to %d bytes; want 2048 at a character boundary", s.Truncated, len(s.Content))
				}
			case "template card":
				if r["response_code"] == nil || r["response_code"] == "" {
					t.Errorf("interactive card answer lacks response_code: %v", r)
				}
			case "ok":
				if id, _ := r["msgid"].(string); id == "" || r["invaliduser"] != "" {
					t.Errorf("answer = %v", r)
				}
			}
		})
	}
}

func TestMemberLimit(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := &wecomtest.Server{MemberLimit: 3}
		tok, _, _ := getToken(t, srv, "ww1", "s")
		for range 5 {
			if r := send(t, srv, tok, `{"touser":"a|b","msgtype":"text","agentid":1,"text":{"content":"x"}}`); code(r) != 0 {
				t.Fatal(r)
			}
		}
		sent := srv.Sent()
		if len(sent[2].Delivered) != 2 || len(sent[3].Dropped) != 2 || len(sent[4].Delivered) != 0 {
			t.Errorf("3rd delivered %v, 4th dropped %v, 5th delivered %v", sent[2].Delivered, sent[3].Dropped, sent[4].Delivered)
		}
		time.Sleep(time.Minute)
		send(t, srv, tok, `{"touser":"a","msgtype":"text","agentid":1,"text":{"content":"x"}}`)
		if d := srv.Sent()[5].Delivered; len(d) != 1 {
			t.Errorf("after a minute delivered %v; want [a]", d)
		}
		srv.MemberLimitCode = 45009
		for i, want := range []int{0, 0, 45009} {
			if r := send(t, srv, tok, `{"touser":"a","msgtype":"text","agentid":1,"text":{"content":"x"}}`); code(r) != want {
				t.Errorf("with MemberLimitCode, send %d = %v; want %d", i, r, want)
			}
		}
	})
}

func upload(t *testing.T, srv *wecomtest.Server, tok, typ, field string, data []byte) map[string]any {
	t.Helper()
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	h := textproto.MIMEHeader{}
	h.Set("Content-Disposition", fmt.Sprintf(`form-data; name=%q; filename="a.bin"`, field))
	h.Set("Content-Type", "application/pdf")
	w, _ := mw.CreatePart(h)
	w.Write(data)
	mw.Close()
	req, _ := http.NewRequest("POST", base+"media/upload?"+url.Values{"access_token": {tok}, "type": {typ}}.Encode(), &buf)
	req.Header.Set("Content-Type", mw.FormDataContentType())
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	json.NewDecoder(resp.Body).Decode(&out)
	return out
}

func TestMedia(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := &wecomtest.Server{}
		tok, _, _ := getToken(t, srv, "ww1", "s")
		data := []byte("%PDF-1.4 hello")
		r := upload(t, srv, tok, "file", "media", data)
		id, _ := r["media_id"].(string)
		if code(r) != 0 || id == "" || r["type"] != "file" {
			t.Fatalf("upload = %v", r)
		}
		if _, ok := r["created_at"].(string); !ok {
			t.Errorf("created_at is %T; WeCom sends a string", r["created_at"])
		}
		resp, _ := srv.Client().Get(base + "media/get?" + url.Values{"access_token": {tok}, "media_id": {id}}.Encode())
		got, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !bytes.Equal(got, data) || resp.Header.Get("Content-Type") != "application/pdf" {
			t.Errorf("media/get = %q (%s)", got, resp.Header.Get("Content-Type"))
		}
		if r := send(t, srv, tok, `{"touser":"u","msgtype":"file","agentid":1,"file":{"media_id":"`+id+`"}}`); code(r) != 0 {
			t.Errorf("send file = %v", r)
		}
		time.Sleep(72 * time.Hour)
		if r := call(t, srv, "GET", "media/get", url.Values{"access_token": {tok}, "media_id": {id}}, ""); code(r) != 40007 {
			// the token expired too: use a fresh one
			tok, _, _ = getToken(t, srv, "ww1", "s")
			if r := call(t, srv, "GET", "media/get", url.Values{"access_token": {tok}, "media_id": {id}}, ""); code(r) != 40007 {
				t.Errorf("media/get after 3 days = %v; want 40007", r)
			}
		}
		if r := send(t, srv, tok, `{"touser":"u","msgtype":"file","agentid":1,"file":{"media_id":"`+id+`"}}`); code(r) != 40007 {
			t.Errorf("send expired media = %v; want 40007", r)
		}
	})
}

func TestUploadErrors(t *testing.T) {
	srv := &wecomtest.Server{}
	tok, _, _ := getToken(t, srv, "ww1", "s")
	tests := []struct {
		name, typ, field string
		data             []byte
		want             int
	}{
		{"bad type", "pdf", "media", []byte("123456"), 40005},
		{"wrong field", "file", "file", []byte("123456"), 44001},
		{"five bytes", "file", "media", []byte("12345"), 40006},
		{"empty", "file", "media", nil, 44001},
		{"voice over 2MB", "voice", "media", make([]byte, 2<<20+1), 40006},
		{"image over 10MB", "image", "media", make([]byte, 10<<20+1), 40009},
		{"video over 10MB", "video", "media", make([]byte, 10<<20+1), 40011},
		{"file over 20MB", "file", "media", make([]byte, 20<<20+1), 45001},
		{"video at 10MB", "video", "media", make([]byte, 10<<20), 0},
	}
	for _, tc := range tests {
		if r := upload(t, srv, tok, tc.typ, tc.field, tc.data); code(r) != tc.want {
			t.Errorf("%s: upload = %v; want %d", tc.name, r, tc.want)
		}
	}
}

func TestAppChatAndRecall(t *testing.T) {
	srv := &wecomtest.Server{}
	srv.AddApp("ww1", "a", 1)
	srv.AddApp("ww1", "b", 2)
	tokA, _, _ := getToken(t, srv, "ww1", "a")
	tokB, _, _ := getToken(t, srv, "ww1", "b")
	r := call(t, srv, "POST", "appchat/create", url.Values{"access_token": {tokA}}, `{"name":"n","owner":"x","userlist":["x","y"]}`)
	id, _ := r["chatid"].(string)
	if code(r) != 0 || len(id) == 0 || len(id) > 32 {
		t.Fatalf("appchat/create = %v", r)
	}
	body := `{"chatid":"` + id + `","msgtype":"text","text":{"content":"hi"}}`
	if r := call(t, srv, "POST", "appchat/send", url.Values{"access_token": {tokA}}, body); code(r) != 0 {
		t.Errorf("appchat/send = %v", r)
	}
	if r := call(t, srv, "POST", "appchat/send", url.Values{"access_token": {tokB}}, body); code(r) != 86003 {
		t.Errorf("appchat/send by another app = %v; want 86003", r)
	}
	if r := call(t, srv, "POST", "appchat/send", url.Values{"access_token": {tokA}}, `{"chatid":"no-such!","msgtype":"text","text":{"content":"x"}}`); code(r) != 86001 {
		t.Errorf("appchat/send bad id = %v; want 86001", r)
	}
	if c := srv.Chat(id); c == nil || len(c.Users) != 2 || c.AgentID != 1 {
		t.Errorf("Chat(%s) = %+v", id, c)
	}
	r = send(t, srv, tokA, `{"touser":"u","msgtype":"text","agentid":1,"text":{"content":"x"}}`)
	msgid, _ := r["msgid"].(string)
	if r := call(t, srv, "POST", "message/recall", url.Values{"access_token": {tokA}}, `{"msgid":"`+msgid+`"}`); code(r) != 0 {
		t.Errorf("recall = %v", r)
	}
	if r := call(t, srv, "POST", "message/recall", url.Values{"access_token": {tokA}}, `{"msgid":"nope"}`); code(r) != 43001 {
		t.Errorf("recall unknown = %v; want 43001", r)
	}
}

func TestVerifyURLFailures(t *testing.T) {
	cb := wecomtest.Callback{URL: "http://bot.test/", Token: "t", EncodingAESKey: "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C", CorpID: "ww1"}
	for name, h := range map[string]http.HandlerFunc{
		"quoted": func(w http.ResponseWriter, r *http.Request) { fmt.Fprintf(w, "%q", "x") },
		"500":    func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(500) },
	} {
		srv := &wecomtest.Server{HTTPClient: wecomtest.HandlerClient(h)}
		if err := srv.VerifyURL(t.Context(), cb); err == nil {
			t.Errorf("%s: VerifyURL succeeded", name)
		}
	}
	synctest.Test(t, func(t *testing.T) {
		slow := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			select {
			case <-time.After(2 * time.Second):
			case <-r.Context().Done():
			}
		})
		srv := &wecomtest.Server{HTTPClient: wecomtest.HandlerClient(slow)}
		if err := srv.VerifyURL(t.Context(), cb); err == nil {
			t.Errorf("VerifyURL accepted an answer after 2 s; WeCom waits 1 s")
		}
	})
}

// uploadImg posts data as the part field to media/uploadimg.
func uploadImg(t *testing.T, srv *wecomtest.Server, tok, field string, data []byte) map[string]any {
	t.Helper()
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	w, _ := mw.CreateFormFile(field, "pic.png")
	w.Write(data)
	mw.Close()
	req, _ := http.NewRequest("POST", base+"media/uploadimg?"+url.Values{"access_token": {tok}}.Encode(), &buf)
	req.Header.Set("Content-Type", mw.FormDataContentType())
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	json.NewDecoder(resp.Body).Decode(&out)
	return out
}

// TestUploadImg: media/uploadimg (doc 90256) returns a permanent url for a JPG or PNG of
// 5 B to 2 MB, served back without a token; other files are refused.
func TestUploadImg(t *testing.T) {
	srv := &wecomtest.Server{}
	tok, _, _ := getToken(t, srv, "ww1", "s")
	pngData := append([]byte("\x89PNG\r\n\x1a\n"), bytes.Repeat([]byte{0}, 64)...)
	r := uploadImg(t, srv, tok, "media", pngData)
	u, _ := r["url"].(string)
	if code(r) != 0 || !strings.HasPrefix(u, "http://wecom.test/pic_wework/") {
		t.Fatalf("uploadimg = %v; want a url", r)
	}
	if m := srv.Image(u); m == nil || !bytes.Equal(m.Data, pngData) || m.ContentType != "image/png" {
		t.Errorf("Image(%s) = %+v", u, m)
	}
	resp, err := srv.Client().Get(u)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !bytes.Equal(got, pngData) || resp.Header.Get("Content-Type") != "image/png" {
		t.Errorf("GET url = %d %q %d bytes", resp.StatusCode, resp.Header.Get("Content-Type"), len(got))
	}
	big := append(append([]byte(nil), pngData...), make([]byte, 2<<20)...)
	for _, c := range []struct {
		name, field string
		data        []byte
		want        int
	}{
		{"text file", "media", []byte("hello, not an image"), 40005},
		{"5 bytes", "media", pngData[:5], 40006},
		{"over 2 MB", "media", big, 40009},
		{"no media part", "file", pngData, 44001},
	} {
		if r := uploadImg(t, srv, tok, c.field, c.data); code(r) != c.want {
			t.Errorf("uploadimg %s = %v; want %d", c.name, r, c.want)
		}
	}
	if r := uploadImg(t, srv, "bad-token", "media", pngData); code(r) != 40014 {
		t.Errorf("uploadimg with a bad token = %v; want 40014", r)
	}
}

// TestAgentGet reads the token's app with agent/get; another app's id is refused as WeCom
// refuses it (301002, or the code OtherAgentCode names).
func TestAgentGet(t *testing.T) {
	srv := &wecomtest.Server{}
	srv.AddApp("ww1", "right", 1000002)
	srv.AddUsers("alice")
	tok, _, _ := getToken(t, srv, "ww1", "right")
	get := func(agent string) map[string]any {
		return call(t, srv, "GET", "agent/get", url.Values{"access_token": {tok}, "agentid": {agent}}, "")
	}
	if m := get("1000002"); code(m) != 0 || m["agentid"] != float64(1000002) {
		t.Errorf("agent/get of the token's app = %v", m)
	}
	for agent, want := range map[string]int{"1000003": 301002, "": 41011, "x": 40056} {
		if m := get(agent); code(m) != want {
			t.Errorf("agent/get(%q) = %v; want errcode %d", agent, m, want)
		}
	}
	srv.OtherAgentCode = 40056
	if m := get("1000003"); code(m) != 40056 {
		t.Errorf("agent/get of another app with OtherAgentCode 40056 = %v", m)
	}
}

// TestDuplicateCheck: a message/send identical (as JSON, whatever its key order) to one shown
// within duplicate_check_interval is accepted with the first msgid and not delivered; a
// different body, another interval, or the IgnoreDuplicateCheck knob delivers it.
func TestDuplicateCheck(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var srv wecomtest.Server
		tok, _, _ := getToken(t, &srv, "ww1", "s")
		a := `{"touser":"u","msgtype":"text","agentid":1,"text":{"content":"x"},"enable_duplicate_check":1,"duplicate_check_interval":60}`
		aReordered := `{"agentid":1,"enable_duplicate_check":1,"msgtype":"text","duplicate_check_interval":60,"touser":"u","text":{"content":"x"}}`
		r1 := send(t, &srv, tok, a)
		r2 := send(t, &srv, tok, aReordered)
		if code(r1) != 0 || code(r2) != 0 || r1["msgid"] != r2["msgid"] {
			t.Fatalf("send, repeat = %v, %v; want both accepted with one msgid", r1, r2)
		}
		other := strings.Replace(a, `"x"`, `"y"`, 1)
		send(t, &srv, tok, other)
		time.Sleep(time.Minute)
		send(t, &srv, tok, a) // past the interval
		srv.IgnoreDuplicateCheck = true
		send(t, &srv, tok, a)
		var got []bool
		for _, s := range srv.Sent() {
			got = append(got, s.Duplicate)
			if s.Duplicate == (len(s.Delivered) > 0) {
				t.Errorf("%+v: a duplicate must not be delivered, others must", s)
			}
		}
		if fmt.Sprint(got) != "[false true false false false]" {
			t.Errorf("duplicates %v; want [false true false false false]", got)
		}
	})
}
