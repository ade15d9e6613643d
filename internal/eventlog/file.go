package eventlog

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"
)

// File is a Log kept in memory as [Memory] is, and in a journal file so it survives a
// restart of the process: one JSON line per change. Append returns only after its line is
// written and synced to disk (an acknowledged append is durable); the consumed mark and the
// groups' deliveries and acknowledgements are written without a sync (they survive the
// process stopping, not the machine losing power: then some entries are read again). Opening
// replays the journal and rewrites it compacted, as does Consumed once the journal has grown
// well past what the log holds. Entries a group handed out before a restart are handed out
// again (Redelivered) right after it. One process at a time has a journal open: opening one
// that another process (or another File) holds fails (on Unix: a lock file beside it).
type File struct {
	*Memory
	path string
	lock *os.File // held open: the process's exclusive lock on the journal

	wmu   sync.Mutex // guards f, lines; taken after Memory.mu when both are
	f     *os.File
	lines int // lines in the journal
}

var _ Log = (*File)(nil)

// journalOp is one line of the journal.
type journalOp struct {
	Op       string   `json:"op"` // a: append, d: dedup key, l: last id, c: consumed, g: group, r: handed out, k: acked
	ID       string   `json:"id,omitempty"`
	Kind     string   `json:"kind,omitempty"`
	Key      string   `json:"key,omitempty"`
	Data     []byte   `json:"data,omitempty"`
	Dedup    string   `json:"dedup,omitempty"`
	At       int64    `json:"at,omitempty"` // unix ms of a dedup key
	Group    string   `json:"group,omitempty"`
	Consumer string   `json:"consumer,omitempty"`
	IDs      []string `json:"ids,omitempty"`
}

// OpenFile opens the log journaled at path, creating it (and its directory) if missing.
func OpenFile(path string, opts Options) (*File, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("eventlog: %w", err)
	}
	lock, err := lockPath(path + ".lock")
	if err != nil {
		return nil, err
	}
	l := &File{Memory: NewMemory(opts), path: path, lock: lock}
	if err := l.replay(); err != nil {
		lock.Close()
		return nil, err
	}
	l.Memory.mu.Lock()
	defer l.Memory.mu.Unlock()
	if err := l.compact(); err != nil {
		lock.Close()
		return nil, err
	}
	l.Memory.journal = l.journalAppend
	return l, nil
}

// replay applies the journal to the empty Memory.
func (l *File) replay() error {
	data, err := os.ReadFile(l.path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("eventlog: %w", err)
	}
	m := l.Memory
	lines := bytes.Split(data, []byte("\n"))
	for n, line := range lines {
		if len(line) == 0 {
			continue
		}
		var op journalOp
		if err := json.Unmarshal(line, &op); err != nil {
			if n == len(lines)-1 { // the last line, cut short by a crash: never acknowledged
				break
			}
			return fmt.Errorf("eventlog: %s line %d: %w", l.path, n+1, err)
		}
		if err := m.apply(op); err != nil {
			return fmt.Errorf("eventlog: %s line %d: %w", l.path, n+1, err)
		}
	}
	if over := len(m.entries) - m.opts.MaxLen; over > 0 { // trimmed by appends after them
		m.entries = slices.Delete(m.entries, 0, over)
	}
	return nil
}

// apply applies one journal line. m.mu need not be held: nothing else has m yet.
func (m *Memory) apply(op journalOp) error {
	var id ID
	if op.ID != "" {
		var err error
		if id, err = ParseID(op.ID); err != nil {
			return err
		}
	}
	switch op.Op {
	case "a":
		if !m.last.Less(id) {
			return fmt.Errorf("id %s not after %s", id, m.last)
		}
		m.last = id
		m.entries = append(m.entries, Entry{ID: id, Kind: op.Kind, Key: op.Key, Data: op.Data})
		if op.Dedup != "" {
			m.dedup.add(op.Dedup, id, time.UnixMilli(op.At))
		}
	case "d":
		m.dedup.add(op.Dedup, id, time.UnixMilli(op.At))
	case "l":
		m.last = maxID(m.last, id)
	case "c":
		m.consumed = maxID(m.consumed, id)
	case "g":
		if m.groups[op.Group] == nil {
			m.groups[op.Group] = &memGroup{last: id, pending: map[ID]*memPending{}}
		}
	case "r", "k":
		g := m.groups[op.Group]
		if g == nil { // its "g" line was lost with a crash
			g = &memGroup{pending: map[ID]*memPending{}}
			m.groups[op.Group] = g
		}
		for _, s := range op.IDs {
			e, err := ParseID(s)
			if err != nil {
				return err
			}
			if op.Op == "k" {
				delete(g.pending, e)
				continue
			}
			// Zero time: handed out again as soon as a consumer asks after a restart.
			g.pending[e] = &memPending{consumer: op.Consumer}
			g.last = maxID(g.last, e)
		}
	default:
		return fmt.Errorf("unknown op %q", op.Op)
	}
	return nil
}

// compact rewrites the journal as the log's state. l.Memory.mu is held.
func (l *File) compact() error {
	m := l.Memory
	tmp := l.path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("eventlog: %w", err)
	}
	w := bufio.NewWriter(f)
	enc := json.NewEncoder(w)
	n := 0
	put := func(op journalOp) {
		enc.Encode(op)
		n++
	}
	m.dedup.expire(m.opts.Now())
	for el := m.dedup.order.Back(); el != nil; el = el.Prev() { // oldest first
		it := el.Value.(*dedupItem)
		put(journalOp{Op: "d", ID: it.id.String(), Dedup: it.key, At: it.at.UnixMilli()})
	}
	for _, e := range m.entries {
		put(journalOp{Op: "a", ID: e.ID.String(), Kind: e.Kind, Key: e.Key, Data: e.Data})
	}
	put(journalOp{Op: "l", ID: m.last.String()})
	put(journalOp{Op: "c", ID: m.consumed.String()})
	for name, g := range m.groups {
		put(journalOp{Op: "g", Group: name, ID: g.last.String()})
		by := map[string][]string{}
		for id, p := range g.pending {
			by[p.consumer] = append(by[p.consumer], id.String())
		}
		for c, ids := range by {
			put(journalOp{Op: "r", Group: name, Consumer: c, IDs: ids})
		}
	}
	err = w.Flush()
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, l.path)
	}
	if err == nil {
		err = syncDir(filepath.Dir(l.path))
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("eventlog: compacting %s: %w", l.path, err)
	}
	nf, err := os.OpenFile(l.path, os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("eventlog: %w", err)
	}
	l.wmu.Lock()
	if l.f != nil {
		l.f.Close()
	}
	l.f, l.lines = nf, n
	l.wmu.Unlock()
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// write appends lines to the journal, synced if sync.
func (l *File) write(sync bool, ops ...journalOp) error {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	for _, op := range ops {
		if err := enc.Encode(op); err != nil {
			return fmt.Errorf("eventlog: %w", err)
		}
	}
	l.wmu.Lock()
	defer l.wmu.Unlock()
	if l.f == nil {
		return ErrClosed
	}
	if _, err := l.f.Write(buf.Bytes()); err != nil {
		return fmt.Errorf("eventlog: journal %s: %w", l.path, err)
	}
	l.lines += len(ops)
	if sync {
		if err := l.f.Sync(); err != nil {
			return fmt.Errorf("eventlog: journal %s: %w", l.path, err)
		}
	}
	return nil
}

// journalAppend is Memory.journal: the new entries, synced. Memory.mu is held.
func (l *File) journalAppend(recs []Record, out []Appended, added []Entry, now time.Time) error {
	ops := make([]journalOp, 0, len(added))
	k := 0
	for i, r := range recs {
		if out[i].Duplicate {
			continue
		}
		e := added[k]
		k++
		ops = append(ops, journalOp{Op: "a", ID: e.ID.String(), Kind: e.Kind, Key: e.Key, Data: e.Data, Dedup: r.Dedup, At: now.UnixMilli()})
	}
	return l.write(true, ops...)
}

// Consumed implements Log.
func (l *File) Consumed(ctx context.Context, upTo ID) error {
	if err := l.Memory.Consumed(ctx, upTo); err != nil {
		return err
	}
	m := l.Memory
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := l.write(false, journalOp{Op: "c", ID: m.consumed.String()}); err != nil {
		return err
	}
	l.wmu.Lock()
	grown := l.lines > 2*m.opts.MaxLen+1000
	l.wmu.Unlock()
	if grown {
		return l.compact()
	}
	return nil
}

// CreateGroup implements Log.
func (l *File) CreateGroup(ctx context.Context, group string, start ID) error {
	if err := l.Memory.CreateGroup(ctx, group, start); err != nil {
		return err
	}
	m := l.Memory
	m.mu.Lock()
	defer m.mu.Unlock()
	return l.write(false, journalOp{Op: "g", Group: group, ID: m.groups[group].last.String()})
}

func (l *File) handedOut(group, consumer string, es []Entry) error {
	if len(es) == 0 {
		return nil
	}
	ids := make([]string, len(es))
	for i, e := range es {
		ids[i] = e.ID.String()
	}
	return l.write(false, journalOp{Op: "r", Group: group, Consumer: consumer, IDs: ids})
}

// ReadGroup implements Log.
func (l *File) ReadGroup(ctx context.Context, group, consumer string, n int) ([]Entry, error) {
	es, err := l.Memory.ReadGroup(ctx, group, consumer, n)
	if err != nil {
		return nil, err
	}
	return es, l.handedOut(group, consumer, es)
}

// Claim implements Log.
func (l *File) Claim(ctx context.Context, group, consumer string, minIdle time.Duration, n int) ([]Entry, error) {
	es, err := l.Memory.Claim(ctx, group, consumer, minIdle, n)
	if err != nil {
		return nil, err
	}
	return es, l.handedOut(group, consumer, es)
}

// Ack implements Log.
func (l *File) Ack(ctx context.Context, group string, ids ...ID) (int, error) {
	n, err := l.Memory.Ack(ctx, group, ids...)
	if err != nil || n == 0 {
		return n, err
	}
	s := make([]string, len(ids))
	for i, id := range ids {
		s[i] = id.String()
	}
	return n, l.write(false, journalOp{Op: "k", Group: group, IDs: s})
}

// Close implements Log: it closes the journal.
func (l *File) Close() error {
	l.Memory.Close()
	l.wmu.Lock()
	defer l.wmu.Unlock()
	if l.f == nil {
		return nil
	}
	err := l.f.Close()
	l.f = nil
	l.lock.Close()
	return err
}
