package wecom_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/seed-a64d9e1f/chatwire/adapter"
	"github.com/seed-a64d9e1f/chatwire/adapter/wecom"
	"github.com/seed-a64d9e1f/chatwire/adapter/wecom/wecomtest"
	"github.com/seed-a64d9e1f/chatwire/tokenmgr"
)

func TestAPIError(t *testing.T) {
	tests := []struct {
		code     int
		endpoint string
		kind     adapter.Kind
		tm       error // tokenmgr sentinel matched, if any
		retry    time.Duration
		hint     bool
	}{
		{40014, wecom.EndpointSend, adapter.KindTokenExpired, tokenmgr.ErrInvalid, 0, true},
		{42001, wecom.EndpointSend, adapter.KindTokenExpired, tokenmgr.ErrInvalid, 0, true},
		{41001, wecom.EndpointSend, adapter.KindTokenExpired, tokenmgr.ErrInvalid, 0, true},
		{40001, wecom.EndpointSend, adapter.KindTokenExpired, tokenmgr.ErrInvalid, 0, true},
		{40001, wecom.EndpointGetToken, adapter.KindUnauthorized, tokenmgr.ErrCredentials, 0, true},
		{40013, wecom.EndpointGetToken, adapter.KindUnauthorized, tokenmgr.ErrCredentials, 0, true},
		{41004, wecom.EndpointGetToken, adapter.KindUnauthorized, tokenmgr.ErrCredentials, 0, true},
		{60020, wecom.EndpointSend, adapter.KindUnauthorized, tokenmgr.ErrCredentials, 0, true},
		{48002, wecom.EndpointSend, adapter.KindUnauthorized, nil, 0, true},
		{-1, wecom.EndpointSend, adapter.KindUnavailable, tokenmgr.ErrTemporary, 0, true},
		{45009, wecom.EndpointSend, adapter.KindRateLimited, tokenmgr.ErrTemporary, 60 * time.Second, true},
		{45033, wecom.EndpointSend, adapter.KindRateLimited, tokenmgr.ErrTemporary, time.Second, true},
		{81013, wecom.EndpointSend, adapter.KindInvalidRecipient, nil, 0, true},
		{60111, wecom.EndpointSend, adapter.KindInvalidRecipient, nil, 0, true},
		{40007, wecom.EndpointSend, adapter.KindNotFound, nil, 0, true},
		{86003, wecom.EndpointAppChatSend, adapter.KindNotFound, nil, 0, true},
		{45002, wecom.EndpointSend, adapter.KindTooLarge, nil, 0, true},
		{40008, wecom.EndpointSend, adapter.KindInvalidRequest, nil, 0, true},
		{99999, wecom.EndpointSend, adapter.KindInvalidRequest, nil, 0, false},
	}
	for _, tc := range tests {
		e := &wecom.APIError{Code: tc.code, Msg: "m", Endpoint: tc.endpoint}
		if e.Kind() != tc.kind || !errors.Is(e, tc.kind.Err()) {
			t.Errorf("%d on %s: Kind() = %s; want %s", tc.code, tc.endpoint, e.Kind(), tc.kind)
		}
		for _, s := range []error{tokenmgr.ErrInvalid, tokenmgr.ErrCredentials, tokenmgr.ErrTemporary} {
			if got := errors.Is(e, s); got != (s == tc.tm) {
				t.Errorf("%d on %s: errors.Is(%v) = %v", tc.code, tc.endpoint, s, got)
			}
		}
		if e.RetryAfter() != tc.retry || tokenmgr.RetryAfter(e) != tc.retry {
			t.Errorf("%d: RetryAfter = %v; want %v", tc.code, e.RetryAfter(), tc.retry)
		}
		if (e.Hint() != "") != tc.hint {
			t.Errorf("%d: Hint() = %q", tc.code, e.Hint())
		}
	}
}

func TestHTTPError(t *testing.T) {
	tests := []struct {
		status int
		kind   adapter.Kind
	}{
		{502, adapter.KindUnavailable},
		{503, adapter.KindUnavailable},
		{429, adapter.KindRateLimited},
		{404, adapter.KindNotFound},
		{403, adapter.KindUnavailable},
	}
	for _, tc := range tests {
		if got := adapter.KindOf(&wecom.HTTPError{StatusCode: tc.status}); got != tc.kind {
			t.Errorf("KindOf(HTTP %d) = %s; want %s", tc.status, got, tc.kind)
		}
	}
}

// blockingTransport never answers: it waits for the request's ctx.
type blockingTransport struct{}

func (blockingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	<-r.Context().Done()
	return nil, r.Context().Err()
}

// TestContext: every call gives up when the caller's ctx does.
func TestContext(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c, err := wecom.New(testConfig(), wecom.Options{HTTPClient: &http.Client{Transport: blockingTransport{}}})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		ctx, cancel := context.WithTimeout(t.Context(), 3*time.Second)
		defer cancel()
		start := time.Now()
		_, err = c.Send(ctx, text(adapter.Target{User: "u"}, "x"))
		if !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, adapter.ErrUnavailable) {
			t.Errorf("Send on a hung server: %v; want deadline exceeded, unavailable", err)
		}
		if d := time.Since(start); d != 3*time.Second {
			t.Errorf("Send returned after %v; want 3s", d)
		}
		canceled, cancel2 := context.WithCancel(t.Context())
		cancel2()
		if _, err := c.Upload(canceled, adapter.Attachment{Name: "f", Data: []byte("123456")}); !errors.Is(err, context.Canceled) {
			t.Errorf("Upload with canceled ctx: %v", err)
		}
	})
}

func TestGetTokenBusyRetried(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c, srv := setup(t, wecom.Options{})
		srv.Fail("gettoken", -1, 3)
		if _, err := c.Send(t.Context(), text(adapter.Target{User: "u"}, "x")); err != nil {
			t.Fatalf("Send with gettoken busy 3 times: %v", err)
		}
		if got := srv.TokenRequests(); got != 4 {
			t.Errorf("TokenRequests() = %d; want 4", got)
		}
	})
}

// TestGetTokenBusyGivesUp: gettoken answering -1 is retried 3 times with a short, jittered
// backoff (0.5 s, 1 s, 2 s, each halved at least), then the -1 comes back as a temporary error.
func TestGetTokenBusyGivesUp(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := &wecomtest.Server{}
		srv.Fail("gettoken", -1, -1)
		src := &wecom.TokenSource{APIBase: "http://wecom.test", CorpID: testCorp, CorpSecret: testSecret, HTTPClient: srv.Client()}
		start := time.Now()
		_, err := src.Token(t.Context())
		var apiErr *wecom.APIError
		if !errors.As(err, &apiErr) || apiErr.Code != -1 || !errors.Is(err, tokenmgr.ErrTemporary) {
			t.Fatalf("Token error = %v; want temporary -1", err)
		}
		if got := srv.TokenRequests(); got != 4 {
			t.Errorf("TokenRequests() = %d; want 4 (1 + 3 retries)", got)
		}
		if d := time.Since(start); d < 1750*time.Millisecond || d > 3500*time.Millisecond {
			t.Errorf("gave up after %v; want 1.75 s to 3.5 s of backoff", d)
		}
	})
}

// TestGetTokenRateLimited: gettoken answering 45009 is not retried: the Client returns a
// rate-limited error with a retry-after of 60 s, then the time left of it to later callers,
// and asks again only once it has passed.
func TestGetTokenRateLimited(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c, srv := setup(t, wecom.Options{})
		srv.Fail("gettoken", 45009, -1)
		start := time.Now()
		_, err := c.Send(t.Context(), text(adapter.Target{User: "u"}, "x"))
		if !errors.Is(err, adapter.ErrRateLimited) || adapter.Code(err) != "45009" || adapter.RetryAfter(err) < 60*time.Second {
			t.Fatalf("Send error = %v (retry after %v); want rate limited 45009, ≥ 60 s", err, adapter.RetryAfter(err))
		}
		if got := adapter.HTTPStatus(err); got != http.StatusTooManyRequests {
			t.Errorf("HTTPStatus = %d; want 429", got)
		}
		if d := time.Since(start); d != 0 {
			t.Errorf("Send waited %v on 45009; want an immediate return", d)
		}
		if got := srv.TokenRequests(); got != 1 {
			t.Errorf("TokenRequests() = %d; want 1 (no retry on 45009)", got)
		}
		time.Sleep(30 * time.Second)
		if _, err := c.Send(t.Context(), text(adapter.Target{User: "u"}, "x")); !errors.Is(err, adapter.ErrRateLimited) || adapter.RetryAfter(err) != 30*time.Second {
			t.Errorf("Send 30 s later: %v (retry after %v); want rate limited, retry after the 30 s left", err, adapter.RetryAfter(err))
		}
		if got := srv.TokenRequests(); got != 1 {
			t.Errorf("TokenRequests() = %d 30 s later; want still 1", got)
		}
		srv.ClearFailures()
		time.Sleep(31 * time.Second)
		if _, err := c.Send(t.Context(), text(adapter.Target{User: "u"}, "x")); err != nil {
			t.Errorf("Send after the block: %v", err)
		}
		if got := srv.TokenRequests(); got != 2 {
			t.Errorf("TokenRequests() = %d after the block; want 2", got)
		}
	})
}

// TestHTTPErrorRedacted: a non-200 answer's body (a proxy echoing the request, say) loses
// secret values both as query parameters and as JSON fields, even when cut off mid-value.
func TestHTTPErrorRedacted(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, body string
		secrets    []string
	}{
		{"query", `bad gateway for /cgi-bin/gettoken?corpid=ww1&corpsecret=QSECRET1&x=1 token access_token=QTOKEN1`, []string{"QSECRET1", "QTOKEN1"}},
		{"json", `{"error":"bad gateway","request":{"access_token":"JTOKEN1","corpsecret" : "JSECRET1","secret":"J\"SECRET2"}}`, []string{"JTOKEN1", "JSECRET1", "SECRET2"}},
		{"upper case", `ACCESS_TOKEN=UTOKEN1&CorpSecret=USECRET1 {"Access_Token":"UTOKEN2"}`, []string{"UTOKEN1", "USECRET1", "UTOKEN2"}},
		{"url-escaped", `<a href="/cgi-bin/message/send%3Faccess_token%3DETOKEN1%26x%3D1">retry</a>`, []string{"ETOKEN1"}},
		{"html-escaped json", `<pre>{&quot;access_token&quot;:&quot;HTOKEN1&quot;,&quot;secret&quot;: &quot;HSECRET1&quot;}</pre>`, []string{"HTOKEN1", "HSECRET1"}},
		{"json cut off", `{"pad":"` + strings.Repeat("x", 480) + `","access_token":"CUTTOKEN` + strings.Repeat("z", 100) + `"}`, []string{"CUTTOK"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			hc := &http.Client{Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
				return &http.Response{StatusCode: http.StatusBadGateway, Body: io.NopCloser(strings.NewReader(tc.body)),
					Header: http.Header{}, Request: r}, nil
			})}
			src := &wecom.TokenSource{CorpID: testCorp, CorpSecret: testSecret, HTTPClient: hc}
			_, err := src.Token(t.Context())
			var he *wecom.HTTPError
			if !errors.As(err, &he) || he.StatusCode != http.StatusBadGateway {
				t.Fatalf("Token error = %v; want an HTTPError 502", err)
			}
			if !strings.Contains(string(he.Body), "REDACTED") {
				t.Errorf("body %q has nothing redacted", he.Body)
			}
			assertNoSecrets(t, err.Error()+string(he.Body), tc.secrets...)
		})
	}
	err := wecom.FromWeChat("user/get", errors.New(`bad answer {"access_token":"FWTOKEN","errcode":1}`))
	assertNoSecrets(t, err.Error(), "FWTOKEN")
}

// Test40001Hint: 40001 blames the secret when gettoken answers it, and the token when a
// business API does after a successful refresh (spec §2).
func Test40001Hint(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fromGetToken := (&wecom.APIError{Code: 40001, Endpoint: wecom.EndpointGetToken}).Hint()
		fromSend := (&wecom.APIError{Code: 40001, Endpoint: wecom.EndpointSend}).Hint()
		if !strings.Contains(fromGetToken, "secret is wrong") {
			t.Errorf("gettoken 40001 hint = %q; want it to blame the secret", fromGetToken)
		}
		if strings.Contains(fromSend, "secret") || !strings.Contains(fromSend, "access token") {
			t.Errorf("message/send 40001 hint = %q; want it to blame the token, not the secret", fromSend)
		}

		c, srv := setup(t, wecom.Options{})
		srv.Fail("message/send", 40001, -1)
		_, err := c.Send(t.Context(), text(adapter.Target{User: "u"}, "x"))
		if !errors.Is(err, adapter.ErrTokenExpired) || adapter.Code(err) != "40001" {
			t.Fatalf("Send error = %v; want token expired 40001", err)
		}
		if strings.Contains(err.Error(), "secret is wrong") || !strings.Contains(err.Error(), fromSend) {
			t.Errorf("Send error %q; want the token hint", err)
		}
		if got := srv.TokenRequests(); got != 2 {
			t.Errorf("TokenRequests() = %d; want 2 (one refresh)", got)
		}
	})
}

// TestRedirectsRefused (issue 11 item 10): an API base that answers with a redirect must not
// make the client carry the token (a query parameter) or the corp secret to the target, not
// even in a Referer. The redirect is refused with a clear error that holds no secret.
func TestRedirectsRefused(t *testing.T) {
	t.Parallel()
	const leakToken = "TOKEN-must-not-leak-7f3a"
	for _, status := range []int{http.StatusMovedPermanently, http.StatusFound, http.StatusSeeOther,
		http.StatusTemporaryRedirect, http.StatusPermanentRedirect} {
		t.Run(strconv.Itoa(status), func(t *testing.T) {
			t.Parallel()
			var mu sync.Mutex
			var elsewhere []string // requests the redirect target saw
			target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				mu.Lock()
				elsewhere = append(elsewhere, r.Method+" "+r.URL.String()+" referer="+r.Referer())
				mu.Unlock()
				io.WriteString(w, `{"errcode":0,"errmsg":"ok","access_token":"x","expires_in":7200,"msgid":"m1"}`)
			}))
			defer target.Close()
			var redirectToken atomic.Bool // whether gettoken is redirected too
			api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path == "/cgi-bin/gettoken" && !redirectToken.Load() {
					io.WriteString(w, `{"errcode":0,"errmsg":"ok","access_token":"`+leakToken+`","expires_in":7200}`)
					return
				}
				http.Redirect(w, r, target.URL+r.URL.RequestURI(), status)
			}))
			defer api.Close()

			hc := api.Client() // follows redirects by default
			c, err := wecom.New(wecom.Config{CorpID: testCorp, CorpSecret: testSecret, AgentID: testAgent, APIBase: api.URL},
				wecom.Options{HTTPClient: hc})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			check := func(what string, err error) {
				t.Helper()
				if err == nil {
					t.Fatalf("%s through a %d redirect succeeded; want an error", what, status)
				}
				if !strings.Contains(err.Error(), "redirect") {
					t.Errorf("%s error = %q; want one saying the redirect was refused", what, err)
				}
				assertNoSecrets(t, err.Error(), leakToken, testSecret)
				mu.Lock()
				defer mu.Unlock()
				if len(elsewhere) != 0 {
					t.Errorf("%s: the redirect target saw %q; want no request", what, elsewhere)
				}
			}
			_, err = c.Send(t.Context(), text(adapter.Target{User: "zhangsan"}, "hi"))
			check("Send", err)
			var he *wecom.HTTPError
			if !errors.As(err, &he) || he.StatusCode != status {
				t.Errorf("Send error = %#v; want an *HTTPError with status %d", err, status)
			}
			_, err = c.Media(t.Context(), "media1")
			check("Media", err)

			redirectToken.Store(true)
			src := &wecom.TokenSource{APIBase: api.URL, CorpID: testCorp, CorpSecret: testSecret, HTTPClient: hc}
			_, err = src.Token(t.Context())
			check("gettoken", err)

			if hc.CheckRedirect != nil {
				t.Errorf("the caller's http.Client was changed")
			}
		})
	}
}
