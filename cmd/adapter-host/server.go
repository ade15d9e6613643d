package main

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/seed-a64d9e1f/chatwire/adapter"
)

// maxSendBody bounds a send request (attachments arrive base64-encoded inside it).
const maxSendBody = 96 << 20

// bot is one configured bot as the server sees it.
type bot struct {
	name     string
	platform string
	adapter  adapter.Adapter
	queue    eventQueue
	// enq holds a token while an enqueue into a queue without atomic dedup runs, so marking
	// ids, appending and unmarking them after a failed append are one step for other
	// deliveries of the same events. A channel (not a mutex) so synctest sees waiters block.
	enq chan struct{}
}

func newBot(name, platform string, a adapter.Adapter, q eventQueue) *bot {
	return &bot{name: name, platform: platform, adapter: a, queue: q, enq: make(chan struct{}, 1)}
}

// server is the host's HTTP API. Handlers are safe for concurrent use.
type server struct {
	bots    map[string]*bot
	names   []string // configured order
	keys    []string
	ready   func() bool
	dedup   Dedup // for memory queues; nil when every queue is a dedupAppender (Redis)
	log     *slog.Logger
	m       *metrics
	gather  prometheus.Gatherer
	closing chan struct{} // closed when the host shuts down: SSE streams end
	sends   *sendGate     // Idempotency-Key and pacing of sends

	sseMu      sync.Mutex // guards sseClients
	sseClients int
}

func (s *server) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /webhook/{bot}", s.webhook)
	mux.HandleFunc("POST /webhook/{bot}", s.webhook)
	mux.Handle("POST /v1/bots/{bot}/messages", s.auth(http.HandlerFunc(s.send)))
	mux.Handle("GET /v1/bots/{bot}/messages/{id}", s.auth(http.HandlerFunc(s.messageStatus)))
	mux.Handle("GET /v1/bots/{bot}/events", s.auth(http.HandlerFunc(s.events)))
	mux.Handle("GET /v1/tokens", s.auth(http.HandlerFunc(s.tokens)))
	mux.Handle("GET /v1/bots", s.auth(http.HandlerFunc(s.listBots)))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok\n") })
	mux.HandleFunc("GET /readyz", s.readyz)
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.gather, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError}))
	return mux
}

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
				writeError(w, &adapter.Error{Kind: adapter.KindUnauthorized, Message: "missing or wrong API key: send Authorization: Bearer <key>"})
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

func (s *server) bot(w http.ResponseWriter, r *http.Request) *bot {
	b := s.bots[r.PathValue("bot")]
	if b == nil {
		writeError(w, &adapter.Error{Kind: adapter.KindNotFound, Message: fmt.Sprintf("no bot named %q", r.PathValue("bot"))})
	}
	return b
}

// errorBody is the JSON of every API error.
type errorBody struct {
	Error struct {
		Kind         adapter.Kind `json:"kind"`
		Message      string       `json:"message"`
		PlatformCode string       `json:"platform_code"`
	} `json:"error"`
}

// writeError answers with err's HTTP status and error JSON; rate limits get Retry-After.
func writeError(w http.ResponseWriter, err error) {
	kind := adapter.KindOf(err)
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
	writeJSON(w, kind.HTTPStatus(), body)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
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
	if !s.ready() {
		s.m.webhooks.WithLabelValues(b.name, "unavailable").Inc()
		w.Header().Set("Retry-After", "1")
		http.Error(w, "restarting, try again", http.StatusServiceUnavailable)
		return
	}
	req, err := adapter.NewWebhookRequest(r, 0)
	if err != nil {
		s.m.webhooks.WithLabelValues(b.name, string(adapter.KindOf(err))).Inc()
		s.log.Warn("webhook refused", "bot", b.name, "error", err)
		http.Error(w, http.StatusText(adapter.HTTPStatus(err)), adapter.HTTPStatus(err))
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 30*time.Second)
	defer cancel()
	resp, events, err := b.adapter.HandleWebhook(ctx, req)
	if err != nil {
		kind := adapter.KindOf(err)
		s.m.webhooks.WithLabelValues(b.name, string(kind)).Inc()
		s.log.Warn("webhook refused", "bot", b.name, "kind", kind, "error", err, "remote", r.RemoteAddr)
		if resp == nil {
			status := kind.HTTPStatus()
			if kind == adapter.KindUnavailable || kind == adapter.KindInternal {
				status = http.StatusServiceUnavailable // the platform will redeliver
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
	s.m.webhooks.WithLabelValues(b.name, "ok").Inc()
	resp.Write(w)
}

// enqueue drops events seen before and queues the rest; if they cannot be queued, no id is
// remembered, so the redelivery is not taken for a duplicate. A redelivery that arrives while
// the first delivery is being queued waits for it: it is answered only once the events are
// queued (a duplicate) or the first failed (then it queues them itself).
func (s *server) enqueue(ctx context.Context, b *bot, events []adapter.Event) error {
	if da, ok := b.queue.(dedupAppender); ok {
		keys := make([]string, len(events))
		for i, e := range events {
			keys[i] = e.ID
		}
		dup, err := da.AppendNew(ctx, events, keys)
		if err != nil {
			return err
		}
		for i, e := range events {
			s.countQueued(b, e, dup[i])
		}
		return nil
	}
	select {
	case b.enq <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-b.enq }()
	var fresh []adapter.Event
	for _, e := range events {
		if e.ID == "" {
			fresh = append(fresh, e)
			continue
		}
		isNew, err := s.dedup.Add(ctx, b.name+"\x00"+e.ID)
		if err != nil {
			s.log.Warn("dedup store failed; queueing the event anyway", "bot", b.name, "error", err)
			isNew = true
		}
		if !isNew {
			s.countQueued(b, e, true)
			continue
		}
		fresh = append(fresh, e)
	}
	if err := b.queue.Append(fresh); err != nil {
		for _, e := range fresh {
			if e.ID != "" {
				s.dedup.Remove(context.WithoutCancel(ctx), b.name+"\x00"+e.ID)
			}
		}
		return err
	}
	for _, e := range fresh {
		s.countQueued(b, e, false)
	}
	return nil
}

// countQueued logs and counts an event queued or dropped as a duplicate.
func (s *server) countQueued(b *bot, e adapter.Event, dup bool) {
	if dup {
		s.m.events.WithLabelValues(b.name, "duplicate").Inc()
		s.log.Info("duplicate event dropped", "bot", b.name, "event", e.ID)
		return
	}
	s.m.events.WithLabelValues(b.name, "queued").Inc()
	s.log.Debug("event queued", "bot", b.name, "event", e.ID, "kind", e.Kind)
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
	var msg adapter.Message
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxSendBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&msg); err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			writeError(w, &adapter.Error{Kind: adapter.KindTooLarge, Message: fmt.Sprintf("request body over %d bytes", maxSendBody)})
			return
		}
		writeError(w, &adapter.Error{Kind: adapter.KindInvalidRequest, Message: "request body: " + err.Error()})
		return
	}
	if _, err := msg.To.Kind(); err != nil {
		writeError(w, err)
		return
	}
	s.deliver(w, r, b, msg) // sendgate.go: Idempotency-Key, pacing, the send
}

// events streams a bot's events as Server-Sent Events.
func (s *server) events(w http.ResponseWriter, r *http.Request) {
	b := s.bot(w, r)
	if b == nil {
		return
	}
	var last uint64
	resume := false
	if v := r.Header.Get("Last-Event-ID"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			writeError(w, &adapter.Error{Kind: adapter.KindInvalidRequest, Message: "Last-Event-ID must be a sequence number from an id: line"})
			return
		}
		last, resume = n, true
	}
	rc := http.NewResponseController(w)
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	io.WriteString(w, ": chatwire events for "+b.name+"\n\n")
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
	seq, unknown := b.queue.Start(last, resume)
	if unknown {
		s.log.Warn("Last-Event-ID was never issued by this event queue (the host restarted or the stream was reset); starting at the oldest unconsumed event",
			"bot", b.name, "last_event_id", last, "start", seq)
	}
	ping := time.NewTicker(15 * time.Second)
	defer ping.Stop()
	for {
		events, wake, lost := b.queue.Read(seq, 100)
		if lost > 0 {
			fmt.Fprintf(w, ": %d events were dropped before this client asked for them\n\n", lost)
		}
		for _, ev := range events {
			fmt.Fprintf(w, "id: %d\nevent: %s\ndata: %s\n\n", ev.seq, ev.kind, ev.data)
			seq = ev.seq + 1
		}
		if len(events) > 0 || lost > 0 {
			if err := rc.Flush(); err != nil {
				return
			}
			if len(events) > 0 {
				b.queue.Consumed(events[len(events)-1].seq)
			}
			continue
		}
		select {
		case <-wake:
		case <-ping.C:
			io.WriteString(w, ": ping\n\n")
			if err := rc.Flush(); err != nil {
				return
			}
		case <-r.Context().Done():
			return
		case <-s.closing:
			return
		}
	}
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
		held, unconsumed := b.queue.Len()
		out = append(out, botStatus{Status: st, Queued: held, Unconsumed: unconsumed})
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

func (s *server) readyz(w http.ResponseWriter, r *http.Request) {
	select {
	case <-s.closing:
		http.Error(w, "shutting down", http.StatusServiceUnavailable)
		return
	default:
	}
	if !s.ready() {
		http.Error(w, "plugin not ready", http.StatusServiceUnavailable)
		return
	}
	io.WriteString(w, "ready\n")
}

// clip returns s cut to at most n bytes (for logging what a request named).
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[:n], "") + "…"
}
