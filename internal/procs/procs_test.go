package procs

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// fakeProcess is a process whose CPU use (in CPUs) the test sets, and whose GOMAXPROCS the
// Controller sets.
type fakeProcess struct {
	mu       sync.Mutex
	cpus     int  // the runtime's default
	readable bool // CPU time can be read
	load     float64
	used     time.Duration // CPU time up to since
	since    time.Time
	procs    int   // current GOMAXPROCS
	changes  []int // every GOMAXPROCS set, in order
}

func newFake(cpus int) *fakeProcess {
	return &fakeProcess{cpus: cpus, readable: true, since: time.Now(), procs: cpus}
}

func (f *fakeProcess) setLoad(l float64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	now := time.Now()
	f.used += time.Duration(f.load * float64(now.Sub(f.since)))
	f.since, f.load = now, l
}

func (f *fakeProcess) cpuTime() (time.Duration, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.used + time.Duration(f.load*float64(time.Since(f.since))), f.readable
}

func (f *fakeProcess) set(n int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.procs = n
	f.changes = append(f.changes, n)
}

func (f *fakeProcess) now() (procs int, changes []int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.procs, append([]int(nil), f.changes...)
}

func (f *fakeProcess) controller(log *slog.Logger) *Controller {
	return &Controller{Log: log, CPUTime: f.cpuTime,
		One: func() { f.set(1) },
		All: func() int { f.set(f.cpus); return f.cpus }}
}

// TestControllerFollowsLoad: one CPU at start and while the process is calm; every CPU from
// the first busy reading; back to one only after DefaultCalm calm readings in a row (a busy
// reading among them starts the count over); the runtime's default again when ctx ends.
func TestControllerFollowsLoad(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFake(4)
		var logs bytes.Buffer
		c := f.controller(slog.New(slog.NewTextHandler(&logs, nil)))
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan struct{})
		go func() { c.Run(ctx); close(done) }()
		wait := func(d time.Duration) { time.Sleep(d); synctest.Wait() }

		f.setLoad(0.3)
		wait(10*DefaultEvery + DefaultEvery/2)
		if p, _ := f.now(); p != 1 {
			t.Fatalf("calm process at 0.3 CPUs runs on %d CPUs; want 1", p)
		}
		// Readings come on whole seconds and the load changes half way between two: the
		// first reading after a change sees half of each load.
		f.setLoad(1)
		wait(DefaultEvery) // reads 0.65 (0.3 and 1 half each): over Up
		if p, _ := f.now(); p != 4 {
			t.Fatalf("busy process at 0.65 CPUs runs on %d CPUs after one reading; want every CPU (4)", p)
		}
		if !strings.Contains(logs.String(), "busy") || !strings.Contains(logs.String(), "cpus=4") {
			t.Errorf("no line says the process went to every CPU:\n%s", logs.String())
		}
		// Between Down and Up: neither calm nor busy enough to move.
		f.setLoad(0.5)
		wait(2 * DefaultCalm * DefaultEvery)
		if p, _ := f.now(); p != 4 {
			t.Fatalf("process at 0.5 CPUs went back to %d CPUs; want it to stay on 4", p)
		}
		f.setLoad(0.1)
		wait((DefaultCalm - 5) * DefaultEvery)
		f.setLoad(0.5)
		wait(2 * DefaultEvery) // reads 0.3 (calm), then 0.5: not calm
		f.setLoad(0.1)         // the next reading, 0.3, is the first calm one again
		wait((DefaultCalm - 1) * DefaultEvery)
		if p, _ := f.now(); p != 4 {
			t.Fatalf("process went back to %d CPUs before %d calm readings in a row; want 4", p, DefaultCalm)
		}
		wait(DefaultEvery)
		if p, _ := f.now(); p != 1 {
			t.Fatalf("process calm for %d readings runs on %d CPUs; want 1", DefaultCalm, p)
		}
		if !strings.Contains(logs.String(), "calm") {
			t.Errorf("no line says the process went back to one CPU:\n%s", logs.String())
		}
		cancel()
		<-done
		p, changes := f.now()
		if p != 4 {
			t.Errorf("after Run returned the process runs on %d CPUs; want the runtime's default (4)", p)
		}
		// all (to learn the default), one (start), all (busy), one (calm), all (end).
		if want := []int{4, 1, 4, 1, 4}; !equal(changes, want) {
			t.Errorf("GOMAXPROCS set to %v; want %v", changes, want)
		}
	})
}

// TestControllerOneCPUMachine: with one CPU (or CPU time that cannot be read) there is nothing
// to choose, and Run returns at once without touching GOMAXPROCS beyond reading the default.
func TestControllerNothingToChoose(t *testing.T) {
	for _, tc := range []struct {
		name     string
		cpus     int
		readable bool
	}{{"one CPU", 1, true}, {"CPU time unreadable", 4, false}} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				f := newFake(tc.cpus)
				f.readable = tc.readable
				done := make(chan struct{})
				go func() { f.controller(nil).Run(t.Context()); close(done) }()
				select {
				case <-done:
				case <-time.After(time.Hour):
					t.Fatal("Run did not return")
				}
				if p, changes := f.now(); p != tc.cpus || len(changes) != 1 {
					t.Errorf("GOMAXPROCS %d, set %v; want %d, set once to the default", p, changes, tc.cpus)
				}
			})
		})
	}
}

func equal(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestFromEnvironment: a GOMAXPROCS the operator set is kept; one Go would ignore is not one.
func TestFromEnvironment(t *testing.T) {
	for v, want := range map[string]bool{"3": true, "1": true, "0": false, "x": false, "": false} {
		t.Setenv("GOMAXPROCS", v)
		if _, got := FromEnvironment(); got != want {
			t.Errorf("GOMAXPROCS=%q: FromEnvironment = %v; want %v", v, got, want)
		}
	}
}
