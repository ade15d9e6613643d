package redisstore

import (
	"errors"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/seed-a64d9e1f/chatwire/internal/backoff"
	"github.com/seed-a64d9e1f/chatwire/tokenmgr"
)

// Messages on the channel are "<kind> <gen> <key>": kind w (written) or i (invalidated), or,
// for waiters only, r (lock released without a write) and f (the holder's fetch failed; gen is
// 1 for a credentials error, else 0). An f message may go on with a newline and the JSON of a
// [failure]: the platform's code, the hint and the wait, never a secret. The message is cut at
// its first newline (JSON has none, escaped or not): a key with a newline gets no detail.

// The subscriber reads with readTimeout, so Close never waits longer than that for it, and
// pings after healthInterval without a message, so a silent network failure is noticed.
const (
	readTimeout    = time.Second
	healthInterval = 5 * time.Second
)

// subscribe keeps one subscription to the Store's channel until Close, reconnecting with
// jittered backoff. After every subscription but the first it resyncs the watched keys.
func (s *Store) subscribe() {
	defer close(s.done)
	first := true
	// Waits of 50ms doubling to 1s, each spread over [d/2, 3d/2].
	bo := backoff.Backoff{Base: 75 * time.Millisecond, Max: 1500 * time.Millisecond, Jitter: 2.0 / 3}
	for s.ctx.Err() == nil {
		ps := s.client.Subscribe(s.ctx, s.channel)
		s.psMu.Lock()
		s.ps = ps
		s.psMu.Unlock()
		if s.ctx.Err() == nil { // Close did not see ps
			s.receive(ps, &first, bo.Reset)
		}
		s.psMu.Lock()
		s.ps = nil
		s.psMu.Unlock()
		_ = ps.Close()
		if backoff.Sleep(s.ctx, bo.Next()) != nil {
			return
		}
	}
}

// receive handles messages of ps until it fails.
func (s *Store) receive(ps *redis.PubSub, first *bool, connected func()) {
	last := time.Now() // of the last message
	for {
		msg, err := ps.ReceiveTimeout(s.ctx, readTimeout)
		if err != nil {
			if s.ctx.Err() != nil {
				return
			}
			var ne net.Error
			if !errors.As(err, &ne) || !ne.Timeout() {
				return
			}
			if time.Since(last) >= healthInterval {
				if err := ps.Ping(s.ctx); err != nil {
					return
				}
				last = time.Now()
			}
			continue
		}
		last = time.Now()
		switch m := msg.(type) {
		case *redis.Subscription:
			if m.Kind != "subscribe" {
				continue
			}
			connected()
			if !*first {
				s.resync()
			}
			*first = false
		case *redis.Message:
			s.dispatch(m.Payload)
		}
	}
}

// dispatch hands one published change to the watchers and waiters of its key.
func (s *Store) dispatch(payload string) {
	kind, rest, ok := strings.Cut(payload, " ")
	if !ok {
		return
	}
	g, key, ok := strings.Cut(rest, " ")
	if !ok {
		return
	}
	gen, err := strconv.ParseUint(g, 10, 64)
	if err != nil {
		return
	}
	w := wakeup{kind: kind}
	if kind == "f" {
		w.fail = &failure{Credentials: gen == 1}
		key = w.fail.cut(key)
	}
	s.mu.Lock()
	sl := s.slots[key]
	if sl == nil {
		s.mu.Unlock()
		return
	}
	wakeLocked(sl, w)
	var fns []func(tokenmgr.Change)
	if sl.foreign {
		// The change is about an entry this Store cannot read; its Managers hold their own
		// tokens (fetchHere), whose generations the message says nothing about.
		s.mu.Unlock()
		return
	}
	if kind == "w" || kind == "i" {
		fns = watchersOf(sl)
	}
	if kind == "i" && sl.local.Gen == gen {
		sl.local.Token = tokenmgr.Token{}
	}
	s.mu.Unlock()
	notify(fns, tokenmgr.Change{Gen: gen, Invalidated: kind == "i"})
}

// resync runs after the subscription reconnected: changes published meanwhile were missed.
// It writes back entries fetched here during the outage, wakes waiters, and tells each watcher
// the stored generation (as invalidated if its token is gone).
func (s *Store) resync() {
	ctx := s.ctx
	s.mu.Lock()
	var keys []string
	for key, sl := range s.slots {
		if len(sl.watchers) > 0 || len(sl.waiters) > 0 || sl.dirty {
			keys = append(keys, key)
		}
	}
	s.mu.Unlock()
	for _, key := range keys {
		sl := s.slot(key)
		if err := s.writeBack(ctx, key, sl); err != nil {
			return
		}
		e, foreign, err := s.load(ctx, key, sl)
		if err != nil {
			s.fail(ctx, "resync", err)
			return
		}
		s.mu.Lock()
		wakeLocked(sl, wakeup{})
		fns := watchersOf(sl)
		s.mu.Unlock()
		if e.Gen > 0 && !foreign {
			notify(fns, tokenmgr.Change{Gen: e.Gen, Invalidated: e.Token.Value == ""})
		}
	}
}
