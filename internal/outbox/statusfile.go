package outbox

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// FileStatus is a StatusStore kept in memory and in a journal file (one JSON status per
// line, synced before each call returns) so statuses survive a restart of the host: a
// message left "sending" by a stopped host is then judged as in a fleet (see the package
// doc), and one recorded sent is not sent again. Opening replays the journal and rewrites
// it without statuses older than [Retention]; it is rewritten again when it has grown well
// past the statuses it holds.
type FileStatus struct {
	path string

	mu    sync.Mutex // guards mem's changes, f and lines
	mem   *memoryStatus
	f     *os.File
	lines int
}

// OpenFileStatus opens the status journal at path, creating it (and its directory).
func OpenFileStatus(path string) (*FileStatus, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("outbox: %w", err)
	}
	s := &FileStatus{path: path, mem: &memoryStatus{m: map[string]Status{}}}
	data, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("outbox: %w", err)
	}
	lines := bytes.Split(data, []byte("\n"))
	for n, line := range lines {
		if len(line) == 0 {
			continue
		}
		var st Status
		if err := json.Unmarshal(line, &st); err != nil {
			if n == len(lines)-1 { // cut short by a crash: never acknowledged
				break
			}
			return nil, fmt.Errorf("outbox: %s line %d: %w", path, n+1, err)
		}
		s.mem.m[st.Bot+"/"+st.ID] = st
	}
	if err := s.compact(); err != nil {
		return nil, err
	}
	return s, nil
}

// compact rewrites the journal with the statuses younger than Retention. s.mu is held (or
// s is not shared yet).
func (s *FileStatus) compact() error {
	cut := time.Now().Add(-Retention)
	tmp := s.path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("outbox: %w", err)
	}
	w := bufio.NewWriter(f)
	enc := json.NewEncoder(w)
	n := 0
	for k, st := range s.mem.m {
		if st.Updated.Before(cut) {
			delete(s.mem.m, k)
			continue
		}
		if err == nil {
			err = enc.Encode(st)
		}
		n++
	}
	if err == nil {
		err = w.Flush()
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, s.path)
	}
	if err == nil {
		var d *os.File
		if d, err = os.Open(filepath.Dir(s.path)); err == nil {
			err = d.Sync()
			d.Close()
		}
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("outbox: compacting %s: %w", s.path, err)
	}
	nf, err := os.OpenFile(s.path, os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("outbox: %w", err)
	}
	if s.f != nil {
		s.f.Close()
	}
	s.f, s.lines = nf, n
	return nil
}

// persist writes the status of bot/id as memory holds it. s.mu is held.
func (s *FileStatus) persist(bot, id string) error {
	if s.f == nil {
		return errors.New("outbox: status store closed")
	}
	s.mem.mu.Lock()
	st, ok := s.mem.m[bot+"/"+id]
	s.mem.mu.Unlock()
	if !ok {
		return nil
	}
	data, err := json.Marshal(st)
	if err != nil {
		return err
	}
	if _, err := s.f.Write(append(data, '\n')); err != nil {
		return fmt.Errorf("outbox: status journal: %w", err)
	}
	if err := s.f.Sync(); err != nil {
		return fmt.Errorf("outbox: status journal: %w", err)
	}
	s.lines++
	if s.lines > 2*len(s.mem.m)+1000 {
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
	if s.f == nil {
		return nil
	}
	err := s.f.Close()
	s.f = nil
	return err
}
