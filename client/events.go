package client

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"iter"
	"log/slog"
	mathrand "math/rand/v2"
	"mime"
	"net/http"
	"net/url"
	"time"

	"github.com/seed-a64d9e1f/chatwire/adapter"
)

// An Event is one event of a bot: a message received or a platform event. Its JSON is the
// host's event JSON (the same as [adapter.Event]'s); LogID travels beside it, as the SSE
// id: line or the X-Chatwire-Event-Id header.
type Event struct {
	// LogID is the event's id in the bot's event log: an opaque string, for [Client.Ack]
	// and for [EventsOptions.LastEventID] to resume after this event. Compare LogIDs only
	// for equality.
	LogID string `json:"-"`
	// Event is the event itself. Its ID (stable across platform redeliveries) is what
	// Message.ReplyTo takes.
	adapter.Event
}

// EventsOptions say where a [Client.Events] stream starts and how it is shared. The zero
// value reads every event from the oldest one no consumer has received, alone.
type EventsOptions struct {
	// LastEventID resumes after the event with this LogID. Empty starts at the oldest event
	// no consumer has received. Not used with Group: a group keeps its own position.
	LastEventID string
	// Group makes this stream one of a consumer group's competing consumers (on any host of
	// a fleet): each event goes to one of them, which must acknowledge it with [Client.Ack]
	// within the host's deliver.ack_timeout (default 30 s), else it goes to another
	// consumer. Empty: this stream gets every event (broadcast).
	Group string
	// Consumer names this consumer within Group. Empty: a random name, chosen once per
	// Events call and kept across its reconnects, so a reconnect is not handed its own
	// unacknowledged events again.
	Consumer string
	// ReconnectDelay is the wait before reconnecting a dropped stream; it doubles with each
	// failed attempt (jittered) up to MaxReconnectDelay. Zero means 1 s. A retry: field sent
	// by the host replaces it, as the SSE standard says; a Retry-After is waited out.
	ReconnectDelay time.Duration
	// MaxReconnectDelay caps the wait between attempts. Zero means 30 s.
	MaxReconnectDelay time.Duration
}

// Events reads a bot's events (GET /v1/bots/{bot}/events, Server-Sent Events) until ctx is
// done or the loop stops. A dropped stream, a 429, 5xx or network error is retried with
// backoff, resuming with Last-Event-ID after the last event yielded, so that without Group
// the caller sees each event once and in order across reconnects. With Group, see
// [EventsOptions.Group].
//
// The sequence yields (event, nil) for each event. An error with a zero Event ends it: the
// host refused the stream (an *Error: no such bot, a bad key or group), or ctx.Err() when
// ctx is done. The one error after which the sequence goes on, if the loop continues, is an
// event whose data is not event JSON (its LogID is set).
func (c *Client) Events(ctx context.Context, bot string, opts EventsOptions) iter.Seq2[Event, error] {
	return func(yield func(Event, error) bool) {
		s := &stream{c: c, bot: bot, opts: opts, lastID: opts.LastEventID}
		if opts.Group != "" {
			s.lastID = ""
			if s.opts.Consumer == "" {
				s.opts.Consumer = rand.Text()
			}
		}
		if s.opts.ReconnectDelay <= 0 {
			s.opts.ReconnectDelay = time.Second
		}
		if s.opts.MaxReconnectDelay <= 0 {
			s.opts.MaxReconnectDelay = 30 * time.Second
		}
		s.run(ctx, yield)
	}
}

// stream is the state of one Events sequence.
type stream struct {
	c      *Client
	bot    string
	opts   EventsOptions // defaults resolved
	lastID string        // Last-Event-ID for the next connection (broadcast only)
}

func (s *stream) run(ctx context.Context, yield func(Event, error) bool) {
	failures := 0
	delay := s.opts.ReconnectDelay
	for {
		resp, err := s.open(ctx)
		var wait time.Duration
		switch {
		case ctx.Err() != nil:
			yield(Event{}, ctx.Err())
			return
		case err != nil:
			var ae *Error
			if errors.As(err, &ae) && !retryable(ae) {
				yield(Event{}, err)
				return
			}
			failures++
			wait = backoff(delay, failures, s.opts.MaxReconnectDelay)
			if ae != nil && ae.RetryAfter > wait {
				wait = ae.RetryAfter
			}
			s.c.log.LogAttrs(ctx, slog.LevelWarn, "chatwire event stream: connecting failed; retrying",
				slog.String("bot", s.bot), slog.Int("attempt", failures), slog.Duration("wait", wait), slog.Any("error", err))
		default:
			s.c.log.LogAttrs(ctx, slog.LevelDebug, "chatwire event stream connected", slog.String("bot", s.bot),
				slog.String("last_event_id", s.lastID), slog.String("group", s.opts.Group), slog.String("consumer", s.opts.Consumer))
			r := newSSEReader(resp.Body, s.lastID)
			got, stop, err := s.read(r, yield)
			resp.Body.Close()
			if stop {
				return
			}
			if r.retry > 0 {
				delay = r.retry
			}
			if ctx.Err() != nil {
				yield(Event{}, ctx.Err())
				return
			}
			if got {
				failures = 0
			}
			failures++
			wait = backoff(delay, failures, s.opts.MaxReconnectDelay)
			s.c.log.LogAttrs(ctx, slog.LevelWarn, "chatwire event stream dropped; reconnecting", slog.String("bot", s.bot),
				slog.String("last_event_id", s.lastID), slog.Duration("wait", wait), slog.Any("error", err))
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			yield(Event{}, ctx.Err())
			return
		case <-t.C:
		}
	}
}

// read yields the events of one connection until it ends. got reports whether any event
// came; stop whether the caller stopped the loop; err is why the connection ended.
func (s *stream) read(r *sseReader, yield func(Event, error) bool) (got, stop bool, err error) {
	for {
		m, err := r.Next()
		if err != nil {
			return got, false, err
		}
		got = true
		if s.opts.Group == "" {
			s.lastID = m.ID
		}
		ev := Event{LogID: m.ID}
		if err := json.Unmarshal(m.Data, &ev.Event); err != nil {
			err = fmt.Errorf("client: events of bot %s: event %s is not event JSON: %w", s.bot, m.ID, err)
			if !yield(Event{LogID: m.ID}, err) {
				return got, true, nil
			}
			continue
		}
		if !yield(ev, nil) {
			return got, true, nil
		}
	}
}

// open connects the stream.
func (s *stream) open(ctx context.Context) (*http.Response, error) {
	u := s.c.endpoint("v1", "bots", s.bot, "events")
	if s.opts.Group != "" {
		u += "?" + url.Values{"group": {s.opts.Group}, "consumer": {s.opts.Consumer}}.Encode()
	}
	req, err := s.c.newRequest(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "text/event-stream")
	req.Header.Set("Cache-Control", "no-cache")
	if s.lastID != "" {
		req.Header.Set("Last-Event-ID", s.lastID)
	}
	resp, err := s.c.do(req)
	if err != nil {
		return nil, err
	}
	if mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); mt != "text/event-stream" {
		resp.Body.Close()
		return nil, &Error{StatusCode: resp.StatusCode, Kind: adapter.KindInternal,
			Message: fmt.Sprintf("the host answered %q, not an event stream (text/event-stream)", resp.Header.Get("Content-Type"))}
	}
	return resp, nil
}

// retryable reports whether a refused stream may open later: rate limits, timeouts and the
// host's or a proxy's failures.
func retryable(e *Error) bool {
	return e.Temporary() || e.StatusCode == http.StatusRequestTimeout || e.StatusCode >= 500
}

// backoff returns the wait before attempt n (1, 2, ...): base doubled n-1 times, at most
// ceiling, jittered down by up to a half so that clients do not reconnect in lockstep.
func backoff(base time.Duration, n int, ceiling time.Duration) time.Duration {
	d := base
	for i := 1; i < n && d < ceiling; i++ {
		d *= 2
	}
	d = min(d, ceiling)
	return d/2 + mathrand.N(d/2+1)
}
