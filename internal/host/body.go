package host

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"golang.org/x/sync/semaphore"

	"github.com/seed-a64d9e1f/chatwire/adapter"
)

// bodyBudget bounds the request bodies held in memory at once: a body is reserved before
// it is read (its Content-Length, or the route's limit when the length is not given) and
// released when its request is done. A request that does not fit is refused at once rather
// than queued: a flood of large or slow uploads cannot grow the host's memory.
type bodyBudget struct {
	size int64
	sem  *semaphore.Weighted
	held func(delta float64) // reports bytes held (a gauge); nil: none
}

func newBodyBudget(size int64, held func(float64)) *bodyBudget {
	return &bodyBudget{size: size, sem: semaphore.NewWeighted(size), held: held}
}

// hold reserves r's body, at most limit bytes. It fails with KindTooLarge when the body is
// over limit or over the whole budget, and KindUnavailable (retry after 1 s) when the
// budget is in use by other requests. release must be called once the body is no longer
// needed.
func (b *bodyBudget) hold(r *http.Request, limit int64) (release func(), err error) {
	n := r.ContentLength
	if n > limit {
		return nil, &adapter.Error{Kind: adapter.KindTooLarge, Message: fmt.Sprintf("request body of %d bytes is over %d", n, limit)}
	}
	if n < 0 {
		n = limit // unknown length: room for the largest
	}
	if n == 0 || b == nil {
		return func() {}, nil
	}
	if n > b.size {
		return nil, &adapter.Error{Kind: adapter.KindTooLarge, Message: fmt.Sprintf("request body of up to %d bytes is over the host's body memory (server.body_memory_mib)", n)}
	}
	if !b.sem.TryAcquire(n) {
		return nil, &adapter.Error{Kind: adapter.KindUnavailable, RetryAfter: time.Second,
			Message: "the host is reading as many request bodies as its memory budget allows (server.body_memory_mib); try again"}
	}
	if b.held != nil {
		b.held(float64(n))
	}
	return func() {
		b.sem.Release(n)
		if b.held != nil {
			b.held(-float64(n))
		}
	}, nil
}

// webhookRequest reads r's body, at most limit bytes, and returns r as the adapter's
// request. A body with a Content-Length (the budget has held that many bytes) is read into a
// buffer of its size, not grown from 512 bytes as io.ReadAll does; the adapter gets r's
// header itself, not a copy: the plugin client copies it into its RPC and the host does not
// read it after. Otherwise it is what adapter.NewWebhookRequest(r, limit) returns.
func webhookRequest(r *http.Request, limit int64) (*adapter.WebhookRequest, error) {
	n := r.ContentLength
	if n < 0 || n > limit {
		return adapter.NewWebhookRequest(r, limit)
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(r.Body, body); err != nil {
		return nil, &adapter.Error{Kind: adapter.KindInvalidRequest, Message: "reading webhook body", Err: err}
	}
	return &adapter.WebhookRequest{
		Method:     r.Method,
		Path:       r.URL.Path,
		Query:      r.URL.Query(),
		Header:     r.Header,
		Body:       body,
		RemoteAddr: r.RemoteAddr,
	}, nil
}

// isTimeout reports whether err is a read deadline passing.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
