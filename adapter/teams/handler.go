package teams

import (
	"context"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/seed-a64d9e1f/chatwire/adapter"
)

// Handler returns the bot's messaging endpoint for in-process hosts: it runs
// [Adapter.HandleWebhook], hands new events to emit and answers Teams only after emit
// returned nil, so nothing acknowledged is lost. Events are deduplicated by id for dedupTTL
// (zero means 10 minutes, spec §2.1): a redelivery that arrives while the first delivery is
// still being emitted waits for it, and gets 200 without a second event if it succeeded. A
// refused request is logged once, at Warn, without the token. If emit fails the answer is 503
// and Teams redelivers.
func (a *Adapter) Handler(emit func(ctx context.Context, events []adapter.Event) error, dedupTTL time.Duration) http.Handler {
	if dedupTTL <= 0 {
		dedupTTL = 10 * time.Minute
	}
	d := &dedup{ttl: dedupTTL, seen: map[string]time.Time{}, flying: map[string]*flight{}}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		req, err := adapter.NewWebhookRequest(r, 0)
		if err != nil {
			a.log.LogAttrs(r.Context(), slog.LevelWarn, "teams: webhook refused", slog.String("platform", Platform),
				slog.String("bot", a.opts.Bot), slog.String("remote", r.RemoteAddr), slog.String("error", err.Error()))
			http.Error(w, http.StatusText(adapter.HTTPStatus(err)), adapter.HTTPStatus(err))
			return
		}
		resp, events, err := a.HandleWebhook(r.Context(), req)
		if err != nil {
			a.log.LogAttrs(r.Context(), slog.LevelWarn, "teams: webhook refused", slog.String("platform", Platform),
				slog.String("bot", a.opts.Bot), slog.String("remote", r.RemoteAddr), slog.String("kind", string(adapter.KindOf(err))),
				slog.String("error", err.Error()))
			resp.Write(w)
			return
		}
		if err := d.emit(r.Context(), events, emit); err != nil {
			a.log.LogAttrs(r.Context(), slog.LevelError, "teams: events not queued; asking Teams to redeliver",
				slog.String("platform", Platform), slog.String("bot", a.opts.Bot), slog.String("error", err.Error()))
			w.Header().Set("Retry-After", "1")
			http.Error(w, "try again", http.StatusServiceUnavailable)
			return
		}
		resp.Write(w)
	})
}

type flight struct {
	done chan struct{}
	ok   bool
}

// dedup remembers emitted event ids and the ones being emitted.
type dedup struct {
	ttl    time.Duration
	mu     sync.Mutex // guards seen and flying
	seen   map[string]time.Time
	flying map[string]*flight
}

// emit hands the events not seen before to fn.
func (d *dedup) emit(ctx context.Context, events []adapter.Event, fn func(context.Context, []adapter.Event) error) error {
	var fresh []adapter.Event
	var mine []*flight
	for _, e := range events {
		for {
			d.mu.Lock()
			if t, ok := d.seen[e.ID]; ok && time.Since(t) < d.ttl {
				d.mu.Unlock()
				break // a duplicate
			}
			if f := d.flying[e.ID]; f != nil {
				d.mu.Unlock()
				select {
				case <-f.done:
					continue // look again: seen if it succeeded, free if it failed
				case <-ctx.Done():
					d.finish(fresh, mine, false)
					return ctx.Err()
				}
			}
			f := &flight{done: make(chan struct{})}
			d.flying[e.ID] = f
			d.mu.Unlock()
			fresh, mine = append(fresh, e), append(mine, f)
			break
		}
	}
	if len(fresh) == 0 {
		return nil
	}
	err := fn(ctx, fresh)
	d.finish(fresh, mine, err == nil)
	return err
}

func (d *dedup) finish(events []adapter.Event, flights []*flight, ok bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	now := time.Now()
	if ok && len(d.seen) > 10000 {
		for id, t := range d.seen {
			if now.Sub(t) >= d.ttl {
				delete(d.seen, id)
			}
		}
	}
	for i, e := range events {
		if ok {
			d.seen[e.ID] = now
		}
		delete(d.flying, e.ID)
		flights[i].ok = ok
		close(flights[i].done)
	}
}
