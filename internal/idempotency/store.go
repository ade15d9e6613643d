package idempotency

import (
	"context"
	"encoding/hex"
	"maps"
	"sync"
	"time"
)

// A Store keeps the keys of a [Keeper]: [NewMemory] for one process, [NewRedis] for a
// fleet. Its methods are safe for concurrent use; it is implemented only in this package.
type Store interface {
	// claim creates a pending record for key (fingerprint fp, holder owner, started now,
	// remembered for retention) with a lease, or reports the key's state.
	claim(ctx context.Context, key, fp, owner string, now time.Time, lease, retention time.Duration) (status, error)
	// retake makes newOwner the holder of a pending key whose holder old has lost its
	// lease; false if the key is no longer in that state.
	retake(ctx context.Context, key, old, newOwner string, lease time.Duration) (bool, error)
	// extend renews owner's lease; false if owner no longer holds key.
	extend(ctx context.Context, key, owner string, lease time.Duration) (bool, error)
	// finish stores owner's answer; false if owner no longer holds key.
	finish(ctx context.Context, key, owner string, ans Answer) (bool, error)
	// release forgets a key owner holds.
	release(ctx context.Context, key, owner string) error
	// wait returns when key may have changed, at the latest after p's next step.
	wait(ctx context.Context, key string, p *poll) error
	// expireLease makes key's lease lapse at once, as if its holder had stopped (tests).
	expireLease(ctx context.Context, key string) error
}

type state int

const (
	stateClaimed   state = iota // the caller holds the key
	stateConflict               // another fingerprint
	stateDone                   // answered
	stateBusy                   // pending, its holder alive
	stateAbandoned              // pending, its holder's lease lapsed
)

type status struct {
	state   state
	owner   string
	started time.Time
	answer  Answer
}

// memory is the in-process Store.
type memory struct {
	max int

	mu      sync.Mutex // guards the fields below
	recs    map[string]*memRec
	order   []string      // keys in creation order, for expiry and the size bound
	changed chan struct{} // closed and replaced on every change
}

type memRec struct {
	fp, owner    string
	started      time.Time
	expires      time.Time
	leaseExpires time.Time
	done         bool
	answer       Answer
}

// DefaultMaxKeys is the number of keys a memory Store remembers at most; the oldest are
// forgotten first.
const DefaultMaxKeys = 100_000

// NewMemory returns a Store in this process's memory that remembers up to maxKeys keys
// (0: [DefaultMaxKeys]); older ones are forgotten before their retention ends.
func NewMemory(maxKeys int) Store {
	if maxKeys <= 0 {
		maxKeys = DefaultMaxKeys
	}
	return &memory{max: maxKeys, recs: map[string]*memRec{}, changed: make(chan struct{})}
}

func (m *memory) notifyLocked() {
	close(m.changed)
	m.changed = make(chan struct{})
}

// sweepLocked forgets expired keys and the oldest beyond the bound.
func (m *memory) sweepLocked(now time.Time) {
	i := 0
	for ; i < len(m.order); i++ {
		k := m.order[i]
		r := m.recs[k]
		switch {
		case r == nil: // released
		case !now.Before(r.expires) || len(m.recs) > m.max:
			delete(m.recs, k)
		default:
			m.order = m.order[i:]
			return
		}
	}
	m.order = m.order[:0]
}

func (m *memory) claim(_ context.Context, key, fp, owner string, now time.Time, lease, retention time.Duration) (status, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.sweepLocked(now)
	r := m.recs[key]
	if r != nil && !now.Before(r.expires) {
		r = nil
	}
	if r == nil {
		m.recs[key] = &memRec{fp: fp, owner: owner, started: now, expires: now.Add(retention), leaseExpires: now.Add(lease)}
		m.order = append(m.order, key)
		return status{state: stateClaimed}, nil
	}
	st := status{owner: r.owner, started: r.started}
	switch {
	case r.fp != fp:
		st.state = stateConflict
	case r.done:
		st.state, st.answer = stateDone, r.answer
	case now.Before(r.leaseExpires):
		st.state = stateBusy
	default:
		st.state = stateAbandoned
	}
	return st, nil
}

func (m *memory) retake(_ context.Context, key, old, newOwner string, lease time.Duration) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := time.Now()
	r := m.recs[key]
	if r == nil || r.done || r.owner != old || now.Before(r.leaseExpires) {
		return false, nil
	}
	r.owner, r.leaseExpires = newOwner, now.Add(lease)
	return true, nil
}

func (m *memory) extend(_ context.Context, key, owner string, lease time.Duration) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	r := m.recs[key]
	if r == nil || r.done || r.owner != owner {
		return false, nil
	}
	r.leaseExpires = time.Now().Add(lease)
	return true, nil
}

func (m *memory) finish(_ context.Context, key, owner string, ans Answer) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	r := m.recs[key]
	if r == nil || r.done || r.owner != owner {
		return false, nil
	}
	r.done, r.answer = true, Answer{Status: ans.Status, Header: maps.Clone(ans.Header), Body: append([]byte(nil), ans.Body...)}
	m.notifyLocked()
	return true, nil
}

func (m *memory) release(_ context.Context, key, owner string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if r := m.recs[key]; r != nil && !r.done && r.owner == owner {
		delete(m.recs, key)
		m.notifyLocked()
	}
	return nil
}

func (m *memory) wait(ctx context.Context, _ string, p *poll) error {
	m.mu.Lock()
	ch := m.changed
	m.mu.Unlock()
	t := time.NewTimer(p.step()) // a lapsed lease changes nothing: look again now and then
	defer t.Stop()
	select {
	case <-ch:
	case <-t.C:
	case <-ctx.Done():
		return ctx.Err()
	}
	return nil
}

func (m *memory) expireLease(_ context.Context, key string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if r := m.recs[key]; r != nil {
		r.leaseExpires = time.Time{}
		m.notifyLocked()
	}
	return nil
}

// ClaimAbandoned records req's key as claimed at started by a holder that then stopped
// without an answer (its lease lapsed), as a host killed mid-send leaves it. For tests of
// what follows.
func ClaimAbandoned(ctx context.Context, s Store, req Request, started time.Time) error {
	fp := hex.EncodeToString(req.Fingerprint[:])
	if _, err := s.claim(ctx, req.Key, fp, "stopped-holder", started, time.Minute, DefaultRetention); err != nil {
		return err
	}
	return s.expireLease(ctx, req.Key)
}
