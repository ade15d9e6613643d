package main

import (
	"container/list"
	"context"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// Dedup remembers event ids so a redelivered webhook does not queue its events twice.
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

// RedisDedup is a Dedup shared by a fleet: SET NX with a TTL.
type RedisDedup struct {
	Client redis.UniversalClient
	Prefix string        // e.g. "chatwire:dedup:"
	TTL    time.Duration // how long an id is remembered; 0 means 24h
}

// Add implements Dedup.
func (r *RedisDedup) Add(ctx context.Context, id string) (bool, error) {
	ttl := r.TTL
	if ttl <= 0 {
		ttl = 24 * time.Hour
	}
	return r.Client.SetNX(ctx, r.Prefix+id, 1, ttl).Result()
}

// Remove implements Dedup.
func (r *RedisDedup) Remove(ctx context.Context, id string) error {
	return r.Client.Del(ctx, r.Prefix+id).Err()
}
