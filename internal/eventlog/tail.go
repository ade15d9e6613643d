package eventlog

import (
	"slices"
	"time"
)

// The tail's bounds, per log: a reader further behind than this reads with XRANGE. Variables
// so tests can lower them.
var (
	// tailMax is how many entries a tail holds at most.
	tailMax = 1024
	// tailBytes bounds the size of a tail's entries (kind, key and data, plus an overhead
	// per entry).
	tailBytes = 256 << 10
	// tailAge is how long an entry stays in a tail: a log nobody reads holds nothing for long.
	tailAge = 5 * time.Second
)

// tailOverhead is what an entry costs besides its kind, key and data, for tailBytes.
const tailOverhead = 96

// tail is the run of a stream's newest entries as the hub's XREAD returned them, kept so that
// a reader that is caught up takes new entries from memory: no XRANGE (or XINFO) per entry.
// The hub fills it (deliver), the readers copy out of it (Read); l.mu guards it.
//
// Invariant while positioned: es holds exactly the stream's entries after from, up to last(),
// in id order, as the hub read them (XREAD returns every entry after the position it is given,
// so entries appended to es after last() keep it unbroken). The bounds drop entries from the
// front, raising from; a reset or the hub skipping entries moves from to the hub's new position
// and empties es (reposition).
type tail struct {
	// positioned is set by the hub's first look at the stream, which gives the hub its
	// starting position; before it, readers read with XRANGE.
	positioned bool
	// failing is set while the hub's reads of the stream fail: readers then read with XRANGE
	// themselves, so they see the error rather than wait for a hub that sees nothing.
	failing bool
	from    ID
	es      []tailEntry
	bytes   int
	// gen changes whenever the tail stops being the continuation of what it was (reposition,
	// failing set or cleared), so a reader that checked something against it checks again.
	gen uint64
}

type tailEntry struct {
	Entry
	at int64 // when the hub read it, unix nanoseconds
}

// usable reports whether readers may rely on the tail.
func (t *tail) usable() bool { return t.positioned && !t.failing }

// last is the hub's position: the id of the last entry it read (from when es is empty).
func (t *tail) last() ID {
	if len(t.es) == 0 {
		return t.from
	}
	return t.es[len(t.es)-1].ID
}

// reposition empties the tail at the hub's new position.
func (t *tail) reposition(at ID) {
	clear(t.es)
	t.es, t.from, t.bytes = t.es[:0], at, 0
	t.positioned = true
	t.gen++
}

func (t *tail) setFailing(failing bool) bool {
	if t.failing == failing {
		return false
	}
	t.failing = failing
	t.gen++
	return true
}

func entrySize(e *Entry) int { return len(e.Kind) + len(e.Key) + len(e.Data) + tailOverhead }

// add appends the entries after last() (es is in id order and follows on from what the hub
// read before), then drops the oldest beyond the bounds.
func (t *tail) add(es []Entry, now int64) {
	last := t.last()
	for i := range es {
		if !last.Less(es[i].ID) {
			continue
		}
		t.es = append(t.es, tailEntry{Entry: es[i], at: now})
		t.bytes += entrySize(&es[i])
		last = es[i].ID
	}
	drop := 0
	for bytes := t.bytes; len(t.es)-drop > tailMax || bytes > tailBytes && drop < len(t.es); drop++ {
		bytes -= entrySize(&t.es[drop].Entry)
	}
	t.dropFirst(drop)
}

// prune drops the entries read before cutoff (unix nanoseconds).
func (t *tail) prune(cutoff int64) {
	i := 0
	for i < len(t.es) && t.es[i].at < cutoff {
		i++
	}
	t.dropFirst(i)
}

func (t *tail) dropFirst(k int) {
	if k == 0 {
		return
	}
	t.from = t.es[k-1].ID
	for i := range k {
		t.bytes -= entrySize(&t.es[i].Entry)
	}
	clear(t.es[:k]) // the data of dropped entries is not kept alive by the array
	t.es = t.es[k:]
	if len(t.es) == 0 {
		t.es = nil
	}
}

// read returns a copy of up to n entries after after, which must be within the tail
// (from ≤ after < last()).
func (t *tail) read(after ID, n int) []Entry {
	i, _ := slices.BinarySearchFunc(t.es, after, func(e tailEntry, id ID) int { return e.ID.Compare(id) })
	if i < len(t.es) && t.es[i].ID == after {
		i++
	}
	j := min(len(t.es), i+n)
	out := make([]Entry, j-i)
	for k := range out {
		out[k] = t.es[i+k].Entry
	}
	return out
}
