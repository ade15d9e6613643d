// Package pacing schedules a bot's sends within its platform's limits, fleet-wide through
// Redis ([NewRedis]) or in one host ([NewMemory]): a send first reserves its place (the
// earliest time every counter it draws on allows), waits until then, and reports how it
// went, so a platform's own throttle answers (WeCom 45009, 45033; Graph 429 with
// Retry-After) pause or slow what follows. A synchronous caller gives Reserve the longest
// wait it can afford and gets a rate-limited error with the wait instead of a longer one.
package pacing

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/seed-a64d9e1f/chatwire/adapter"
)

// WeComBlock is the least pause after WeCom's 45009: it blocks an over-limit caller for 60 s,
// 60 min or the rest of the day (doc 90454).
const WeComBlock = 60 * time.Second

// marginDivisor sets the safety margin of every window: a limit of N per P is kept as N per
// P + P/30 (a minute: 62 s). The platform counts by the times it receives sends, and a
// send's latency varies: without the margin, the 31st message reserved exactly a minute
// after the first can reach WeCom less than a minute after the first did, and be dropped.
const marginDivisor = 30

// sameMoment is how far past its maxWait a send may still be placed: concurrent sends on one
// counter are ordered by when they reach the store, a few µs (memory) or a millisecond
// (Redis keeps milliseconds) after they read the clock, so a send that could go at once
// may find the counter's last entry just after its now. A wait that short is no wait (the
// margin of every window is far longer), and refusing it said "could go in 0s".
const sameMoment = time.Millisecond

// DefaultConcurrency is the default bound on one bot's sends in flight in one host.
const DefaultConcurrency = 32

// A Clock tells the time and waits. The real clock is used unless a test shortens time
// ([Scaled]); a fleet must share one clock, since the Redis store compares the times the
// hosts give it.
type Clock interface {
	Now() time.Time
	// SleepUntil returns when the clock reads t or later, or ctx's error if it ends first.
	SleepUntil(ctx context.Context, t time.Time) error
}

type realClock struct{}

func (realClock) Now() time.Time { return time.Now() }

func (realClock) SleepUntil(ctx context.Context, t time.Time) error {
	return sleep(ctx, time.Until(t))
}

func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Scaled returns a clock that reads origin + factor × (real time − origin): from origin on,
// its time runs factor times faster. Processes given the same origin and factor agree on
// it, so an emulator and a fleet of hosts can share a shortened clock in a test.
func Scaled(origin time.Time, factor float64) Clock {
	if factor <= 0 {
		factor = 1
	}
	return scaled{origin, factor}
}

type scaled struct {
	origin time.Time
	factor float64
}

func (s scaled) Now() time.Time {
	return s.origin.Add(time.Duration(float64(time.Since(s.origin)) * s.factor))
}

func (s scaled) SleepUntil(ctx context.Context, t time.Time) error {
	return sleep(ctx, time.Duration(float64(t.Sub(s.Now()))/s.factor))
}

// Options configure a [Scheduler]. The zero value uses the platform's published limits.
type Options struct {
	// Limits replace the platform's defaults scope by scope (see [Merge]); nil: defaults.
	Limits map[string][]Limit
	// Concurrency bounds this bot's sends in flight in this host. 45033 halves the bound
	// (down to 1); it grows back by one after as many successes as the bound. Zero means
	// [DefaultConcurrency].
	Concurrency int
	// Clock is the time; nil means the real clock.
	Clock Clock
	// Logger receives pauses (Info) and store failures (Warn). nil: no logging.
	Logger *slog.Logger
	// Fallback, if not nil, is used while the Store fails (Redis down): sends stay paced
	// within this host instead of stopping. nil: a Store error fails the send (unavailable).
	Fallback Store
}

// Scheduler paces one bot's sends. It is safe for concurrent use; Schedulers of the same
// bot in several hosts share their limits through a Redis Store.
type Scheduler struct {
	bot, platform string
	limits        Limits
	store         Store
	fallback      Store
	clock         Clock
	log           *slog.Logger
	conc          *limiter
}

// New returns the Scheduler of bot on platform ("wecom", "graph", "teams"; other platforms are not
// paced but still honour pauses and the concurrency bound).
func New(store Store, bot, platform string, opts Options) (*Scheduler, error) {
	limits, err := Merge(platform, opts.Limits)
	if err != nil {
		return nil, err
	}
	for scope, ls := range limits {
		for _, l := range ls {
			if l.N < 1 || l.Per <= 0 {
				return nil, fmt.Errorf("pacing: %s limit %v: want a count ≥ 1 per a positive duration", scope, l)
			}
		}
	}
	c := opts.Concurrency
	if c <= 0 {
		c = DefaultConcurrency
	}
	s := &Scheduler{bot: bot, platform: platform, limits: limits, store: store, fallback: opts.Fallback, clock: opts.Clock,
		log: opts.Logger, conc: newLimiter(c)}
	if s.clock == nil {
		s.clock = realClock{}
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	return s, nil
}

// Limits returns the limits in force.
func (s *Scheduler) Limits() Limits { return s.limits }

// Concurrency returns the current bound on sends in flight.
func (s *Scheduler) Concurrency() int { return s.conc.limit() }

// A Reservation is a send's place in its bot's schedule.
type Reservation struct {
	// At is when the send may go; Wait is At minus the time of the reservation.
	At    time.Time
	Wait  time.Duration
	slots []Slot
	s     *Scheduler
}

// Reserve reserves msg's place: the earliest time at which every counter msg draws on (see
// [Plan]) and every pause on the bot and on those counters allow it. If that is no more
// than maxWait away (and a millisecond, sameMoment; maxWait < 0: any wait), the place is
// recorded, fleet-wide, and returned; the caller waits with [Reservation.Sleep] and then
// sends. Otherwise nothing is recorded and the error is an *adapter.Error of KindRateLimited whose RetryAfter is the
// wait. A reservation whose send is then abandoned still counts: pacing errs on the side of
// sending later, never of the platform dropping.
func (s *Scheduler) Reserve(ctx context.Context, msg adapter.Message, maxWait time.Duration) (Reservation, error) {
	slots := Plan(s.platform, msg)
	var cs []counter
	pauses := []string{""}
	for _, sl := range slots {
		pauses = append(pauses, sl.key())
		for _, l := range s.limits[sl.Scope] {
			cost := sl.Cost
			if cost > l.N { // more parts than the limit allows at all: take the whole window
				cost = l.N
			}
			l.Per += (l.Per / marginDivisor).Truncate(time.Millisecond) // Redis keeps milliseconds
			cs = append(cs, counter{key: sl.key(), limit: l, cost: cost})
		}
	}
	now := s.clock.Now()
	allow := maxWait
	if allow >= 0 {
		allow += sameMoment
	}
	at, ok, err := s.store.reserve(ctx, s.bot, cs, pauses, now, allow)
	if err != nil && s.fallback != nil && ctx.Err() == nil {
		s.log.Warn("pacing: store failed; pacing within this host only", "bot", s.bot, "error", err)
		at, ok, err = s.fallback.reserve(ctx, s.bot, cs, pauses, now, allow)
	}
	if err != nil {
		return Reservation{}, &adapter.Error{Kind: adapter.KindUnavailable, Message: "pacing: " + err.Error(), Err: err}
	}
	wait := at.Sub(now)
	if !ok {
		return Reservation{}, &adapter.Error{Kind: adapter.KindRateLimited, RetryAfter: wait,
			Message: fmt.Sprintf("sending now would exceed %s's limits for %s (it drops what exceeds them): this send could go in %s, after this request's deadline; retry later",
				s.platform, msg.To.String(), wait.Round(time.Millisecond))}
	}
	return Reservation{At: at, Wait: wait, slots: slots, s: s}, nil
}

// Sleep waits until the reservation's time, or returns ctx's error.
func (r Reservation) Sleep(ctx context.Context) error {
	if r.Wait <= 0 {
		return nil
	}
	return r.s.clock.SleepUntil(ctx, r.At)
}

// Acquire waits for room under the bot's concurrency bound; the caller calls done with the
// send's outcome (see [Scheduler.Report]) when it has finished.
func (r Reservation) Acquire(ctx context.Context) (done func(ctx context.Context, err error), err error) {
	if err := r.s.conc.acquire(ctx); err != nil {
		return nil, err
	}
	return func(ctx context.Context, err error) {
		r.s.conc.release()
		r.s.Report(ctx, r.slots, err)
	}, nil
}

// Report tells the scheduler how a send on slots ended: WeCom 45009 pauses the whole bot for
// the block (at least [WeComBlock]); WeCom 45033 halves the concurrency bound; another
// rate-limited answer with a Retry-After (Graph 429) pauses the send's first counter (its
// chat, channel or member) for that long; success lets the concurrency bound grow back.
func (s *Scheduler) Report(ctx context.Context, slots []Slot, err error) {
	s.report(ctx, slots, err, true)
}

// report is Report; retryAfter false leaves a platform's Retry-After to the caller (a
// synchronous send passes it on to its client, who decides when to try again).
func (s *Scheduler) report(ctx context.Context, slots []Slot, err error, retryAfter bool) {
	if err == nil {
		s.conc.success()
		return
	}
	code := adapter.Code(err)
	now := s.clock.Now()
	switch {
	case s.platform == adapter.PlatformWeCom && code == "45009":
		d := max(adapter.RetryAfter(err), WeComBlock)
		s.log.Info("pacing: WeCom blocked the app (45009); pausing the bot's sends", "bot", s.bot, "pause", d)
		s.pause(ctx, "", now, now.Add(d))
	case s.platform == adapter.PlatformWeCom && code == "45033":
		n := s.conc.lower()
		s.log.Info("pacing: WeCom refused concurrent calls (45033); lowering concurrency", "bot", s.bot, "concurrency", n)
	case retryAfter && adapter.KindOf(err) == adapter.KindRateLimited:
		d := adapter.RetryAfter(err)
		if d <= 0 {
			d = time.Second
		}
		key := ""
		if len(slots) > 0 {
			key = slots[0].key()
		}
		s.log.Info("pacing: the platform asked to wait; pausing", "bot", s.bot, "counter", key, "pause", d, "code", code)
		s.pause(ctx, key, now, now.Add(d))
	}
}

// pause pauses key in the store and in the fallback (so a pause survives a Redis outage).
func (s *Scheduler) pause(ctx context.Context, key string, now, until time.Time) {
	if err := s.store.pause(ctx, s.bot, key, now, until); err != nil {
		s.log.Warn("pacing: pause not stored", "bot", s.bot, "error", err)
	}
	if s.fallback != nil {
		s.fallback.pause(ctx, s.bot, key, now, until)
	}
}

// Do reserves msg's place with maxWait, waits for it and for room under the concurrency
// bound, runs send, and reports its outcome. The error is Reserve's, ctx's, or send's.
func (s *Scheduler) Do(ctx context.Context, msg adapter.Message, maxWait time.Duration, send func(ctx context.Context) error) error {
	return s.do(ctx, msg, maxWait, send, true)
}

// DoSync is Do for a synchronous send whose caller gets the platform's answer: a platform's
// Retry-After (Graph 429) is passed back, not turned into a pause of later sends (which
// keeps the host's synchronous contract: the next send is tried at once). WeCom 45009 still
// pauses the bot: WeCom extends the block of an app that keeps calling.
func (s *Scheduler) DoSync(ctx context.Context, msg adapter.Message, maxWait time.Duration, send func(ctx context.Context) error) error {
	return s.do(ctx, msg, maxWait, send, false)
}

func (s *Scheduler) do(ctx context.Context, msg adapter.Message, maxWait time.Duration, send func(ctx context.Context) error, retryAfter bool) error {
	r, err := s.Reserve(ctx, msg, maxWait)
	if err != nil {
		return err
	}
	if err := r.Sleep(ctx); err != nil {
		return err
	}
	if err := s.conc.acquire(ctx); err != nil {
		return err
	}
	err = send(ctx)
	s.conc.release()
	s.report(context.WithoutCancel(ctx), r.slots, err, retryAfter)
	return err
}

// limiter is a concurrency bound that can shrink and grow (AIMD).
type limiter struct {
	mu       sync.Mutex // guards the fields below
	max      int
	cap      int
	inflight int
	ok       int             // successes since the bound last changed
	waiters  []chan struct{} // FIFO
}

func newLimiter(n int) *limiter { return &limiter{max: n, cap: n} }

func (l *limiter) limit() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.cap
}

func (l *limiter) acquire(ctx context.Context) error {
	l.mu.Lock()
	if l.inflight < l.cap && len(l.waiters) == 0 {
		l.inflight++
		l.mu.Unlock()
		return nil
	}
	ch := make(chan struct{})
	l.waiters = append(l.waiters, ch)
	l.mu.Unlock()
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		l.mu.Lock()
		for i, w := range l.waiters {
			if w == ch {
				l.waiters = append(l.waiters[:i], l.waiters[i+1:]...)
				l.mu.Unlock()
				return ctx.Err()
			}
		}
		l.mu.Unlock()
		l.release() // granted meanwhile: give it back
		return ctx.Err()
	}
}

func (l *limiter) release() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.inflight--
	l.grantLocked()
}

func (l *limiter) grantLocked() {
	for l.inflight < l.cap && len(l.waiters) > 0 {
		ch := l.waiters[0]
		l.waiters = l.waiters[1:]
		l.inflight++
		close(ch)
	}
}

func (l *limiter) lower() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.cap = max(1, l.cap/2)
	l.ok = 0
	return l.cap
}

func (l *limiter) success() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.cap >= l.max {
		return
	}
	if l.ok++; l.ok >= l.cap {
		l.cap++
		l.ok = 0
		l.grantLocked()
	}
}
