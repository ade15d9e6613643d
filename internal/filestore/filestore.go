// Package filestore is a [tokenmgr.Store] for a single host: tokens stay in memory, and the
// source state that must survive a restart (rotating refresh tokens) is written to one file
// with 0600 permissions, replaced atomically on every change.
package filestore

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"github.com/seed-a64d9e1f/chatwire/tokenmgr"
)

// FileName is the state file's name inside the directory.
const FileName = "chatwire-state.json"

// Store keeps tokens in memory and source state in a file. Its methods are safe for
// concurrent use within one process; two processes must not share a directory.
type Store struct {
	mem  tokenmgr.MemoryStore
	path string

	mu    sync.Mutex        // guards state and file writes
	state map[string][]byte // key → source state, as on disk
}

var (
	_ tokenmgr.Store    = (*Store)(nil)
	_ tokenmgr.Notifier = (*Store)(nil)
)

type fileEntry struct {
	State []byte `json:"state"` // base64 in JSON
}

// Open returns a Store whose state file lives in dir, creating dir (0700) if it is missing
// and loading the state already there.
func Open(dir string) (*Store, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("filestore: %w", err)
	}
	s := &Store{path: filepath.Join(dir, FileName), state: make(map[string][]byte)}
	data, err := os.ReadFile(s.path)
	switch {
	case os.IsNotExist(err):
	case err != nil:
		return nil, fmt.Errorf("filestore: %w", err)
	default:
		var f map[string]fileEntry
		if err := json.Unmarshal(data, &f); err != nil {
			return nil, fmt.Errorf("filestore: %s is corrupt: %w", s.path, err)
		}
		for k, e := range f {
			s.state[k] = e.State
			s.mem.Put(k, tokenmgr.Entry{State: e.State})
		}
	}
	return s, nil
}

// Path returns the state file's path.
func (s *Store) Path() string { return s.path }

// Load implements [tokenmgr.Store].
func (s *Store) Load(ctx context.Context, key string) (tokenmgr.Entry, error) {
	return s.mem.Load(ctx, key)
}

// Refresh implements [tokenmgr.Store]; a fetched entry's state is written to the file before
// Refresh returns, so a rotated refresh token is never lost.
func (s *Store) Refresh(ctx context.Context, key string, have uint64, fetch tokenmgr.FetchFunc) (tokenmgr.Entry, bool, error) {
	var saveErr error
	e, fetched, err := s.mem.Refresh(ctx, key, have, func(ctx context.Context, prev tokenmgr.Entry) (tokenmgr.Entry, error) {
		e, err := fetch(ctx, prev)
		if err == nil && e.State != nil {
			saveErr = s.SetState(key, e.State)
		}
		return e, err
	})
	if err == nil && saveErr != nil {
		return e, fetched, fmt.Errorf("filestore: token refreshed but its state was not saved: %w", saveErr)
	}
	return e, fetched, err
}

// Invalidate implements [tokenmgr.Store].
func (s *Store) Invalidate(ctx context.Context, key string, gen uint64) error {
	return s.mem.Invalidate(ctx, key, gen)
}

// Watch implements [tokenmgr.Notifier].
func (s *Store) Watch(key string, fn func(tokenmgr.Change)) (stop func()) {
	return s.mem.Watch(key, fn)
}

// SetState stores state for key (a refresh token from a login, say) and writes the file.
func (s *Store) SetState(key string, state []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.state[key] = append([]byte(nil), state...)
	if err := s.writeLocked(); err != nil {
		return err
	}
	return nil
}

// State returns the state stored for key, or nil.
func (s *Store) State(key string) []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.state[key]
}

// writeLocked replaces the file atomically: write a 0600 temporary file in the same
// directory, sync it, rename it over the old one.
func (s *Store) writeLocked() error {
	f := make(map[string]fileEntry, len(s.state))
	for k, v := range s.state {
		f[k] = fileEntry{State: v}
	}
	data, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(s.path), ".state-*")
	if err != nil {
		return fmt.Errorf("filestore: %w", err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return fmt.Errorf("filestore: %w", err)
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("filestore: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("filestore: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("filestore: %w", err)
	}
	if err := os.Rename(tmp.Name(), s.path); err != nil {
		return fmt.Errorf("filestore: %w", err)
	}
	return nil
}
