package pacing

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// redisStore keeps one log per counted thing in a Redis list of Unix milliseconds,
// "<prefix>:pace:{<bot>}:log:<scope>:<id>|<longest limit>", which every limit of that thing
// reads (WeCom's member 30/1m and 1000/1h share one list, pruned by the hour), and a bot's
// pauses in the hash "<prefix>:pace:{<bot>}:pause" (key → until, ms). One Lua script reserves
// on every log of a send at once, so hosts sharing the Redis share the limits. Times are the
// callers' clocks (the hosts are assumed NTP-synchronised; a host whose clock runs ahead by d
// may send up to d early in a window), not Redis TIME: the caller's clock is what tests
// shorten, and the same clock then drives both the reservation and the wait. Key expiry is
// Redis's clock, set generously (the longest window past the newest entry).
//
// A list per limit (as hosts before 2026-12 kept) costs twice the Redis work of a WeCom send
// for the same answer: a log sorted by time answers "may one more go at t under N per P" from
// the entry N−cost from its end, whatever older entries it keeps. The shared list has the
// name the longest limit's list had, so a host of either kind sees the other's sends there;
// while both kinds share a Redis, only the older kind's shorter limits miss the newer's sends.
//
// Reservations made at the same time in one host go to Redis together, as one pipeline
// (see [redisStore.run]): each is still its own atomic script, run in the order they were
// queued, but they share one write and one read on each side.
type redisStore struct {
	rdb    redis.UniversalClient
	prefix string

	mu    sync.Mutex     // guards the fields below
	busy  bool           // a batch is in Redis
	queue []*reserveCall // waiting for the next batch
}

// maxBatch bounds the reservations in one pipeline.
const maxBatch = 64

// reserveCall is one reservation: the script's keys and arguments, and its answer.
type reserveCall struct {
	keys []string
	args []any
	res  []int64
	err  error
	done chan struct{} // closed when res and err are set, or batch is
	// batch, set when done is closed, makes this call the leader of the next batch (it is
	// batch[0]).
	batch []*reserveCall
}

// NewRedis returns a Store on rdb under keys starting with prefix + ":pace:" (prefix ""
// means "chatwire").
func NewRedis(rdb redis.UniversalClient, prefix string) Store {
	if prefix == "" {
		prefix = "chatwire"
	}
	return &redisStore{rdb: rdb, prefix: prefix}
}

func (s *redisStore) base(bot string) string { return s.prefix + ":pace:{" + bot + "}:" }

// reserveScript: KEYS[1] the pause hash, KEYS[2..] the logs. ARGV: now, maxWait (-1: no
// bound), the number of pause fields p, the p fields, then per log: its number of limits m
// and m times N, per (ms), cost. A log is pruned by its longest window and gets the largest
// cost appended; each limit reads the entry N−cost+1 from its end.
var reserveScript = redis.NewScript(`
local now = tonumber(ARGV[1])
local maxwait = tonumber(ARGV[2])
local np = tonumber(ARGV[3])
local at = now
if np > 0 then
  local us = redis.call('HMGET', KEYS[1], unpack(ARGV, 4, 3 + np))
  for i = 1, np do
    local u = us[i]
    if u then
      u = tonumber(u)
      if u <= now then redis.call('HDEL', KEYS[1], ARGV[3 + i]) elseif u > at then at = u end
    end
  end
end
local logs = {}
local j = 4 + np
for i = 2, #KEYS do
  local k = KEYS[i]
  local m = tonumber(ARGV[j])
  local lims = {}
  local maxper, add = 0, 0
  for l = 1, m do
    local b = j + (l - 1) * 3
    local lim = {tonumber(ARGV[b + 1]), tonumber(ARGV[b + 2]), tonumber(ARGV[b + 3])}
    lims[l] = lim
    if lim[2] > maxper then maxper = lim[2] end
    if lim[3] > add then add = lim[3] end
  end
  logs[i] = {maxper, add}
  j = j + 1 + m * 3
  local n = redis.call('LLEN', k)
  while n > 0 do
    if tonumber(redis.call('LINDEX', k, 0)) > now - maxper then break end
    redis.call('LPOP', k)
    n = n - 1
  end
  if n > 0 then
    local last = tonumber(redis.call('LINDEX', k, -1))
    if last > at then at = last end
    for l = 1, m do
      local room = lims[l][1] - lims[l][3]
      if n > room then
        local t = tonumber(redis.call('LINDEX', k, -(room + 1))) + lims[l][2]
        if t > at then at = t end
      end
    end
  end
end
if maxwait >= 0 and at - now > maxwait then return {0, at} end
for i = 2, #KEYS do
  local entries = {}
  for c = 1, logs[i][2] do entries[c] = at end
  if #entries > 0 then redis.call('RPUSH', KEYS[i], unpack(entries)) end
  redis.call('PEXPIRE', KEYS[i], at - now + logs[i][1] + 1000)
end
return {1, at}
`)

func (s *redisStore) reserve(ctx context.Context, bot string, cs []counter, pauses []string, now time.Time, maxWait time.Duration) (time.Time, bool, error) {
	base := s.base(bot)
	keys := make([]string, 0, 1+len(cs))
	keys = append(keys, base+"pause")
	mw := int64(-1)
	if maxWait >= 0 {
		mw = maxWait.Milliseconds()
	}
	args := make([]any, 0, 3+len(pauses)+4*len(cs))
	args = append(args, now.UnixMilli(), mw, len(pauses))
	for _, p := range pauses {
		args = append(args, p)
	}
	// One log per counted thing: cs lists a thing's limits one after the other.
	for i := 0; i < len(cs); {
		j, longest := i+1, cs[i].limit
		for j < len(cs) && cs[j].key == cs[i].key {
			if cs[j].limit.Per > longest.Per {
				longest = cs[j].limit
			}
			j++
		}
		keys = append(keys, base+"log:"+cs[i].key+"|"+longest.String())
		args = append(args, j-i)
		for _, c := range cs[i:j] {
			args = append(args, c.limit.N, c.limit.Per.Milliseconds(), c.cost)
		}
		i = j
	}
	c := &reserveCall{keys: keys, args: args}
	s.run(ctx, c)
	res, err := c.res, c.err
	if err != nil {
		return time.Time{}, false, fmt.Errorf("pacing: redis: %w", err)
	}
	if len(res) != 2 {
		return time.Time{}, false, fmt.Errorf("pacing: redis: reserve answered %d values", len(res))
	}
	at := time.UnixMilli(res[1])
	if at.Before(now) { // sub-millisecond rounding
		at = now
	}
	return at, res[0] == 1, nil
}

// run runs c's reservation. With no batch in Redis it runs c at once; otherwise c waits for
// the batch to end and goes with the others that queued meanwhile, led by the first of them
// (no goroutine of its own: a reservation alone costs one round trip, as without batching).
// A queued call waits for its batch whatever ctx does (at most two round trips, each bounded
// by the client's read and write timeouts): its reservation may already be in Redis.
func (s *redisStore) run(ctx context.Context, c *reserveCall) {
	s.mu.Lock()
	if s.busy {
		c.done = make(chan struct{})
		s.queue = append(s.queue, c)
		s.mu.Unlock()
		<-c.done
		if c.batch == nil {
			return
		}
		s.lead(ctx, c.batch)
		return
	}
	s.busy = true
	s.mu.Unlock()
	s.lead(ctx, []*reserveCall{c})
}

// lead runs batch (led by batch[0], the caller), hands the queue to its first call as the
// next batch, and wakes the rest of batch with their answers: even if running it panicked
// (each then has errNotRun), so that no later reservation waits for ever.
func (s *redisStore) lead(ctx context.Context, batch []*reserveCall) {
	for _, c := range batch {
		c.err = errNotRun
	}
	defer s.handoff(batch)
	s.exec(context.WithoutCancel(ctx), batch)
}

var errNotRun = errors.New("reservation not run")

// handoff ends batch: the queue goes to its first call as the next batch, and the rest of
// batch wakes with its answers.
func (s *redisStore) handoff(batch []*reserveCall) {
	s.mu.Lock()
	var next *reserveCall
	if n := min(len(s.queue), maxBatch); n > 0 {
		next = s.queue[0]
		next.batch = s.queue[:n:n]
		s.queue = s.queue[n:]
	} else {
		s.busy = false
	}
	s.mu.Unlock()
	if next != nil {
		close(next.done)
	}
	for _, c := range batch[1:] {
		close(c.done)
	}
}

// exec runs the reservations of batch: one alone as a script call, several as a pipeline of
// them (a script Redis no longer has is loaded again by running it alone).
func (s *redisStore) exec(ctx context.Context, batch []*reserveCall) {
	if len(batch) == 1 {
		c := batch[0]
		c.res, c.err = reserveScript.Run(ctx, s.rdb, c.keys, c.args...).Int64Slice()
		return
	}
	cmds := make([]*redis.Cmd, len(batch))
	s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, c := range batch {
			cmds[i] = reserveScript.EvalSha(ctx, p, c.keys, c.args...)
		}
		return nil
	})
	for i, c := range batch {
		cmd := cmds[i]
		if err := cmd.Err(); err != nil && (errors.Is(err, redis.ErrNoScript) || redis.HasErrorPrefix(err, "NOSCRIPT")) {
			cmd = reserveScript.Run(ctx, s.rdb, c.keys, c.args...)
		}
		c.res, c.err = cmd.Int64Slice()
	}
}

var pauseScript = redis.NewScript(`
local u = redis.call('HGET', KEYS[1], ARGV[1])
if not u or tonumber(u) < tonumber(ARGV[2]) then redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) end
local ttl = redis.call('PTTL', KEYS[1])
if ttl < tonumber(ARGV[3]) then redis.call('PEXPIRE', KEYS[1], ARGV[3]) end
return 1
`)

func (s *redisStore) pause(ctx context.Context, bot, key string, now, until time.Time) error {
	ttl := max(min(until.Sub(now)+time.Minute, 7*24*time.Hour), time.Minute)
	ms := max(until.UnixMilli(), 0)
	err := pauseScript.Run(ctx, s.rdb, []string{s.base(bot) + "pause"}, key, strconv.FormatInt(ms, 10), ttl.Milliseconds()).Err()
	if err != nil {
		return fmt.Errorf("pacing: redis: %w", err)
	}
	return nil
}
