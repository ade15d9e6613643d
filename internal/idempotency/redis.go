package idempotency

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// redisStore keeps keys in Redis: a hash "<prefix>:idem:{<sha256 of key>}" (state, fp,
// owner, started, answer) that expires after the retention, and a lease string beside it
// ("…:lease", holding the owner) that expires after the lease. Expiry is Redis's clock;
// started is the claiming host's clock. The braces keep both keys in one Cluster slot.
type redisStore struct {
	rdb    redis.UniversalClient
	prefix string
}

// NewRedis returns a Store on rdb under keys starting with prefix + ":idem:" (prefix ""
// means "chatwire"). Hosts sharing rdb and prefix share their keys.
func NewRedis(rdb redis.UniversalClient, prefix string) Store {
	if prefix == "" {
		prefix = "chatwire"
	}
	return &redisStore{rdb: rdb, prefix: prefix}
}

func (s *redisStore) keys(key string) []string {
	sum := sha256.Sum256([]byte(key))
	rec := s.prefix + ":idem:{" + hex.EncodeToString(sum[:]) + "}"
	return []string{rec, rec + ":lease"}
}

var claimScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('HSET', KEYS[1], 'state', 'pending', 'fp', ARGV[1], 'owner', ARGV[2], 'started', ARGV[3])
  redis.call('PEXPIRE', KEYS[1], ARGV[5])
  redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[4])
  return {'claimed', '', '', ''}
end
local r = redis.call('HMGET', KEYS[1], 'state', 'fp', 'owner', 'started', 'answer')
local owner, started = r[3] or '', r[4] or ''
if r[2] ~= ARGV[1] then return {'conflict', owner, started, ''} end
if r[1] == 'done' then return {'done', owner, started, r[5] or ''} end
if redis.call('EXISTS', KEYS[2]) == 1 then return {'busy', owner, started, ''} end
return {'abandoned', owner, started, ''}
`)

var retakeScript = redis.NewScript(`
local r = redis.call('HMGET', KEYS[1], 'state', 'owner')
if r[1] ~= 'pending' or r[2] ~= ARGV[1] or redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'owner', ARGV[2])
redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
return 1
`)

// extendScript renews the lease, recreating it if it lapsed while no one took the key over.
var extendScript = redis.NewScript(`
local r = redis.call('HMGET', KEYS[1], 'state', 'owner')
if r[1] ~= 'pending' or r[2] ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
return 1
`)

var finishScript = redis.NewScript(`
local r = redis.call('HMGET', KEYS[1], 'state', 'owner')
if r[1] ~= 'pending' or r[2] ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'state', 'done', 'answer', ARGV[2])
redis.call('DEL', KEYS[2])
return 1
`)

var releaseScript = redis.NewScript(`
local r = redis.call('HMGET', KEYS[1], 'state', 'owner')
if r[1] ~= 'pending' or r[2] ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1], KEYS[2])
return 1
`)

func (s *redisStore) claim(ctx context.Context, key, fp, owner string, now time.Time, lease, retention time.Duration) (status, error) {
	res, err := claimScript.Run(ctx, s.rdb, s.keys(key), fp, owner, now.UnixMilli(), lease.Milliseconds(), retention.Milliseconds()).StringSlice()
	if err != nil {
		return status{}, fmt.Errorf("idempotency: redis: %w", err)
	}
	if len(res) != 4 {
		return status{}, fmt.Errorf("idempotency: redis: claim answered %d values", len(res))
	}
	st := status{owner: res[1]}
	if ms, err := strconv.ParseInt(res[2], 10, 64); err == nil {
		st.started = time.UnixMilli(ms)
	}
	switch res[0] {
	case "claimed":
		st.state = stateClaimed
	case "conflict":
		st.state = stateConflict
	case "busy":
		st.state = stateBusy
	case "abandoned":
		st.state = stateAbandoned
	case "done":
		st.state = stateDone
		if err := json.Unmarshal([]byte(res[3]), &st.answer); err != nil {
			return status{}, fmt.Errorf("idempotency: redis: stored answer: %w", err)
		}
	default:
		return status{}, fmt.Errorf("idempotency: redis: claim answered %q", res[0])
	}
	return st, nil
}

func (s *redisStore) retake(ctx context.Context, key, old, newOwner string, lease time.Duration) (bool, error) {
	n, err := retakeScript.Run(ctx, s.rdb, s.keys(key), old, newOwner, lease.Milliseconds()).Int()
	if err != nil {
		return false, fmt.Errorf("idempotency: redis: %w", err)
	}
	return n == 1, nil
}

func (s *redisStore) extend(ctx context.Context, key, owner string, lease time.Duration) (bool, error) {
	n, err := extendScript.Run(ctx, s.rdb, s.keys(key), owner, lease.Milliseconds()).Int()
	if err != nil {
		return false, fmt.Errorf("idempotency: redis: %w", err)
	}
	return n == 1, nil
}

func (s *redisStore) finish(ctx context.Context, key, owner string, ans Answer) (bool, error) {
	data, err := json.Marshal(ans)
	if err != nil {
		return false, err
	}
	n, err := finishScript.Run(ctx, s.rdb, s.keys(key), owner, data).Int()
	if err != nil {
		return false, fmt.Errorf("idempotency: redis: %w", err)
	}
	return n == 1, nil
}

func (s *redisStore) release(ctx context.Context, key, owner string) error {
	if err := releaseScript.Run(ctx, s.rdb, s.keys(key), owner).Err(); err != nil {
		return fmt.Errorf("idempotency: redis: %w", err)
	}
	return nil
}

// wait polls: a pending key is looked at again after p's next step (5 ms doubling to
// 200 ms), which bounds a waiter's extra latency without a subscription per waiter.
func (s *redisStore) wait(ctx context.Context, _ string, p *poll) error {
	return sleep(ctx, p.step())
}

func (s *redisStore) expireLease(ctx context.Context, key string) error {
	return s.rdb.Del(ctx, s.keys(key)[1]).Err()
}
