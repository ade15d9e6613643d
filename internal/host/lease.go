package host

import (
	"context"
	"crypto/rand"
	"log/slog"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/seed-a64d9e1f/chatwire/internal/backoff"
)

// redisOpTimeout bounds a Redis call made after its caller's ctx ended (releasing a lease).
const redisOpTimeout = 5 * time.Second

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
	owner := rand.Text()
	rl := newRetryLog(log, "lease")
	retry := backoff.Backoff{Base: 2 * ttl / 3, Max: 2 * ttl / 3, Jitter: 0.5} // [ttl/3, 2ttl/3]
	for ctx.Err() == nil {
		ok, err := rdb.SetNX(ctx, key, owner, ttl).Result()
		if err != nil && ctx.Err() == nil {
			rl.failed(err, "key", key)
		} else if err == nil {
			rl.ok("key", key)
		}
		if !ok {
			backoff.Sleep(ctx, retry.Next())
			continue
		}
		lctx, cancel := context.WithCancel(ctx)
		stop := renewLease(lctx, cancel, rdb, key, owner, ttl, log)
		fn(lctx)
		cancel()
		stop()
		rctx, rcancel := context.WithTimeout(context.WithoutCancel(ctx), redisOpTimeout)
		leaseScript.Run(rctx, rdb, []string{key}, owner, 0)
		rcancel()
	}
}

// renewLease extends the lease every ttl/3 until ctx ends, and cancels ctx when the lease
// is lost. It runs on a timer, not a goroutine of its own: a host holds a lease per bot
// (its outbox, its deliverer), and a parked goroutine costs a stack (issue 18). stop
// stops the renewals (call it after ctx ended).
func renewLease(ctx context.Context, cancel context.CancelFunc, rdb redis.UniversalClient, key, owner string, ttl time.Duration, log *slog.Logger) (stop func()) {
	var (
		mu      sync.Mutex
		stopped bool
		t       *time.Timer
	)
	mu.Lock()
	defer mu.Unlock()
	t = time.AfterFunc(ttl/3, func() {
		n, err := leaseScript.Run(ctx, rdb, []string{key}, owner, ttl.Milliseconds()).Int()
		if err != nil || n == 0 {
			if ctx.Err() == nil {
				log.Warn("lease lost", "key", key, "error", err)
			}
			cancel()
			return
		}
		mu.Lock()
		defer mu.Unlock()
		if !stopped {
			t.Reset(ttl / 3)
		}
	})
	return func() {
		mu.Lock()
		defer mu.Unlock()
		stopped = true
		t.Stop()
	}
}
