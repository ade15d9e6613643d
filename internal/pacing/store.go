package pacing

import (
	"context"
	"sync"
	"time"
)

// A Store keeps the send logs and pauses of bots: [NewMemory] for one host, [NewRedis] for
// a fleet. Its methods are safe for concurrent use; it is implemented only in this package.
//
// Each counter is a sliding-window log: the times of the sends it allowed, oldest first.
// A send of cost c under a limit of N per P may go at the earliest time t ≥ now that is not
// before the counter's last entry (so one counter's sends keep their order) and leaves at
// most N−c entries in (t−P, t]; then c entries at t are appended. Unlike a token bucket
// (GCRA), which lets 2N through in a window straddling a refill, no window of length P ever
// holds more than N: the platform counts (and drops) by sliding window.
type Store interface {
	// reserve finds the earliest time at which one send may draw on every counter in cs,
	// after every pause in pauses (the bot's own pause is ""). If it is no later than
	// now+maxWait it records the send at that time in every counter (ok true); otherwise it
	// records nothing (ok false). maxWait < 0 means no bound.
	reserve(ctx context.Context, bot string, cs []counter, pauses []string, now time.Time, maxWait time.Duration) (at time.Time, ok bool, err error)
	// pause keeps sends drawing on key ("" for the whole bot) from going before until.
	pause(ctx context.Context, bot, key string, now, until time.Time) error
}

// counter is one log: a slot's key under one limit, and the cost a send draws.
type counter struct {
	key   string
	limit Limit
	cost  int
}

func (c counter) logKey() string { return c.key + "|" + c.limit.String() }

// memory is the in-process Store.
type memory struct {
	mu     sync.Mutex                      // guards the fields below
	logs   map[string]*memLog              // bot + "\x00" + log key → entries
	pauses map[string]map[string]time.Time // bot → key → until
	calls  int                             // reserves since the last sweep
}

type memLog struct {
	per   time.Duration
	times []time.Time // oldest first
}

// sweepEvery is how many reserves pass between sweeps of logs no send has touched lately.
const sweepEvery = 4096

// NewMemory returns a Store in this process's memory.
func NewMemory() Store {
	return &memory{logs: map[string]*memLog{}, pauses: map[string]map[string]time.Time{}}
}

func (m *memory) reserve(_ context.Context, bot string, cs []counter, pauses []string, now time.Time, maxWait time.Duration) (time.Time, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	at := now
	for _, k := range pauses {
		if u, ok := m.pauses[bot][k]; ok {
			if !u.After(now) {
				delete(m.pauses[bot], k)
			} else if u.After(at) {
				at = u
			}
		}
	}
	if m.calls++; m.calls >= sweepEvery {
		m.calls = 0
		for id, l := range m.logs {
			if l.prune(now); len(l.times) == 0 {
				delete(m.logs, id)
			}
		}
	}
	for _, c := range cs {
		l := m.logs[bot+"\x00"+c.logKey()]
		if l == nil {
			continue
		}
		l.prune(now)
		at = earliest(at, l.times, c)
	}
	if maxWait >= 0 && at.Sub(now) > maxWait {
		return at, false, nil
	}
	for _, c := range cs {
		id := bot + "\x00" + c.logKey()
		l := m.logs[id]
		if l == nil {
			l = &memLog{per: c.limit.Per}
			m.logs[id] = l
		}
		for range c.cost {
			l.times = append(l.times, at)
		}
	}
	return at, true, nil
}

// prune drops entries that no longer count at now or later.
func (l *memLog) prune(now time.Time) {
	i := 0
	for i < len(l.times) && !l.times[i].After(now.Add(-l.per)) {
		i++
	}
	l.times = l.times[i:]
}

// earliest returns the earliest time ≥ at at which c's log (entries after now−Per, oldest
// first) allows one more send of c.cost.
func earliest(at time.Time, log []time.Time, c counter) time.Time {
	if n := len(log); n > 0 {
		if log[n-1].After(at) {
			at = log[n-1]
		}
		if room := c.limit.N - c.cost; n > room {
			if t := log[n-room-1].Add(c.limit.Per); t.After(at) {
				at = t
			}
		}
	}
	return at
}

func (m *memory) pause(_ context.Context, bot, key string, _, until time.Time) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.pauses[bot] == nil {
		m.pauses[bot] = map[string]time.Time{}
	}
	if until.After(m.pauses[bot][key]) {
		m.pauses[bot][key] = until
	}
	return nil
}
