package eventlog

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestFile(t *testing.T) {
	testLog(t, func(t *testing.T, opts Options) Log {
		l, err := OpenFile(filepath.Join(t.TempDir(), "log"), opts)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { l.Close() })
		return l
	})
}

func openFile(t *testing.T, path string, opts Options) *File {
	t.Helper()
	l, err := OpenFile(path, opts)
	if err != nil {
		t.Fatalf("OpenFile: %v", err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// TestFileReopen: entries, dedup keys, the consumed mark and a group's state survive closing
// and reopening, and ids stay increasing.
func TestFileReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "bot", "events.log")
	opts := Options{MaxLen: 5}
	l := openFile(t, path, opts)
	ctx := testCtx(t)
	var ids []ID
	for i := range 8 { // more than MaxLen: the first ones are trimmed once consumed
		r := rec(i)
		r.Dedup = "d" + string(rune('a'+i))
		ids = append(ids, mustAppend(t, l, r)[0].ID)
		if i == 3 {
			if err := l.Consumed(ctx, ids[2]); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := l.Consumed(ctx, ids[4]); err != nil {
		t.Fatal(err)
	}
	if err := l.CreateGroup(ctx, "hooks", ids[5]); err != nil {
		t.Fatal(err)
	}
	got, err := l.ReadGroup(ctx, "hooks", "c1", 1)
	if err != nil || len(got) != 1 || got[0].ID != ids[6] {
		t.Fatalf("ReadGroup = %v, %v; want %v", got, err, ids[6])
	}
	before := readAll(t, l, ID{})
	l.Close()

	for round := range 2 { // reopening twice: the compacted journal replays as well
		l = openFile(t, path, opts)
		after := readAll(t, l, ID{})
		if len(after) != len(before) {
			t.Fatalf("round %d: %d entries after reopening, want %d", round, len(after), len(before))
		}
		for i := range after {
			if after[i].ID != before[i].ID || string(after[i].Data) != string(before[i].Data) || after[i].Key != before[i].Key {
				t.Fatalf("round %d: entry %d = %+v, want %+v", round, i, after[i], before[i])
			}
		}
		if c, _ := l.ConsumedID(ctx); c != ids[4] {
			t.Fatalf("round %d: consumed = %v, want %v", round, c, ids[4])
		}
		for i, want := range ids {
			r := rec(i)
			r.Dedup = "d" + string(rune('a'+i))
			a := mustAppend(t, l, r)[0]
			if !a.Duplicate || a.ID != want {
				t.Fatalf("round %d: dedup %d after reopening = %+v, want duplicate of %v", round, i, a, want)
			}
		}
		p, err := l.Pending(ctx, "hooks")
		if err != nil || p.Count != 1 || p.Oldest != ids[6] {
			t.Fatalf("round %d: Pending = %+v, %v; want %v pending", round, p, err, ids[6])
		}
		l.Close()
	}
	l = openFile(t, path, Options{MaxLen: 5, Now: func() time.Time { return time.UnixMilli(1) }}) // clock far behind
	a := mustAppend(t, l, rec(99))[0]
	if !ids[len(ids)-1].Less(a.ID) {
		t.Fatalf("id after reopening %v is not after %v", a.ID, ids[len(ids)-1])
	}
	// Handed out before the restart and not acknowledged: handed out again at once.
	got, err = l.ReadGroup(ctx, "hooks", "c2", 5)
	if err != nil || len(got) == 0 || got[0].ID != ids[6] || !got[0].Redelivered {
		t.Fatalf("ReadGroup after reopening = %+v, %v; want %v redelivered", got, err, ids[6])
	}
}

// TestFileTornLastLine: a line cut short by a crash (never acknowledged) is ignored.
func TestFileTornLastLine(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log")
	l := openFile(t, path, Options{})
	id := mustAppend(t, l, rec(1))[0].ID
	l.Close()
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString(`{"op":"a","id":"9`)
	f.Close()
	l = openFile(t, path, Options{})
	es := readAll(t, l, ID{})
	if len(es) != 1 || es[0].ID != id {
		t.Fatalf("entries = %+v, want the one appended", es)
	}
}

// TestFileCompactsWhenConsumed: the journal does not grow without bound.
func TestFileCompactsWhenConsumed(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log")
	l := openFile(t, path, Options{MaxLen: 10})
	ctx := testCtx(t)
	var last ID
	for i := range 3000 {
		last = mustAppend(t, l, rec(i))[0].ID
		if err := l.Consumed(ctx, last); err != nil {
			t.Fatal(err)
		}
	}
	l.wmu.Lock()
	n := l.lines
	l.wmu.Unlock()
	if n > 2*10+1000+2 {
		t.Fatalf("journal has %d lines", n)
	}
	l.Close()
	l = openFile(t, path, Options{MaxLen: 10})
	if c, _ := l.ConsumedID(ctx); c != last {
		t.Fatalf("consumed = %v, want %v", c, last)
	}
}

// TestFileOneAtATime: a journal another holder has open is refused with a clear error (two
// hosts on one store directory would both deliver); once closed it opens.
func TestFileOneAtATime(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log")
	l := openFile(t, path, Options{})
	if l2, err := OpenFile(path, Options{}); err == nil || !strings.Contains(err.Error(), "in use by another process") {
		if l2 != nil {
			l2.Close()
		}
		t.Fatalf("second OpenFile = %v; want in use", err)
	}
	l.Close()
	openFile(t, path, Options{})
}
