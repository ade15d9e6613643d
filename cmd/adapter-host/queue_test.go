package main

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"testing/synctest"

	"github.com/seed-a64d9e1f/chatwire/adapter"
)

func events(ids ...string) []adapter.Event {
	var out []adapter.Event
	for _, id := range ids {
		out = append(out, adapter.Event{ID: id, Kind: adapter.EventMessage})
	}
	return out
}

func TestQueue(t *testing.T) {
	q := NewQueue(3)
	if err := q.Append(events("a", "b")); err != nil {
		t.Fatal(err)
	}
	// A consumer without Last-Event-ID starts at the oldest unconsumed event.
	if s, unknown := q.Start(0, false); s != 1 || unknown {
		t.Errorf("Start = %d, %v; want 1, false", s, unknown)
	}
	got, _, _ := q.Read(1, 10)
	if len(got) != 2 || got[0].seq != 1 || got[1].seq != 2 {
		t.Fatalf("Read = %+v", got)
	}
	q.Consumed(1)
	if s, _ := q.Start(0, false); s != 2 {
		t.Errorf("Start after consuming 1 = %d; want 2", s)
	}
	if s, unknown := q.Start(1, true); s != 2 || unknown {
		t.Errorf("Start(Last-Event-ID 1) = %d, %v; want 2, false", s, unknown)
	}
	if s, unknown := q.Start(2, true); s != 3 || unknown {
		t.Errorf("Start(Last-Event-ID 2, the newest) = %d, %v; want 3, false", s, unknown)
	}
	// Room is made by dropping consumed events only.
	if err := q.Append(events("c", "d")); err != nil {
		t.Fatalf("Append with one consumed event to drop = %v", err)
	}
	if err := q.Append(events("e")); err != errQueueFull {
		t.Errorf("Append to a queue full of unconsumed events = %v; want errQueueFull", err)
	}
	if held, unconsumed := q.Len(); held != 3 || unconsumed != 3 {
		t.Errorf("Len = %d, %d; want 3, 3", held, unconsumed)
	}
	// A reader behind the oldest event held learns how many it missed.
	if got, _, lost := q.Read(1, 10); lost != 1 || got[0].seq != 2 {
		t.Errorf("Read(1) = first %d, lost %d; want first 2, lost 1", got[0].seq, lost)
	}
	// Appends wake readers.
	_, wake, _ := q.Read(5, 10)
	q.Consumed(4)
	q.Append(events("f"))
	select {
	case <-wake:
	default:
		t.Error("Append did not wake a waiting reader")
	}
}

// TestQueueResumeUnknownID is a client resuming with a Last-Event-ID from before a host
// restart: the new queue numbers from 1 again, so the id is unknown and the client gets the
// oldest unconsumed event instead of nothing until seq 501.
func TestQueueResumeUnknownID(t *testing.T) {
	q := NewQueue(0)
	if err := q.Append(events("a", "b", "c")); err != nil {
		t.Fatal(err)
	}
	q.Consumed(1)
	for _, last := range []uint64{4, 500} { // 4: the next seq, not issued yet
		s, unknown := q.Start(last, true)
		if s != 2 || !unknown {
			t.Errorf("Start(Last-Event-ID %d) = %d, %v; want 2 (oldest unconsumed), true", last, s, unknown)
		}
		if got, _, _ := q.Read(s, 10); len(got) != 2 || got[0].seq != 2 {
			t.Errorf("Read(%d) = %+v; want seqs 2 and 3", s, got)
		}
	}
}

func TestLRU(t *testing.T) {
	ctx := context.Background()
	l := NewLRU(2)
	for i, tc := range []struct {
		id   string
		want bool
	}{{"a", true}, {"a", false}, {"b", true}, {"c", true}, {"a", true} /* evicted */, {"c", false}} {
		if got, _ := l.Add(ctx, tc.id); got != tc.want {
			t.Errorf("step %d: Add(%q) = %v; want %v", i, tc.id, got, tc.want)
		}
	}
	l.Remove(ctx, "c")
	if got, _ := l.Add(ctx, "c"); !got {
		t.Error("Add after Remove = false; want true")
	}
}

func TestSign(t *testing.T) {
	body := []byte(`{"id":"x"}`)
	// echo -n '{"id":"x"}' | openssl dgst -sha256 -hmac secret
	const want = "sha256=ebf5302b9c8bc5e255e0d2135c1a75138c004e631d57c70e6081aa366c1de3b9"
	got := Sign("secret", body)
	if got != want {
		t.Errorf("Sign = %q; want %q", got, want)
	}
	if !Verify("secret", body, got) || Verify("other", body, got) || Verify("secret", append(body, ' '), got) {
		t.Error("Verify does not match Sign")
	}
}

// stallQueue is a memory Queue whose first Append waits for release and then fails as a
// full queue would (or a host dying mid-append): the window between marking an event's id
// and queueing it.
type stallQueue struct {
	*Queue
	entered, release chan struct{}
	calls            int
}

func (q *stallQueue) Append(events []adapter.Event) error {
	q.calls++
	if q.calls == 1 {
		close(q.entered)
		<-q.release
		return errQueueFull
	}
	return q.Queue.Append(events)
}

// TestEnqueueRedeliveryWaitsForFirst delivers the same event twice at once on one host: the
// second delivery is not answered as a duplicate while the first is still being queued, and
// when the first fails (503), the second queues the event instead of losing it.
func TestEnqueueRedeliveryWaitsForFirst(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		q := &stallQueue{Queue: NewQueue(0), entered: make(chan struct{}), release: make(chan struct{})}
		s := &server{dedup: NewLRU(0), log: slog.New(slog.DiscardHandler), m: newMetrics()}
		b := newBot("hr", adapter.PlatformWeCom, nil, q)
		ev := events("wecom:1")
		first, second := make(chan error, 1), make(chan error, 1)
		go func() { first <- s.enqueue(t.Context(), b, ev) }()
		<-q.entered
		go func() { second <- s.enqueue(t.Context(), b, ev) }()
		synctest.Wait()
		answered := false
		select {
		case err := <-second:
			t.Errorf("redelivery answered (%v) while the first delivery was still being queued", err)
			answered = true
		default:
		}
		close(q.release)
		if err := <-first; err != errQueueFull {
			t.Errorf("first enqueue = %v; want errQueueFull", err)
		}
		if !answered {
			if err := <-second; err != nil {
				t.Errorf("second enqueue = %v; want nil", err)
			}
		}
		if held, _ := q.Len(); held != 1 {
			t.Errorf("queue holds %d events; want the redelivered one", held)
		}
	})
}

// TestEnqueueFullQueueForgetsID fills a memory queue: the webhook's append fails, and the
// redelivery after a consumer made room is queued, not dropped as a duplicate.
func TestEnqueueFullQueueForgetsID(t *testing.T) {
	q := NewQueue(1)
	s := &server{dedup: NewLRU(0), log: slog.New(slog.DiscardHandler), m: newMetrics()}
	b := newBot("hr", adapter.PlatformWeCom, nil, q)
	if err := s.enqueue(t.Context(), b, events("wecom:1")); err != nil {
		t.Fatal(err)
	}
	if err := s.enqueue(t.Context(), b, events("wecom:2")); err != errQueueFull {
		t.Fatalf("enqueue into a full queue = %v; want errQueueFull", err)
	}
	q.Consumed(1)
	if err := s.enqueue(t.Context(), b, events("wecom:2")); err != nil {
		t.Fatal(err)
	}
	if got, _, _ := q.Read(2, 10); len(got) != 1 || !strings.Contains(string(got[0].data), `"wecom:2"`) {
		t.Errorf("after the redelivery the queue holds %+v; want event wecom:2", got)
	}
}
