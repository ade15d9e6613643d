package journal

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

type rec struct{ N int }

func replayInto(got *[]int) func([]byte) error {
	return func(line []byte) error {
		var r rec
		if err := json.Unmarshal(line, &r); err != nil {
			return err
		}
		*got = append(*got, r.N)
		return nil
	}
}

// TestJournal: appends survive reopening in order; a last line cut short is skipped; a bad
// line before the last is an error naming it; Rewrite replaces the file and appends follow it.
func TestJournal(t *testing.T) {
	path := filepath.Join(t.TempDir(), "d", "j")
	var got []int
	j, err := Open(path, replayInto(&got))
	if err != nil || len(got) != 0 {
		t.Fatalf("Open of a new journal = %v, %v", got, err)
	}
	if err := j.Append(rec{1}); err == nil {
		t.Error("Append before the first Rewrite succeeded")
	}
	if err := j.Rewrite(func(put func(any) error) error { return put(rec{1}) }); err != nil {
		t.Fatal(err)
	}
	for n := 2; n <= 3; n++ {
		if err := j.Append(rec{n}); err != nil {
			t.Fatal(err)
		}
	}
	if j.Lines() != 3 {
		t.Errorf("Lines = %d; want 3", j.Lines())
	}
	j.Close()
	f, _ := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	f.WriteString(`{"N":4`) // a crash mid-append
	f.Close()
	got = nil
	j, err = Open(path, replayInto(&got))
	if err != nil || len(got) != 3 || got[0] != 1 || got[2] != 3 {
		t.Fatalf("reopened = %v, %v; want [1 2 3]", got, err)
	}
	if err := j.Rewrite(func(put func(any) error) error { return put(rec{9}) }); err != nil {
		t.Fatal(err)
	}
	j.Append(rec{10})
	j.Close()
	got = nil
	if _, err := Open(path, replayInto(&got)); err != nil || len(got) != 2 || got[0] != 9 || got[1] != 10 {
		t.Errorf("after Rewrite and Append = %v, %v; want [9 10]", got, err)
	}
	os.WriteFile(path, []byte("{\"N\":1}\nnot json\n{\"N\":2}\n"), 0o600)
	if _, err := Open(path, replayInto(&got)); err == nil || !strings.Contains(err.Error(), "line 2") {
		t.Errorf("a bad line in the middle = %v; want an error naming line 2", err)
	}
}

// failingFile writes only half of the next line it is given, then fails, as a full disk
// does; sync fails the next sync when failSync is set.
type failingFile struct {
	file
	failWrite, failSync, failTruncate bool
}

func (f *failingFile) Write(p []byte) (int, error) {
	if f.failWrite {
		f.failWrite = false
		n, _ := f.file.Write(p[:len(p)/2])
		return n, errors.New("no space left on device")
	}
	return f.file.Write(p)
}

func (f *failingFile) Sync() error {
	if f.failSync {
		f.failSync = false
		return errors.New("input/output error")
	}
	return f.file.Sync()
}

func (f *failingFile) Truncate(size int64) error {
	if f.failTruncate {
		return errors.New("read-only file system")
	}
	return f.file.Truncate(size)
}

// TestFailedAppendLeavesNoPartLine: an append whose write stops part way (a full disk) or
// whose sync fails is cut back, so the appends after it still reopen: before, the half line
// stayed in the middle of the file and Open refused the journal ("line 2"), so the host
// could not start. If the cut itself fails, later appends fail instead of following a half
// line, until a Rewrite.
func TestFailedAppendLeavesNoPartLine(t *testing.T) {
	path := filepath.Join(t.TempDir(), "j")
	j, err := Open(path, func([]byte) error { return nil })
	if err != nil {
		t.Fatal(err)
	}
	if err := j.Rewrite(func(put func(any) error) error { return put(rec{1}) }); err != nil {
		t.Fatal(err)
	}
	ff := &failingFile{file: j.f, failWrite: true}
	j.f = ff
	if err := j.Append(rec{2}); err == nil || !strings.Contains(err.Error(), "no space") {
		t.Fatalf("Append on a full disk = %v; want its error", err)
	}
	if err := j.Append(rec{3}); err != nil {
		t.Fatal(err)
	}
	ff.failSync = true
	if err := j.Append(rec{4}); err == nil {
		t.Fatal("Append whose sync failed succeeded")
	}
	if err := j.Append(rec{5}); err != nil {
		t.Fatal(err)
	}
	j.Close()
	var got []int
	if _, err := Open(path, replayInto(&got)); err != nil || fmt.Sprint(got) != "[1 3 5]" {
		t.Fatalf("reopened = %v, %v; want [1 3 5]", got, err)
	}

	j, _ = Open(path, func([]byte) error { return nil })
	if err := j.Rewrite(func(put func(any) error) error { return put(rec{1}) }); err != nil {
		t.Fatal(err)
	}
	j.f = &failingFile{file: j.f, failWrite: true, failTruncate: true}
	j.Append(rec{2})
	if err := j.Append(rec{3}); err == nil || !strings.Contains(err.Error(), "could not be undone") {
		t.Errorf("Append after a failed append that could not be cut back = %v; want refused", err)
	}
	if err := j.Rewrite(func(put func(any) error) error { return put(rec{7}) }); err != nil {
		t.Fatal(err)
	}
	if err := j.Append(rec{8}); err != nil {
		t.Errorf("Append after Rewrite = %v; want it to work again", err)
	}
	j.Close()
	got = nil
	if _, err := Open(path, replayInto(&got)); err != nil || fmt.Sprint(got) != "[7 8]" {
		t.Errorf("reopened = %v, %v; want [7 8]", got, err)
	}
}

// BenchmarkAppend is one journal line written and synced: the store.dir stores (idempotency
// keys, outbox status) write one per claim or answer under their mutex, so its time bounds
// how many such writes a host makes a second.
func BenchmarkAppend(b *testing.B) {
	j, err := Open(filepath.Join(b.TempDir(), "j"), func([]byte) error { return nil })
	if err != nil {
		b.Fatal(err)
	}
	defer j.Close()
	if err := j.Rewrite(func(func(any) error) error { return nil }); err != nil {
		b.Fatal(err)
	}
	r := struct {
		Key, Fingerprint, State string
		Expires                 int64
	}{"order-42-0123456789abcdef", "sha256:0123456789abcdef0123456789abcdef", "done", 1764892800000}
	for b.Loop() {
		if err := j.Append(r); err != nil {
			b.Fatal(err)
		}
	}
}
