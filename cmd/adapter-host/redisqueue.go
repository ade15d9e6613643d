package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/seed-a64d9e1f/chatwire/adapter"
)

// eventQueue is a bot's event queue: in memory ([Queue]) for one host, a Redis stream
// ([RedisQueue]) shared by a fleet.
type eventQueue interface {
	Append(events []adapter.Event) error
	// Start returns the seq a consumer starts at, and whether lastID (given when resume is
	// true) was unknown: not issued by this queue, so the oldest unconsumed event is used.
	Start(lastID uint64, resume bool) (seq uint64, unknown bool)
	Read(seq uint64, n int) (out []queued, wake <-chan struct{}, lost uint64)
	Consumed(seq uint64)
	Len() (held, unconsumed int)
	Close()
}

var (
	_ eventQueue = (*Queue)(nil)
	_ eventQueue = (*RedisQueue)(nil)
)

// Close implements eventQueue; a memory queue holds no resources.
func (q *Queue) Close() {}

// redisOpTimeout bounds each Redis call of a RedisQueue.
const redisOpTimeout = 5 * time.Second

// appendNewScript adds events to the stream as entries 0-<seq>, seq from a counter, with
// deduplication in the same atomic step, so every host of a fleet numbers events the same
// way: an event whose dedup key exists (or whose key an earlier event of the batch has) is
// skipped, the others are added and then their keys set (with a TTL), so a key exists if
// and only if its event is in the stream; no host can mark an event and die before queueing
// it, and no host answers a redelivery before the first delivery is queued. When the stream
// would exceed max, entries every consumer has received are trimmed first; if it still
// would, nothing is added.
// The stream entries are written before the counter and the keys. Redis does not roll back a
// script that fails part way, so if an XADD fails (Redis out of memory, say) the script
// deletes the entries it added before it, leaving the stream, the counter and the keys as
// they were, and returns the error: the webhook gets a 503 and its redelivery starts over.
// KEYS: stream, counter, consumed, then one dedup key per event that has one.
// ARGV: max, ttl ms, then per event: index of its key in KEYS (0: none), kind, data.
// Returns {last seq or -1 when full, then 1 for each event dropped as a duplicate, else 0}.
var appendNewScript = redis.NewScript(`
local max, ttl = tonumber(ARGV[1]), ARGV[2]
local n = (#ARGV - 2) / 3
local dup, seen, fresh = {}, {}, 0
for i = 0, n - 1 do
  local k = tonumber(ARGV[3 + 3 * i])
  dup[i + 1] = 0
  if k > 0 then
    local key = KEYS[k]
    if seen[key] or redis.call('EXISTS', key) == 1 then dup[i + 1] = 1 else seen[key] = true end
  end
  if dup[i + 1] == 0 then fresh = fresh + 1 end
end
if fresh > 0 and redis.call('XLEN', KEYS[1]) + fresh > max then
  local consumed = tonumber(redis.call('GET', KEYS[3]) or '0')
  redis.call('XTRIM', KEYS[1], 'MINID', '0-' .. (consumed + 1))
  if redis.call('XLEN', KEYS[1]) + fresh > max then
    local out = {-1}
    for i = 1, n do out[i + 1] = 0 end
    return out
  end
end
local seq = tonumber(redis.call('GET', KEYS[2]) or '0')
local added = {}
for i = 0, n - 1 do
  if dup[i + 1] == 0 then
    seq = seq + 1
    local r = redis.pcall('XADD', KEYS[1], '0-' .. seq, 'k', ARGV[4 + 3 * i], 'd', ARGV[5 + 3 * i])
    if type(r) == 'table' and r.err then
      if #added > 0 then redis.call('XDEL', KEYS[1], unpack(added)) end
      return r
    end
    added[#added + 1] = '0-' .. seq
  end
end
if fresh > 0 then redis.call('SET', KEYS[2], seq) end
for i = 0, n - 1 do
  local k = tonumber(ARGV[3 + 3 * i])
  if k > 0 and dup[i + 1] == 0 then redis.call('SET', KEYS[k], 1, 'PX', ttl) end
end
local out = {seq}
for i = 1, n do out[i + 1] = dup[i] end
return out
`)

// consumedScript raises the consumed mark, never lowers it. KEYS: consumed. ARGV: seq.
var consumedScript = redis.NewScript(`
if tonumber(redis.call('GET', KEYS[1]) or '0') < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], ARGV[1])
end
return 0
`)

// RedisQueue is a bot's event queue on a Redis stream, shared by every host of a fleet: an
// event a platform delivered to one host is read over SSE from any host. Safe for concurrent
// use. A Redis failure makes Append fail (the webhook is answered 503, so the platform
// redelivers) and reads wait and retry.
type RedisQueue struct {
	rdb                      redis.UniversalClient
	stream, counter, consumd string
	dedup                    string // prefix of dedup keys, in the stream's hash slot
	max                      int
	log                      *slog.Logger
	readLog                  *retryLog // Read's failures, one line per outage
	watchLog                 *retryLog // watch's failures, one line per outage

	mu   sync.Mutex // guards wake
	wake chan struct{}

	stop context.CancelFunc
	done chan struct{}
}

// NewRedisQueue returns the queue of bot under prefix, holding at most max events (0 means
// 10,000), and starts watching the stream for new entries.
func NewRedisQueue(rdb redis.UniversalClient, prefix, bot string, max int, log *slog.Logger) *RedisQueue {
	if max <= 0 {
		max = 10000
	}
	base := prefix + ":events:{" + bot + "}"
	ctx, cancel := context.WithCancel(context.Background())
	q := &RedisQueue{rdb: rdb, stream: base, counter: base + ":seq", consumd: base + ":consumed",
		dedup: prefix + ":dedup:{" + bot + "}:", max: max, log: log, readLog: newRetryLog(log, "reading events"),
		watchLog: newRetryLog(log, "event stream watch"),
		wake:     make(chan struct{}), stop: cancel, done: make(chan struct{})}
	go q.watch(ctx)
	return q
}

func (q *RedisQueue) broadcast() {
	q.mu.Lock()
	close(q.wake)
	q.wake = make(chan struct{})
	q.mu.Unlock()
}

// watch wakes readers whenever any host adds to the stream (XREAD BLOCK), and every second
// anyway so readers retry after a Redis error.
func (q *RedisQueue) watch(ctx context.Context) {
	defer close(q.done)
	last := "$"
	rl := q.watchLog
	for ctx.Err() == nil {
		res, err := q.rdb.XRead(ctx, &redis.XReadArgs{Streams: []string{q.stream, last}, Count: 100, Block: time.Second}).Result()
		if err == nil || errors.Is(err, redis.Nil) {
			rl.ok("stream", q.stream)
		}
		switch {
		case err == nil:
			for _, s := range res {
				if n := len(s.Messages); n > 0 {
					last = s.Messages[n-1].ID
				}
			}
			q.broadcast()
		case errors.Is(err, redis.Nil):
			q.broadcast() // timeout: let readers re-check
		case ctx.Err() == nil:
			rl.failed(err, "stream", q.stream)
			select {
			case <-time.After(time.Second + rand.N(time.Second)):
			case <-ctx.Done():
			}
			q.broadcast()
		}
	}
}

// Append implements eventQueue: AppendNew without dedup keys.
func (q *RedisQueue) Append(events []adapter.Event) error {
	_, err := q.AppendNew(context.Background(), events, make([]string, len(events)))
	return err
}

// AppendNew implements dedupAppender with one Lua script: see appendNewScript.
func (q *RedisQueue) AppendNew(ctx context.Context, events []adapter.Event, keys []string) ([]bool, error) {
	if len(events) == 0 {
		return nil, nil
	}
	rkeys := []string{q.stream, q.counter, q.consumd}
	args := []any{q.max, dedupTTL.Milliseconds()}
	for i, e := range events {
		data, err := jsonEvent(e)
		if err != nil {
			return nil, err
		}
		k := 0
		if keys[i] != "" {
			rkeys = append(rkeys, q.dedup+keys[i])
			k = len(rkeys)
		}
		args = append(args, k, e.Kind, data)
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), redisOpTimeout)
	defer cancel()
	res, err := appendNewScript.Run(ctx, q.rdb, rkeys, args...).Int64Slice()
	if err != nil {
		return nil, err
	}
	if len(res) != len(events)+1 {
		return nil, fmt.Errorf("append script returned %d values for %d events", len(res), len(events))
	}
	if res[0] < 0 {
		return nil, errQueueFull
	}
	dup := make([]bool, len(events))
	for i := range dup {
		dup[i] = res[i+1] == 1
	}
	q.broadcast()
	return dup, nil
}

// Start implements eventQueue. A lastID above the stream's counter (the stream was reset or
// the keys deleted, so numbering began again) is unknown.
func (q *RedisQueue) Start(lastID uint64, resume bool) (seq uint64, unknown bool) {
	if resume {
		ctx, cancel := context.WithTimeout(context.Background(), redisOpTimeout)
		defer cancel()
		issued, err := q.rdb.Get(ctx, q.counter).Uint64()
		switch {
		case err != nil && !errors.Is(err, redis.Nil):
			// Redis is down: trust the client; reads retry until Redis answers.
			q.log.Warn("reading the event counter failed", "stream", q.stream, "error", err)
			return lastID + 1, false
		case lastID <= issued:
			return lastID + 1, false
		}
	}
	return q.consumed() + 1, resume
}

func (q *RedisQueue) consumed() uint64 {
	ctx, cancel := context.WithTimeout(context.Background(), redisOpTimeout)
	defer cancel()
	n, err := q.rdb.Get(ctx, q.consumd).Uint64()
	if err != nil && !errors.Is(err, redis.Nil) {
		q.log.Warn("reading the consumed mark failed", "stream", q.stream, "error", err)
	}
	return n
}

// Read implements eventQueue.
func (q *RedisQueue) Read(seq uint64, n int) ([]queued, <-chan struct{}, uint64) {
	q.mu.Lock()
	wake := q.wake
	q.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), redisOpTimeout)
	defer cancel()
	msgs, err := q.rdb.XRangeN(ctx, q.stream, "0-"+strconv.FormatUint(seq, 10), "+", int64(n)).Result()
	if err != nil {
		q.readLog.failed(err, "stream", q.stream)
		return nil, wake, 0
	}
	q.readLog.ok("stream", q.stream)
	var out []queued
	var lost uint64
	for i, m := range msgs {
		s, err := strconv.ParseUint(strings.TrimPrefix(m.ID, "0-"), 10, 64)
		if err != nil {
			continue
		}
		if i == 0 && s > seq {
			lost = s - seq
		}
		kind, _ := m.Values["k"].(string)
		data, _ := m.Values["d"].(string)
		out = append(out, queued{seq: s, kind: kind, data: []byte(data)})
	}
	return out, wake, lost
}

// Consumed implements eventQueue.
func (q *RedisQueue) Consumed(seq uint64) {
	ctx, cancel := context.WithTimeout(context.Background(), redisOpTimeout)
	defer cancel()
	if err := consumedScript.Run(ctx, q.rdb, []string{q.consumd}, seq).Err(); err != nil {
		q.log.Warn("recording consumed events failed", "stream", q.stream, "error", err)
	}
}

// Len implements eventQueue.
func (q *RedisQueue) Len() (held, unconsumed int) {
	ctx, cancel := context.WithTimeout(context.Background(), redisOpTimeout)
	defer cancel()
	n, _ := q.rdb.XLen(ctx, q.stream).Result()
	last, _ := q.rdb.Get(ctx, q.counter).Uint64()
	un := int64(last) - int64(q.consumed())
	return int(n), int(max(0, min(un, n)))
}

// Close stops watching the stream.
func (q *RedisQueue) Close() {
	q.stop()
	<-q.done
}

// leaseScript extends or releases a lease only for its owner. KEYS: lock. ARGV: owner, ttl ms
// (0 releases).
var leaseScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if tonumber(ARGV[2]) == 0 then return redis.call('DEL', KEYS[1]) end
return redis.call('PEXPIRE', KEYS[1], ARGV[2])
`)

// asLeader runs fn while this process holds the fleet-wide lease key (SET NX PX, extended
// every ttl/3), so one host of a fleet does a job such as delivering a bot's events. fn's
// ctx ends when the lease is lost or ctx ends. asLeader returns when ctx ends.
func asLeader(ctx context.Context, rdb redis.UniversalClient, key string, ttl time.Duration, log *slog.Logger, fn func(ctx context.Context)) {
	owner := randomString(16)
	rl := newRetryLog(log, "lease")
	for ctx.Err() == nil {
		ok, err := rdb.SetNX(ctx, key, owner, ttl).Result()
		if err != nil && ctx.Err() == nil {
			rl.failed(err, "key", key)
		} else if err == nil {
			rl.ok("key", key)
		}
		if !ok {
			select {
			case <-time.After(ttl/3 + rand.N(ttl/3)):
			case <-ctx.Done():
			}
			continue
		}
		lctx, cancel := context.WithCancel(ctx)
		go func() {
			t := time.NewTicker(ttl / 3)
			defer t.Stop()
			for {
				select {
				case <-lctx.Done():
					return
				case <-t.C:
					n, err := leaseScript.Run(lctx, rdb, []string{key}, owner, ttl.Milliseconds()).Int()
					if err != nil || n == 0 {
						if lctx.Err() == nil {
							log.Warn("lease lost", "key", key, "error", err)
						}
						cancel()
						return
					}
				}
			}
		}()
		fn(lctx)
		cancel()
		rctx, rcancel := context.WithTimeout(context.WithoutCancel(ctx), redisOpTimeout)
		leaseScript.Run(rctx, rdb, []string{key}, owner, 0)
		rcancel()
	}
}
