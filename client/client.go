// Package client is a Go client of the chatwire adapter-host HTTP API: send messages, read a
// bot's events as a resuming Server-Sent Events stream (alone or in a consumer group),
// acknowledge them, and verify the events the host POSTs to a bot's webhook.
package client

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"

	"github.com/seed-a64d9e1f/chatwire/adapter"
)

// The message model is the adapter package's: the host decodes a send request into an
// [adapter.Message], so these are the same types, not copies.
type (
	// Message is one message to one target; see [adapter.Message].
	Message = adapter.Message
	// Target says where a Message goes; set exactly one field. See [adapter.Target].
	Target = adapter.Target
	// Channel names a Teams channel.
	Channel = adapter.Channel
	// Mention is a person to notify in a Message.
	Mention = adapter.Mention
	// Attachment is a file or image. To send a large file without holding it in memory,
	// set Body and Size instead of Data: [Client.Send] streams it base64-encoded.
	Attachment = adapter.Attachment
)

// Options configure a [Client]. The zero value is usable.
type Options struct {
	// APIKey is sent as "Authorization: Bearer <APIKey>". Empty sends no Authorization
	// header (a host without server.api_keys, on loopback). The key is never logged, nor
	// part of an error.
	APIKey string
	// HTTPClient makes the requests. If nil, http.DefaultClient is used. Its Timeout, if
	// any, also cuts event streams: prefer contexts.
	HTTPClient *http.Client
	// Logger receives debug lines for requests and warnings for event stream reconnects.
	// If nil, nothing is logged.
	Logger *slog.Logger
}

// A Client talks to one adapter-host. Its methods are safe for concurrent use.
type Client struct {
	base   *url.URL // scheme and host, path without a trailing slash
	key    string
	http   *http.Client
	log    *slog.Logger
	header http.Header // sent with every request (Authorization); read only
}

// New returns a Client of the host at baseURL ("http://127.0.0.1:8080"; a path prefix is
// kept, for a host behind a proxy).
func New(baseURL string, opts Options) (*Client, error) {
	u, err := url.Parse(strings.TrimRight(baseURL, "/"))
	if err != nil {
		return nil, fmt.Errorf("client: base URL: %w", err)
	}
	if u.Scheme != "http" && u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("client: base URL %q: want http://host[:port] or https://host[:port]", u.Redacted())
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("client: base URL %q: no query or fragment, please", u.Redacted())
	}
	c := &Client{base: u, key: opts.APIKey, http: opts.HTTPClient, log: opts.Logger, header: http.Header{}}
	if c.http == nil {
		c.http = http.DefaultClient
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	if c.key != "" {
		c.header.Set("Authorization", "Bearer "+c.key)
	}
	return c, nil
}

// String describes c without its API key.
func (c *Client) String() string { return "client.Client(" + c.base.Redacted() + ")" }

// GoString is String, so that %#v does not print the API key either.
func (c *Client) GoString() string { return c.String() }

// BaseURL returns the host's base URL as given to [New], without a trailing slash.
func (c *Client) BaseURL() string { return c.base.String() }

// endpoint returns the URL of path segments under the base, each escaped.
func (c *Client) endpoint(segments ...string) string {
	var b strings.Builder
	b.WriteString(c.base.String())
	for _, s := range segments {
		b.WriteByte('/')
		b.WriteString(url.PathEscape(s))
	}
	return b.String()
}

// newRequest returns a request with the client's headers; a JSON body gets its Content-Type.
func (c *Client) newRequest(ctx context.Context, method, u string, body io.Reader) (*http.Request, error) {
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return nil, fmt.Errorf("client: %w", err)
	}
	for k, v := range c.header {
		req.Header[k] = v
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	return req, nil
}

// NewRequest returns a request for path ("/v1/tokens") on the host, with the API key and,
// when body is not nil, Content-Type application/json; for endpoints this package has no
// method for, or to read an answer as it is. Send it with [Client.Do].
func (c *Client) NewRequest(ctx context.Context, method, path string, body io.Reader) (*http.Request, error) {
	if !strings.HasPrefix(path, "/") {
		path = "/" + path
	}
	return c.newRequest(ctx, method, c.base.String()+path, body)
}

// Do sends req and returns the response if its status is 2xx, else the host's error as an
// *Error (see [CheckResponse]). The caller closes the body of a returned response.
func (c *Client) Do(req *http.Request) (*http.Response, error) { return c.do(req) }

// do is Do.
func (c *Client) do(req *http.Request) (*http.Response, error) {
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("client: %s %s: %w", req.Method, req.URL.Path, scrub(err))
	}
	c.log.LogAttrs(req.Context(), slog.LevelDebug, "chatwire request", slog.String("method", req.Method),
		slog.String("path", req.URL.Path), slog.Int("status", resp.StatusCode))
	if err := CheckResponse(resp); err != nil {
		resp.Body.Close()
		return nil, err
	}
	return resp, nil
}

// scrub returns err without the request URL's user info, if any (a *url.Error's URL).
func scrub(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		if u, perr := url.Parse(ue.URL); perr == nil && u.User != nil {
			ue.URL = u.Redacted()
		}
	}
	return err
}

// getJSON GETs u and decodes its JSON answer into v.
func (c *Client) getJSON(ctx context.Context, u string, v any) error {
	req, err := c.newRequest(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	resp, err := c.do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		return fmt.Errorf("client: GET %s: decoding the answer: %w", req.URL.Path, err)
	}
	return nil
}

// postJSON POSTs in as JSON to u and decodes the answer into out.
func (c *Client) postJSON(ctx context.Context, u string, in, out any) error {
	data, err := json.Marshal(in)
	if err != nil {
		return fmt.Errorf("client: %w", err)
	}
	req, err := c.newRequest(ctx, http.MethodPost, u, bytes.NewReader(data))
	if err != nil {
		return err
	}
	resp, err := c.do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("client: POST %s: decoding the answer: %w", req.URL.Path, err)
	}
	return nil
}

// A Bot is a bot configured on the host.
type Bot struct {
	Name     string `json:"name"`
	Platform string `json:"platform"` // adapter.PlatformWeCom, adapter.PlatformGraph, ...
}

// Bots lists the host's bots in configuration order (GET /v1/bots).
func (c *Client) Bots(ctx context.Context) ([]Bot, error) {
	var body struct {
		Bots []Bot `json:"bots"`
	}
	if err := c.getJSON(ctx, c.endpoint("v1", "bots"), &body); err != nil {
		return nil, err
	}
	return body.Bots, nil
}

// BotStatus is a bot's health, the status of its tokens (fingerprints, never values) and the
// state of its event log.
type BotStatus struct {
	adapter.Status
	Queued     int `json:"queued"`     // events held in the bot's log
	Unconsumed int `json:"unconsumed"` // held events no consumer has received
}

// Tokens returns each bot's status, in configuration order (GET /v1/tokens).
func (c *Client) Tokens(ctx context.Context) ([]BotStatus, error) {
	var body struct {
		Bots []BotStatus `json:"bots"`
	}
	if err := c.getJSON(ctx, c.endpoint("v1", "tokens"), &body); err != nil {
		return nil, err
	}
	return body.Bots, nil
}

// Ready reports whether the host takes webhooks and sends (GET /readyz): nil if so, else an
// *Error of KindUnavailable whose Message is the host's reason.
func (c *Client) Ready(ctx context.Context) error {
	req, err := c.newRequest(ctx, http.MethodGet, c.endpoint("readyz"), nil)
	if err != nil {
		return err
	}
	req.Header.Del("Accept")
	resp, err := c.do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	return nil
}

// Receipt is the host's answer to a send.
type Receipt struct {
	// ID is the platform's message id; empty where the platform gives none (mail).
	ID       string `json:"id"`
	Bot      string `json:"bot"`
	Platform string `json:"platform"`
	// Invalid lists recipients the platform refused while sending to the others
	// ("user:zhangsan").
	Invalid []string `json:"invalid"`
	// Replayed is true when the host answered from an earlier send with the same
	// idempotency key (header Idempotent-Replayed): the message was not sent again.
	Replayed bool `json:"-"`
}

// A SendOption changes how [Client.Send] sends.
type SendOption func(*sendOptions)

type sendOptions struct {
	idempotencyKey string
}

// WithIdempotencyKey sends key as the Idempotency-Key header: the host sends a message once
// for each key (for 24 h, across a fleet), so a send retried with the same key after a lost
// answer is not sent twice ([Receipt.Replayed]); the same key with another message is
// refused (409, [KindConflict]). A key has 1 to 255 printable ASCII characters; Send refuses
// others with an *adapter.Error of KindInvalidRequest before sending. An empty key sends no
// header. See [NewIdempotencyKey].
func WithIdempotencyKey(key string) SendOption {
	return func(o *sendOptions) { o.idempotencyKey = key }
}

// NewIdempotencyKey returns a random key for [WithIdempotencyKey] (26 characters, 130 bits).
func NewIdempotencyKey() string { return rand.Text() }

// maxKeyLen bounds an idempotency key, as the host does.
const maxKeyLen = 255

// CheckIdempotencyKey returns nil if key is an idempotency key the host takes (1 to 255
// printable ASCII characters), else an *adapter.Error of KindInvalidRequest saying so.
func CheckIdempotencyKey(key string) error {
	if key == "" {
		return &adapter.Error{Kind: adapter.KindInvalidRequest, Message: "client: an idempotency key must not be empty"}
	}
	return checkKey(key)
}

// checkKey is CheckIdempotencyKey, also taking "" (no key).
func checkKey(key string) error {
	bad := len(key) > maxKeyLen
	for i := 0; i < len(key) && !bad; i++ {
		bad = key[i] < 0x20 || key[i] > 0x7e
	}
	if bad {
		return &adapter.Error{Kind: adapter.KindInvalidRequest,
			Message: fmt.Sprintf("client: an idempotency key has 1 to %d printable ASCII characters", maxKeyLen)}
	}
	return nil
}

// Send sends msg through bot (POST /v1/bots/{bot}/messages) and returns the receipt once the
// platform has it. A host's refusal is an *Error (errors.Is(err, adapter.ErrRateLimited)
// and the like work); Send does not retry.
//
// Attachments with Data are sent as they are; those with Body and Size are streamed
// (base64) from Body, which is read once, so a large file is never held in memory. Send
// returns only after it has stopped reading every Body.
func (c *Client) Send(ctx context.Context, bot string, msg Message, opts ...SendOption) (*Receipt, error) {
	var o sendOptions
	for _, opt := range opts {
		if opt != nil {
			opt(&o)
		}
	}
	if err := checkKey(o.idempotencyKey); err != nil {
		return nil, err
	}
	body, length, wait, err := encodeMessage(msg)
	if err != nil {
		return nil, err
	}
	defer wait()
	req, err := c.newRequest(ctx, http.MethodPost, c.endpoint("v1", "bots", bot, "messages"), body)
	if err != nil {
		if rc, ok := body.(io.Closer); ok {
			rc.Close()
		}
		return nil, err
	}
	req.ContentLength = length // exact, so the host can reserve the body's memory, not its largest
	if o.idempotencyKey != "" {
		req.Header.Set("Idempotency-Key", o.idempotencyKey)
		c.log.LogAttrs(ctx, slog.LevelDebug, "chatwire send", slog.String("bot", bot), slog.String("idempotency_key", o.idempotencyKey))
	}
	resp, err := c.do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var rc Receipt
	if err := json.NewDecoder(resp.Body).Decode(&rc); err != nil {
		return nil, fmt.Errorf("client: send: decoding the answer: %w", err)
	}
	rc.Replayed = resp.Header.Get("Idempotent-Replayed") == "true"
	return &rc, nil
}

// maxAckIDs is the most ids the host takes in one acknowledgement.
const maxAckIDs = 10000

// Ack acknowledges events that group handed out (POST /v1/bots/{bot}/events/ack), by their
// [Event.LogID], and returns how many of them were pending (ids already acknowledged count
// 0). More than 10,000 ids are sent in several requests.
func (c *Client) Ack(ctx context.Context, bot, group string, ids ...string) (int, error) {
	total := 0
	for len(ids) > 0 {
		batch := ids[:min(len(ids), maxAckIDs)]
		ids = ids[len(batch):]
		in := struct {
			Group string   `json:"group"`
			IDs   []string `json:"ids"`
		}{group, batch}
		var out struct {
			Acked int `json:"acked"`
		}
		if err := c.postJSON(ctx, c.endpoint("v1", "bots", bot, "events", "ack"), in, &out); err != nil {
			return total, err
		}
		total += out.Acked
	}
	return total, nil
}
