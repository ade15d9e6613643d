package main

import (
	"container/list"
	"context"
	"sync"
	"time"

	"github.com/seed-a64d9e1f/chatwire/adapter"
)

// Dedup remembers event ids so a redelivered webhook does not queue its events twice. It is
// used with a memory [Queue]; Redis queues deduplicate themselves ([dedupAppender]).
type Dedup interface {
	// Add records id and reports whether it was new.
	Add(ctx context.Context, id string) (bool, error)
	// Remove forgets id (its event could not be queued after all).
	Remove(ctx context.Context, id string) error
}

// LRU is an in-memory Dedup holding the most recent ids. Safe for concurrent use.
type LRU struct {
	max int

	mu    sync.Mutex // guards order and index
	order *list.List // front: most recent
	index map[string]*list.Element
}

// NewLRU returns an LRU remembering max ids (0 means 100,000).
func NewLRU(max int) *LRU {
	if max <= 0 {
		max = 100000
	}
	return &LRU{max: max, order: list.New(), index: make(map[string]*list.Element)}
}

// Add implements Dedup.
func (l *LRU) Add(_ context.Context, id string) (bool, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if el, ok := l.index[id]; ok {
		l.order.MoveToFront(el)
		return false, nil
	}
	l.index[id] = l.order.PushFront(id)
	if l.order.Len() > l.max {
		old := l.order.Back()
		l.order.Remove(old)
		delete(l.index, old.Value.(string))
	}
	return true, nil
}

// Remove implements Dedup.
func (l *LRU) Remove(_ context.Context, id string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if el, ok := l.index[id]; ok {
		l.order.Remove(el)
		delete(l.index, id)
	}
	return nil
}

// dedupTTL is how long a fleet remembers an event id (platforms redeliver within minutes).
const dedupTTL = 24 * time.Hour

// dedupAppender is a queue that deduplicates and appends in one atomic step, as a fleet needs:
// a separate mark (SET NX) then append would let a host die between the two, or answer a
// concurrent redelivery 200 before the first delivery is queued. [RedisQueue] is one.
type dedupAppender interface {
	// AppendNew appends the events whose key was not seen before and remembers their keys,
	// atomically: a key is remembered if and only if its event is queued. keys[i] == ""
	// means events[i] is not deduplicated. dup[i] reports that events[i] was dropped as a
	// duplicate. On error nothing is queued and nothing remembered.
	AppendNew(ctx context.Context, events []adapter.Event, keys []string) (dup []bool, err error)
}

var _ dedupAppender = (*RedisQueue)(nil)
