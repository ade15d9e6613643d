package tokenmgr

import (
	"context"

	"golang.org/x/oauth2"
)

// TokenSource returns m as an oauth2.TokenSource, for libraries built on golang.org/x/oauth2.
// oauth2.TokenSource takes no context: each call waits at most the Manager's RefreshTimeout.
// Wrapping it in oauth2.ReuseTokenSource is unnecessary; m already caches.
func (m *Manager) TokenSource() oauth2.TokenSource { return oauth2Source{m} }

type oauth2Source struct{ m *Manager }

func (s oauth2Source) Token() (*oauth2.Token, error) {
	ctx, cancel := context.WithTimeout(context.Background(), s.m.opts.RefreshTimeout)
	defer cancel()
	t, err := s.m.Token(ctx)
	if err != nil {
		return nil, err
	}
	return &oauth2.Token{AccessToken: t.Value, TokenType: "Bearer", Expiry: t.ExpiresAt}, nil
}

// WeChatHandle returns m as a github.com/silenceper/wechat/v2 credential.AccessTokenContextHandle,
// so silenceper's API clients use this Manager's token (set it with their SetAccessTokenHandle).
// silenceper does not retry on an expired token: wrap calls with [Manager.Do] for that.
func (m *Manager) WeChatHandle() WeChatHandle { return WeChatHandle{m} }

// WeChatHandle adapts a Manager to silenceper/wechat's AccessTokenContextHandle interface.
type WeChatHandle struct{ m *Manager }

// GetAccessToken returns the current token, waiting at most the Manager's RefreshTimeout.
func (h WeChatHandle) GetAccessToken() (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), h.m.opts.RefreshTimeout)
	defer cancel()
	return h.GetAccessTokenContext(ctx)
}

// GetAccessTokenContext returns the current token.
func (h WeChatHandle) GetAccessTokenContext(ctx context.Context) (string, error) {
	return h.m.AccessToken(ctx)
}
