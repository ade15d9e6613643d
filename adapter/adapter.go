// Package adapter is the platform-neutral model of chatwire: the [Adapter] a bot framework
// holds (in process or across the plugin boundary alike), the messages it sends, the events it
// receives and the kinds of errors it returns. Platform packages such as adapter/wecom and
// adapter/graph implement it.
package adapter

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"

	"github.com/seed-a64d9e1f/chatwire/tokenmgr"
)

// Platform names, as used in [Event.Platform], [Error.Platform] and configuration.
const (
	PlatformWeCom = "wecom"
	PlatformGraph = "graph"
	PlatformTeams = "teams" // Teams bots over the Bot Connector (adapter/teams)
	// PlatformWeComAIBot is WeCom's 智能机器人 (AI Bot) API, long connection or webhook.
	PlatformWeComAIBot = "wecom_aibot"
)

// An Adapter connects one bot to one platform. Its methods are safe for concurrent use and
// take the caller's ctx, which bounds any platform call they make.
//
// Every type an Adapter method takes or returns is plain data (no funcs, channels or open
// connections, except [Attachment.Body] which a plugin client reads into Data before
// crossing the boundary), so the interface can be served over gRPC unchanged.
type Adapter interface {
	// Send delivers msg and returns the platform's receipt. A message some of whose
	// recipients were invalid is still sent: they are listed in Receipt.Invalid. Errors are
	// *Error values (or wrap one), so errors.Is(err, ErrRateLimited) and friends work.
	Send(ctx context.Context, msg Message) (Receipt, error)

	// HandleWebhook turns one platform callback request into the HTTP response to give the
	// platform and the events it carried (zero or more). It verifies signatures before it
	// trusts anything in the request. On a request it refuses, it returns a non-nil response
	// (4xx) and an *Error whose Kind says why (KindUnauthorized for a bad signature or a
	// request it will not trust though signed, such as a replayed timestamp or another
	// tenant's payload; KindInvalidRequest for a malformed request; KindTooLarge for a body
	// over the limit); the host should answer with the response and log the error. A host must
	// queue the events before it writes a 2xx response, so nothing acknowledged is lost. A
	// response asking for redelivery (such as 503) with a nil error may carry the events
	// already processed; the host queues those too, deduplicating by event id when the
	// platform redelivers, so each attempt makes progress.
	HandleWebhook(ctx context.Context, req *WebhookRequest) (*WebhookResponse, []Event, error)

	// Status reports the health of the bot and the state of its tokens, without secrets.
	Status(ctx context.Context) (Status, error)

	// Close releases the adapter's resources (token managers, background work). Calls after
	// Close fail.
	Close() error
}

// An Uploader can upload a file to the platform ahead of sending it (WeCom media/upload,
// Graph upload sessions). The returned attachment has ID set to the platform's id (media_id,
// drive item id), which can then be sent in [Message.Attachments] without Data.
type Uploader interface {
	Upload(ctx context.Context, a Attachment) (Attachment, error)
}

// A Recaller can withdraw a message it sent, given the id from its [Receipt].
type Recaller interface {
	Recall(ctx context.Context, id string) error
}

// A Poller receives events that do not arrive through a webhook, for example Graph chats
// and mail when the host has no public URL. The host calls Poll in a loop (one caller at a
// time) and queues what it returns before calling Poll again.
//
// Poll returns the events that became available, possibly none; it may wait for new events
// until ctx is done or the adapter's own poll interval passes, and returns a nil error with
// no events in that case. Delivery is at least once: the adapter commits its cursor for a
// batch only when Poll is called again, so a host that dies before queueing a batch gets it
// again; hosts drop repeats by [Event.ID]. An Adapter with nothing to poll does not implement
// Poller.
type Poller interface {
	Poll(ctx context.Context) ([]Event, error)
}

// A Receiver delivers events that do not arrive through a webhook by calling emit from a
// background loop, for in-process hosts that prefer a callback to [Poller]. Receive runs
// until ctx is done or a permanent error occurs, and returns that error (ctx.Err() when
// ctx ended it). An event counts as delivered only when emit returns nil; if emit fails,
// the adapter offers the same events again later.
type Receiver interface {
	Receive(ctx context.Context, emit func(ctx context.Context, events []Event) error) error
}

// Status is an adapter's health for operators. It holds no secret.
type Status struct {
	Bot      string `json:"bot"`
	Platform string `json:"platform"`
	// Healthy is false when the adapter cannot currently send: no valid token and the last
	// refresh failed, or the adapter is closed.
	Healthy bool `json:"healthy"`
	// Detail says why the adapter is unhealthy, in plain words; empty when healthy.
	Detail string `json:"detail,omitempty"`
	// Tokens is the status of each token the adapter holds (usually one).
	Tokens []tokenmgr.Status `json:"tokens"`
}

// WebhookRequest is a platform callback as plain data, so it can cross the plugin boundary.
type WebhookRequest struct {
	Method string      `json:"method"` // "GET", "POST"
	Path   string      `json:"path"`   // the request path, e.g. "/webhook/hr"
	Query  url.Values  `json:"query,omitempty"`
	Header http.Header `json:"header,omitempty"`
	Body   []byte      `json:"body,omitempty"`
	// RemoteAddr is the client's address as the host saw it; empty if unknown.
	RemoteAddr string `json:"remote_addr,omitempty"`
}

// WebhookResponse is the HTTP response to give the platform.
type WebhookResponse struct {
	Status int         `json:"status"` // 0 means 200
	Header http.Header `json:"header,omitempty"`
	Body   []byte      `json:"body,omitempty"`
}

// DefaultMaxWebhookBody is the body limit [NewWebhookRequest] applies when given 0.
const DefaultMaxWebhookBody = 1 << 20

// NewWebhookRequest reads r into a WebhookRequest, reading at most maxBody bytes of body
// (0 means [DefaultMaxWebhookBody]). A longer body gives an *Error of KindTooLarge.
func NewWebhookRequest(r *http.Request, maxBody int64) (*WebhookRequest, error) {
	if maxBody <= 0 {
		maxBody = DefaultMaxWebhookBody
	}
	var body []byte
	if r.Body != nil {
		var err error
		body, err = io.ReadAll(io.LimitReader(r.Body, maxBody+1))
		if err != nil {
			return nil, &Error{Kind: KindInvalidRequest, Message: "reading webhook body", Err: err}
		}
		if int64(len(body)) > maxBody {
			return nil, &Error{Kind: KindTooLarge, Message: fmt.Sprintf("webhook body over %d bytes", maxBody)}
		}
	}
	return &WebhookRequest{
		Method:     r.Method,
		Path:       r.URL.Path,
		Query:      r.URL.Query(),
		Header:     r.Header.Clone(),
		Body:       body,
		RemoteAddr: r.RemoteAddr,
	}, nil
}

// Write writes the response to w. A nil response writes 200 with an empty body.
func (resp *WebhookResponse) Write(w http.ResponseWriter) error {
	if resp == nil {
		w.WriteHeader(http.StatusOK)
		return nil
	}
	for k, v := range resp.Header {
		w.Header()[k] = append([]string(nil), v...)
	}
	status := resp.Status
	if status == 0 {
		status = http.StatusOK
	}
	w.WriteHeader(status)
	if len(resp.Body) == 0 {
		return nil
	}
	_, err := w.Write(resp.Body)
	return err
}
