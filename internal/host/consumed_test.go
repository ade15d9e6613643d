package host

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/seed-a64d9e1f/chatwire/internal/eventlog"
)

// markLog records the consumed marks written to it.
type markLog struct {
	eventlog.Log
	mu    sync.Mutex
	marks []eventlog.ID
	fail  error
}

func (l *markLog) Consumed(ctx context.Context, id eventlog.ID) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.fail != nil {
		return l.fail
	}
	l.marks = append(l.marks, id)
	return nil
}

func (l *markLog) got() []eventlog.ID {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.marks)
}

func id(ms uint64) eventlog.ID { return eventlog.ID{Ms: ms} }

// TestConsumedMarker: a lone event is marked at once; the events that follow within the
// interval are marked together, once, after it; the mark never goes beyond what was sent;
// and the last mark is written when the stream stops, also when the interval has not passed.
func TestConsumedMarker(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := &markLog{}
		m := newConsumedMarker(l, consumedEvery, func(err error) { t.Errorf("failed: %v", err) })
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan struct{})
		go func() { defer close(done); m.run(ctx) }()

		m.sent(id(1))
		synctest.Wait()
		if got := l.got(); !slices.Equal(got, []eventlog.ID{id(1)}) {
			t.Fatalf("after a lone event, marks = %v, want [1] without waiting", got)
		}
		for ms := uint64(2); ms <= 10; ms++ {
			m.sent(id(ms))
			time.Sleep(consumedEvery / 20)
		}
		synctest.Wait()
		if got := l.got(); len(got) != 1 {
			t.Fatalf("events within the interval marked before it passed: %v", got)
		}
		time.Sleep(consumedEvery)
		synctest.Wait()
		if got := l.got(); !slices.Equal(got, []eventlog.ID{id(1), id(10)}) {
			t.Fatalf("after the interval, marks = %v, want [1 10]", got)
		}
		// Quiet for longer than the interval: the next lone event is marked at once again.
		time.Sleep(10 * consumedEvery)
		m.sent(id(11))
		synctest.Wait()
		if got := l.got(); !slices.Equal(got, []eventlog.ID{id(1), id(10), id(11)}) {
			t.Fatalf("after a quiet spell, marks = %v, want [1 10 11]", got)
		}
		// Sent just before the stream ends: written by stop, not lost.
		m.sent(id(12))
		cancel()
		<-done
		m.stop()
		if got := l.got(); !slices.Equal(got, []eventlog.ID{id(1), id(10), id(11), id(12)}) {
			t.Fatalf("after stop, marks = %v, want [1 10 11 12]", got)
		}
		// Nothing new: stop writes nothing.
		m.stop()
		if got := l.got(); len(got) != 4 {
			t.Errorf("a second stop wrote %v", got)
		}
	})
}

// TestConsumedMarkerFailure: a failed write is reported and written again later.
func TestConsumedMarkerFailure(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := &markLog{fail: errors.New("redis down")}
		var failures int
		m := newConsumedMarker(l, consumedEvery, func(err error) { failures++ })
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan struct{})
		go func() { defer close(done); m.run(ctx) }()
		m.sent(id(5))
		synctest.Wait()
		if failures != 1 {
			t.Fatalf("failures = %d, want 1", failures)
		}
		l.mu.Lock()
		l.fail = nil
		l.mu.Unlock()
		cancel()
		<-done
		m.stop()
		if got := l.got(); !slices.Equal(got, []eventlog.ID{id(5)}) {
			t.Errorf("marks = %v, want [5] written by stop after the failure", got)
		}
	})
}
