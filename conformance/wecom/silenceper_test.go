package wecom_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"image"
	"image/color"
	"image/png"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/silenceper/wechat/v2/cache"
	"github.com/silenceper/wechat/v2/credential"
	"github.com/silenceper/wechat/v2/util"
	"github.com/silenceper/wechat/v2/work"
	"github.com/silenceper/wechat/v2/work/appchat"
	"github.com/silenceper/wechat/v2/work/config"
	"github.com/silenceper/wechat/v2/work/message"

	"github.com/seed-a64d9e1f/chatwire/adapter/wecom"
	"github.com/seed-a64d9e1f/chatwire/adapter/wecom/wecomtest"
	"github.com/seed-a64d9e1f/chatwire/tokenmgr"
)

// silenceper/wechat/v2 (v2.1.14, github.com/silenceper/wechat) is a widely used Go WeCom
// SDK written by others: its work clients must work against wecomtest as they do against
// WeCom, with only its documented URI modifier pointing them at the emulator.

const (
	spCorp   = "wwconformance01"
	spSecret = "conformance-secret"
	spAgent  = "1000002"
)

// silenceperWork starts wecomtest on 127.0.0.1 and returns silenceper's work client
// redirected to it with util.SetURIModifier (process-global: tests using it do not run in
// parallel), its token cache, and the emulator.
func silenceperWork(t *testing.T) (*work.Work, cache.Cache, *wecomtest.Server, *httptest.Server) {
	t.Helper()
	// silenceper sends agentid as a JSON string (spec §7); WeCom's acceptance of that is
	// unverified, so the emulator is told to accept it.
	srv := &wecomtest.Server{LenientAgentID: true}
	srv.AddApp(spCorp, spSecret, 1000002)
	srv.AddUsers("zhangsan", "lisi", "wangwu")
	hs := httptest.NewServer(srv)
	t.Cleanup(hs.Close)
	util.SetURIModifier(func(uri string) string {
		return strings.Replace(uri, "https://qyapi.weixin.qq.com", hs.URL, 1)
	})
	t.Cleanup(func() { util.SetURIModifier(nil) })
	mem := cache.NewMemory()
	wk := work.NewWork(&config.Config{CorpID: spCorp, CorpSecret: spSecret, AgentID: spAgent, Cache: mem})
	return wk, mem, srv, hs
}

func commonCode(t *testing.T, err error) int64 {
	t.Helper()
	var ce *util.CommonError
	if !errors.As(err, &ce) {
		t.Fatalf("error %v is not a *util.CommonError", err)
	}
	return ce.ErrCode
}

// TestSilenceperTokenAndMessages: gettoken (fetched once, cached), message/send with
// partly invalid recipients, and a 42001 after WeCom revokes the token, recovered by
// dropping silenceper's cached token.
func TestSilenceperTokenAndMessages(t *testing.T) {
	wk, mem, srv, _ := silenceperWork(t)
	tok, err := wk.GetContext().GetAccessToken()
	if err != nil || tok == "" {
		t.Fatalf("gettoken through silenceper: %q, %v", tok, err)
	}
	msgs := wk.GetMessage()
	send := func(to, content string) (*message.SendResponse, error) {
		return msgs.SendText(message.SendTextRequest{
			SendRequestCommon: &message.SendRequestCommon{ToUser: to, AgentID: spAgent},
			Text:              message.TextField{Content: content},
		})
	}
	r, err := send("ZhangSan|nobody", "你好 👋 <b>&")
	if err != nil {
		t.Fatalf("SendText: %v", err)
	}
	if r.MsgID == "" || r.InvalidUser != "nobody" {
		t.Errorf("SendText = %+v; want a msgid and invaliduser \"nobody\"", r)
	}
	long := strings.Repeat("长", 700) // 2100 bytes: WeCom truncates at 2048, at a character boundary
	if _, err := send("lisi", long); err != nil {
		t.Fatalf("SendText long: %v", err)
	}
	sent := srv.Sent()
	if len(sent) != 2 || sent[0].Content != "你好 👋 <b>&" || strings.Join(sent[0].Delivered, ",") != "zhangsan" ||
		sent[1].Content != strings.Repeat("长", 682) || !sent[1].Truncated {
		t.Errorf("emulator received %+v", sent)
	}
	if srv.TokenRequests() != 1 {
		t.Errorf("gettoken called %d times; silenceper caches the token", srv.TokenRequests())
	}

	srv.RevokeTokens(42001)
	_, err = send("zhangsan", "after revocation")
	if code := commonCode(t, err); code != 42001 {
		t.Fatalf("send after revocation: errcode %d; want 42001", code)
	}
	// silenceper does not refresh on 42001; its documented remedy is dropping the cached token.
	if err := mem.Delete(credential.CacheKeyWorkPrefix + "_access_token_" + spCorp + "_" + spAgent); err != nil {
		t.Fatal(err)
	}
	if _, err := send("zhangsan", "after refresh"); err != nil {
		t.Fatalf("send after dropping the cached token: %v", err)
	}
	if srv.TokensIssued() != 2 {
		t.Errorf("%d tokens issued; want 2", srv.TokensIssued())
	}
	if _, err := send("nobody", "x"); commonCode(t, err) != 81013 {
		t.Errorf("send to nobody valid: %v; want 81013", err)
	}
	// A wrong secret: gettoken answers 40001, which silenceper reports (as text, spec §7).
	bad := work.NewWork(&config.Config{CorpID: spCorp, CorpSecret: "wrong", AgentID: spAgent, Cache: cache.NewMemory()})
	if _, err := bad.GetContext().GetAccessToken(); err == nil || !strings.Contains(err.Error(), "errcode=40001") {
		t.Errorf("gettoken with a wrong secret: %v; want errcode=40001", err)
	}
}

// TestSilenceperAppChat: appchat/send to a chat the app created.
func TestSilenceperAppChat(t *testing.T) {
	wk, _, srv, hs := silenceperWork(t)
	tok, err := wk.GetContext().GetAccessToken()
	if err != nil {
		t.Fatal(err)
	}
	// silenceper has no appchat/create (spec §7): create the chat with a plain request.
	resp, err := http.Post(hs.URL+"/cgi-bin/appchat/create?access_token="+tok, "application/json",
		strings.NewReader(`{"name":"项目群","owner":"zhangsan","userlist":["zhangsan","lisi"],"chatid":"conf1"}`))
	if err != nil {
		t.Fatal(err)
	}
	var created struct {
		ErrCode int    `json:"errcode"`
		ChatID  string `json:"chatid"`
	}
	json.NewDecoder(resp.Body).Decode(&created)
	resp.Body.Close()
	if created.ErrCode != 0 || created.ChatID != "conf1" {
		t.Fatalf("appchat/create = %+v", created)
	}
	ac := wk.GetAppChat()
	if _, err := ac.SendText(appchat.SendTextRequest{SendRequestCommon: &appchat.SendRequestCommon{ChatID: "conf1"},
		Text: appchat.TextField{Content: "群消息"}}); err != nil {
		t.Fatalf("appchat SendText: %v", err)
	}
	if _, err := ac.SendText(appchat.SendTextRequest{SendRequestCommon: &appchat.SendRequestCommon{ChatID: "nochat"},
		Text: appchat.TextField{Content: "x"}}); commonCode(t, err) != 86003 {
		t.Errorf("appchat send to an unknown chat: %v; want 86003", err)
	}
	sent := srv.Sent()
	if len(sent) != 1 || sent[0].Endpoint != "appchat/send" || sent[0].ChatID != "conf1" || sent[0].Content != "群消息" {
		t.Errorf("emulator received %+v", sent)
	}
}

// pngBytes is a small valid PNG.
func pngBytes(t *testing.T) []byte {
	img := image.NewRGBA(image.Rect(0, 0, 4, 4))
	img.Set(1, 1, color.RGBA{R: 255, A: 255})
	var b bytes.Buffer
	if err := png.Encode(&b, img); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// TestSilenceperMedia: media/upload from a file and from a reader, media/get of both,
// media/uploadimg (a permanent image URL, served back byte for byte) and the errors of an
// unknown media_id and a non-image uploadimg.
func TestSilenceperMedia(t *testing.T) {
	wk, _, srv, _ := silenceperWork(t)
	mat := wk.GetMaterial()
	defer func() {
		if t.Failed() {
			t.Logf("emulator calls: upload %d, uploadimg %d", srv.Calls("media/upload"), srv.Calls("media/uploadimg"))
		}
	}()
	dir := t.TempDir()
	doc := []byte("quarterly report: 企业微信 conformance\n")
	docPath := filepath.Join(dir, "report.txt")
	pic := pngBytes(t)
	picPath := filepath.Join(dir, "pixel.png")
	os.WriteFile(docPath, doc, 0o600)
	os.WriteFile(picPath, pic, 0o600)

	up, err := mat.UploadTempFile(docPath, "file")
	if err != nil || up.MediaID == "" || up.Type != "file" || up.CreateAt == "" {
		t.Fatalf("UploadTempFile = %+v, %v", up, err)
	}
	up2, err := mat.UploadTempFileFromReader("pixel.png", "image", bytes.NewReader(pic))
	if err != nil || up2.MediaID == "" || up2.Type != "image" {
		t.Fatalf("UploadTempFileFromReader = %+v, %v", up2, err)
	}
	for id, want := range map[string][]byte{up.MediaID: doc, up2.MediaID: pic} {
		got, err := mat.GetTempFile(id)
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("GetTempFile(%s) = %d bytes, %v; want the %d uploaded", id, len(got), err, len(want))
		}
	}
	if _, err := mat.GetTempFile("no-such-media"); commonCode(t, err) != 40007 {
		t.Errorf("GetTempFile(unknown): %v; want 40007", err)
	}
	// A media_id is good for a message.
	if _, err := wk.GetMessage().SendImage(message.SendImageRequest{
		SendRequestCommon: &message.SendRequestCommon{ToUser: "wangwu", AgentID: spAgent},
		Image:             message.ImageField{MediaID: up2.MediaID}}); err != nil {
		t.Errorf("SendImage: %v", err)
	}

	img, err := mat.UploadImg(picPath)
	if err != nil || img.URL == "" {
		t.Fatalf("UploadImg = %+v, %v; want a permanent url (doc 90256)", img, err)
	}
	img2, err := mat.UploadImgFromReader("pixel.png", bytes.NewReader(pic))
	if err != nil || img2.URL == "" || img2.URL == img.URL {
		t.Fatalf("UploadImgFromReader = %+v, %v", img2, err)
	}
	for _, u := range []string{img.URL, img2.URL} {
		resp, err := http.Get(u)
		if err != nil {
			t.Fatalf("GET %s: %v", u, err)
		}
		got, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !bytes.Equal(got, pic) || resp.Header.Get("Content-Type") != "image/png" {
			t.Errorf("GET %s = %d %q, %d bytes; want the uploaded PNG", u, resp.StatusCode, resp.Header.Get("Content-Type"), len(got))
		}
	}
	if _, err := mat.UploadImg(docPath); commonCode(t, err) != 40005 {
		t.Errorf("UploadImg(text file): %v; want 40005 (only JPG and PNG)", err)
	}
}

// TestChatwireWorkRecoversFrom42001: wecom.Client.Work (silenceper's client on chatwire's
// token Manager) sends through the emulator, and after WeCom revokes the token a call
// wrapped in Tokens().Do with wecom.FromWeChat fetches one new token and succeeds, as
// Client.Work documents.
func TestChatwireWorkRecoversFrom42001(t *testing.T) {
	_, _, srv, hs := silenceperWork(t)
	c, err := wecom.New(wecom.Config{CorpID: spCorp, CorpSecret: spSecret, AgentID: 1000002, APIBase: hs.URL},
		wecom.Options{HTTPClient: hs.Client()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	wk := c.Work()
	send := func(content string) error {
		return c.Tokens().Do(t.Context(), func(ctx context.Context, _ tokenmgr.Token) error {
			_, err := wk.GetMessage().SendText(message.SendTextRequest{
				SendRequestCommon: &message.SendRequestCommon{ToUser: "zhangsan", AgentID: spAgent},
				Text:              message.TextField{Content: content}})
			return wecom.FromWeChat("message/send", err)
		})
	}
	if err := send("before"); err != nil {
		t.Fatalf("send through Client.Work: %v", err)
	}
	srv.RevokeTokens(42001)
	if err := send("after"); err != nil {
		t.Fatalf("send after revocation: %v; want one refresh and a retry", err)
	}
	var apiErr *wecom.APIError
	if err := wecom.FromWeChat("message/send", func() error {
		_, err := wk.GetMessage().SendText(message.SendTextRequest{
			SendRequestCommon: &message.SendRequestCommon{ToUser: "nobody", AgentID: spAgent},
			Text:              message.TextField{Content: "x"}})
		return err
	}()); !errors.As(err, &apiErr) || apiErr.Code != 81013 {
		t.Errorf("FromWeChat(81013) = %v; want an *APIError with code 81013", err)
	}
	if n := len(srv.Sent()); n != 2 || srv.TokensIssued() != 2 {
		t.Errorf("%d messages, %d tokens issued; want 2 and 2", n, srv.TokensIssued())
	}
}
