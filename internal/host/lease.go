package host

import (
	"context"
	"crypto/rand"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/seed-a64d9e1f/chatwire/internal/backoff"
)

// redisOpTimeout bounds a Redis call made after its caller's ctx ended (releasing a lease).
const redisOpTimeout = 5 * time.Second

// leaseTTL is how long a lease lasts unless renewed; a held lease is renewed every
// leaseTTL/3.
const leaseTTL = 10 * time.Second

// leaseScript extends or releases a lease only for its owner. KEYS: lock. ARGV: owner, ttl ms
// (0 releases).
var leaseScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if tonumber(ARGV[2]) == 0 then return redis.call('DEL', KEYS[1]) end
return redis.call('PEXPIRE', KEYS[1], ARGV[2])
`)

// leaseSet holds a host's fleet-wide leases (one per bot for its outbox, one per bot with
// webhook delivery) and renews them together: every ttl/3 one pipeline of lease scripts for
// all it holds, not a Redis round trip per lease (1,000 bots made 300 round trips a second),
// and one timer, not a goroutine per lease (a parked goroutine costs a stack).
type leaseSet struct {
	rdb redis.UniversalClient
	ttl time.Duration
	log *slog.Logger

	mu    sync.Mutex
	held  map[*heldLease]struct{}
	timer *time.Timer // set while a renewal is due: while held is not empty
}

// heldLease is a lease the set renews; cancel ends its holder's ctx when it is lost.
type heldLease struct {
	key, owner string
	cancel     context.CancelFunc
}

func newLeaseSet(rdb redis.UniversalClient, ttl time.Duration, log *slog.Logger) *leaseSet {
	return &leaseSet{rdb: rdb, ttl: ttl, log: log, held: make(map[*heldLease]struct{})}
}

// asLeader runs fn while this process holds the fleet-wide lease key (SET NX PX, renewed by
// the set), so one host of a fleet does a job such as delivering a bot's events. fn's ctx
// ends when the lease is lost or ctx ends. asLeader returns when ctx ends.
func (s *leaseSet) asLeader(ctx context.Context, key string, fn func(ctx context.Context)) {
	owner := rand.Text()
	rl := newRetryLog(s.log, "lease")
	retry := backoff.Backoff{Base: 2 * s.ttl / 3, Max: 2 * s.ttl / 3, Jitter: 0.5} // [ttl/3, 2ttl/3]
	for ctx.Err() == nil {
		ok, err := s.rdb.SetNX(ctx, key, owner, s.ttl).Result()
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
		stop := s.hold(key, owner, cancel)
		fn(lctx)
		cancel()
		stop()
		rctx, rcancel := context.WithTimeout(context.WithoutCancel(ctx), redisOpTimeout)
		leaseScript.Run(rctx, s.rdb, []string{key}, owner, 0)
		rcancel()
	}
}

// hold renews the lease key (owned by owner) with the others until stop is called, and
// calls cancel when it is lost.
func (s *leaseSet) hold(key, owner string, cancel context.CancelFunc) (stop func()) {
	l := &heldLease{key: key, owner: owner, cancel: cancel}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.held[l] = struct{}{}
	if s.timer == nil {
		s.timer = time.AfterFunc(s.ttl/3, s.renew)
	}
	return func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		delete(s.held, l)
	}
}

// renew renews every held lease in one pipeline, cancels the holders of those lost (or of
// all, when Redis could not be asked), and schedules the next renewal while any is held.
func (s *leaseSet) renew() {
	s.mu.Lock()
	ls := make([]*heldLease, 0, len(s.held))
	for l := range s.held {
		ls = append(ls, l)
	}
	s.mu.Unlock()
	if len(ls) > 0 {
		for i, err := range s.extend(ls) {
			if err != nil {
				s.log.Warn("lease lost", "key", ls[i].key, "error", err)
				ls[i].cancel()
				s.mu.Lock()
				delete(s.held, ls[i])
				s.mu.Unlock()
			}
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.held) == 0 {
		s.timer = nil
		return
	}
	s.timer.Reset(s.ttl / 3)
}

// errLeaseTaken is a renewal's answer when the lease expired and another owner (or none)
// holds the key.
var errLeaseTaken = errors.New("the lease expired or another host holds it")

// extend extends each lease by ttl in one pipeline (its script loaded first if Redis has
// lost it) and returns, per lease, why it could not be extended.
func (s *leaseSet) extend(ls []*heldLease) []error {
	ctx, cancel := context.WithTimeout(context.Background(), s.ttl/3)
	defer cancel()
	errs := make([]error, len(ls))
	for attempt := 0; ; attempt++ {
		cmds, _ := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for _, l := range ls {
				leaseScript.EvalSha(ctx, p, []string{l.key}, l.owner, s.ttl.Milliseconds())
			}
			return nil
		})
		noScript := false
		for i, c := range cmds {
			n, err := c.(*redis.Cmd).Int()
			switch {
			case err != nil && redis.HasErrorPrefix(err, "NOSCRIPT"):
				noScript = true
				errs[i] = err
			case err != nil:
				errs[i] = err
			case n == 0:
				errs[i] = errLeaseTaken
			default:
				errs[i] = nil
			}
		}
		if !noScript || attempt > 0 {
			return errs
		}
		if err := leaseScript.Load(ctx, s.rdb).Err(); err != nil {
			return errs
		}
	}
}
