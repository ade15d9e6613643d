// Package lease grants one holder at a time, across processes, the right to do something
// (run a bot's one long connection): a key in Redis set with NX and a TTL, renewed by its
// holder and released with compare-and-delete, so another process takes over within about
// one TTL of the holder dying.
package lease

import (
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"errors"
	"log/slog"
	"math/rand/v2"
	"time"

	"github.com/redis/go-redis/v9"
)

// Redis is a lease on one key. The zero value is not usable: set Client and Key. Acquire may
// be called again after a hold ends; a Redis is not for concurrent holds by one process.
type Redis struct {
	Client redis.UniversalClient
	Key    string
	// TTL is how long the lease outlives its last renewal. Zero means 5 s; it is renewed
	// every TTL/3, and a holder that cannot renew for TTL/2 gives it up.
	TTL time.Duration
	// Owner names this holder in the key's value. Empty means a random id.
	Owner  string
	Logger *slog.Logger // nil: no logging
}

// renew extends the key only if we still own it; release deletes it only if we own it.
var (
	renewScript   = redis.NewScript(`if redis.call("GET", KEYS[1]) == ARGV[1] then return redis.call("PEXPIRE", KEYS[1], ARGV[2]) else return 0 end`)
	releaseScript = redis.NewScript(`if redis.call("GET", KEYS[1]) == ARGV[1] then return redis.call("DEL", KEYS[1]) else return 0 end`)
)

func (l *Redis) ttl() time.Duration {
	if l.TTL <= 0 {
		return 5 * time.Second
	}
	return l.TTL
}

func (l *Redis) log() *slog.Logger {
	if l.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return l.Logger
}

// Acquire blocks until this process holds the lease or ctx ends, trying every TTL/5 (with
// jitter). It returns a context that is cancelled when the lease is lost (a renewal found
// another owner, or renewals failed for TTL/2) or released, and the release function, which
// deletes the key if it is still ours. The holder must stop its work when held is done.
func (l *Redis) Acquire(ctx context.Context) (held context.Context, release func(), err error) {
	if l.Client == nil || l.Key == "" {
		return nil, nil, errors.New("lease: Client and Key are required")
	}
	owner := l.Owner
	if owner == "" {
		b := make([]byte, 8)
		crand.Read(b)
		owner = hex.EncodeToString(b)
	}
	ttl := l.ttl()
	for {
		ok, err := l.Client.SetNX(ctx, l.Key, owner, ttl).Result()
		if err == nil && ok {
			break
		}
		if err != nil && ctx.Err() == nil {
			l.log().WarnContext(ctx, "lease: acquire failed", "key", l.Key, "err", err)
		}
		wait := ttl/5 + time.Duration(rand.Int64N(int64(ttl/10)+1))
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil, nil, ctx.Err()
		}
	}
	held, lose := context.WithCancel(context.WithoutCancel(ctx))
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		defer lose()
		tick := time.NewTicker(ttl / 3)
		defer tick.Stop()
		lastOK := time.Now()
		for {
			select {
			case <-held.Done():
				return
			case <-tick.C:
			}
			rctx, cancel := context.WithTimeout(held, ttl/3)
			n, err := renewScript.Run(rctx, l.Client, []string{l.Key}, owner, ttl.Milliseconds()).Int()
			cancel()
			switch {
			case err == nil && n == 1:
				lastOK = time.Now()
			case err == nil:
				l.log().Warn("lease: lost to another owner", "key", l.Key)
				return
			case time.Since(lastOK) >= ttl/2:
				l.log().Warn("lease: cannot renew; giving it up", "key", l.Key, "err", err)
				return
			}
		}
	}()
	release = func() {
		lose()
		<-stopped
		rctx, cancel := context.WithTimeout(context.Background(), ttl)
		defer cancel()
		releaseScript.Run(rctx, l.Client, []string{l.Key}, owner)
	}
	return held, release, nil
}
