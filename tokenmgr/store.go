package tokenmgr

import (
	"context"
	"sync"
	"time"

	"golang.org/x/sync/semaphore"
)

// Entry is what a [Store] keeps for one key: the token, the source state that must survive a
// refresh, and a generation that grows with every write.
type Entry struct {
	Token Token
	// State is source state that must outlive a refresh, written in the same step as Token
	// (see [StatefulSource]). It is a secret, like Token.Value.
	State []byte
	// Issued is when Token was fetched; with Token.ExpiresAt it gives the token's lifetime.
	Issued time.Time
	// Gen is the generation: 0 means no entry; every write of a key stores the previous Gen+1.
	// Managers compare generations to tell a newer token from the one they hold.
	Gen uint64
}

// FetchFunc fetches a new token from upstream. prev is the entry stored when the fetch began
// (its State is what a [StatefulSource] redeems). The store sets Gen of the returned entry.
type FetchFunc func(ctx context.Context, prev Entry) (Entry, error)

// A Store keeps token entries, possibly shared by many processes. Implementations must be safe
// for concurrent use. A Manager calls the Store only when its local copy is due for refresh or
// was invalidated, never on the hot path.
type Store interface {
	// Load returns the entry stored for key; an absent key gives a zero Entry and a nil error.
	Load(ctx context.Context, key string) (Entry, error)

	// Refresh returns an entry newer than generation have. If the stored entry's Gen is
	// greater than have, Refresh returns it without calling fetch (fetched is false).
	// Otherwise it calls fetch at most once across every user of the store at a time (shared
	// stores hold a lock while fetching, and re-read the entry after taking it), writes the
	// result with Gen = stored Gen + 1 only if the stored entry did not change meanwhile, and
	// returns it with fetched true. If that conditional write loses, the fetched entry is
	// discarded and the newer stored one is returned with fetched false.
	// Refresh returns when ctx is done, even while another process is fetching.
	Refresh(ctx context.Context, key string, have uint64, fetch FetchFunc) (e Entry, fetched bool, err error)

	// Invalidate clears the token stored for key if the stored Gen is still gen (compare and
	// invalidate): a late report about an old token never throws away a newer one. State and
	// Gen are kept, so the next Refresh with have = gen fetches. A Manager logs a failed
	// Invalidate at Debug level only: a shared store reports its own outages, once each.
	Invalidate(ctx context.Context, key string, gen uint64) error
}

// Change tells a watcher that the entry of a key was written or invalidated.
type Change struct {
	Gen         uint64 // the generation written, or the one invalidated
	Invalidated bool   // the token of generation Gen was invalidated
}

// A Notifier is a Store that tells its users about changes made by others (other Managers in
// this process, other processes), so that every Manager drops an invalidated token at once and
// picks up a token another one fetched.
type Notifier interface {
	// Watch calls fn after each change to key, including changes made by the caller itself.
	// fn must return quickly and must not call the Store. stop ends the watch.
	Watch(key string, fn func(Change)) (stop func())
}

// MemoryStore is a [Store] that keeps entries in this process. Its zero value is ready to use.
// Managers sharing one MemoryStore share tokens and invalidations like processes sharing Redis.
type MemoryStore struct {
	mu    sync.Mutex // guards slots and every slot's entry and watchers
	slots map[string]*memSlot
}

type memSlot struct {
	lock     *semaphore.Weighted // of size 1: held while a fetch of this key runs
	e        Entry
	watchers map[int]func(Change)
	next     int
}

var (
	_ Store    = (*MemoryStore)(nil)
	_ Notifier = (*MemoryStore)(nil)
)

func (s *MemoryStore) slot(key string) *memSlot {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.slots == nil {
		s.slots = make(map[string]*memSlot)
	}
	sl := s.slots[key]
	if sl == nil {
		sl = &memSlot{lock: semaphore.NewWeighted(1), watchers: make(map[int]func(Change))}
		s.slots[key] = sl
	}
	return sl
}

// Load returns the entry stored for key.
func (s *MemoryStore) Load(ctx context.Context, key string) (Entry, error) {
	sl := s.slot(key)
	s.mu.Lock()
	defer s.mu.Unlock()
	return sl.e, nil
}

// Refresh implements [Store.Refresh].
func (s *MemoryStore) Refresh(ctx context.Context, key string, have uint64, fetch FetchFunc) (Entry, bool, error) {
	sl := s.slot(key)
	if err := sl.lock.Acquire(ctx, 1); err != nil {
		return Entry{}, false, err
	}
	defer sl.lock.Release(1)

	s.mu.Lock()
	cur := sl.e
	s.mu.Unlock()
	if cur.Gen > have {
		return cur, false, nil
	}
	e, err := fetch(ctx, cur)
	if err != nil {
		return Entry{}, false, err
	}
	e.Gen = cur.Gen + 1
	s.mu.Lock()
	sl.e = e
	fns := watchersOf(sl)
	s.mu.Unlock()
	notify(fns, Change{Gen: e.Gen})
	return e, true, nil
}

// Invalidate implements [Store.Invalidate].
func (s *MemoryStore) Invalidate(ctx context.Context, key string, gen uint64) error {
	sl := s.slot(key)
	s.mu.Lock()
	if sl.e.Gen != gen || sl.e.Token.Value == "" {
		s.mu.Unlock()
		return nil
	}
	sl.e.Token = Token{}
	fns := watchersOf(sl)
	s.mu.Unlock()
	notify(fns, Change{Gen: gen, Invalidated: true})
	return nil
}

// Put stores e for key unconditionally with the next generation, as an operator seeding state
// (a refresh token from a login) would, and returns the stored entry.
func (s *MemoryStore) Put(key string, e Entry) Entry {
	sl := s.slot(key)
	s.mu.Lock()
	e.Gen = sl.e.Gen + 1
	sl.e = e
	fns := watchersOf(sl)
	s.mu.Unlock()
	notify(fns, Change{Gen: e.Gen})
	return e
}

// Watch implements [Notifier].
func (s *MemoryStore) Watch(key string, fn func(Change)) (stop func()) {
	sl := s.slot(key)
	s.mu.Lock()
	id := sl.next
	sl.next++
	sl.watchers[id] = fn
	s.mu.Unlock()
	return func() {
		s.mu.Lock()
		delete(sl.watchers, id)
		s.mu.Unlock()
	}
}

func watchersOf(sl *memSlot) []func(Change) {
	fns := make([]func(Change), 0, len(sl.watchers))
	for _, fn := range sl.watchers {
		fns = append(fns, fn)
	}
	return fns
}

func notify(fns []func(Change), c Change) {
	for _, fn := range fns {
		fn(c)
	}
}
