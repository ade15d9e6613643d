package tokenmgr

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
)

// A Provider hands out tokens and takes reports of rejected ones. *Manager is a Provider.
type Provider interface {
	Token(ctx context.Context) (Token, error)
	Invalidate(bad string)
}

var _ Provider = (*Manager)(nil)

// Transport is an http.RoundTripper that puts "Authorization: Bearer <token>" on every request
// it sends. When the response says the token was rejected (401 by default), it invalidates that
// token, and if the request body can be sent again (no body, or Request.GetBody set, as
// http.NewRequest does for in-memory bodies) it retries exactly once with a fresh token. A
// second rejection is returned as it is. Transport never sends a request with an empty token.
type Transport struct {
	// Source supplies tokens. It must not be nil.
	Source Provider
	// Base sends the requests. If nil, http.DefaultTransport is used.
	Base http.RoundTripper
	// Rejected reports whether a 401 response means the token was rejected, given up to the
	// first 64 KiB of its body (resp.Body still reads the whole body afterwards). Graph, for
	// one, answers 401 for reasons other than the token. If nil, every 401 does.
	Rejected func(resp *http.Response, body []byte) bool
}

// maxPeek bounds how much of a 401 body Rejected sees.
const maxPeek = 64 << 10

// ErrNoToken is returned by Transport instead of sending a request without a token.
var ErrNoToken = errors.New("tokenmgr: refusing to send a request with an empty access token")

// RoundTrip implements http.RoundTripper.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	closeBody := func() {
		if req.Body != nil {
			req.Body.Close()
		}
	}
	tok, err := t.token(req)
	if err != nil {
		closeBody()
		return nil, err
	}
	replayable := req.Body == nil || req.Body == http.NoBody || req.GetBody != nil
	resp, err := t.base().RoundTrip(t.authorize(req, tok, req.Body))
	if err != nil || !t.rejected(resp) {
		return resp, err
	}
	t.Source.Invalidate(tok.Value)
	if !replayable {
		return resp, nil
	}
	var body io.ReadCloser
	if req.GetBody != nil && req.Body != nil && req.Body != http.NoBody {
		if body, err = req.GetBody(); err != nil {
			return resp, nil // the rejection is the better answer
		}
	}
	tok2, err := t.token(req)
	if err != nil {
		if body != nil {
			body.Close()
		}
		return resp, nil
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	if body == nil {
		body = req.Body
	}
	return t.base().RoundTrip(t.authorize(req, tok2, body))
}

func (t *Transport) token(req *http.Request) (Token, error) {
	tok, err := t.Source.Token(req.Context())
	if err != nil {
		return Token{}, err
	}
	if tok.Value == "" {
		// Scheme, host and path only: a query string may hold a secret.
		return Token{}, fmt.Errorf("%w (%s %s://%s%s)", ErrNoToken, req.Method, req.URL.Scheme, req.URL.Host, req.URL.Path)
	}
	return tok, nil
}

func (t *Transport) authorize(req *http.Request, tok Token, body io.ReadCloser) *http.Request {
	r := req.Clone(req.Context())
	r.Body = body
	r.Header.Set("Authorization", "Bearer "+tok.Value)
	return r
}

func (t *Transport) rejected(resp *http.Response) bool {
	if resp.StatusCode != http.StatusUnauthorized {
		return false
	}
	if t.Rejected == nil {
		return true
	}
	peek, err := io.ReadAll(io.LimitReader(resp.Body, maxPeek))
	resp.Body = struct {
		io.Reader
		io.Closer
	}{io.MultiReader(bytes.NewReader(peek), resp.Body), resp.Body}
	if err != nil {
		return false
	}
	return t.Rejected(resp, peek)
}

func (t *Transport) base() http.RoundTripper {
	if t.Base != nil {
		return t.Base
	}
	return http.DefaultTransport
}
