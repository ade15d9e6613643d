// Package idempotency runs a request that carries an Idempotency-Key once: the same key
// within the retention (24 h) gets the first answer and never runs again, in one process
// ([NewMemory]) or across a fleet ([NewRedis]). The same key with another request is a
// conflict ([ErrConflict]).
//
// The rule for an attempt whose holder died. The first request for a key claims it with a
// pending record and a lease that its [Keeper] renews while the work runs. Concurrent
// duplicates wait for the answer. If the holder stops (a host SIGKILLed mid-send), its lease
// lapses, but the work may already have reached the platform, so it is never repeated
// blindly: the next request with that key gets an [*AbandonedError] (HTTP 409: "outcome
// unknown, check and send with a new key"), unless the caller's [Request.Retake] says a
// repeat is harmless — for WeCom with enable_duplicate_check, a repeat within
// duplicate_check_interval of the first attempt is accepted by WeCom but not shown twice —
// in which case exactly one waiter takes the key over and runs the work again.
package idempotency

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"time"
)

// Defaults of [Options].
const (
	DefaultRetention = 24 * time.Hour
	DefaultLease     = 30 * time.Second
)

var (
	// ErrConflict means the key was first used with a different request (another body or
	// bot): nothing was run. The host answers 409.
	ErrConflict = errors.New("idempotency: key already used with a different request")
	// ErrInvalidKey means the key is empty, longer than [MaxKeyLen] or not printable ASCII.
	ErrInvalidKey = errors.New("idempotency: invalid key")
)

// MaxKeyLen is the longest key accepted.
const MaxKeyLen = 255

// AbandonedError is returned for a key whose first attempt started at Started and never
// finished (its holder stopped): the work may or may not have reached the platform, and it
// is not run again under this key. errors.Is(err, ErrConflict) holds.
type AbandonedError struct {
	Started time.Time
}

func (e *AbandonedError) Error() string {
	return fmt.Sprintf("idempotency: an earlier request with this key started at %s and never finished (its host stopped); "+
		"it may or may not have been delivered, and it is not sent again under this key: check, and send with a new key if it is missing",
		e.Started.UTC().Format(time.RFC3339))
}

// Is makes an AbandonedError match ErrConflict.
func (e *AbandonedError) Is(target error) bool { return target == ErrConflict }

// Answer is what a request answered, stored and replayed for its key.
type Answer struct {
	Status int               `json:"status"`
	Header map[string]string `json:"header,omitempty"` // headers to send again, e.g. Retry-After
	Body   []byte            `json:"body"`
}

// Request names one idempotent request.
type Request struct {
	// Key is the client's Idempotency-Key (checked with [CheckKey]), scoped by the caller:
	// the host prefixes the bot's name and "/".
	Key string
	// Fingerprint identifies the request's content (the host uses the SHA-256 of the bot and
	// the canonical JSON of the message); the same key with another fingerprint is a
	// conflict.
	Fingerprint [32]byte
	// Retake, if not nil, reports whether an attempt that started at started and was
	// abandoned by its holder may be run again because the platform would not show a repeat
	// twice. nil means never: such a key answers [*AbandonedError].
	Retake func(started time.Time) bool
}

// Options tune a [Keeper]. The zero value is ready to use.
type Options struct {
	// Retention is how long a key is remembered after its first request. Zero means 24 h.
	Retention time.Duration
	// Lease is how long a claim lives without renewal; the Keeper renews it every Lease/3
	// while the work runs, so it lapses only when the holder stops. Zero means 30 s.
	Lease time.Duration
	// Logger receives warnings (a lost lease). nil: no logging.
	Logger *slog.Logger
}

// Keeper runs requests once per key over a [Store]. It is safe for concurrent use; several
// Keepers (one per host) may share one Store backend (one Redis).
type Keeper struct {
	store Store
	opts  Options
	log   *slog.Logger

	// test hooks; nil in production
	onBusy   func(key string) // a duplicate found the key pending and waits
	onExtend func(key string) // the holder renewed its lease
}

// New returns a Keeper over store.
func New(store Store, opts Options) *Keeper {
	if opts.Retention <= 0 {
		opts.Retention = DefaultRetention
	}
	if opts.Lease <= 0 {
		opts.Lease = DefaultLease
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Keeper{store: store, opts: opts, log: log}
}

// CheckKey reports whether key is usable: 1 to [MaxKeyLen] printable ASCII characters.
func CheckKey(key string) error {
	if key == "" || len(key) > MaxKeyLen {
		return fmt.Errorf("%w: Idempotency-Key must have 1 to %d characters", ErrInvalidKey, MaxKeyLen)
	}
	for i := 0; i < len(key); i++ {
		if c := key[i]; c < 0x20 || c > 0x7e {
			return fmt.Errorf("%w: Idempotency-Key must be printable ASCII", ErrInvalidKey)
		}
	}
	return nil
}

// Work is the request's work. keep false means nothing happened that a repeat could
// duplicate (the request was refused before reaching the platform, or the platform
// throttled it): the key is released so a retry with it runs again, and the answer is not
// stored. keep true stores the answer for the key's retention.
type Work func(ctx context.Context) (ans Answer, keep bool)

// Do runs work once for req.Key and returns its answer, or the stored answer of an earlier
// request with that key (replayed true). A concurrent request with the same key waits for
// the first to finish and gets its answer. work runs with ctx; the caller detaches it from
// the client's connection if the work must finish when the client leaves. Errors:
// [ErrInvalidKey], [ErrConflict], [*AbandonedError], ctx's error while waiting, or the
// Store's error (the work has not run).
func (k *Keeper) Do(ctx context.Context, req Request, work Work) (ans Answer, replayed bool, err error) {
	if req.Key == "" {
		return Answer{}, false, fmt.Errorf("%w: empty", ErrInvalidKey)
	}
	owner := rand.Text()
	fp := hex.EncodeToString(req.Fingerprint[:])
	wait := newPoll()
	for {
		st, err := k.store.claim(ctx, req.Key, fp, owner, time.Now(), k.opts.Lease, k.opts.Retention)
		if err != nil {
			return Answer{}, false, err
		}
		switch st.state {
		case stateClaimed:
			return k.run(ctx, req.Key, owner, work), false, nil
		case stateConflict:
			return Answer{}, false, ErrConflict
		case stateDone:
			return st.answer, true, nil
		case stateAbandoned:
			if req.Retake == nil || !req.Retake(st.started) {
				return Answer{}, false, &AbandonedError{Started: st.started}
			}
			ok, err := k.store.retake(ctx, req.Key, st.owner, owner, k.opts.Lease)
			if err != nil {
				return Answer{}, false, err
			}
			if ok {
				k.log.Warn("idempotency: taking over an abandoned request (the platform drops a repeat)", "started", st.started)
				return k.run(ctx, req.Key, owner, work), false, nil
			}
			// another waiter took it over: wait for its answer
		case stateBusy:
			if k.onBusy != nil {
				k.onBusy(req.Key)
			}
		}
		if err := k.store.wait(ctx, req.Key, wait); err != nil {
			return Answer{}, false, err
		}
	}
}

// run runs work holding the claim, renewing its lease, and stores or releases the answer.
// Storing uses a context detached from ctx: the answer must be kept once the work ran.
func (k *Keeper) run(ctx context.Context, key, owner string, work Work) Answer {
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(k.opts.Lease / 3)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				ok, err := k.store.extend(context.WithoutCancel(ctx), key, owner, k.opts.Lease)
				if err != nil {
					k.log.Warn("idempotency: lease not renewed", "error", err)
				} else if !ok {
					k.log.Warn("idempotency: lease lost: another request took the key over")
				}
				if k.onExtend != nil {
					k.onExtend(key)
				}
			}
		}
	}()
	ans, keep := work(ctx)
	close(stop)
	<-done
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if keep {
		ok, err := k.store.finish(sctx, key, owner, ans)
		switch {
		case err != nil:
			k.log.Error("idempotency: answer not stored; a retry with this key will find it abandoned", "error", err)
		case !ok:
			k.log.Warn("idempotency: answer not stored: the key was taken over or expired")
		}
	} else if err := k.store.release(sctx, key, owner); err != nil {
		k.log.Warn("idempotency: key not released", "error", err)
	}
	return ans
}

// poll is a waiter's backoff between looks at a pending key: 5 ms doubling to 200 ms.
type poll struct{ next time.Duration }

func newPoll() *poll { return &poll{next: 5 * time.Millisecond} }

func (p *poll) step() time.Duration {
	d := p.next
	p.next = min(2*p.next, 200*time.Millisecond)
	return d
}

// sleep waits d or until ctx is done.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
