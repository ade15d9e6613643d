package wecom_test

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"testing/synctest"

	"github.com/seed-a64d9e1f/chatwire/adapter"
	"github.com/seed-a64d9e1f/chatwire/adapter/wecom"
	"github.com/seed-a64d9e1f/chatwire/adapter/wecom/wecomtest"
	"github.com/seed-a64d9e1f/chatwire/tokenmgr"
	"github.com/silenceper/wechat/v2/util"
	"github.com/silenceper/wechat/v2/work/message"
)

// TestSilenceperWork: silenceper's own clients, from Client.Work, use the Client's token
// Manager; wrapped in Manager.Do with FromWeChat they get the T5 retry too. It changes
// silenceper's process-global URI modifier and HTTP client, so it is not parallel.
func TestSilenceperWork(t *testing.T) {
	synctest.Test(t, testSilenceperWork)
}

func testSilenceperWork(t *testing.T) {
	srv := &wecomtest.Server{LenientAgentID: true} // silenceper sends agentid as a string
	srv.AddApp(testCorp, testSecret, testAgent)
	oldClient := util.DefaultHTTPClient
	util.DefaultHTTPClient = srv.Client()
	util.SetURIModifier(func(uri string) string {
		return strings.Replace(uri, "https://qyapi.weixin.qq.com", "http://wecom.test", 1)
	})
	t.Cleanup(func() {
		util.DefaultHTTPClient = oldClient
		util.SetURIModifier(nil)
	})
	c, err := wecom.New(testConfig(), wecom.Options{HTTPClient: srv.Client()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Send(t.Context(), text(adapter.Target{User: "u"}, "ours")); err != nil {
		t.Fatal(err)
	}
	msgs := c.Work().GetMessage()
	sendText := func(s string) error {
		return c.Tokens().Do(t.Context(), func(ctx context.Context, _ tokenmgr.Token) error {
			_, err := msgs.SendText(message.SendTextRequest{
				SendRequestCommon: &message.SendRequestCommon{ToUser: "u", AgentID: fmt.Sprint(testAgent)},
				Text:              message.TextField{Content: s},
			})
			return wecom.FromWeChat(wecom.EndpointSend, err)
		})
	}
	if err := sendText("theirs"); err != nil {
		t.Fatal(err)
	}
	srv.RevokeTokens(42001)
	if err := sendText("after revocation"); err != nil {
		t.Fatalf("silenceper send after revocation: %v", err)
	}
	if got := srv.TokenRequests(); got != 2 {
		t.Errorf("TokenRequests() = %d; want 2 (one shared Manager)", got)
	}
	if got := len(srv.Sent()); got != 3 {
		t.Errorf("%d messages delivered; want 3", got)
	}
}

func TestFromWeChat(t *testing.T) {
	t.Parallel()
	if wecom.FromWeChat("x", nil) != nil {
		t.Errorf("FromWeChat(nil) != nil")
	}
	err := wecom.FromWeChat("message/send", util.NewCommonError("MessageSendText", 42001, "access_token expired"))
	if !errors.Is(err, tokenmgr.ErrInvalid) || !errors.Is(err, adapter.ErrTokenExpired) {
		t.Errorf("FromWeChat(42001) = %v; want ErrInvalid", err)
	}
	raw := &url.Error{Op: "Post", URL: "https://qyapi.weixin.qq.com/cgi-bin/message/send?access_token=SECRETTOKEN", Err: errors.New("reset")}
	err = wecom.FromWeChat("message/send", fmt.Errorf("http post error : uri=%v , statusCode=%v; %w", "https://x/cgi-bin/gettoken?corpid=a&corpsecret=SECRETSECRET", 502, raw))
	if strings.Contains(err.Error(), "SECRETTOKEN") || strings.Contains(err.Error(), "SECRETSECRET") || !strings.Contains(err.Error(), "REDACTED") {
		t.Errorf("FromWeChat leaks: %v", err)
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		t.Errorf("FromWeChat wraps the original error, URL and all")
	}
}
