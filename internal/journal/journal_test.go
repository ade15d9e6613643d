package journal

import (
	"encoding/json"
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
