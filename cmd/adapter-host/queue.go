package main

import (
	"encoding/json"
	"errors"
	"sync"

	"github.com/seed-a64d9e1f/chatwire/adapter"
)

// errQueueFull means a bot's queue holds only events no consumer has received yet: the
// webhook that brought more is answered 503 so the platform redelivers later.
var errQueueFull = errors.New("event queue full of unconsumed events")

// queued is one event in a queue with its sequence number and JSON form.
type queued struct {
	seq  uint64
	kind string
	data []byte
}

// Queue holds a bot's recent events, numbered from 1, until a consumer has them. It keeps at
// most max events: the oldest consumed ones make room; when all are unconsumed, Append fails.
// Its methods are safe for concurrent use.
type Queue struct {
	max int

	mu       sync.Mutex // guards the fields below
	events   []queued   // oldest first; seqs are consecutive
	next     uint64     // seq of the next event appended
	consumed uint64     // highest seq a consumer has received
	wake     chan struct{}
}

// NewQueue returns an empty queue holding at most max events (0 means 10,000).
func NewQueue(max int) *Queue {
	if max <= 0 {
		max = 10000
	}
	return &Queue{max: max, next: 1, wake: make(chan struct{})}
}

// Append adds events atomically: all of them or, if there is no room, none.
func (q *Queue) Append(events []adapter.Event) error {
	if len(events) == 0 {
		return nil
	}
	encoded := make([][]byte, len(events))
	for i, e := range events {
		data, err := jsonEvent(e)
		if err != nil {
			return err
		}
		encoded[i] = data
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	// Make room by dropping consumed events.
	drop := 0
	for drop < len(q.events) && len(q.events)-drop+len(events) > q.max && q.events[drop].seq <= q.consumed {
		drop++
	}
	if len(q.events)-drop+len(events) > q.max {
		return errQueueFull
	}
	q.events = append(q.events[drop:], make([]queued, 0, len(events))...)
	for i, e := range events {
		q.events = append(q.events, queued{seq: q.next, kind: e.Kind, data: encoded[i]})
		q.next++
	}
	close(q.wake)
	q.wake = make(chan struct{})
	return nil
}

// jsonEvent is an event's JSON as SSE and delivery send it.
func jsonEvent(e adapter.Event) ([]byte, error) { return json.Marshal(e) }

// Start returns the seq a new consumer starts at: after lastID if the consumer gives one
// (Last-Event-ID), else the oldest event no consumer has received. A lastID this queue never
// issued (the host restarted and numbers from 1 again) is unknown: the consumer starts at
// the oldest unconsumed event too, rather than skipping every event up to lastID.
func (q *Queue) Start(lastID uint64, resume bool) (seq uint64, unknown bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if resume && lastID < q.next {
		return lastID + 1, false
	}
	return q.consumed + 1, resume
}

// Read returns the events from seq on (at most n), and a channel closed when more arrive.
// If events before seq's first available one were dropped, lost reports how many.
func (q *Queue) Read(seq uint64, n int) (out []queued, wake <-chan struct{}, lost uint64) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.events) > 0 && seq < q.events[0].seq {
		lost = q.events[0].seq - seq
		seq = q.events[0].seq
	}
	if len(q.events) > 0 && seq <= q.events[len(q.events)-1].seq {
		i := int(seq - q.events[0].seq)
		end := min(len(q.events), i+n)
		out = append(out, q.events[i:end]...)
	}
	return out, q.wake, lost
}

// Consumed records that a consumer received every event up to seq.
func (q *Queue) Consumed(seq uint64) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if seq > q.consumed {
		q.consumed = seq
	}
}

// Len returns the number of events held and how many of them no consumer has received.
func (q *Queue) Len() (held, unconsumed int) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for _, e := range q.events {
		if e.seq > q.consumed {
			unconsumed++
		}
	}
	return len(q.events), unconsumed
}
