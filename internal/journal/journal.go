// Package journal is a small append-only file of JSON records, one per line, for the stores
// that keep their state under store.dir: each append is written and synced before it
// returns, and [Journal.Rewrite] replaces the whole file atomically (compaction).
package journal

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// A Journal is one journal file. It is not safe for concurrent use: its store serializes
// calls.
type Journal struct {
	path  string
	f     file
	size  int64 // bytes in the file: where the next line starts
	lines int   // lines written since the last Rewrite, the Rewrite's included
	// broken is set when a failed append could not be undone: the file may end in part of
	// a line, so nothing more is appended after it until a Rewrite replaces the file.
	broken error
}

// file is what a Journal needs of its *os.File (a test substitutes one that fails).
type file interface {
	Write(p []byte) (int, error)
	Sync() error
	Truncate(size int64) error
	Close() error
}

// Open reads the journal at path (creating its directory), calling replay with each line in
// order. A last line cut short by a crash (it was never acknowledged) is skipped; any other
// line that replay refuses is an error naming the line. The journal is not writable until
// the first [Journal.Rewrite], which the store makes with the state it replayed.
func Open(path string, replay func(line []byte) error) (*Journal, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, err
	}
	data, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	lines := bytes.Split(data, []byte("\n"))
	for n, line := range lines {
		if len(line) == 0 {
			continue
		}
		if err := replay(line); err != nil {
			if n == len(lines)-1 { // no newline after it: cut short by a crash
				break
			}
			return nil, fmt.Errorf("%s line %d: %w", path, n+1, err)
		}
	}
	return &Journal{path: path}, nil
}

// Append writes v as one JSON line and syncs the file. If the write or the sync fails, the
// file is cut back to where the line began, so a later append never follows part of a line
// (Open would refuse the journal at that line); if even that fails, later appends fail too
// until a Rewrite.
func (j *Journal) Append(v any) error {
	if j.f == nil {
		return errors.New("journal " + j.path + " is closed")
	}
	if j.broken != nil {
		return fmt.Errorf("journal %s: an earlier append failed and could not be undone: %w", j.path, j.broken)
	}
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	n, err := j.f.Write(append(data, '\n'))
	if err == nil {
		err = j.f.Sync()
	}
	if err != nil {
		if n > 0 {
			if terr := j.f.Truncate(j.size); terr != nil {
				j.broken = terr
			} else if serr := j.f.Sync(); serr != nil {
				j.broken = serr
			}
		}
		return fmt.Errorf("journal %s: %w", j.path, err)
	}
	j.size += int64(n)
	j.lines++
	return nil
}

// Lines returns the number of lines in the file: a store compacts when it holds well
// fewer records.
func (j *Journal) Lines() int { return j.lines }

// Rewrite replaces the file with the records write puts, atomically (a temporary file,
// synced, renamed over the journal, the directory synced), and reopens it for appending.
// On error the old file stays as it was.
func (j *Journal) Rewrite(write func(put func(v any) error) error) error {
	tmp := j.path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	w := bufio.NewWriter(f)
	enc := json.NewEncoder(w)
	n := 0
	err = write(func(v any) error { n++; return enc.Encode(v) })
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
		err = os.Rename(tmp, j.path)
	}
	if err == nil {
		var d *os.File
		if d, err = os.Open(filepath.Dir(j.path)); err == nil {
			err = d.Sync()
			d.Close()
		}
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("compacting %s: %w", j.path, err)
	}
	nf, err := os.OpenFile(j.path, os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	st, err := nf.Stat()
	if err != nil {
		nf.Close()
		return err
	}
	if j.f != nil {
		j.f.Close()
	}
	j.f, j.lines, j.size, j.broken = nf, n, st.Size(), nil
	return nil
}

// Close closes the file; later appends fail.
func (j *Journal) Close() error {
	if j.f == nil {
		return nil
	}
	err := j.f.Close()
	j.f = nil
	return err
}
