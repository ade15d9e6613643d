package pacing

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// redisStore keeps each log in a Redis list of Unix milliseconds,
// "<prefix>:pace:{<bot>}:log:<scope>:<id>|<limit>", and a bot's pauses in the hash
// "<prefix>:pace:{<bot>}:pause" (key → until, ms). One Lua script reserves on every log of a
// send at once, so hosts sharing the Redis share the limits. Times are the callers' clocks
// (the hosts are assumed NTP-synchronised; a host whose clock runs ahead by d may send up to
// d early in a window), not Redis TIME: the caller's clock is what tests shorten, and the
// same clock then drives both the reservation and the wait. Key expiry is Redis's clock,
// set generously (the log's window past its newest entry).
type redisStore struct {
	rdb    redis.UniversalClient
	prefix string
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
// bound), the number of pause fields p, the p fields, then per log N, per (ms), cost.
var reserveScript = redis.NewScript(`
local now = tonumber(ARGV[1])
local maxwait = tonumber(ARGV[2])
local np = tonumber(ARGV[3])
local at = now
for i = 1, np do
  local u = redis.call('HGET', KEYS[1], ARGV[3 + i])
  if u then
    u = tonumber(u)
    if u <= now then redis.call('HDEL', KEYS[1], ARGV[3 + i]) elseif u > at then at = u end
  end
end
local base = 3 + np
for i = 2, #KEYS do
  local k = KEYS[i]
  local j = base + (i - 2) * 3
  local lim, per, cost = tonumber(ARGV[j + 1]), tonumber(ARGV[j + 2]), tonumber(ARGV[j + 3])
  while true do
    local first = redis.call('LINDEX', k, 0)
    if not first or tonumber(first) > now - per then break end
    redis.call('LPOP', k)
  end
  local n = redis.call('LLEN', k)
  if n > 0 then
    local last = tonumber(redis.call('LINDEX', k, -1))
    if last > at then at = last end
    local room = lim - cost
    if n > room then
      local t = tonumber(redis.call('LINDEX', k, n - room - 1)) + per
      if t > at then at = t end
    end
  end
end
if maxwait >= 0 and at - now > maxwait then return {0, at} end
for i = 2, #KEYS do
  local j = base + (i - 2) * 3
  local per, cost = tonumber(ARGV[j + 2]), tonumber(ARGV[j + 3])
  for c = 1, cost do redis.call('RPUSH', KEYS[i], at) end
  redis.call('PEXPIRE', KEYS[i], at - now + per + 1000)
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
	args := []any{now.UnixMilli(), mw, len(pauses)}
	for _, p := range pauses {
		args = append(args, p)
	}
	for _, c := range cs {
		keys = append(keys, base+"log:"+c.logKey())
		args = append(args, c.limit.N, c.limit.Per.Milliseconds(), c.cost)
	}
	res, err := reserveScript.Run(ctx, s.rdb, keys, args...).Int64Slice()
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
