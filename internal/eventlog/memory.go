package eventlog

import (
	"container/list"
	"context"
	"slices"
	"sort"
	"sync"
	"time"
)

// Memory is a Log in this process's memory. Ids come from its clock as Redis makes them:
// "<ms>-0", or the last id's ms with the next seq when the clock has not moved past it.
type Memory struct {
	opts Options

	mu       sync.Mutex // guards the fields below
	entries  []Entry    // oldest first, ids increasing
	last     ID         // the last id issued
	consumed ID
	wake     chan struct{} // closed and replaced when entries are appended
	dedup    dedupLRU
	groups   map[string]*memGroup
	closed   chan struct{}
	// journal, if set, makes appends durable (see [File]): it is called with m.mu held
	// before the new entries are added; an error adds nothing.
	journal func(recs []Record, out []Appended, added []Entry, now time.Time) error
}

type memGroup struct {
	last    ID // the last entry handed out
	pending map[ID]*memPending
}

type memPending struct {
	consumer string
	at       time.Time // when it was last handed out
}

var _ Log = (*Memory)(nil)

// NewMemory returns an empty log.
func NewMemory(opts Options) *Memory {
	opts = opts.withDefaults()
	return &Memory{opts: opts, wake: make(chan struct{}), groups: map[string]*memGroup{},
		dedup:  dedupLRU{max: opts.DedupMax, ttl: opts.DedupTTL, order: list.New(), index: map[string]*list.Element{}},
		closed: make(chan struct{})}
}

// nextID returns the id after m.last by the clock. m.mu is held.
func (m *Memory) nextID() ID {
	ms := uint64(max(m.opts.Now().UnixMilli(), 0))
	if ms > m.last.Ms {
		return ID{Ms: ms}
	}
	return m.last.Next()
}

// Append implements Log.
func (m *Memory) Append(ctx context.Context, recs ...Record) ([]Appended, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.isClosed() {
		return nil, ErrClosed
	}
	now := m.opts.Now()
	out := make([]Appended, len(recs))
	batch := map[string]int{} // dedup key → index of its first record in recs
	dupOf := map[int]int{}    // index of a record → index of the earlier one it repeats
	fresh := 0
	for i, r := range recs {
		if r.Dedup != "" {
			if j, ok := batch[r.Dedup]; ok {
				out[i].Duplicate = true
				dupOf[i] = j
				continue
			}
			if id, ok := m.dedup.get(r.Dedup, now); ok {
				out[i] = Appended{ID: id, Duplicate: true}
				continue
			}
			batch[r.Dedup] = i
		}
		fresh++
	}
	drop := 0
	if fresh > 0 && len(m.entries)+fresh > m.opts.MaxLen {
		drop = sort.Search(len(m.entries), func(i int) bool { return m.consumed.Less(m.entries[i].ID) })
		drop = min(drop, len(m.entries)+fresh-m.opts.MaxLen)
		if len(m.entries)-drop+fresh > m.opts.MaxLen {
			return nil, ErrFull
		}
	}
	added := make([]Entry, 0, fresh)
	last := m.last
	for i, r := range recs {
		if out[i].Duplicate {
			continue
		}
		id := m.nextID()
		m.last = id
		added = append(added, Entry{ID: id, Kind: r.Kind, Key: r.Key, Data: slices.Clone(r.Data)})
		out[i].ID = id
	}
	if m.journal != nil && fresh > 0 {
		if err := m.journal(recs, out, added, now); err != nil {
			m.last = last // nothing added
			return nil, err
		}
	}
	m.entries = slices.Delete(m.entries, 0, drop)
	m.entries = append(m.entries, added...)
	for i, r := range recs {
		if !out[i].Duplicate && r.Dedup != "" {
			m.dedup.add(r.Dedup, out[i].ID, now)
		}
	}
	for i, j := range dupOf {
		out[i].ID = out[j].ID
	}
	if fresh > 0 {
		close(m.wake)
		m.wake = make(chan struct{})
	}
	return out, nil
}

func (m *Memory) isClosed() bool {
	select {
	case <-m.closed:
		return true
	default:
		return false
	}
}

// after returns the index of the first entry after id. m.mu is held.
func (m *Memory) after(id ID) int {
	return sort.Search(len(m.entries), func(i int) bool { return id.Less(m.entries[i].ID) })
}

// find returns the index of the entry with id, or -1.
func (m *Memory) find(id ID) int {
	i := sort.Search(len(m.entries), func(i int) bool { return !m.entries[i].ID.Less(id) })
	if i < len(m.entries) && m.entries[i].ID == id {
		return i
	}
	return -1
}

// Read implements Log.
func (m *Memory) Read(ctx context.Context, after ID, n int) ([]Entry, error) {
	n = max(n, 1)
	for {
		m.mu.Lock()
		if m.isClosed() {
			m.mu.Unlock()
			return nil, ErrClosed
		}
		if m.last.Less(after) {
			after = ID{} // beyond the last entry: read from the first
		}
		i := m.after(after)
		out := slices.Clone(m.entries[i:min(len(m.entries), i+n)])
		wake := m.wake
		m.mu.Unlock()
		if len(out) > 0 {
			return out, nil
		}
		select {
		case <-wake:
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-m.closed:
			return nil, ErrClosed
		}
	}
}

// Consumed implements Log.
func (m *Memory) Consumed(_ context.Context, upTo ID) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	upTo = min2(upTo, m.last)
	m.consumed = maxID(m.consumed, upTo)
	return nil
}

func min2(a, b ID) ID {
	if a.Less(b) {
		return a
	}
	return b
}

// ConsumedID implements Log.
func (m *Memory) ConsumedID(context.Context) (ID, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.consumed, nil
}

// Len implements Log.
func (m *Memory) Len(context.Context) (Length, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return Length{Held: int64(len(m.entries)), Unconsumed: int64(len(m.entries) - m.after(m.consumed))}, nil
}

// CreateGroup implements Log.
func (m *Memory) CreateGroup(_ context.Context, group string, start ID) error {
	if err := CheckName(group); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.groups[group] == nil {
		m.groups[group] = &memGroup{last: start, pending: map[ID]*memPending{}}
	}
	return nil
}

// ReadGroup implements Log.
func (m *Memory) ReadGroup(ctx context.Context, group, consumer string, n int) ([]Entry, error) {
	if err := CheckName(consumer); err != nil {
		return nil, err
	}
	n = max(n, 1)
	for {
		m.mu.Lock()
		if m.isClosed() {
			m.mu.Unlock()
			return nil, ErrClosed
		}
		g := m.groups[group]
		if g == nil {
			m.mu.Unlock()
			return nil, ErrNoGroup
		}
		out := m.claim(g, consumer, m.opts.AckTimeout, n)
		if len(out) == 0 {
			now := m.opts.Now()
			i := m.after(g.last)
			out = slices.Clone(m.entries[i:min(len(m.entries), i+n)])
			for _, e := range out {
				g.pending[e.ID] = &memPending{consumer: consumer, at: now}
				g.last = e.ID
			}
		}
		wake := m.wake
		m.mu.Unlock()
		if len(out) > 0 {
			return out, nil
		}
		t := time.NewTimer(m.opts.claimEvery())
		select {
		case <-wake:
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		case <-m.closed:
			t.Stop()
			return nil, ErrClosed
		}
		t.Stop()
	}
}

// claim hands consumer up to n of g's entries pending for at least minIdle, oldest first;
// pending entries no longer in the log are dropped. m.mu is held.
func (m *Memory) claim(g *memGroup, consumer string, minIdle time.Duration, n int) []Entry {
	if len(g.pending) == 0 {
		return nil
	}
	now := m.opts.Now()
	ids := make([]ID, 0, len(g.pending))
	for id := range g.pending {
		ids = append(ids, id)
	}
	slices.SortFunc(ids, ID.Compare)
	var out []Entry
	for _, id := range ids {
		if len(out) == n {
			break
		}
		p := g.pending[id]
		if now.Sub(p.at) < minIdle {
			continue
		}
		i := m.find(id)
		if i < 0 {
			delete(g.pending, id) // trimmed from the log, as Redis's XAUTOCLAIM does
			continue
		}
		p.consumer, p.at = consumer, now
		e := m.entries[i]
		e.Redelivered = true
		out = append(out, e)
	}
	return out
}

// Ack implements Log.
func (m *Memory) Ack(_ context.Context, group string, ids ...ID) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	g := m.groups[group]
	if g == nil {
		return 0, nil // as Redis XACK answers for a group it does not have
	}
	n := 0
	for _, id := range ids {
		if _, ok := g.pending[id]; ok {
			delete(g.pending, id)
			n++
		}
	}
	return n, nil
}

// Claim implements Log.
func (m *Memory) Claim(_ context.Context, group, consumer string, minIdle time.Duration, n int) ([]Entry, error) {
	if err := CheckName(consumer); err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	g := m.groups[group]
	if g == nil {
		return nil, ErrNoGroup
	}
	return m.claim(g, consumer, minIdle, max(n, 1)), nil
}

// Pending implements Log.
func (m *Memory) Pending(_ context.Context, group string) (Pending, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	g := m.groups[group]
	if g == nil {
		return Pending{}, ErrNoGroup
	}
	p := Pending{Count: int64(len(g.pending)), Consumers: map[string]int64{}}
	for id, e := range g.pending {
		p.Consumers[e.consumer]++
		if p.Oldest.IsZero() || id.Less(p.Oldest) {
			p.Oldest = id
		}
	}
	return p, nil
}

// Close implements Log.
func (m *Memory) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.isClosed() {
		close(m.closed)
	}
	return nil
}

// dedupLRU remembers dedup keys with the id of their entry for ttl, at most max of them
// (the oldest forgotten first). Every key lives equally long, so the oldest is also the first
// to expire. Not safe for concurrent use.
type dedupLRU struct {
	max   int
	ttl   time.Duration
	order *list.List // of *dedupItem, front: newest
	index map[string]*list.Element
}

type dedupItem struct {
	key string
	id  ID
	at  time.Time
}

func (d *dedupLRU) expire(now time.Time) {
	for el := d.order.Back(); el != nil; el = d.order.Back() {
		it := el.Value.(*dedupItem)
		if now.Sub(it.at) < d.ttl {
			return
		}
		d.order.Remove(el)
		delete(d.index, it.key)
	}
}

func (d *dedupLRU) get(key string, now time.Time) (ID, bool) {
	d.expire(now)
	if el, ok := d.index[key]; ok {
		return el.Value.(*dedupItem).id, true
	}
	return ID{}, false
}

func (d *dedupLRU) add(key string, id ID, now time.Time) {
	if el, ok := d.index[key]; ok {
		d.order.Remove(el)
	}
	d.index[key] = d.order.PushFront(&dedupItem{key: key, id: id, at: now})
	for d.order.Len() > d.max {
		el := d.order.Back()
		d.order.Remove(el)
		delete(d.index, el.Value.(*dedupItem).key)
	}
}
