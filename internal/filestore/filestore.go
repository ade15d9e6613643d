// Package filestore is a [tokenmgr.Store] for a single host: tokens stay in memory, and the
// source state that must survive a restart (rotating refresh tokens) is written to one file
// with 0600 permissions, replaced atomically on every change. Processes may share the
// directory on Unix (a running host, and graph login or check): every write re-reads the file under
// a lock and changes only its own key, and a refresh redeems the state another process wrote
// for its key since (a new sign-in) instead of the one it holds in memory.
package filestore

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"sync"
	"time"

	"golang.org/x/sync/semaphore"

	"github.com/seed-a64d9e1f/chatwire/tokenmgr"
)

// saveTimeout bounds how long a refresh waits for the lock to save a fetched state.
const saveTimeout = 30 * time.Second

// FileName is the state file's name inside the directory; LockName is the file locked
// (flock) while a process reads or rewrites it. The file lock is taken on Unix systems only:
// on other systems, only one process may use a state dir.
const (
	FileName = "chatwire-state.json"
	LockName = "chatwire-state.lock"
)

// Store keeps tokens in memory and source state in a file. Its methods are safe for
// concurrent use, also by Stores of other processes on the same directory.
type Store struct {
	mem  tokenmgr.MemoryStore
	path string
	lock string // path of the lock file

	files *semaphore.Weighted // of size 1: held while this process uses the file (a mutex honouring ctx)
	mu    sync.Mutex          // guards state; held only while locked runs its fn, never while waiting
	state map[string][]byte   // key → source state as this process last read or wrote it
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
	s := &Store{path: filepath.Join(dir, FileName), lock: filepath.Join(dir, LockName),
		files: semaphore.NewWeighted(1), state: make(map[string][]byte)}
	var disk map[string][]byte
	err := s.locked(context.Background(), func() (err error) { disk, err = s.read(); return err })
	if err != nil {
		return nil, err
	}
	for k, v := range disk {
		s.state[k] = v
		s.mem.Put(k, tokenmgr.Entry{State: v})
	}
	return s, nil
}

// locked runs fn holding this process's turn at the file, the directory's file lock (on
// Unix; see lockFile) and s.mu. Waiting for the turn or the lock ends when ctx does.
func (s *Store) locked(ctx context.Context, fn func() error) error {
	if s.files.Acquire(ctx, 1) != nil {
		return fmt.Errorf("filestore: waiting for %s: %w", s.path, context.Cause(ctx))
	}
	defer s.files.Release(1)
	f, err := os.OpenFile(s.lock, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("filestore: %w", err)
	}
	defer f.Close() // closing releases the lock
	if err := lockFile(ctx, f); err != nil {
		return fmt.Errorf("filestore: locking %s: %w", s.lock, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return fn()
}

// errCorrupt marks a state file that cannot be parsed.
var errCorrupt = errors.New("corrupt")

// read returns the state in the file (empty if there is no file). Call it under locked.
func (s *Store) read() (map[string][]byte, error) {
	out := make(map[string][]byte)
	data, err := os.ReadFile(s.path)
	switch {
	case os.IsNotExist(err):
		return out, nil
	case err != nil:
		return nil, fmt.Errorf("filestore: %w", err)
	}
	var f map[string]fileEntry
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, fmt.Errorf("filestore: %s is %w: %w", s.path, errCorrupt, err)
	}
	for k, e := range f {
		out[k] = e.State
	}
	return out, nil
}

// Path returns the state file's path.
func (s *Store) Path() string { return s.path }

// Load implements [tokenmgr.Store].
func (s *Store) Load(ctx context.Context, key string) (tokenmgr.Entry, error) {
	return s.mem.Load(ctx, key)
}

// Refresh implements [tokenmgr.Store]; a fetched entry's state is written to the file before
// Refresh returns, so a rotated refresh token is never lost. If another process changed
// key's state in the file since this one last read or wrote it (graph login stored a new
// sign-in), fetch gets that state rather than the one held in memory. If another process
// changes key's state while fetch runs, its state is newer than the one fetch returns
// (rotated from the old one) and is kept: the file is not changed, and the entry returned
// holds the newer state, which the next refresh redeems.
//
// A state file that cannot be read or parsed does not stop a refresh: fetch gets the state
// held in memory, and a corrupt file is moved aside (to its name plus ".corrupt") and
// replaced with the states this process holds, so that the rotated state is saved.
func (s *Store) Refresh(ctx context.Context, key string, have uint64, fetch tokenmgr.FetchFunc) (tokenmgr.Entry, bool, error) {
	var saveErr error
	e, fetched, err := s.mem.Refresh(ctx, key, have, func(ctx context.Context, prev tokenmgr.Entry) (tokenmgr.Entry, error) {
		var from []byte // key's state in the file as fetch starts; nil if it has none
		if err := s.locked(ctx, func() error {
			disk, err := s.read()
			if err != nil {
				// Go on from memory: one unreadable file must not stop every bot's refresh.
				from = s.state[key]
				return nil
			}
			from = disk[key]
			if from != nil && !bytes.Equal(from, s.state[key]) {
				prev.State = from // recorded as ours once a fetch from it succeeds and is saved
			}
			return nil
		}); err != nil {
			return tokenmgr.Entry{}, fmt.Errorf("%w: %w", tokenmgr.ErrTemporary, err)
		}
		e, err := fetch(ctx, prev)
		if err == nil && e.State != nil {
			var newer []byte
			// The token is fetched and its state perhaps rotated: save it even if ctx ends now.
			sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), saveTimeout)
			newer, saveErr = s.swapState(sctx, key, from, e.State)
			cancel()
			if newer != nil {
				e.State = newer
			}
		}
		return e, err
	})
	if err == nil && saveErr != nil {
		return e, fetched, fmt.Errorf("filestore: token refreshed but its state was not saved: %w", saveErr)
	}
	return e, fetched, err
}

// swapState writes state for key, under the lock, unless another process wrote a different
// state for key since fetch started from from (nil: the file had none): that state is newer,
// so it is kept and returned.
func (s *Store) swapState(ctx context.Context, key string, from, state []byte) (newer []byte, err error) {
	state = append([]byte(nil), state...)
	err = s.locked(ctx, func() error {
		disk, err := s.read()
		switch {
		case errors.Is(err, errCorrupt):
			// Keep a copy of the corrupt file for whoever repairs it, and save what this
			// process holds: no other process's newer state can be read from it anyway.
			data, err := os.ReadFile(s.path)
			if err == nil {
				err = os.WriteFile(s.path+".corrupt", data, 0o600)
			}
			if err != nil {
				return fmt.Errorf("filestore: %w", err)
			}
			disk = maps.Clone(s.state)
		case err != nil:
			return err
		case disk[key] != nil && !bytes.Equal(disk[key], from):
			newer = disk[key]
			s.state[key] = newer
			return nil
		}
		disk[key] = state
		if err := s.write(disk); err != nil {
			return err
		}
		s.state[key] = state
		return nil
	})
	return newer, err
}

// Invalidate implements [tokenmgr.Store].
func (s *Store) Invalidate(ctx context.Context, key string, gen uint64) error {
	return s.mem.Invalidate(ctx, key, gen)
}

// Watch implements [tokenmgr.Notifier].
func (s *Store) Watch(key string, fn func(tokenmgr.Change)) (stop func()) {
	return s.mem.Watch(key, fn)
}

// SetState stores state for key (a refresh token from a login, say) and writes the file:
// it re-reads the file under the lock and changes only key, so the keys other processes
// wrote meanwhile are kept.
func (s *Store) SetState(key string, state []byte) error {
	state = append([]byte(nil), state...)
	return s.locked(context.Background(), func() error {
		disk, err := s.read()
		if err != nil {
			return err
		}
		disk[key] = state
		if err := s.write(disk); err != nil {
			return err
		}
		s.state[key] = state
		return nil
	})
}

// State returns the state stored for key, or nil.
func (s *Store) State(key string) []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.state[key]
}

// write replaces the file with state atomically: write a 0600 temporary file in the same
// directory, sync it, rename it over the old one. Call it under locked.
func (s *Store) write(state map[string][]byte) error {
	f := make(map[string]fileEntry, len(state))
	for k, v := range state {
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
