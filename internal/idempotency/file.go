package idempotency

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/seed-a64d9e1f/chatwire/internal/journal"
)

// File is a [Store] for one host with store.dir and no Redis: the keys are held in memory as
// [NewMemory] holds them and in a journal file, so a host that restarts still answers a key
// it answered before (a client retrying across the restart does not send twice). Each
// claim, take-over, answer and release is written and synced before it returns. A key
// pending when the host stopped is pending after it with its lease lapsed: its holder was
// the stopped process, so the key is abandoned, as in a fleet when a host dies. Opening
// replays the journal and rewrites it without expired keys; it is rewritten again when it
// has grown well past the keys it holds. One process at a time may open a journal.
type File struct {
	mu  sync.Mutex // serializes changes: memory and journal in the same order
	mem *memory
	j   *journal.Journal
}

var _ Store = (*File)(nil)

// fileRec is one line of the journal: a key's record as it now is, or its removal.
type fileRec struct {
	Key     string    `json:"key"`
	Gone    bool      `json:"gone,omitempty"`
	FP      string    `json:"fp,omitempty"`
	Started time.Time `json:"started,omitzero"`
	Expires time.Time `json:"expires,omitzero"`
	Done    bool      `json:"done,omitempty"`
	Answer  *Answer   `json:"answer,omitempty"`
}

// OpenFile opens (creating) the key journal at path; it remembers up to maxKeys keys (0:
// [DefaultMaxKeys]).
func OpenFile(path string, maxKeys int) (*File, error) {
	mem := NewMemory(maxKeys).(*memory)
	j, err := journal.Open(path, func(line []byte) error {
		var r fileRec
		if err := json.Unmarshal(line, &r); err != nil {
			return err
		}
		if r.Gone {
			delete(mem.recs, r.Key)
			return nil
		}
		rec := &memRec{fp: r.FP, owner: "stopped-holder", started: r.Started, expires: r.Expires, done: r.Done}
		if r.Answer != nil {
			rec.answer = *r.Answer
		}
		mem.recs[r.Key] = rec // leaseExpires zero: a pending key's holder stopped
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("idempotency: %w", err)
	}
	for k := range mem.recs {
		mem.order = append(mem.order, k)
	}
	slices.SortFunc(mem.order, func(a, b string) int { return mem.recs[a].expires.Compare(mem.recs[b].expires) })
	f := &File{mem: mem, j: j}
	if err := f.compact(time.Now()); err != nil {
		return nil, err
	}
	return f, nil
}

// compact rewrites the journal with the keys not expired. f.mu is held (or f is not shared).
func (f *File) compact(now time.Time) error {
	f.mem.mu.Lock()
	f.mem.sweepLocked(now)
	var recs []fileRec
	for _, k := range f.mem.order {
		if r := f.mem.recs[k]; r != nil {
			recs = append(recs, f.recLocked(k, r))
		}
	}
	f.mem.mu.Unlock()
	err := f.j.Rewrite(func(put func(any) error) error {
		for _, r := range recs {
			if err := put(r); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("idempotency: %w", err)
	}
	return nil
}

// recLocked is key's journal line; f.mem.mu is held.
func (f *File) recLocked(key string, r *memRec) fileRec {
	fr := fileRec{Key: key, FP: r.fp, Started: r.started, Expires: r.expires, Done: r.done}
	if r.done {
		a := r.answer
		fr.Answer = &a
	}
	return fr
}

// persist journals key as memory now holds it (or its removal). f.mu is held.
func (f *File) persist(key string) error {
	f.mem.mu.Lock()
	r := f.mem.recs[key]
	fr := fileRec{Key: key, Gone: true}
	if r != nil {
		fr = f.recLocked(key, r)
	}
	n := len(f.mem.recs)
	f.mem.mu.Unlock()
	if err := f.j.Append(fr); err != nil {
		return fmt.Errorf("idempotency: key journal: %w", err)
	}
	if f.j.Lines() > 2*n+1000 {
		return f.compact(time.Now())
	}
	return nil
}

func (f *File) claim(ctx context.Context, key, fp, owner string, now time.Time, lease, retention time.Duration) (status, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	st, err := f.mem.claim(ctx, key, fp, owner, now, lease, retention)
	if err != nil || st.state != stateClaimed {
		return st, err
	}
	if err := f.persist(key); err != nil {
		f.mem.release(ctx, key, owner) // not durable: not claimed
		return status{}, err
	}
	return st, nil
}

// retake is not journaled: the holder is not written, and a key pending at a restart is
// abandoned whoever held it.
func (f *File) retake(ctx context.Context, key, old, newOwner string, lease time.Duration) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.mem.retake(ctx, key, old, newOwner, lease)
}

// extend is not journaled: leases do not outlive the process.
func (f *File) extend(ctx context.Context, key, owner string, lease time.Duration) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.mem.extend(ctx, key, owner, lease)
}

func (f *File) finish(ctx context.Context, key, owner string, ans Answer) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	ok, err := f.mem.finish(ctx, key, owner, ans)
	if err != nil || !ok {
		return ok, err
	}
	return true, f.persist(key)
}

func (f *File) release(ctx context.Context, key, owner string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.mem.mu.Lock()
	r := f.mem.recs[key]
	mine := r != nil && !r.done && r.owner == owner
	f.mem.mu.Unlock()
	if !mine {
		return nil
	}
	f.mem.release(ctx, key, owner)
	return f.persist(key)
}

func (f *File) wait(ctx context.Context, key string, p *poll) error { return f.mem.wait(ctx, key, p) }

func (f *File) expireLease(ctx context.Context, key string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.mem.expireLease(ctx, key)
}

// Close closes the journal; the Store must not be used after.
func (f *File) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.j.Close()
}
