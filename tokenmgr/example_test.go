package tokenmgr_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"time"

	"github.com/seed-a64d9e1f/chatwire/tokenmgr"
)

// A WeCom-style source: the platform answers HTTP 200 with an errcode, and the source turns
// the codes into errors the Manager understands.
func ExampleManager() {
	gettoken := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, `{"errcode":0,"errmsg":"ok","access_token":"accesstoken000001","expires_in":7200}`)
	}))
	defer gettoken.Close()

	src := tokenmgr.SourceFunc(func(ctx context.Context) (tokenmgr.Token, error) {
		req, err := http.NewRequestWithContext(ctx, "GET", gettoken.URL+"/cgi-bin/gettoken", nil)
		if err != nil {
			return tokenmgr.Token{}, err
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return tokenmgr.Token{}, fmt.Errorf("%w: %v", tokenmgr.ErrTemporary, err)
		}
		defer resp.Body.Close()
		var body struct {
			ErrCode     int    `json:"errcode"`
			ErrMsg      string `json:"errmsg"`
			AccessToken string `json:"access_token"`
			ExpiresIn   int    `json:"expires_in"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
			return tokenmgr.Token{}, fmt.Errorf("%w: %v", tokenmgr.ErrTemporary, err)
		}
		if body.ErrCode == 40001 {
			return tokenmgr.Token{}, &tokenmgr.PlatformError{Platform: "wecom", Code: "40001", Message: body.ErrMsg,
				Hint: "corp_secret is wrong", Kind: tokenmgr.ErrCredentials}
		}
		return tokenmgr.Token{Value: body.AccessToken, ExpiresAt: time.Now().Add(time.Duration(body.ExpiresIn) * time.Second)}, nil
	})

	m := tokenmgr.New("wecom/ww0123456789/1000002", src, tokenmgr.Options{})
	defer m.Close()

	tok, err := m.Token(context.Background())
	if err != nil {
		fmt.Println("error:", err)
		return
	}
	fmt.Println("fingerprint:", tokenmgr.Fingerprint(tok.Value))
	fmt.Println("state:", m.Status().State)

	// A send failed with errcode 42001: report the token; Do retries once with a fresh one.
	err = m.Do(context.Background(), func(ctx context.Context, tok tokenmgr.Token) error {
		return nil // call the API with tok.Value here
	})
	fmt.Println("send:", err)
	// Output:
	// fingerprint: 8db1f1e7
	// state: fresh
	// send: <nil>
}

// Transport authenticates every request with the Manager's token and retries once when the
// API answers 401.
func ExampleTransport() {
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, r.Header.Get("Authorization") != "")
	}))
	defer api.Close()
	src := tokenmgr.SourceFunc(func(ctx context.Context) (tokenmgr.Token, error) {
		return tokenmgr.Token{Value: "eyJ0eXAi", ExpiresAt: time.Now().Add(time.Hour)}, nil
	})
	m := tokenmgr.New("graph/tenant/client/app", src, tokenmgr.Options{})
	defer m.Close()

	client := &http.Client{Transport: &tokenmgr.Transport{Source: m}}
	resp, err := client.Get(api.URL + "/v1.0/me")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer resp.Body.Close()
	var authorized bool
	json.NewDecoder(resp.Body).Decode(&authorized)
	fmt.Println(resp.StatusCode, authorized)
	// Output: 200 true
}
