package idempotency

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"
)

func fileStores(t *testing.T, n int) []Store {
	f, err := OpenFile(filepath.Join(t.TempDir(), "keys"), 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	out := make([]Store, n)
	for i := range out {
		out[i] = f
	}
	return out
}

func TestFile(t *testing.T) { testStore(t, fileStores) }

// TestFileSurvivesRestart: a key answered before the store is closed is answered the same
// after it is reopened, without running again; the same key with another request is still a
// conflict; a key pending when the process stopped is abandoned (outcome unknown) after it;
// a released key and an expired one are forgotten; a last line cut short is ignored.
func TestFileSurvivesRestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "store", "idempotency.keys")
	var runs atomic.Int32
	do := func(k *Keeper, key, body, id string, keep bool) (Answer, bool, error) {
		return k.Do(t.Context(), Request{Key: key, Fingerprint: fp(body)}, func(context.Context) (Answer, bool) {
			runs.Add(1)
			return answer(id), keep
		})
	}
	f, err := OpenFile(path, 0)
	if err != nil {
		t.Fatal(err)
	}
	k := New(f, Options{})
	if a, replayed, err := do(k, "hr/sent", "b1", "m1", true); err != nil || replayed || string(a.Body) != string(answer("m1").Body) {
		t.Fatalf("first Do = %+v, %v, %v", a, replayed, err)
	}
	if _, _, err := do(k, "hr/refused", "b2", "m2", false); err != nil { // released: nothing sent
		t.Fatal(err)
	}
	if _, _, err := do(New(f, Options{Retention: time.Millisecond}), "hr/short", "b3", "m3", true); err != nil {
		t.Fatal(err)
	}
	started := time.Now().Add(-time.Second).Truncate(time.Millisecond)
	if _, err := f.claim(t.Context(), "hr/pending", fpHex("b4"), "holder", started, time.Hour, DefaultRetention); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	// A crash while appending leaves a last line without its end.
	jf, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	jf.WriteString(`{"key":"hr/torn","fp":"`)
	jf.Close()

	time.Sleep(5 * time.Millisecond) // hr/short's retention (1 ms) is over
	f, err = OpenFile(path, 0)
	if err != nil {
		t.Fatalf("reopening after a torn last line: %v", err)
	}
	defer f.Close()
	k = New(f, Options{})
	before := runs.Load()
	a, replayed, err := do(k, "hr/sent", "b1", "other", true)
	if err != nil || !replayed || string(a.Body) != string(answer("m1").Body) || a.Status != 200 {
		t.Errorf("after reopening, the answered key = %+v, replayed %v, %v; want the first answer, replayed", a, replayed, err)
	}
	if _, _, err := do(k, "hr/sent", "another body", "x", true); !errors.Is(err, ErrConflict) {
		t.Errorf("after reopening, the key with another request = %v; want ErrConflict", err)
	}
	var ab *AbandonedError
	if _, _, err := do(k, "hr/pending", "b4", "x", true); !errors.As(err, &ab) || !ab.Started.Equal(started) {
		t.Errorf("after reopening, the key pending at the stop = %v; want AbandonedError started %s", err, started)
	}
	if runs.Load() != before {
		t.Errorf("work ran %d times for keys known before the restart; want 0", runs.Load()-before)
	}
	for _, key := range []string{"hr/refused", "hr/short"} {
		if _, replayed, err := do(k, key, map[string]string{"hr/refused": "b2", "hr/short": "b3"}[key], "again", true); err != nil || replayed {
			t.Errorf("after reopening, %s = replayed %v, %v; want it run again (released or expired)", key, replayed, err)
		}
	}
	// The rewrite on opening kept only live keys: sent, pending, and the two run again.
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if n := len(splitLines(data)); n != 6 {
		t.Errorf("journal holds %d lines after reopening and 2 new keys; want 6: the 2 live keys rewritten, and a claim and an answer for each key run again", n)
	}
}

func splitLines(b []byte) []string {
	var out []string
	start := 0
	for i, c := range b {
		if c == '\n' {
			out = append(out, string(b[start:i]))
			start = i + 1
		}
	}
	return out
}
