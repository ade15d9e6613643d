package host

import (
	"cmp"
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"mime"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/seed-a64d9e1f/chatwire/adapter"
	"github.com/seed-a64d9e1f/chatwire/internal/backoff"
	"github.com/seed-a64d9e1f/chatwire/internal/config"
	"github.com/seed-a64d9e1f/chatwire/internal/eventlog"
)

// maxSendBody bounds a send request (attachments arrive base64-encoded inside it).
const maxSendBody = 96 << 20

// bot is one configured bot as the server sees it.
type bot struct {
	name     string
	platform string
	adapter  adapter.Adapter
	events   eventlog.Log // deduplicates and holds the bot's events
	hot      atomic.Pointer[hotMetrics]
}

func newBot(name, platform string, a adapter.Adapter, l eventlog.Log) *bot {
	return &bot{name: name, platform: platform, adapter: a, events: l}
}

// server is the host's HTTP API. Handlers are safe for concurrent use.
type server struct {
	bots    map[string]*bot
	names   []string // configured order
	keys    []string
	ready   func() bool
	log     *slog.Logger
	m       *metrics
	gather  prometheus.Gatherer
	closing chan struct{} // closed when the host shuts down: SSE streams end
	// refusals logs refused API requests, rate-limited; nil logs none.
	refusals *refusalLog
	// webhookTimeout bounds a webhook from its body to the plugin's answer (and queueing):
	// the platform's budget. Zero means config.DefaultWebhookTimeout.
	webhookTimeout time.Duration
	// bodies bounds the request bodies held at once; nil: no bound.
	bodies *bodyBudget
	// checks are what /readyz runs (readiness.go); pluginMetrics reads the plugin's metrics.
	checks        []readyCheck
	pluginMetrics func(ctx context.Context) ([]byte, error)
	// sends is what a send passes through: Idempotency-Key, pacing, the outbox (sendgate.go).
	sends *sendGate

	sseMu      sync.Mutex // guards sseClients
	sseClients int
}

func (s *server) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /webhook/{bot}", s.webhook)
	mux.HandleFunc("POST /webhook/{bot}", s.webhook)
	mux.Handle("POST /v1/bots/{bot}/messages", s.api(s.send))
	mux.Handle("GET /v1/bots/{bot}/messages/{id}", s.api(s.messageStatus))
	mux.Handle("GET /v1/bots/{bot}/events", s.api(s.events))
	mux.Handle("POST /v1/bots/{bot}/events/ack", s.api(s.ack))
	mux.Handle("GET /v1/tokens", s.api(s.tokens))
	mux.Handle("GET /v1/bots", s.api(s.listBots))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok\n") })
	mux.HandleFunc("GET /readyz", s.readyz)
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.gather, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError}))
	return mux
}

// api wraps a /v1 handler: the browser checks of a host without keys (sameOrigin), then the
// API key (auth), then a JSON body on POST (jsonBody). Webhooks are platform callbacks and
// go through none of them.
func (s *server) api(h http.HandlerFunc) http.Handler {
	return s.sameOrigin(s.auth(jsonBody(s, h)))
}

// sameOrigin protects a host without API keys, which trusts anything that reaches its
// loopback listener, from web pages in the user's browser: it refuses a request whose Host
// is not a loopback name (DNS rebinding: evil.example resolved to 127.0.0.1) and one whose
// Origin is present and not loopback (a cross-site form or fetch). With keys it does
// nothing: a browser cannot attach the Authorization header cross-site without a CORS
// preflight, which the host never grants.
func (s *server) sameOrigin(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if len(s.keys) == 0 {
			if !loopbackHost(r.Host) {
				s.refuse(w, r, &statusError{status: http.StatusForbidden, Err: &adapter.Error{Kind: adapter.KindUnauthorized,
					Message: "this host has no API keys and answers only requests addressed to a loopback name (localhost, 127.0.0.1, [::1]); got Host " + strconv.Quote(clip(r.Host, 64))}},
					"why", "Host not loopback")
				return
			}
			if o := r.Header.Get("Origin"); o != "" && !loopbackOrigin(o) {
				s.refuse(w, r, &statusError{status: http.StatusForbidden, Err: &adapter.Error{Kind: adapter.KindUnauthorized,
					Message: "this host has no API keys and refuses cross-origin requests from web pages; got Origin " + strconv.Quote(clip(o, 64))}},
					"why", "Origin not loopback")
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

// jsonBody refuses a POST whose Content-Type is not application/json with 415: the API takes
// JSON only, and a browser can send text/plain or a form cross-site without a preflight.
func jsonBody(s *server, next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost {
			ct := r.Header.Get("Content-Type")
			mt, _, err := mime.ParseMediaType(ct)
			// A streamed send (NDJSON deltas) is the one other body /v1 takes.
			streamed := r.Pattern == "POST /v1/bots/{bot}/messages" && mt == "application/x-ndjson"
			if err != nil || (mt != "application/json" && !streamed) {
				w.Header().Set("Accept-Post", "application/json")
				s.refuse(w, r, &statusError{status: http.StatusUnsupportedMediaType, Err: &adapter.Error{Kind: adapter.KindInvalidRequest,
					Message: "send the body as JSON with Content-Type: application/json; got " + strconv.Quote(clip(ct, 64))}})
				return
			}
		}
		next(w, r)
	}
}

// loopbackHost reports whether a Host header (with or without a port) names this machine:
// localhost, a 127.x.x.x address or [::1].
func loopbackHost(hostport string) bool {
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	} else {
		host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	}
	host = strings.TrimSuffix(host, ".")
	return strings.EqualFold(host, "localhost") || config.IsLoopback(host)
}

// loopbackOrigin reports whether an Origin header is an http(s) origin on a loopback host;
// "null" (a sandboxed page, a file) is not.
func loopbackOrigin(origin string) bool {
	u, err := url.Parse(origin)
	return err == nil && (u.Scheme == "http" || u.Scheme == "https") && u.Host != "" && loopbackHost(u.Host)
}

// statusError is an API error answered with a status other than its kind's (403, 415).
type statusError struct {
	status int
	Err    *adapter.Error
}

func (e *statusError) Error() string { return e.Err.Error() }
func (e *statusError) Unwrap() error { return e.Err }

// auth requires a configured API key as a Bearer token; with no keys configured (allowed
// only on a loopback listener) it lets every request through.
func (s *server) auth(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if len(s.keys) > 0 {
			got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
			match := 0
			for _, k := range s.keys {
				match |= subtle.ConstantTimeCompare([]byte(got), []byte(k))
			}
			if !ok || match != 1 {
				w.Header().Set("WWW-Authenticate", `Bearer realm="chatwire"`)
				why := []any{"why", "no Bearer API key"}
				if ok && got != "" {
					why = []any{"why", "wrong API key", "key_fingerprint", fingerprint(got)} // never the key
				}
				s.refuse(w, r, &adapter.Error{Kind: adapter.KindUnauthorized, Message: "missing or wrong API key: send Authorization: Bearer <key>"}, why...)
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

func (s *server) bot(w http.ResponseWriter, r *http.Request) *bot {
	b := s.bots[r.PathValue("bot")]
	if b == nil {
		s.refuse(w, r, &adapter.Error{Kind: adapter.KindNotFound, Message: fmt.Sprintf("no bot named %q", clip(r.PathValue("bot"), 64))})
	}
	return b
}

// refuse answers an API request the host refuses before doing anything for it (no or a
// wrong key, a body that cannot be decoded, an unknown bot) with err, counts it, and logs
// one line (rate-limited: see refusalLog). args add to the line; never a credential.
func (s *server) refuse(w http.ResponseWriter, r *http.Request, err error, args ...any) {
	kind := adapter.KindOf(err).Public()
	if s.m != nil {
		s.m.refused.WithLabelValues(string(kind)).Inc()
	}
	if s.refusals != nil {
		line := append([]any{"kind", kind, "method", r.Method, "path", clip(r.URL.Path, 128), "remote", r.RemoteAddr,
			"error", clip(err.Error(), 256)}, args...)
		s.refusals.refused("API request refused", line...)
	}
	writeError(w, err)
}

// errorBody is the JSON of every API error.
type errorBody struct {
	Error struct {
		Kind         adapter.Kind `json:"kind"`
		Message      string       `json:"message"`
		PlatformCode string       `json:"platform_code"`
	} `json:"error"`
}

// writeError answers with err's HTTP status (its kind's, or a statusError's) and error JSON;
// rate limits get Retry-After.
func writeError(w http.ResponseWriter, err error) {
	kind := adapter.KindOf(err)
	status := kind.HTTPStatus()
	if se := (*statusError)(nil); errors.As(err, &se) {
		status = se.status
	}
	var body errorBody
	body.Error.Kind = kind.Public()
	body.Error.Message = err.Error()
	body.Error.PlatformCode = adapter.Code(err)
	if d := adapter.RetryAfter(err); d > 0 || kind == adapter.KindRateLimited || kind == adapter.KindUnavailable {
		secs := int(math.Ceil(d.Seconds()))
		if secs < 1 {
			secs = 1
		}
		w.Header().Set("Retry-After", strconv.Itoa(secs))
	}
	writeJSON(w, status, body)
}

// writeJSON answers status with v as JSON and this second's Date (setDate).
func writeJSON(w http.ResponseWriter, status int, v any) {
	setDate(w.Header())
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	enc.Encode(v)
}

// webhook handles a platform callback: the plugin checks and parses it, the events are
// deduplicated and queued, and only then is the platform answered.
func (s *server) webhook(w http.ResponseWriter, r *http.Request) {
	b := s.bots[r.PathValue("bot")]
	if b == nil {
		s.log.Warn("webhook refused: no such bot", "bot", clip(r.PathValue("bot"), 64), "remote", r.RemoteAddr)
		http.NotFound(w, r)
		return
	}
	hot := s.m.hot(b)
	defer observeSince(hot.hookTime, time.Now())
	if !s.ready() {
		s.m.webhooks.WithLabelValues(b.name, "unavailable").Inc()
		w.Header().Set("Retry-After", "1")
		http.Error(w, "restarting, try again", http.StatusServiceUnavailable)
		return
	}
	budget := cmp.Or(s.webhookTimeout, config.DefaultWebhookTimeout)
	ctx, cancel := context.WithTimeout(r.Context(), budget)
	defer cancel()
	release, err := s.bodies.hold(r, adapter.DefaultMaxWebhookBody)
	if err != nil {
		// The platform redelivers after a 503; a body over the limit never fits.
		kind := adapter.KindOf(err)
		s.m.webhooks.WithLabelValues(b.name, string(kind)).Inc()
		if s.refusals != nil {
			s.refusals.refused("webhook refused before reading its body", "bot", b.name, "kind", kind, "error", err, "remote", r.RemoteAddr)
		}
		if kind == adapter.KindUnavailable {
			w.Header().Set("Retry-After", "1")
		}
		w.Header().Set("Connection", "close") // not waiting for a body it will not read
		http.Error(w, http.StatusText(kind.HTTPStatus()), kind.HTTPStatus())
		return
	}
	defer release()
	// The body is read within the budget too: a client that sends it slowly is cut off.
	rc := http.NewResponseController(w)
	deadline, _ := ctx.Deadline()
	rc.SetReadDeadline(deadline)
	req, err := webhookRequest(r, adapter.DefaultMaxWebhookBody)
	rc.SetReadDeadline(time.Time{}) // read: a deadline left set would cancel ctx when it passes
	if err != nil {
		status := adapter.HTTPStatus(err)
		if isTimeout(err) {
			status = http.StatusRequestTimeout // the platform redelivers
		}
		s.m.webhooks.WithLabelValues(b.name, string(adapter.KindOf(err))).Inc()
		s.log.Warn("webhook refused", "bot", b.name, "status", status, "error", err)
		w.Header().Set("Connection", "close")
		http.Error(w, http.StatusText(status), status)
		return
	}
	resp, events, err := b.adapter.HandleWebhook(ctx, req)
	if err != nil {
		kind := adapter.KindOf(err)
		s.m.webhooks.WithLabelValues(b.name, string(kind)).Inc()
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			// The platform stops waiting at about 5 s and redelivers: say so before it does.
			s.log.Warn("the plugin did not answer a webhook within its budget; asking the platform to redeliver",
				"bot", b.name, "budget", budget, "error", err)
			w.Header().Set("Retry-After", "1")
			http.Error(w, "try again", http.StatusServiceUnavailable)
			return
		}
		s.log.Warn("webhook refused", "bot", b.name, "kind", kind, "error", err, "remote", r.RemoteAddr)
		if resp == nil {
			status := kind.HTTPStatus()
			if kind == adapter.KindUnavailable || kind == adapter.KindInternal {
				status = http.StatusServiceUnavailable // the platform will redeliver
				w.Header().Set("Retry-After", "1")
			}
			http.Error(w, http.StatusText(status), status)
			return
		}
		resp.Write(w)
		return
	}
	if err := s.enqueue(ctx, b, events); err != nil {
		s.m.webhooks.WithLabelValues(b.name, "unavailable").Inc()
		s.log.Error("events not queued; asking the platform to redeliver", "bot", b.name, "error", err)
		w.Header().Set("Retry-After", "5")
		http.Error(w, "try again", http.StatusServiceUnavailable)
		return
	}
	hot.webhooksOK.Inc()
	setDate(w.Header())
	resp.Write(w)
}

// dateLine is the Date header of one second.
type dateLine struct {
	sec int64
	v   []string
}

var httpDate atomic.Pointer[dateLine]

// setDate sets h's Date header to this second's, formatted once a second: net/http formats
// it for every response that has none, ~1% of the host's CPU at 2,000 webhooks/s. The value
// is shared: net/http only reads it.
func setDate(h http.Header) {
	now := time.Now()
	d := httpDate.Load()
	if sec := now.Unix(); d == nil || d.sec != sec {
		nd := &dateLine{sec: sec, v: []string{now.UTC().Format(http.TimeFormat)}}
		if d == nil || sec > d.sec {
			httpDate.Store(nd) // not back to an older second a slower caller formatted
		}
		d = nd
	}
	h["Date"] = d.v
}

// enqueue appends events to the bot's log, which drops those seen before (by event id,
// for 24 h) in the same atomic step: all are in the log when it returns nil, none when it
// returns an error (the webhook is answered 503 and the platform redelivers).
func (s *server) enqueue(ctx context.Context, b *bot, events []adapter.Event) error {
	if len(events) == 0 {
		return nil
	}
	recs := make([]eventlog.Record, len(events))
	for i, e := range events {
		data, err := jsonEvent(e)
		if err != nil {
			return err
		}
		recs[i] = eventlog.Record{Kind: e.Kind, Key: e.Chat.ID, Data: data, Dedup: e.ID}
	}
	out, err := b.events.Append(ctx, recs...)
	if err != nil {
		return err
	}
	for i := range events {
		s.countQueued(ctx, b, &events[i], out[i].Duplicate)
	}
	return nil
}

// countQueued logs and counts an event queued or dropped as a duplicate.
// A line's attributes are built only when its level is enabled: boxing them costs an
// allocation per event even when the line is dropped.
func (s *server) countQueued(ctx context.Context, b *bot, e *adapter.Event, dup bool) {
	hot := s.m.hot(b)
	if dup {
		hot.duplicate.Inc()
		if s.log.Enabled(ctx, slog.LevelInfo) {
			s.log.InfoContext(ctx, "duplicate event dropped", "bot", b.name, "event", e.ID)
		}
		return
	}
	hot.queued.Inc()
	if s.log.Enabled(ctx, slog.LevelDebug) {
		s.log.DebugContext(ctx, "event queued", "bot", b.name, "event", e.ID, "kind", e.Kind)
	}
}

// sendResponse is the answer to a successful send.
type sendResponse struct {
	ID       string   `json:"id"`
	Bot      string   `json:"bot"`
	Platform string   `json:"platform"`
	Invalid  []string `json:"invalid"`
}

func (s *server) send(w http.ResponseWriter, r *http.Request) {
	b := s.bot(w, r)
	if b == nil {
		return
	}
	if isStreamedSend(r) {
		s.streamSend(w, r, b)
		return
	}
	release, err := s.bodies.hold(r, maxSendBody)
	if err != nil {
		w.Header().Set("Connection", "close") // not waiting for a body it will not read
		s.refuse(w, r, err, "bot", b.name)
		return
	}
	defer release() // the decoded message lives until the send is done
	req, err := decodeSend(w, r)
	if err != nil {
		// The rest of the body may never come: close rather than wait to drain it.
		w.Header().Set("Connection", "close")
		s.refuse(w, r, err, "bot", b.name)
		return
	}
	// Read (under server.read_timeout): a deadline left set would cancel the request's ctx
	// when it passes, in the middle of a long send.
	http.NewResponseController(w).SetReadDeadline(time.Time{})
	if _, err := req.To.Kind(); err != nil {
		s.refuse(w, r, err, "bot", b.name)
		return
	}
	s.deliver(w, r, b, req.Message, req.Async || preferAsync(r)) // sendgate.go: Idempotency-Key, pacing, the send
}

// sendRequest is a send request's body: the message, and the host's own fields beside it
// (not passed to the adapter, not part of an Idempotency-Key's fingerprint).
type sendRequest struct {
	adapter.Message
	// Async is the body's alternative to "Prefer: respond-async": answer 202 once the
	// message is stored in the bot's outbox.
	Async bool `json:"async"`
}

// decodeSend reads a send request's body: exactly one JSON object (whitespace may follow,
// nothing else), no unknown fields, at most maxSendBody bytes.
func decodeSend(w http.ResponseWriter, r *http.Request) (sendRequest, error) {
	var msg sendRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxSendBody))
	dec.DisallowUnknownFields()
	bad := func(err error) error {
		if tooBig := (*http.MaxBytesError)(nil); errors.As(err, &tooBig) {
			return &adapter.Error{Kind: adapter.KindTooLarge, Message: fmt.Sprintf("request body over %d bytes", maxSendBody)}
		}
		if isTimeout(err) {
			return &statusError{status: http.StatusRequestTimeout, Err: &adapter.Error{Kind: adapter.KindInvalidRequest,
				Message: "request body not received in time (server.read_timeout)"}}
		}
		return &adapter.Error{Kind: adapter.KindInvalidRequest, Message: "request body: " + err.Error()}
	}
	if err := dec.Decode(&msg); err != nil {
		return msg, bad(err)
	}
	// A second value ({...}{...}) or any other trailing text is refused, not ignored: the
	// client meant something other than what would be sent.
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		if tooBig := (*http.MaxBytesError)(nil); errors.As(err, &tooBig) || isTimeout(err) {
			return msg, bad(err)
		}
		return msg, &adapter.Error{Kind: adapter.KindInvalidRequest, Message: "request body: unexpected data after the JSON object (send exactly one object)"}
	}
	return msg, nil
}

// sseStartBudget is how long an SSE request waits for the event log to say where its
// stream starts before it is answered 503.
const sseStartBudget = 5 * time.Second

// events streams a bot's events as Server-Sent Events. The id: of each is its event log id.
//
// Without ?group, every client gets every event (broadcast): a client resuming with
// Last-Event-ID gets the events after it, also across a reset of the log's Redis stream;
// without Last-Event-ID (or with a sequence number from a version that numbered events), it
// starts after the consumed mark: at the oldest event no consumer has received.
//
// With ?group=NAME, the connected clients of the group (on any host of a fleet) are
// competing consumers: each event goes to one of them, which acknowledges it with
// POST /v1/bots/{bot}/events/ack; an event not acknowledged within deliver.ack_timeout goes
// to another. ?consumer=NAME names the client (default: a random name, sent in the first
// comment line); a client that reconnects under its name does not get its unacknowledged
// events again before the timeout. A new group starts at the consumed mark.
func (s *server) events(w http.ResponseWriter, r *http.Request) {
	b := s.bot(w, r)
	if b == nil {
		return
	}
	group, consumer := r.URL.Query().Get("group"), r.URL.Query().Get("consumer")
	if group != "" {
		if err := eventlog.CheckName(group); err != nil {
			s.refuse(w, r, &adapter.Error{Kind: adapter.KindInvalidRequest, Message: "group: " + err.Error()}, "bot", b.name)
			return
		}
		if consumer == "" {
			consumer = rand.Text()
		} else if err := eventlog.CheckName(consumer); err != nil {
			s.refuse(w, r, &adapter.Error{Kind: adapter.KindInvalidRequest, Message: "consumer: " + err.Error()}, "bot", b.name)
			return
		}
	} else if consumer != "" {
		s.refuse(w, r, &adapter.Error{Kind: adapter.KindInvalidRequest, Message: "consumer needs group"}, "bot", b.name)
		return
	}
	var pos eventlog.ID
	resume := false
	if v := r.Header.Get("Last-Event-ID"); v != "" && group == "" {
		id, err := eventlog.ParseID(v)
		switch {
		case err == nil:
			pos, resume = id, true
		case isDigits(v):
			s.log.Warn("Last-Event-ID is a sequence number from before event ids came from the event log; starting at the oldest unconsumed event",
				"bot", b.name, "last_event_id", clip(v, 32))
		default:
			s.refuse(w, r, &adapter.Error{Kind: adapter.KindInvalidRequest, Message: "Last-Event-ID must be an id from an id: line (<ms>-<n>)"}, "bot", b.name)
			return
		}
	}
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	go func() {
		select {
		case <-s.closing:
			cancel()
		case <-ctx.Done():
		}
	}()
	rc := http.NewResponseController(w)
	rc.SetReadDeadline(time.Time{}) // a stream outlives server.read_timeout
	failing := false
	// Where the stream starts is fixed before its headers are sent: a client that has them
	// gets every event appended after, even if other consumers (group streams, the
	// deliverer) raise the consumed mark past it meanwhile. A new group starts there too.
	// Without Redis for sseStartBudget the client gets 503 and Retry-After rather than a
	// request without headers until Redis returns.
	startCtx, startCancel := context.WithTimeout(ctx, sseStartBudget)
	defer startCancel()
	var startErr error
	start := func(fn func(ctx context.Context) error) bool {
		for startCtx.Err() == nil {
			if startErr = fn(startCtx); startErr == nil {
				return true
			}
			backoff.Sleep(startCtx, 200*time.Millisecond)
		}
		return false
	}
	if (!resume && !start(func(ctx context.Context) (err error) { pos, err = b.events.ConsumedID(ctx); return err })) ||
		(group != "" && !start(func(ctx context.Context) error { return b.events.CreateGroup(ctx, group, pos) })) {
		if ctx.Err() != nil {
			return
		}
		// The cause (a Redis address, say) goes to the log, not to the client.
		s.log.Warn("SSE stream refused: the event log did not answer", "bot", b.name, "error", startErr)
		s.refuse(w, r, &adapter.Error{Kind: adapter.KindUnavailable, Message: "event log unavailable; try again"}, "bot", b.name)
		return
	}
	startCancel()
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	io.WriteString(w, ": chatwire events for "+b.name+"\n\n")
	if group != "" {
		io.WriteString(w, ": group "+group+" consumer "+consumer+"\n\n")
	}
	if err := rc.Flush(); err != nil {
		return
	}
	s.sseMu.Lock()
	s.sseClients++
	s.sseMu.Unlock()
	defer func() {
		s.sseMu.Lock()
		s.sseClients--
		s.sseMu.Unlock()
	}()
	// The consumed mark follows what this stream flushed, beside it (consumed.go); the last
	// one is written when the stream ends.
	marker := newConsumedMarker(b.events, consumedEvery, func(err error) {
		if !errors.Is(err, eventlog.ErrClosed) {
			s.log.Warn("recording consumed events failed", "bot", b.name, "error", err)
		}
	})
	marked := make(chan struct{})
	go func() { defer close(marked); marker.run(ctx) }()
	defer func() { cancel(); <-marked; marker.stop() }()
	read := func(ctx context.Context) ([]eventlog.Entry, error) { return b.events.Read(ctx, pos, 100) }
	if group != "" {
		read = func(ctx context.Context) ([]eventlog.Entry, error) {
			return b.events.ReadGroup(ctx, group, consumer, 100)
		}
	}
	var buf []byte // a batch's events as SSE, written at once
	// A read waits at most until the ping deadline: then the stream gets a ping.
	var ping pingDeadline
	defer ping.stop()
	for ctx.Err() == nil {
		events, err := read(ping.context(ctx))
		switch {
		case ctx.Err() != nil:
			return
		case errors.Is(err, context.DeadlineExceeded):
			io.WriteString(w, ": ping\n\n")
			if err := rc.Flush(); err != nil {
				return
			}
			continue
		case err != nil:
			s.readFailed(ctx, b, err, &failing)
			continue
		}
		if failing {
			s.log.Info("event log readable again", "bot", b.name)
			failing = false
		}
		high := pos
		buf = buf[:0]
		for _, ev := range events {
			buf = appendSSE(buf, ev)
			high = max2(high, ev.ID)
		}
		if _, err := w.Write(buf); err != nil {
			return
		}
		if cap(buf) > 1<<20 {
			buf = nil // not kept for the stream's life after a batch of large events
		}
		if err := rc.Flush(); err != nil {
			return
		}
		if group == "" {
			pos = events[len(events)-1].ID
		}
		marker.sent(high)
	}
}

// An SSE stream without events gets a ping comment after ssePing-sseRenew to ssePing, so
// proxies and clients see it is alive.
const (
	ssePing  = 15 * time.Second
	sseRenew = time.Second
)

// pingDeadline is the deadline of an SSE stream's reads, after which it sends a ping. It is
// renewed when it is older than sseRenew, not for every read: a context and a timer per
// event cost ~1% of the host at 2,000 events/s. So the ping comes after between
// ssePing-sseRenew and ssePing without events, and never while they flow.
type pingDeadline struct {
	ctx     context.Context
	cancel  context.CancelFunc
	renewed time.Time
}

// context returns the context of the next read, a child of parent.
func (p *pingDeadline) context(parent context.Context) context.Context {
	if now := time.Now(); p.ctx == nil || p.ctx.Err() != nil || now.Sub(p.renewed) >= sseRenew {
		p.stop()
		p.ctx, p.cancel = context.WithTimeout(parent, ssePing)
		p.renewed = now
	}
	return p.ctx
}

func (p *pingDeadline) stop() {
	if p.cancel != nil {
		p.cancel()
	}
}

// appendSSE appends ev as one Server-Sent Event (id:, event:, data: lines) to buf. Kind and
// Data hold no newline: Kind is a word and Data compact JSON.
func appendSSE(buf []byte, ev eventlog.Entry) []byte {
	buf = append(buf, "id: "...)
	buf = strconv.AppendUint(buf, ev.ID.Ms, 10)
	buf = append(buf, '-')
	buf = strconv.AppendUint(buf, ev.ID.Seq, 10)
	buf = append(buf, "\nevent: "...)
	buf = append(buf, ev.Kind...)
	buf = append(buf, "\ndata: "...)
	buf = append(buf, ev.Data...)
	return append(buf, "\n\n"...)
}

func max2(a, b eventlog.ID) eventlog.ID {
	if a.Less(b) {
		return b
	}
	return a
}

// maxAckIDs bounds the ids of one acknowledgement.
const maxAckIDs = 10000

// ack acknowledges events a consumer group handed out: {"group": NAME, "ids": [...]} →
// {"acked": how many were pending}.
func (s *server) ack(w http.ResponseWriter, r *http.Request) {
	b := s.bot(w, r)
	if b == nil {
		return
	}
	var req struct {
		Group string   `json:"group"`
		IDs   []string `json:"ids"`
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			s.refuse(w, r, &adapter.Error{Kind: adapter.KindTooLarge, Message: "request body over 1 MiB"}, "bot", b.name)
			return
		}
		s.refuse(w, r, &adapter.Error{Kind: adapter.KindInvalidRequest, Message: "request body: " + err.Error()}, "bot", b.name)
		return
	}
	if err := eventlog.CheckName(req.Group); err != nil {
		s.refuse(w, r, &adapter.Error{Kind: adapter.KindInvalidRequest, Message: "group: " + err.Error()}, "bot", b.name)
		return
	}
	if len(req.IDs) == 0 || len(req.IDs) > maxAckIDs {
		s.refuse(w, r, &adapter.Error{Kind: adapter.KindInvalidRequest, Message: fmt.Sprintf("ids: want 1 to %d event ids", maxAckIDs)}, "bot", b.name)
		return
	}
	ids := make([]eventlog.ID, len(req.IDs))
	for i, v := range req.IDs {
		id, err := eventlog.ParseID(v)
		if err != nil {
			s.refuse(w, r, &adapter.Error{Kind: adapter.KindInvalidRequest, Message: fmt.Sprintf("ids[%d]: %q is not an event id (<ms>-<n>)", i, clip(v, 40))}, "bot", b.name)
			return
		}
		ids[i] = id
	}
	n, err := b.events.Ack(r.Context(), req.Group, ids...)
	if err != nil {
		s.log.Warn("acknowledging events failed", "bot", b.name, "group", req.Group, "error", err)
		writeError(w, &adapter.Error{Kind: adapter.KindUnavailable, Message: "the event log is unavailable; acknowledge again"})
		return
	}
	writeJSON(w, http.StatusOK, map[string]int{"acked": n})
}

// readFailed logs a failing event log once per outage and waits a second.
func (s *server) readFailed(ctx context.Context, b *bot, err error, failing *bool) {
	if !*failing {
		s.log.Warn("reading the event log failed; retrying", "bot", b.name, "error", err)
		*failing = true
	}
	backoff.Sleep(ctx, time.Second)
}

// isDigits reports whether s is a non-empty run of ASCII digits.
func isDigits(s string) bool {
	for _, c := range []byte(s) {
		if c < '0' || c > '9' {
			return false
		}
	}
	return s != ""
}

type botStatus struct {
	adapter.Status
	Queued     int `json:"queued"`
	Unconsumed int `json:"unconsumed"`
}

func (s *server) statuses(ctx context.Context) []botStatus {
	out := make([]botStatus, 0, len(s.names))
	for _, name := range s.names {
		b := s.bots[name]
		st, err := b.adapter.Status(ctx)
		if err != nil {
			st = adapter.Status{Detail: err.Error()}
		}
		st.Bot, st.Platform = b.name, b.platform
		n, err := b.events.Len(ctx)
		if err != nil {
			s.log.Warn("reading the event log's length failed", "bot", b.name, "error", err)
		}
		out = append(out, botStatus{Status: st, Queued: int(n.Held), Unconsumed: int(n.Unconsumed)})
	}
	return out
}

func (s *server) tokens(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	defer cancel()
	writeJSON(w, http.StatusOK, map[string]any{"bots": s.statuses(ctx)})
}

func (s *server) listBots(w http.ResponseWriter, r *http.Request) {
	type item struct {
		Name     string `json:"name"`
		Platform string `json:"platform"`
	}
	out := []item{}
	for _, n := range s.names {
		out = append(out, item{n, s.bots[n].platform})
	}
	writeJSON(w, http.StatusOK, map[string]any{"bots": out})
}

// clip returns s cut to at most n bytes (for logging what a request named).
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[:n], "") + "…"
}
