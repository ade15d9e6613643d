package outbox

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"github.com/seed-a64d9e1f/chatwire/internal/journal"
)

// FileStatus is a StatusStore kept in memory and in a journal file (one JSON status per
// line, synced before each call returns) so statuses survive a restart of the host: a
// message left "sending" by a stopped host is then judged as in a fleet (see the package
// doc), and one recorded sent is not sent again. Opening replays the journal and rewrites
// it without statuses older than [Retention]; it is rewritten again when it has grown well
// past the statuses it holds.
type FileStatus struct {
	mu  sync.Mutex // guards mem's changes and j
	mem *memoryStatus
	j   *journal.Journal
}

// OpenFileStatus opens the status journal at path, creating it (and its directory).
func OpenFileStatus(path string) (*FileStatus, error) {
	s := &FileStatus{mem: &memoryStatus{m: map[string]Status{}}}
	j, err := journal.Open(path, func(line []byte) error {
		var st Status
		if err := json.Unmarshal(line, &st); err != nil {
			return err
		}
		s.mem.m[st.Bot+"/"+st.ID] = st
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("outbox: %w", err)
	}
	s.j = j
	if err := s.compact(); err != nil {
		return nil, err
	}
	return s, nil
}

// compact rewrites the journal with the statuses younger than Retention. s.mu is held (or
// s is not shared yet).
func (s *FileStatus) compact() error {
	cut := time.Now().Add(-Retention)
	err := s.j.Rewrite(func(put func(any) error) error {
		for k, st := range s.mem.m {
			if st.Updated.Before(cut) {
				delete(s.mem.m, k)
				continue
			}
			if err := put(st); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("outbox: %w", err)
	}
	return nil
}

// persist writes the status of bot/id as memory holds it. s.mu is held.
func (s *FileStatus) persist(bot, id string) error {
	s.mem.mu.Lock()
	st, ok := s.mem.m[bot+"/"+id]
	s.mem.mu.Unlock()
	if !ok {
		return nil
	}
	if err := s.j.Append(st); err != nil {
		return fmt.Errorf("outbox: status journal: %w", err)
	}
	if s.j.Lines() > 2*len(s.mem.m)+1000 {
		return s.compact()
	}
	return nil
}

// Get implements StatusStore.
func (s *FileStatus) Get(ctx context.Context, bot, id string) (Status, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.mem.Get(ctx, bot, id)
}

// Set implements StatusStore.
func (s *FileStatus) Set(ctx context.Context, st Status) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.mem.Set(ctx, st); err != nil {
		return err
	}
	return s.persist(st.Bot, st.ID)
}

// Init implements StatusStore.
func (s *FileStatus) Init(ctx context.Context, st Status) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok, _ := s.mem.Get(ctx, st.Bot, st.ID); ok {
		return nil
	}
	if err := s.mem.Init(ctx, st); err != nil {
		return err
	}
	return s.persist(st.Bot, st.ID)
}

// Begin implements StatusStore.
func (s *FileStatus) Begin(ctx context.Context, bot, id, owner string, now time.Time) (Status, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st, mine, err := s.mem.Begin(ctx, bot, id, owner, now)
	if err != nil || !mine {
		return st, mine, err
	}
	return st, true, s.persist(bot, id)
}

// Close closes the journal.
func (s *FileStatus) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.j.Close()
}
