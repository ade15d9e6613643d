package tokenmgr

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"
)

// Reasons a token is refreshed, as logged under "reason" and reported in [Event].
const (
	ReasonInitial     = "initial"     // no token yet
	ReasonAhead       = "ahead"       // refresh-ahead point reached; callers keep the current token
	ReasonExpired     = "expired"     // the token expired before a refresh succeeded
	ReasonInvalidated = "invalidated" // the platform rejected the token (here or in another process)
	ReasonShared      = "shared"      // another user of the Store wrote a newer token
)

// Where a refreshed token came from, as logged under "source".
const (
	SourceUpstream = "upstream" // fetched from the platform
	SourceStore    = "store"    // read from the Store, fetched by someone else
)

// Kinds of [Event].
const (
	EventRefresh    = "refresh"
	EventFailure    = "failure"
	EventInvalidate = "invalidation"
)

// The refresh point learns how long refreshes take: a background refresh starts no later than
// expiry − skew − latencyFactor × the slowest of the last latencyWindow successful refreshes,
// moved earlier by this Manager's jitter (0 to 2×Jitter of the lifetime, so that a fleet still
// spreads its refreshes). A refresh then ends before the token stops being handed out even when
// a fetch takes a good part of the token's lifetime; but the refresh point is never moved
// earlier than half the lifetime on that account. A factor of 2 leaves room for a fetch twice
// as slow as the slowest recent one; a window of 8 refreshes (hours, with 2-hour tokens)
// forgets one slow fetch after a while without making the refresh point jump at every one.
const (
	latencyWindow = 8
	latencyFactor = 2
)

// Options configure a [Manager]. The zero value is ready to use. Every timing is scaled down
// for short-lived tokens: each duration below is a cap, and the value used is the smaller of it
// and the stated fraction of the longest token lifetime seen for the key, so a 6-second token
// in a test behaves like a 2-hour token in production.
type Options struct {
	// Store holds tokens and source state. If nil, a MemoryStore private to this Manager is
	// used: tokens are cached in this process only.
	Store Store
	// Logger receives one line per refresh, failure and invalidation. If nil, nothing is logged.
	Logger *slog.Logger
	// OnEvent, if not nil, is called synchronously for every refresh, failure and invalidation
	// (the hook metrics are built on). It must return quickly.
	OnEvent func(Event)
	// Platform names the platform in logs and events. If empty, the key's text before its
	// first "/" is used ("wecom/corp/agent" → "wecom").
	Platform string

	// RefreshAt is the fraction of a token's lifetime after which it is refreshed in the
	// background. Zero means 0.8. The refresh point also learns how long refreshes take: it is
	// never later than expiry − ExpirySkew − 2 × the slowest of the last 8 successful
	// refreshes (less the jitter), so that a refresh ends before the token stops being handed
	// out even when a fetch takes a good part of the lifetime (a 200 ms fetch of a 1 s token
	// starts at about half of it); but never earlier than half the lifetime on that account.
	RefreshAt float64
	// Jitter spreads RefreshAt by up to ± this fraction of the lifetime, drawn once per
	// Manager, so a fleet does not refresh in lockstep. Zero means 0.05; negative means none.
	Jitter float64
	// RefreshBefore is the latest a background refresh starts before expiry. Zero means
	// 5 minutes (scaled: at most 10% of the lifetime).
	RefreshBefore time.Duration
	// ExpirySkew is how long before its ExpiresAt a token stops being handed out, allowing
	// for clock skew and request latency. Zero means 30 seconds (scaled: at most 1%).
	ExpirySkew time.Duration
	// MinInterval is the least time between two upstream fetches of the key, so neither a
	// platform that hands back a token about to expire nor one that rejects every token can
	// cause a refresh loop. One exception keeps a bot fast: the first rejection of a token is
	// answered at once, even right after a fetch; a rejection of the token that answered it
	// waits. Zero means 10 seconds (scaled: at most 1/720 of the lifetime).
	MinInterval time.Duration
	// BackoffMin and BackoffMax bound the exponential, jittered wait between failed fetches.
	// Zero means 1 second (scaled: at most 1/7200) and 3 minutes (scaled: at most 1/40).
	// After a credentials error the wait is BackoffMax: retry slowly.
	BackoffMin, BackoffMax time.Duration
	// RefreshTimeout bounds one refresh, which runs on a context owned by the Manager, not on
	// a caller's. Zero means 30 seconds.
	RefreshTimeout time.Duration
}

// Event describes one refresh, failure or invalidation. It never holds a token or secret.
type Event struct {
	Kind        string // EventRefresh, EventFailure or EventInvalidate
	Key         string
	Platform    string
	Reason      string        // one of the Reason constants
	Source      string        // SourceUpstream or SourceStore (refresh events)
	Took        time.Duration // how long the refresh took (refresh and failure events)
	ExpiresIn   time.Duration // remaining lifetime of the new token (refresh events)
	Attempt     int           // 1 for a first try, n after n-1 consecutive failures
	Fingerprint string        // Fingerprint of the token refreshed or invalidated
	Err         error         // the failure (failure events)
}

// Status is a Manager's state for operators: no token or secret in it.
type Status struct {
	Key         string    `json:"key"`
	Platform    string    `json:"platform"`
	State       string    `json:"state"` // empty, fresh, refreshing, failing, expired, invalid, closed
	Fingerprint string    `json:"fp,omitempty"`
	ExpiresAt   time.Time `json:"expires_at,omitzero"`
	RefreshAt   time.Time `json:"refresh_at,omitzero"`
	LastRefresh time.Time `json:"last_refresh,omitzero"`
	Generation  uint64    `json:"generation"`
	Refreshes   uint64    `json:"refreshes"` // successful refreshes, from upstream or the store
	Fetches     uint64    `json:"fetches"`   // upstream fetches made by this Manager
	Failures    uint64    `json:"failures"`  // failed refreshes in all
	// Consecutive counts the failures since the last success; NextAttempt is when the next
	// fetch may start after them.
	Consecutive int       `json:"consecutive_failures,omitempty"`
	NextAttempt time.Time `json:"next_attempt,omitzero"`
	LastError   string    `json:"last_error,omitempty"`
}

// A Manager keeps the token of one key fresh. Its methods are safe for concurrent use.
//
// A fresh token is returned by an atomic load. A background refresh starts at the jittered
// refresh-ahead point, early enough for the time recent refreshes took (see
// [Options.RefreshAt]); callers keep getting the current token meanwhile. Callers that need a
// token the Manager lacks (none yet, expired, invalidated) share one fetch and can each give up
// on their own ctx. A failed refresh keeps the still-valid token, is retried with jittered
// exponential backoff, and is returned at once to callers arriving during the backoff.
type Manager struct {
	key      string
	platform string
	src      Source
	store    Store
	log      *slog.Logger
	onEvent  func(Event)
	opts     Options // defaults resolved
	jitter   float64 // this Manager's refresh-point offset, a fraction of the lifetime

	// cur is the *Token that Token returns without locking; nil: none to hand out. It is an
	// unsafe.Pointer read with atomic.LoadPointer, not an atomic.Pointer[Token], to keep Token
	// within the inlining budget: inlined, Token lets its caller copy the token straight from
	// the heap; called, its result (too large for SSA) went through the stack twice, 9-12 ns
	// instead of 3. (Token's padding to 48 bytes, in token.go, does the rest.)
	cur unsafe.Pointer

	ctx    context.Context // manager-owned: refreshes run on it; canceled by Close
	cancel context.CancelFunc
	wg     sync.WaitGroup // refresh goroutines

	mu           sync.Mutex // guards the fields below
	entry        Entry      // the entry held, even when its token is no longer handed out
	valid        bool       // entry.Token is handed out (cur is not nil)
	want         string     // why a token is needed while !valid: initial, expired, invalidated
	nominal      time.Duration
	refreshAt    time.Time
	expireAt     time.Time // entry.Token.ExpiresAt - skew; zero if the token has no expiry
	notBefore    time.Time // no refresh-ahead or expiry fetch before this: the platform has nothing newer
	timer        *time.Timer
	call         *call // the refresh in flight, if any
	lastFetch    time.Time
	lastFetchWhy string                       // the reason of the last upstream fetch
	took         [latencyWindow]time.Duration // how long the last successful refreshes took, a ring
	tookN        int                          // refreshes recorded in took, in all
	fails        int                          // consecutive failures
	lastErr      error
	retryAt      time.Time
	closed       bool
	stopWatch    func()
	stats        struct{ refreshes, fetches, failures uint64 }
	lastOK       time.Time

	// Invalidations, kept so that a refresh in flight when one arrives does not bring back a
	// token that was rejected meanwhile (see rejectedLocked).
	badValue string // the token value last invalidated, here or by another user of the store
	badSeq   uint64 // counts invalidations of a value; see call.fetchSeq
	deadGen  uint64 // the newest generation known to be invalidated
}

// call is one refresh; callers that need its result wait on done.
type call struct {
	done   chan struct{}
	reason string
	have   uint64 // generation held when the call began
	invGen uint64 // if not 0, invalidate this generation in the store first
	// fetchSeq is badSeq when the last upstream fetch of this call began: a fetch that began
	// after the last invalidation may hand back the invalidated value (the platform issued it
	// again); one that began before may not.
	fetchSeq uint64
	tok      Token // result, set before done is closed
	err      error
}

// New returns a Manager for key, fetching from src. The key names the app, never its secret:
// "wecom/<corpid>/<agentid>", "graph/<tenant>/<client>/<user-or-app>". New makes no fetch; the
// first Token call does. Call Close when done.
func New(key string, src Source, opts Options) *Manager {
	m := &Manager{key: key, src: src, want: ReasonInitial}
	if opts.Store == nil {
		opts.Store = new(MemoryStore)
	}
	if opts.Platform == "" {
		opts.Platform, _, _ = strings.Cut(key, "/")
	}
	if opts.RefreshAt <= 0 || opts.RefreshAt >= 1 {
		opts.RefreshAt = 0.8
	}
	if opts.Jitter == 0 {
		opts.Jitter = 0.05
	} else if opts.Jitter < 0 {
		opts.Jitter = 0
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&opts.RefreshBefore, 5*time.Minute)
	def(&opts.ExpirySkew, 30*time.Second)
	def(&opts.MinInterval, 10*time.Second)
	def(&opts.BackoffMin, time.Second)
	def(&opts.BackoffMax, 3*time.Minute)
	def(&opts.RefreshTimeout, 30*time.Second)
	if opts.BackoffMax < opts.BackoffMin {
		opts.BackoffMax = opts.BackoffMin
	}
	m.opts = opts
	m.platform = opts.Platform
	m.store = opts.Store
	m.log = opts.Logger
	if m.log == nil {
		m.log = slog.New(slog.DiscardHandler)
	}
	m.onEvent = opts.OnEvent
	m.jitter = (rand.Float64()*2 - 1) * opts.Jitter
	m.ctx, m.cancel = context.WithCancel(context.Background())
	if n, ok := m.store.(Notifier); ok {
		m.stopWatch = n.Watch(key, m.onChange)
	}
	return m
}

// Key returns the key the Manager was created with.
func (m *Manager) Key() string { return m.key }

// Token returns a valid token, fetching one if the Manager has none. It returns at once when
// the current token is fresh, and also while a background refresh runs. ctx bounds only this
// caller's wait: the fetch itself runs on the Manager's context and finishes for the others.
func (m *Manager) Token(ctx context.Context) (tok Token, err error) {
	// Keep this within the inlining budget (go build -gcflags=-m must say "can inline
	// (*Manager).Token"): every extra node here costs callers several nanoseconds.
	t := (*Token)(atomic.LoadPointer(&m.cur))
	if t == nil {
		t, err = m.slow(ctx)
	}
	return *t, err
}

// AccessToken is Token for callers that need only the value to put on a request.
func (m *Manager) AccessToken(ctx context.Context) (string, error) {
	if t := m.current(); t != nil {
		return t.Value, nil
	}
	t, err := m.slow(ctx)
	return t.Value, err
}

// current returns the token handed out without locking, or nil.
func (m *Manager) current() *Token { return (*Token)(atomic.LoadPointer(&m.cur)) }

// setCurrent makes t the token handed out without locking; nil hands out none.
func (m *Manager) setCurrent(t *Token) { atomic.StorePointer(&m.cur, unsafe.Pointer(t)) }

// noToken is what slow points to with an error. It is never written.
var noToken Token

// slow is Token when no token is handed out without locking. It never returns nil: with an
// error, it returns &noToken.
func (m *Manager) slow(ctx context.Context) (*Token, error) {
	m.mu.Lock()
	if t := m.current(); t != nil {
		m.mu.Unlock()
		return t, nil
	}
	if m.closed {
		m.mu.Unlock()
		return &noToken, ErrClosed
	}
	c := m.call
	if c == nil {
		if now := time.Now(); m.lastErr != nil && now.Before(m.retryAt) {
			// Backing off after a failure: share its result rather than hammer the platform,
			// saying how long is left of the wait.
			err := &backoffError{err: m.lastErr, left: m.retryAt.Sub(now)}
			m.mu.Unlock()
			return &noToken, err
		}
		c = m.startLocked(m.want)
	}
	m.mu.Unlock()
	select {
	case <-c.done:
		if c.err != nil {
			return &noToken, c.err
		}
		return &c.tok, nil // never written after done is closed
	case <-ctx.Done():
		return &noToken, fmt.Errorf("tokenmgr: waiting for a token for %s: %w", m.key, ctx.Err())
	}
}

// Invalidate reports that the platform rejected the token bad. If bad is still the current
// token it is dropped, here and in the Store, and one refresh starts; callers of Token wait for
// it. If bad is an older token (the current one was refreshed since it was handed out),
// Invalidate does nothing, so many late failures with one stale token cause at most one refresh.
func (m *Manager) Invalidate(bad string) {
	if bad == "" {
		return
	}
	m.mu.Lock()
	if m.closed || !m.valid || m.entry.Token.Value != bad {
		m.mu.Unlock()
		return
	}
	gen := m.entry.Gen
	m.dropLocked(ReasonInvalidated)
	m.rejectLocked(bad, gen)
	if m.call == nil && (m.lastErr == nil || !time.Now().Before(m.retryAt)) {
		m.startLocked(ReasonInvalidated) // invalidates gen in the store first
	} else {
		// A refresh is in flight (or backing off): tell the store, and through it every other
		// user, now rather than when it is over. The refresh's result is checked against bad.
		m.invalidateLater(gen)
	}
	m.scheduleLocked()
	m.mu.Unlock()
	m.emit(Event{Kind: EventInvalidate, Reason: ReasonInvalidated, Source: SourceUpstream, Fingerprint: Fingerprint(bad)})
}

// Do calls fn with a token and returns its error. If fn fails with an error matching
// [ErrInvalid], Do invalidates that token and calls fn once more with a fresh one; a second
// failure is returned as it is. fn must be safe to call twice.
func (m *Manager) Do(ctx context.Context, fn func(ctx context.Context, tok Token) error) error {
	tok, err := m.Token(ctx)
	if err != nil {
		return err
	}
	err = fn(ctx, tok)
	if err == nil || !errors.Is(err, ErrInvalid) {
		return err
	}
	m.Invalidate(tok.Value)
	tok, err = m.Token(ctx)
	if err != nil {
		return err
	}
	return fn(ctx, tok)
}

// Status reports the Manager's state without any token or secret.
func (m *Manager) Status() Status {
	m.mu.Lock()
	defer m.mu.Unlock()
	st := Status{
		Key:         m.key,
		Platform:    m.platform,
		Fingerprint: Fingerprint(m.entry.Token.Value),
		ExpiresAt:   m.entry.Token.ExpiresAt,
		LastRefresh: m.lastOK,
		Generation:  m.entry.Gen,
		Refreshes:   m.stats.refreshes,
		Fetches:     m.stats.fetches,
		Failures:    m.stats.failures,
		Consecutive: m.fails,
	}
	if m.valid {
		st.RefreshAt = m.refreshAt
	}
	if m.lastErr != nil {
		st.LastError = m.lastErr.Error()
		st.NextAttempt = m.retryAt
	}
	switch {
	case m.closed:
		st.State = "closed"
	case m.valid && m.call != nil:
		st.State = "refreshing"
	case m.valid && m.lastErr != nil:
		st.State = "failing"
	case m.valid:
		st.State = "fresh"
	case m.entry.Token.Value == "" && m.entry.Gen == 0:
		st.State = "empty"
	case m.want == ReasonInvalidated:
		st.State = "invalid"
	default:
		st.State = "expired"
	}
	return st
}

// Close stops background refreshes, fails waiting callers with [ErrClosed], and waits for
// refresh goroutines to return. Later calls of Token return ErrClosed.
func (m *Manager) Close() error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil
	}
	m.closed = true
	m.valid = false
	m.setCurrent(nil)
	if m.timer != nil {
		m.timer.Stop()
	}
	stop := m.stopWatch
	m.mu.Unlock()
	if stop != nil {
		stop()
	}
	m.cancel()
	m.wg.Wait()
	return nil
}

// scaled returns the smaller of cap and frac of the longest lifetime seen.
func (m *Manager) scaled(limit time.Duration, frac float64) time.Duration {
	if m.nominal <= 0 {
		return limit
	}
	if d := time.Duration(float64(m.nominal) * frac); d < limit {
		return d
	}
	return limit
}

func (m *Manager) skew() time.Duration        { return m.scaled(m.opts.ExpirySkew, 0.01) }
func (m *Manager) margin() time.Duration      { return m.scaled(m.opts.RefreshBefore, 0.1) }
func (m *Manager) minInterval() time.Duration { return m.scaled(m.opts.MinInterval, 1.0/720) }

// backoff returns the wait after the n-th consecutive failure (n >= 1), jittered to [d/2, d].
func (m *Manager) backoff(n int, err error) time.Duration {
	// Floored at 1 ms: however short-lived a token, a failing source is never hammered.
	hi := max(m.scaled(m.opts.BackoffMax, 1.0/40), time.Millisecond)
	lo := min(max(m.scaled(m.opts.BackoffMin, 1.0/7200), time.Millisecond), hi)
	d := hi
	if !IsPermanent(err) && n < 63 {
		d = lo << (n - 1)
		if d > hi || d <= 0 {
			d = hi
		}
	}
	d = d/2 + rand.N(d/2+1)
	if ra := RetryAfter(err); ra > d {
		d = ra
	}
	return d
}

// learnedLatestLocked returns the latest point at which a refresh of a token issued at issued,
// living life until exp, still ends before the token stops being handed out, judging by how
// long the recent refreshes took (see latencyFactor): exp − skew − latencyFactor × the slowest,
// shifted by this Manager's jitter (never later), and never before half the lifetime.
func (m *Manager) learnedLatestLocked(issued time.Time, life time.Duration, exp time.Time) time.Time {
	var slowest time.Duration
	for _, d := range m.took[:min(m.tookN, latencyWindow)] {
		slowest = max(slowest, d)
	}
	at := exp.Add(-m.skew() - latencyFactor*slowest + time.Duration((m.jitter-m.opts.Jitter)*float64(life)))
	if floor := issued.Add(life / 2); at.Before(floor) {
		at = floor
	}
	return at
}

// rejectLocked records that the token value of generation gen was invalidated.
func (m *Manager) rejectLocked(value string, gen uint64) {
	m.badValue = value
	m.badSeq++
	m.deadGen = max(m.deadGen, gen)
}

// rejectedLocked reports whether e, the result of the refresh c, is a token invalidated while
// c ran: its generation was invalidated, or it holds the invalidated value and was not fetched
// from upstream after the invalidation.
func (m *Manager) rejectedLocked(e Entry, fetched bool, c *call) bool {
	if m.deadGen != 0 && e.Gen <= m.deadGen {
		return true
	}
	return m.badValue != "" && e.Token.Value == m.badValue && !(fetched && c.fetchSeq == m.badSeq)
}

// invalidateLater invalidates generation gen in the store in the background.
func (m *Manager) invalidateLater(gen uint64) {
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		ctx, cancel := context.WithTimeout(m.ctx, m.opts.RefreshTimeout)
		defer cancel()
		m.invalidateStore(ctx, gen)
	}()
}

// invalidateStore invalidates generation gen in the store. A failure is logged at Debug level
// only: the store reports its own outages (redisstore logs one warning per outage and counts
// them), and a line per invalidation would repeat that for every rejected request.
func (m *Manager) invalidateStore(ctx context.Context, gen uint64) {
	if err := m.store.Invalidate(ctx, m.key, gen); err != nil && ctx.Err() == nil {
		m.log.LogAttrs(ctx, slog.LevelDebug, "token store invalidate failed",
			slog.String("key", m.key), slog.String("platform", m.platform), slog.Uint64("gen", gen), slog.Any("error", err))
	}
}

// dropLocked stops handing out the current token.
func (m *Manager) dropLocked(why string) {
	m.valid = false
	m.want = why
	m.setCurrent(nil)
}

// startLocked starts a refresh for reason and returns its call.
func (m *Manager) startLocked(reason string) *call {
	c := &call{done: make(chan struct{}), reason: reason, have: m.entry.Gen}
	if reason == ReasonInvalidated {
		c.invGen = m.entry.Gen // compare-and-invalidate in the store too (a no-op if done already)
	}
	m.call = c
	var delay time.Duration
	// The minimum interval stops refresh loops. A first rejection of a token is answered at
	// once (WeCom may revoke a token it just issued); a rejection of the token that answered
	// a rejection waits.
	first := reason == ReasonInvalidated && m.lastFetchWhy != ReasonInvalidated
	if reason != ReasonShared && !first && !m.lastFetch.IsZero() {
		delay = time.Until(m.lastFetch.Add(m.minInterval()))
	}
	if reason == ReasonAhead || reason == ReasonExpired {
		delay = max(delay, time.Until(m.notBefore))
	}
	attempt := m.fails + 1
	m.wg.Add(1)
	go m.run(c, delay, attempt)
	return c
}

// run performs the refresh c after delay and publishes its result.
func (m *Manager) run(c *call, delay time.Duration, attempt int) {
	defer m.wg.Done()
	if delay > 0 {
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-m.ctx.Done():
			t.Stop()
		}
	}
	start := time.Now()
	ctx, cancel := context.WithTimeout(m.ctx, m.opts.RefreshTimeout)
	defer cancel()
	var (
		e                 Entry
		fetched, upstream bool // e is from upstream; some fetch of this call went upstream
		err               = m.ctx.Err()
	)
	for tries := 1; ; tries++ {
		if err == nil {
			e, fetched, err = m.fetch(ctx, c)
			upstream = upstream || fetched
		}
		m.mu.Lock()
		if err != nil || m.closed || !m.rejectedLocked(e, fetched, c) {
			break // with m.mu held: nothing can be invalidated between this check and accepting e
		}
		// e was invalidated while this refresh ran: never hand it out. Ask for a newer entry,
		// and if e is the rejected value stored again, drop it from the store too.
		if tries == 3 {
			err = fmt.Errorf("%w: the store keeps returning an invalidated token", ErrTemporary)
			break
		}
		c.have, c.invGen = e.Gen, 0
		if e.Gen > m.deadGen {
			c.invGen = e.Gen
		}
		m.mu.Unlock()
	}
	took := time.Since(start)

	m.call = nil
	if m.closed {
		c.err = ErrClosed
		close(c.done)
		m.mu.Unlock()
		return
	}
	if upstream {
		m.lastFetch = time.Now()
		m.lastFetchWhy = c.reason
	}
	var ev Event
	if err != nil {
		if errors.Is(err, context.Canceled) && m.ctx.Err() != nil {
			err = ErrClosed
		}
		c.err = fmt.Errorf("tokenmgr: refresh %s: %w", m.key, err)
		m.fails++
		m.stats.failures++
		m.lastErr = c.err
		wait := m.backoff(m.fails, err)
		m.retryAt = time.Now().Add(wait)
		ev = Event{Kind: EventFailure, Reason: c.reason, Took: took, Attempt: attempt, Err: c.err,
			Fingerprint: Fingerprint(m.entry.Token.Value)}
		m.scheduleLocked()
		close(c.done)
		m.mu.Unlock()
		m.emitFailure(ev, wait)
		return
	}
	m.took[m.tookN%latencyWindow] = took
	m.tookN++
	m.acceptLocked(e, fetched)
	c.tok = e.Token
	src := SourceStore
	if fetched {
		src = SourceUpstream
	}
	ev = Event{Kind: EventRefresh, Reason: c.reason, Source: src, Took: took, Attempt: attempt,
		Fingerprint: Fingerprint(e.Token.Value)}
	if !e.Token.ExpiresAt.IsZero() {
		ev.ExpiresIn = time.Until(e.Token.ExpiresAt)
	}
	close(c.done)
	m.mu.Unlock()
	m.emit(ev)
}

// fetch gets an entry newer than c.have through the store.
func (m *Manager) fetch(ctx context.Context, c *call) (Entry, bool, error) {
	if c.invGen != 0 {
		m.invalidateStore(ctx, c.invGen)
	}
	have := c.have
	fetch := func(ctx context.Context, prev Entry) (Entry, error) { return m.fetchUpstream(ctx, c, prev) }
	for range 3 {
		e, fetched, err := m.store.Refresh(ctx, m.key, have, fetch)
		if err != nil {
			return Entry{}, false, err
		}
		if fetched || m.usable(e) {
			return e, fetched, nil
		}
		have = e.Gen // stored token is stale or invalidated: ask the store to fetch
	}
	return Entry{}, false, fmt.Errorf("%w: store keeps returning a stale token", ErrTemporary)
}

// usable reports whether a token read from the store may be handed out.
func (m *Manager) usable(e Entry) bool {
	if e.Token.Value == "" {
		return false
	}
	if e.Token.ExpiresAt.IsZero() {
		return true
	}
	m.mu.Lock()
	nominal := m.nominal
	m.mu.Unlock()
	// Scale by the entry's own lifetime too: a Manager that has held no token yet must not
	// judge another process's short-lived token by the 2-hour defaults.
	if !e.Issued.IsZero() {
		nominal = max(nominal, e.Token.ExpiresAt.Sub(e.Issued))
	}
	skew := m.opts.ExpirySkew
	if nominal > 0 {
		skew = min(skew, nominal/100)
	}
	return time.Until(e.Token.ExpiresAt) > skew
}

// fetchUpstream asks the source for a new token for the refresh c; it is the store's FetchFunc.
func (m *Manager) fetchUpstream(ctx context.Context, c *call, prev Entry) (Entry, error) {
	m.mu.Lock()
	m.stats.fetches++
	c.fetchSeq = m.badSeq
	m.mu.Unlock()
	var (
		tok   Token
		state = prev.State
		err   error
	)
	if ss, ok := m.src.(StatefulSource); ok {
		var st []byte
		tok, st, err = ss.TokenState(ctx, prev.State)
		if st != nil {
			state = st
		}
	} else {
		tok, err = m.src.Token(ctx)
	}
	if err != nil {
		return Entry{}, err
	}
	now := time.Now()
	if tok.Value == "" {
		return Entry{}, fmt.Errorf("%w: source returned an empty token", ErrTemporary)
	}
	if !tok.ExpiresAt.IsZero() && !tok.ExpiresAt.After(now) {
		return Entry{}, fmt.Errorf("%w: source returned a token that expired %s ago", ErrTemporary,
			now.Sub(tok.ExpiresAt).Round(time.Millisecond))
	}
	tok.ExpiresAt = m.firstExpiry(tok, prev, now)
	return Entry{Token: tok, State: state, Issued: now}, nil
}

// firstExpiry returns the expiry of tok, a token just fetched: its own, or the earlier one
// already known for the same value while that one is still ahead. Fetching does not extend a
// token, but a platform may hand back its current token with a later expiry than its real one
// (WeCom may report a full expires_in on a repeated gettoken). The expiry known is the one in
// prev, the entry the store held when the fetch began, so the rule holds across every user of
// the store (every host of a fleet), whoever fetched the value first; and the one this Manager
// holds, for when the store lost it (an invalidation clears the stored token). Once that expiry
// has passed, the same value can only be a new issue, and its own expiry is believed. A
// platform that does extend a token it hands back gets it refreshed early, never late.
func (m *Manager) firstExpiry(tok Token, prev Entry, now time.Time) time.Time {
	exp := tok.ExpiresAt
	if exp.IsZero() {
		return exp
	}
	m.mu.Lock()
	held := m.entry.Token
	m.mu.Unlock()
	for _, known := range [...]Token{prev.Token, held} {
		if known.Value == tok.Value && known.ExpiresAt.After(now) && known.ExpiresAt.Before(exp) {
			exp = known.ExpiresAt
		}
	}
	return exp
}

// acceptLocked makes e the current entry and schedules its refresh and expiry. fetched tells
// whether e came from upstream just now (rather than from the store).
func (m *Manager) acceptLocked(e Entry, fetched bool) {
	now := time.Now()
	prev := m.entry
	m.entry = e
	m.valid = true
	m.badValue = "" // a newer token was handed out: entries after it are the fleet's to judge
	m.want = ReasonExpired
	m.fails = 0
	m.lastErr = nil
	m.retryAt = time.Time{}
	m.stats.refreshes++
	m.lastOK = now
	m.refreshAt, m.expireAt, m.notBefore = time.Time{}, time.Time{}, time.Time{}
	if exp := e.Token.ExpiresAt; !exp.IsZero() {
		issued := e.Issued
		if issued.IsZero() || issued.After(now) {
			issued = now
		}
		life := exp.Sub(issued)
		// The platform handed back the token we had, with no later expiry, to us or to another
		// user of the store: it had nothing newer. Asking again before that token is about to
		// expire would only burn quota.
		noNews := prev.Token.Value == e.Token.Value && e.Issued.After(prev.Issued) &&
			!exp.After(prev.Token.ExpiresAt.Add(min(2*time.Second, m.minInterval()/2)))
		if !noNews {
			m.nominal = max(m.nominal, life)
		}
		m.expireAt = exp.Add(-m.skew())
		if fetched && !m.expireAt.After(now) {
			// Just issued and still valid, if only briefly: hand it out for half of what is left.
			m.expireAt = now.Add(exp.Sub(now) / 2)
		}
		at := issued.Add(time.Duration(float64(life) * (m.opts.RefreshAt + m.jitter)))
		if latest := exp.Add(-m.margin()); at.After(latest) {
			at = latest
		}
		if latest := m.learnedLatestLocked(issued, life, exp); at.After(latest) {
			at = latest
		}
		if hint := e.Token.RefreshAt; !hint.IsZero() && hint.Before(at) {
			at = hint // the platform's refresh hint (Entra refresh_in)
		}
		if noNews {
			// The platform has nothing newer until this token expires: hand it out until
			// just before then, and ask again (in time for the callers) once it has expired.
			m.expireAt = exp.Add(-min(m.skew()/10, 100*time.Millisecond))
			if !m.expireAt.After(now) {
				m.expireAt = now.Add(exp.Sub(now) / 2)
			}
			m.notBefore = exp
			at = exp
		}
		// A token handed back with little time left must not make us ask again at once.
		if earliest := now.Add(m.minInterval()); at.Before(earliest) {
			at = earliest
		}
		m.refreshAt = at
	}
	tok := e.Token
	m.setCurrent(&tok)
	m.scheduleLocked()
}

// scheduleLocked arms the timer for the next thing due: refresh-ahead, expiry or a retry.
func (m *Manager) scheduleLocked() {
	if m.closed {
		return
	}
	var next time.Time
	consider := func(t time.Time) {
		if !t.IsZero() && (next.IsZero() || t.Before(next)) {
			next = t
		}
	}
	if m.valid {
		consider(m.expireAt)
		if m.call == nil {
			at := m.refreshAt
			if m.retryAt.After(at) {
				at = m.retryAt
			}
			consider(at)
		}
	} else if m.call == nil && m.lastErr != nil {
		consider(m.retryAt)
	}
	if next.IsZero() {
		if m.timer != nil {
			m.timer.Stop()
		}
		return
	}
	d := max(time.Until(next), 0)
	if m.timer == nil {
		m.timer = time.AfterFunc(d, m.tick)
	} else {
		m.timer.Reset(d)
	}
}

// tick handles whatever is due: expire the token, start a refresh, retry after backoff.
func (m *Manager) tick() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return
	}
	now := time.Now()
	if m.valid && !m.expireAt.IsZero() && !now.Before(m.expireAt) {
		m.dropLocked(ReasonExpired)
	}
	if m.call == nil && (m.lastErr == nil || !now.Before(m.retryAt)) {
		switch {
		case m.valid && !m.refreshAt.IsZero() && !now.Before(m.refreshAt):
			m.startLocked(ReasonAhead)
		case !m.valid && (m.lastErr != nil || m.want == ReasonExpired):
			m.startLocked(m.want)
		}
	}
	m.scheduleLocked()
}

// onChange reacts to a change another user of the store made.
func (m *Manager) onChange(ch Change) {
	m.mu.Lock()
	if m.closed || ch.Gen < m.entry.Gen {
		m.mu.Unlock()
		return
	}
	if ch.Invalidated {
		if ch.Gen <= m.deadGen {
			m.mu.Unlock() // known already (our own invalidation, heard back)
			return
		}
		if !m.valid || ch.Gen != m.entry.Gen {
			// Not a token handed out here, but a refresh in flight may be bringing it (or the
			// same value again): remember, so that it is not adopted.
			if ch.Gen == m.entry.Gen {
				m.rejectLocked(m.entry.Token.Value, ch.Gen)
			} else {
				m.deadGen = ch.Gen
			}
			m.mu.Unlock()
			return
		}
		fp := Fingerprint(m.entry.Token.Value)
		m.rejectLocked(m.entry.Token.Value, ch.Gen)
		m.dropLocked(ReasonInvalidated)
		if m.call == nil {
			m.startLocked(ReasonInvalidated)
		}
		m.mu.Unlock()
		m.emit(Event{Kind: EventInvalidate, Reason: ReasonInvalidated, Source: SourceStore, Fingerprint: fp})
		return
	}
	if ch.Gen > m.entry.Gen && m.call == nil {
		m.startLocked(ReasonShared)
	}
	m.mu.Unlock()
}

func (m *Manager) emit(ev Event) {
	ev.Key, ev.Platform = m.key, m.platform
	if m.onEvent != nil {
		m.onEvent(ev)
	}
	attrs := []slog.Attr{
		slog.String("key", ev.Key), slog.String("platform", ev.Platform),
		slog.String("reason", ev.Reason), slog.String("source", ev.Source),
	}
	switch ev.Kind {
	case EventRefresh:
		attrs = append(attrs, slog.Duration("took", ev.Took), slog.Duration("expires_in", ev.ExpiresIn.Round(time.Second)),
			slog.Int("attempt", ev.Attempt), slog.String("fp", ev.Fingerprint))
		m.mu.Lock()
		next := m.refreshAt // emit runs unlocked
		m.mu.Unlock()
		if !next.IsZero() {
			attrs = append(attrs, slog.Duration("next_refresh_in", time.Until(next).Round(time.Second)))
		}
		m.log.LogAttrs(m.ctx, slog.LevelInfo, "token refreshed", attrs...)
	case EventInvalidate:
		attrs = append(attrs, slog.String("fp", ev.Fingerprint))
		m.log.LogAttrs(m.ctx, slog.LevelInfo, "token invalidated", attrs...)
	}
}

func (m *Manager) emitFailure(ev Event, wait time.Duration) {
	ev.Key, ev.Platform = m.key, m.platform
	if m.onEvent != nil {
		m.onEvent(ev)
	}
	level, msg := slog.LevelWarn, "token refresh failed"
	if IsPermanent(ev.Err) {
		level, msg = slog.LevelError, "token refresh failed: credentials rejected, fix the configuration"
	}
	m.log.LogAttrs(m.ctx, level, msg,
		slog.String("key", ev.Key), slog.String("platform", ev.Platform), slog.String("reason", ev.Reason),
		slog.Duration("took", ev.Took), slog.Int("attempt", ev.Attempt), slog.String("fp", ev.Fingerprint),
		slog.Duration("retry_in", wait), slog.String("error", ev.Err.Error()))
}
