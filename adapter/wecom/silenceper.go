package wecom

import (
	"errors"
	"fmt"
	"regexp"
	"strconv"

	"github.com/silenceper/wechat/v2/cache"
	"github.com/silenceper/wechat/v2/util"
	"github.com/silenceper/wechat/v2/work"
	"github.com/silenceper/wechat/v2/work/config"
)

// Work returns a silenceper/wechat WeCom client for this app whose access tokens come from
// the Client's token Manager (refreshed ahead, shared, never fetched twice), for the APIs
// this package does not wrap (address book, external contacts, check-in, …).
//
// silenceper's calls take no ctx and go to its process-global base URL (util.SetURIModifier)
// through its process-global util.DefaultHTTPClient, so they ignore [Config.APIBase] and
// [Options.HTTPClient]; they also do not retry on an expired token: wrap them in
// c.Tokens().Do and return an error matching tokenmgr.ErrInvalid for errcodes 40014, 41001
// and 42001, which [FromWeChat] does. For these reasons the Client itself calls WeCom
// directly.
func (c *Client) Work() *work.Work {
	wk := work.NewWork(&config.Config{
		CorpID:         c.cfg.CorpID,
		AgentID:        strconv.FormatInt(c.cfg.AgentID, 10),
		Cache:          cache.NewMemory(), // unused: the token handle below replaces its cache
		Token:          c.cfg.Token,
		EncodingAESKey: c.cfg.EncodingAESKey,
	})
	wk.GetContext().AccessTokenHandle = c.tokens.WeChatHandle()
	return wk
}

// Secrets inside error text, in any letter case: query parameters (access_token=…, also
// URL-escaped as access_token%3D…), JSON fields ("access_token":"…", up to the closing quote
// or, in a cut-off body, the end) and the same JSON HTML-escaped (&quot;access_token&quot;:…).
var (
	secretParam     = regexp.MustCompile(`(?i)(access_token|corpsecret|secret)(=|%3D)[^&\s"',<]*`)
	secretField     = regexp.MustCompile(`(?i)"(access_token|corpsecret|secret)"(\s*:\s*)"(?:[^"\\]|\\.)*"?`)
	secretFieldHTML = regexp.MustCompile(`(?i)&quot;(access_token|corpsecret|secret)&quot;(\s*:\s*)&quot;.*?(&quot;|$)`)
)

// redactSecrets replaces the values of secret query parameters and JSON fields in b.
func redactSecrets(b []byte) []byte {
	b = secretParam.ReplaceAll(b, []byte("${1}${2}REDACTED"))
	b = secretField.ReplaceAll(b, []byte(`"${1}"${2}"REDACTED"`))
	return secretFieldHTML.ReplaceAll(b, []byte(`&quot;${1}&quot;${2}&quot;REDACTED&quot;`))
}

// FromWeChat converts an error of a silenceper/wechat call on endpoint ("user/get") into
// this package's terms: a *util.CommonError becomes an *APIError (so errors.Is works with
// tokenmgr.ErrInvalid, tokenmgr.ErrCredentials and the adapter kinds, and Manager.Do
// retries on an expired token); any other error is replaced by one whose text has
// access_token and corpsecret values redacted (silenceper puts the full URL in its
// messages) and which does not wrap the original. nil stays nil.
func FromWeChat(endpoint string, err error) error {
	if err == nil {
		return nil
	}
	var ce *util.CommonError
	if errors.As(err, &ce) {
		return &APIError{Code: int(ce.ErrCode), Msg: truncate(ce.ErrMsg, 300), Endpoint: endpoint}
	}
	return fmt.Errorf("wecom: %s: %s", endpoint, redactSecrets([]byte(err.Error())))
}
