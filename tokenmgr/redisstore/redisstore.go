// Package redisstore is a [tokenmgr.Store] on Redis (go-redis v9) that lets a fleet of
// processes share tokens: one upstream fetch per refresh across the fleet under a lease lock,
// conditional writes by generation, and invalidations broadcast over pub/sub. When Redis is
// unreachable, refreshes fall back to fetching in the process, and sharing resumes by itself.
// Entries can be sealed with AES-256-GCM; a host without the key never overwrites a sealed
// entry, it logs the misconfiguration and refreshes by itself.
package redisstore

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"golang.org/x/sync/semaphore"

	"github.com/seed-a64d9e1f/chatwire/internal/backoff"
	"github.com/seed-a64d9e1f/chatwire/tokenmgr"
)

// probeInterval is how often Refresh tries Redis while it is unavailable; between tries it
// fetches in the process at once instead of waiting for Redis to fail again.
const probeInterval = time.Second

// ErrUnavailable is returned (wrapped) by Load and Invalidate while Redis is unavailable and
// was last tried less than a second ago.
var ErrUnavailable = errors.New("redisstore: redis unavailable")

// Options configure a [Store]. The zero value is ready to use.
type Options struct {
	// KeyPrefix starts every Redis key and the pub/sub channel of the Store. Stores that share
	// tokens must use the same prefix. An entry lives at <prefix>{<key>}, its lock at
	// <prefix>{<key>}:lock (one hash slot in Cluster), and changes are published on
	// <prefix>events. Empty means "chatwire:tok:".
	KeyPrefix string
	// LockTTL is the lease of the fleet-wide lock a process holds while it fetches. The holder
	// extends it every LockTTL/3, so LockTTL only bounds how long others wait after a holder
	// crashed or stalled; a stalled holder can never overwrite a newer entry. Zero means 10 s;
	// less than 10 ms counts as 10 ms.
	LockTTL time.Duration
	// PollInterval is how often a process waiting for another one's fetch re-reads Redis in
	// case the publish was lost, jittered to [½, 1½)×. Zero means 200 ms.
	PollInterval time.Duration
	// Timeout bounds each Redis call the Store makes. A call that fails or runs out of time
	// makes Refresh fetch in the process instead: a client's own retries and dial attempts
	// (about 1.7 s with go-redis defaults against a dead server) do not delay a refresh by more
	// than this. Zero means 1 second.
	Timeout time.Duration
	// Retain is how long Redis keeps an entry after its token expired, as garbage collection
	// of keys nobody uses any more; it is never a refresh margin. Entries holding State (a
	// refresh token) and tokens without expiry get no TTL. Zero means 24 hours; negative
	// means no TTL at all.
	Retain time.Duration
	// EncryptionKey, if set, must be 32 bytes: entries are sealed with AES-256-GCM, bound to
	// their key and generation, and entries stored in the clear are refused (read as absent and
	// replaced at the next refresh) unless AcceptPlaintext is set. If nil, entries are stored
	// in the clear (JSON).
	//
	// A Store never overwrites, nor invalidates, an entry sealed with a key it does not have
	// (EncryptionKey or PreviousKeys; any key, for a Store without one): it logs one Error line
	// per key ("stored token for <key> is encrypted with a key this host does not have"),
	// counts the reads in Stats.Unreadable, and refreshes that key in the process, as during an
	// outage (Stats.LocalRefreshes), until the stored entry is readable again. Hosts with the
	// key keep sharing undisturbed.
	EncryptionKey []byte
	// PreviousKeys are more 32-byte keys accepted for reading, so the key can be rotated:
	// entries are rewritten with EncryptionKey at their next refresh. Requires EncryptionKey.
	// To rotate without any host refreshing on its own, first add the new key here on every
	// host, then make it the EncryptionKey (the old one in PreviousKeys), then drop the old one.
	PreviousKeys [][]byte
	// AcceptPlaintext, with EncryptionKey, reads entries stored in the clear (by hosts that do
	// not have the key yet) instead of refusing them; entries are still written sealed. It is
	// meant for turning encryption on host by host: the token and source state (a refresh
	// token) in the clear entry are used, not thrown away and fetched again. Turn it off once
	// every host has the key, since while it is on anyone who can write to Redis can plant a
	// token. It has no effect without EncryptionKey.
	AcceptPlaintext bool
	// SharedStateOnly, if true, makes a refresh that redeems source state (a rotating refresh
	// token) fail with [ErrUnavailable] and [tokenmgr.ErrTemporary] while Redis is unavailable,
	// instead of fetching in the process: hosts never redeem the same state twice, at the cost
	// of tokens expiring if the outage outlasts them (the Manager keeps serving a valid token
	// and retries with backoff). Use it for platforms that revoke a refresh token family on
	// reuse. If false, every refresh falls back to fetching in the process.
	SharedStateOnly bool
	// Logger receives a Warn line when Redis becomes unavailable (once per outage), an Info
	// line when it is back, Warn lines for unreadable entries, and an Error line per key whose
	// entry is sealed with a key this Store does not have. It never receives a token, state or
	// key material, only [tokenmgr.Fingerprint]s. If nil, nothing is logged.
	Logger *slog.Logger
}

// Stats are a Store's counters since [New], meant to be exported as metrics: Available is a
// gauge, every other field only grows (a Prometheus counter).
type Stats struct {
	// Available is false from a failed Redis call until a call succeeds.
	Available bool
	// Outages counts the times Redis became unavailable; each one is logged once, as a warning.
	Outages uint64
	// Errors counts failed Redis calls, not counting calls whose ctx was done.
	Errors uint64
	// LocalRefreshes counts upstream fetches made in this process without the fleet lock: Redis
	// was unavailable, or the stored entry is sealed with a key this Store does not have.
	LocalRefreshes uint64
	// Fetches counts upstream fetches made here while holding the fleet lock.
	Fetches uint64
	// Shared counts refreshes answered with an entry another process (or another Manager in this
	// process) fetched: no upstream fetch here.
	Shared uint64
	// Waits counts refreshes that found another process fetching and waited for it.
	Waits uint64
	// PeerFailures counts refreshes that returned the failure of another process's fetch instead
	// of calling the upstream themselves.
	PeerFailures uint64
	// Discarded counts fetched entries not stored because a newer one was stored meanwhile (the
	// holder's lease ran out).
	Discarded uint64
	// WriteBacks counts entries fetched during an outage and stored once Redis answered.
	WriteBacks uint64
	// Unreadable counts reads of stored entries that could not be decoded: sealed with a key
	// this Store does not have (left alone; see [Options.EncryptionKey]), stored in the clear
	// while encryption is on, or damaged. The last two are fetched again and replaced.
	Unreadable uint64
}

// Store is a [tokenmgr.Store] and [tokenmgr.Notifier] on Redis. Its methods are safe for
// concurrent use. Create it with [New] and Close it when done; it does not close the client.
//
// Refresh reads the entry; if it is no newer than the caller's, it takes the key's lock
// (SET NX PX with a random owner id), re-reads, fetches, writes with a Lua script only if the
// generation did not change meanwhile, publishes the change and releases the lock with a
// compare-and-delete script. Processes that find the lock taken wait for the publish, re-reading
// at PollInterval in case it is lost, until their ctx is done. If the holder's fetch fails, the
// release publishes that too, and the waiting processes return an error of the same kind
// ([tokenmgr.ErrTemporary] or [tokenmgr.ErrCredentials]) instead of calling the failing
// upstream one after another; when the holder's error carried the platform's code, a hint or a
// Retry-After, the waiters' error is a [*tokenmgr.PlatformError] with them (never the error's
// other text). A fetch that failed because the holder's own ctx was canceled (its Manager
// closed) is released plainly: a waiter takes the lock and fetches. If the holder dies, the
// others take over when its lease ends.
//
// If Redis fails, Refresh fetches in the process from the last entry it saw (so source state
// carries over), gives the result the generation max(last seen, caller's)+1, and writes it back
// when Redis answers again unless a newer entry was stored meanwhile. If Redis lost its data in a
// restart, the next write continues from the highest generation the process knows, so Managers
// still holding older tokens take the new one instead of fetching their own. Without Redis there
// is no fleet lock: hosts that refresh during an outage each fetch (and may each redeem the
// same source state once); when Redis is back, the first entry written back wins, the others
// are dropped with an Info line, and their Managers move to it at their next refresh.
//
// An entry is a Redis hash with the fields gen (decimal), tok (token, expiry, issue time) and
// st (state, absent if none). With an EncryptionKey, tok and st are sealed; gen and the id of
// the sealing key stay readable so the scripts can compare them: an entry sealed with a key the
// Store lacks is never replaced by it (see [Options.EncryptionKey]).
type Store struct {
	client  redis.UniversalClient
	opts    Options // defaults resolved
	codec   *codec
	log     *slog.Logger
	channel string

	mu        sync.Mutex // guards slots, every slot's local, dirty, watchers and waiters, and downSince
	slots     map[string]*slot
	downSince time.Time

	down     atomic.Bool
	lastFail atomic.Int64 // unix ns of the last failed Redis call
	stats    struct {
		outages, errors, localRefreshes, fetches, shared, waits, peerFailures, discarded, writeBacks, unreadable atomic.Uint64
	}

	psMu sync.Mutex    // guards ps
	ps   *redis.PubSub // the current subscription, closed by Close to end a blocking read

	ctx       context.Context // the subscriber's; canceled by Close
	cancel    context.CancelFunc
	done      chan struct{} // closed when the subscriber returned
	closeOnce sync.Once
}

// slot is what the Store keeps in this process for one key.
type slot struct {
	lock     *semaphore.Weighted // of size 1: held while a Refresh of the key runs here
	local    tokenmgr.Entry      // the newest entry seen or fetched here
	dirty    bool                // local was fetched without Redis and is not stored yet
	foreign  bool                // the stored entry is sealed with a key we lack: local is our own (fetchHere)
	watchers map[int]func(tokenmgr.Change)
	nextID   int
	waiters  map[chan wakeup]struct{} // Refresh calls waiting for another process's fetch
}

// wakeup is what wakes a Refresh waiting for another process's fetch: a message about its key.
type wakeup struct {
	kind string   // "w", "i", "r", "f" (see pubsub.go), or "" after a resync
	fail *failure // kind "f": what the holder's fetch failed with
}

var (
	_ tokenmgr.Store    = (*Store)(nil)
	_ tokenmgr.Notifier = (*Store)(nil)
)

// New returns a Store on client, which may be a single node, Sentinel or Cluster client. It
// starts one pub/sub subscription, which reconnects by itself; Close stops it. New fails only
// on a nil client or an encryption key of the wrong size.
func New(client redis.UniversalClient, opts Options) (*Store, error) {
	if client == nil {
		return nil, errors.New("redisstore: nil client")
	}
	c, err := newCodec(opts.EncryptionKey, opts.PreviousKeys, opts.AcceptPlaintext)
	if err != nil {
		return nil, err
	}
	if opts.KeyPrefix == "" {
		opts.KeyPrefix = "chatwire:tok:"
	}
	if opts.LockTTL <= 0 {
		opts.LockTTL = 10 * time.Second
	}
	opts.LockTTL = max(opts.LockTTL, 10*time.Millisecond)
	if opts.PollInterval <= 0 {
		opts.PollInterval = 200 * time.Millisecond
	}
	if opts.Retain == 0 {
		opts.Retain = 24 * time.Hour
	}
	if opts.Timeout <= 0 {
		opts.Timeout = time.Second
	}
	s := &Store{
		client:  client,
		opts:    opts,
		codec:   c,
		log:     opts.Logger,
		channel: opts.KeyPrefix + "events",
		slots:   make(map[string]*slot),
		done:    make(chan struct{}),
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	go s.subscribe()
	return s, nil
}

// Close stops the subscription and waits for it to end. Watchers get no more changes. Close
// does not close the client. It returns nil.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.cancel()
		s.psMu.Lock()
		if s.ps != nil {
			_ = s.ps.Close()
		}
		s.psMu.Unlock()
		<-s.done
	})
	return nil
}

// Stats returns the Store's counters.
func (s *Store) Stats() Stats {
	c := &s.stats
	return Stats{
		Available:      !s.down.Load(),
		Outages:        c.outages.Load(),
		Errors:         c.errors.Load(),
		LocalRefreshes: c.localRefreshes.Load(),
		Fetches:        c.fetches.Load(),
		Shared:         c.shared.Load(),
		Waits:          c.waits.Load(),
		PeerFailures:   c.peerFailures.Load(),
		Discarded:      c.discarded.Load(),
		WriteBacks:     c.writeBacks.Load(),
		Unreadable:     c.unreadable.Load(),
	}
}

func (s *Store) valueKey(key string) string { return s.opts.KeyPrefix + "{" + key + "}" }
func (s *Store) lockKey(key string) string  { return s.opts.KeyPrefix + "{" + key + "}:lock" }

func (s *Store) slot(key string) *slot {
	s.mu.Lock()
	defer s.mu.Unlock()
	sl := s.slots[key]
	if sl == nil {
		sl = &slot{
			lock:     semaphore.NewWeighted(1),
			watchers: make(map[int]func(tokenmgr.Change)),
			waiters:  make(map[chan wakeup]struct{}),
		}
		s.slots[key] = sl
	}
	return sl
}

// Load returns the entry stored for key. An entry that cannot be decrypted reads as its
// generation alone (no token, no state).
func (s *Store) Load(ctx context.Context, key string) (tokenmgr.Entry, error) {
	if key == "" {
		return tokenmgr.Entry{}, errors.New("redisstore: empty key")
	}
	if s.skip() {
		return tokenmgr.Entry{}, fmt.Errorf("redisstore: load %s: %w", key, ErrUnavailable)
	}
	sl := s.slot(key)
	if err := s.writeBack(ctx, key, sl); err != nil {
		return tokenmgr.Entry{}, fmt.Errorf("redisstore: load %s: %w", key, err)
	}
	e, _, err := s.load(ctx, key, sl)
	if err != nil {
		s.fail(ctx, "load", err)
		return tokenmgr.Entry{}, fmt.Errorf("redisstore: load %s: %w", key, err)
	}
	return e, nil
}

// Refresh implements [tokenmgr.Store.Refresh]; see [Store] for the protocol.
func (s *Store) Refresh(ctx context.Context, key string, have uint64, fetch tokenmgr.FetchFunc) (tokenmgr.Entry, bool, error) {
	if key == "" {
		return tokenmgr.Entry{}, false, errors.New("redisstore: empty key")
	}
	sl := s.slot(key)
	if err := sl.lock.Acquire(ctx, 1); err != nil { // one Refresh of a key at a time in this process
		return tokenmgr.Entry{}, false, fmt.Errorf("redisstore: refresh %s: %w", key, err)
	}
	defer sl.lock.Release(1)

	if s.skip() {
		return s.fetchLocal(ctx, key, sl, have, fetch, "", nil)
	}
	if err := s.writeBack(ctx, key, sl); err != nil {
		return s.fetchLocal(ctx, key, sl, have, fetch, "write back", err)
	}
	e, foreign, err := s.load(ctx, key, sl)
	if err != nil {
		return s.fetchLocal(ctx, key, sl, have, fetch, "load", err)
	}
	if foreign {
		return s.fetchHere(ctx, key, sl, have, e.Gen, fetch, true)
	}
	if e.Gen > have {
		return s.sharedEntry(e)
	}

	wake := s.addWaiter(sl)
	defer s.removeWaiter(sl, wake)
	owner := newOwner()
	lk := s.lockKey(key)
	poll := pollBackoff(s.opts.PollInterval)
	for waited := false; ; waited = true {
		lctx, cancel := context.WithTimeout(ctx, s.opts.Timeout)
		got, err := s.client.SetNX(lctx, lk, owner, s.opts.LockTTL).Result()
		cancel()
		if err != nil {
			return s.fetchLocal(ctx, key, sl, have, fetch, "lock", err)
		}
		if got {
			break
		}
		if !waited {
			s.stats.waits.Add(1)
		}
		t := time.NewTimer(poll.Next())
		select {
		case w := <-wake:
			if w.kind == "f" {
				// The holder's fetch failed: share its outcome rather than try at once, so a
				// failing upstream gets one call per round, not one per process.
				t.Stop()
				s.stats.peerFailures.Add(1)
				return tokenmgr.Entry{}, false, w.fail.err(key)
			}
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return tokenmgr.Entry{}, false, fmt.Errorf("redisstore: waiting for another process to refresh %s: %w", key, ctx.Err())
		}
		t.Stop()
		if e, foreign, err = s.load(ctx, key, sl); err != nil {
			return s.fetchLocal(ctx, key, sl, have, fetch, "load", err)
		}
		if foreign {
			return s.fetchHere(ctx, key, sl, have, e.Gen, fetch, true)
		}
		if e.Gen > have {
			return s.sharedEntry(e)
		}
	}
	released := "r 0 " + key // what the release publishes: the lock is free
	release := s.hold(lk, owner)
	defer func() {
		if release != nil {
			release(released)
		}
	}()

	if e, foreign, err = s.load(ctx, key, sl); err != nil { // re-read under the lock
		return s.fetchLocal(ctx, key, sl, have, fetch, "load", err)
	}
	if foreign { // not ours to refresh: free the lock for the hosts that have the key
		release(released)
		release = nil
		return s.fetchHere(ctx, key, sl, have, e.Gen, fetch, true)
	}
	if e.Gen > have {
		return s.sharedEntry(e)
	}
	base := e
	if base.Gen == 0 { // Redis lost the entry (a restart without persistence): go on from ours
		s.mu.Lock()
		if sl.local.Gen > 0 {
			base = sl.local
		}
		s.mu.Unlock()
	}
	n, err := fetch(ctx, base)
	if err != nil {
		// Tell the waiting processes how the fetch failed, so they back off as this one does
		// instead of calling the failing upstream in turn. But if it failed because this
		// process's caller gave up or shut down, the upstream may be fine: the plain release
		// lets a waiter take the lock and fetch.
		if !errors.Is(ctx.Err(), context.Canceled) {
			released = failureMessage(key, err)
		}
		return tokenmgr.Entry{}, false, err
	}
	s.stats.fetches.Add(1)
	n.Gen = max(base.Gen, have) + 1

	wctx := context.WithoutCancel(ctx) // a fetched token is stored even if the caller left
	res, err := s.write(wctx, key, "eq", e.Gen, n)
	if err != nil {
		// The token is fetched but cannot be shared: use it, and write it back later.
		s.fail(wctx, "write", err)
		s.keep(sl, n, false)
		return n, true, nil
	}
	if res != written {
		// Our lease ran out and someone stored a newer entry: theirs wins, if we can read it.
		cur, foreign, err := s.load(wctx, key, sl)
		if err == nil && foreign {
			s.keep(sl, n, true)
			return n, true, nil
		}
		s.log.LogAttrs(ctx, slog.LevelWarn, "redisstore: discarded a fetched token: a newer one was stored meanwhile",
			slog.String("key", key), slog.String("fp", tokenmgr.Fingerprint(n.Token.Value)), slog.Uint64("gen", cur.Gen))
		if err != nil || cur.Gen <= have {
			s.fail(wctx, "load", err)
			s.keep(sl, n, false)
			return n, true, nil
		}
		s.stats.discarded.Add(1)
		return s.sharedEntry(cur)
	}
	s.remember(sl, n)
	return n, true, nil
}

// Invalidate implements [tokenmgr.Store.Invalidate] with a compare-and-invalidate script, and
// publishes the invalidation to every Store sharing the Redis.
func (s *Store) Invalidate(ctx context.Context, key string, gen uint64) error {
	if key == "" {
		return errors.New("redisstore: empty key")
	}
	sl := s.slot(key)
	g := strconv.FormatUint(gen, 10)
	s.mu.Lock()
	var fns []func(tokenmgr.Change)
	if sl.local.Gen == gen && sl.local.Token.Value != "" {
		sl.local.Token = tokenmgr.Token{}
		if sl.dirty || sl.foreign { // only this process holds that entry: tell its watchers here
			fns = watchersOf(sl)
		}
	}
	s.mu.Unlock()
	notify(fns, tokenmgr.Change{Gen: gen, Invalidated: true})

	if s.skip() {
		return fmt.Errorf("redisstore: invalidate %s: %w", key, ErrUnavailable)
	}
	ictx, cancel := context.WithTimeout(ctx, s.opts.Timeout)
	defer cancel()
	// The script leaves an entry sealed with a key this Store lacks alone: the token
	// invalidated here is then this process's own, dropped above.
	err := invalidateScript.Run(ictx, s.client, []string{s.valueKey(key)}, g, s.channel, "i "+g+" "+key, s.codec.openKeyIDs).Err()
	if err != nil {
		s.fail(ctx, "invalidate", err)
		return fmt.Errorf("redisstore: invalidate %s: %w", key, err)
	}
	s.up(ctx)
	return nil
}

// Watch implements [tokenmgr.Notifier]: fn is called for every write and invalidation of key
// published by any Store with the same KeyPrefix on this Redis (this one included), and for
// entries fetched here while Redis is unavailable. After the subscription reconnects, fn gets
// the stored generation, since changes may have been missed meanwhile.
func (s *Store) Watch(key string, fn func(tokenmgr.Change)) (stop func()) {
	sl := s.slot(key)
	s.mu.Lock()
	id := sl.nextID
	sl.nextID++
	sl.watchers[id] = fn
	s.mu.Unlock()
	return func() {
		s.mu.Lock()
		delete(sl.watchers, id)
		s.mu.Unlock()
	}
}

// load reads and decodes the entry of key and remembers it. foreign reports that the entry is
// sealed with a key this Store lacks: e then holds its Gen alone, and the slot keeps the entry
// this process fetched for itself (see fetchHere). The first such read of a key, and the
// first readable one after it, are logged.
func (s *Store) load(ctx context.Context, key string, sl *slot) (e tokenmgr.Entry, foreign bool, err error) {
	rctx, cancel := context.WithTimeout(ctx, s.opts.Timeout)
	defer cancel()
	h, err := s.client.HGetAll(rctx, s.valueKey(key)).Result()
	if err != nil {
		return tokenmgr.Entry{}, false, err
	}
	s.up(ctx)
	e, bad := s.codec.entry(key, h)
	if bad != nil {
		s.stats.unreadable.Add(1)
	}
	foreign = errors.Is(bad, errForeign)
	s.mu.Lock()
	was := sl.foreign
	sl.foreign = foreign
	s.mu.Unlock()
	switch {
	case foreign && !was:
		s.log.LogAttrs(ctx, slog.LevelError, "redisstore: stored token for "+key+" is encrypted with a key this host does not have: set the same encryption key on every host",
			slog.String("key", key), slog.Uint64("gen", e.Gen),
			slog.String("effect", "this host fetches its own tokens for the key and leaves the stored one alone"))
	case !foreign && was && bad == nil:
		s.log.LogAttrs(ctx, slog.LevelInfo, "redisstore: stored token for "+key+" is readable again: sharing it",
			slog.String("key", key), slog.Uint64("gen", e.Gen))
	case bad != nil && !foreign:
		s.log.LogAttrs(ctx, slog.LevelWarn, "redisstore: ignoring an unreadable entry; it will be fetched again",
			slog.String("key", key), slog.Uint64("gen", e.Gen), slog.String("error", bad.Error()))
	}
	if !foreign {
		s.remember(sl, e)
	}
	return e, foreign, nil
}

// writeResult is what the write script did; its values are the script's return values.
type writeResult int

const (
	writeStale   writeResult = 0 // the generation condition failed
	written      writeResult = 1
	writeForeign writeResult = 2 // the stored entry is sealed with a key this Store lacks
)

// write stores e with the write script in mode "eq" (stored gen == expect) or "lt" (stored gen
// < e.Gen), unless the stored entry is sealed with a key this Store lacks, and reports what it
// did.
func (s *Store) write(ctx context.Context, key, mode string, expect uint64, e tokenmgr.Entry) (writeResult, error) {
	tok, st, err := s.codec.fields(key, e)
	if err != nil {
		return writeStale, err
	}
	var ttl int64
	if len(e.State) == 0 && !e.Token.ExpiresAt.IsZero() && s.opts.Retain > 0 {
		ttl = max(time.Until(e.Token.ExpiresAt)+s.opts.Retain, time.Second).Milliseconds()
	}
	g := strconv.FormatUint(e.Gen, 10)
	wctx, cancel := context.WithTimeout(ctx, s.opts.Timeout)
	defer cancel()
	n, err := writeScript.Run(wctx, s.client, []string{s.valueKey(key)},
		mode, strconv.FormatUint(expect, 10), g, tok, st, ttl, s.channel, "w "+g+" "+key, s.codec.openKeyIDs).Int()
	if err != nil {
		return writeStale, err
	}
	s.up(ctx)
	return writeResult(n), nil
}

// hold keeps the lock lk extended while a fetch runs; the returned func stops that and
// releases the lock if owner still holds it, publishing msg.
func (s *Store) hold(lk, owner string) (release func(msg string)) {
	stop := make(chan struct{})
	var wg sync.WaitGroup
	lease := s.opts.LockTTL.Milliseconds()
	wg.Go(func() {
		t := time.NewTicker(s.opts.LockTTL / 3)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
			}
			ctx, cancel := context.WithTimeout(context.Background(), s.opts.LockTTL/3)
			n, err := extendScript.Run(ctx, s.client, []string{lk}, owner, lease).Int()
			cancel()
			if err == nil && n == 0 {
				return // lost the lock: the conditional write decides
			}
		}
	})
	return func(msg string) {
		close(stop)
		wg.Wait()
		ctx, cancel := context.WithTimeout(context.Background(), s.opts.Timeout)
		defer cancel()
		_ = releaseScript.Run(ctx, s.client, []string{lk}, owner, s.channel, msg).Err()
	}
}

// fetchLocal is Refresh without Redis, after Redis failed with cause.
func (s *Store) fetchLocal(ctx context.Context, key string, sl *slot, have uint64, fetch tokenmgr.FetchFunc, op string, cause error) (tokenmgr.Entry, bool, error) {
	if ctx.Err() != nil { // the caller gave up: not an outage
		return tokenmgr.Entry{}, false, fmt.Errorf("redisstore: refresh %s: %w", key, ctx.Err())
	}
	s.fail(ctx, op, cause)
	return s.fetchHere(ctx, key, sl, have, 0, fetch, false)
}

// fetchHere fetches in the process, never under the fleet lock, and makes the entry fetched
// this process's own (keep), shared by the Store's Managers. Without foreign, Redis is
// unavailable (fetchLocal) and the entry is written back later. With foreign, the stored
// entry, of generation stored, is sealed with a key this Store lacks: the entry is never
// written to Redis, so the hosts that have the key keep sharing theirs, and the source state
// it redeems is this process's own from then on.
func (s *Store) fetchHere(ctx context.Context, key string, sl *slot, have, stored uint64, fetch tokenmgr.FetchFunc, foreign bool) (tokenmgr.Entry, bool, error) {
	s.mu.Lock()
	prev := sl.local
	s.mu.Unlock()
	if prev.Gen > have {
		return s.sharedEntry(prev) // another Manager here fetched it, or it was read before
	}
	if s.opts.SharedStateOnly && len(prev.State) > 0 {
		if foreign {
			return tokenmgr.Entry{}, false, fmt.Errorf("redisstore: not refreshing %s in this process, it redeems source state: the stored token is encrypted with a key this host does not have (%w)", key, tokenmgr.ErrTemporary)
		}
		return tokenmgr.Entry{}, false, fmt.Errorf("redisstore: not refreshing %s without redis, it redeems source state: %w (%w)", key, ErrUnavailable, tokenmgr.ErrTemporary)
	}
	n, err := fetch(ctx, prev)
	if err != nil {
		return tokenmgr.Entry{}, false, err
	}
	n.Gen = max(prev.Gen, have, stored) + 1
	s.stats.localRefreshes.Add(1)
	msg := "redisstore: fetched a token without redis"
	if foreign {
		msg = "redisstore: fetched a token in this process: the stored one is encrypted with a key this host does not have"
	}
	s.log.LogAttrs(ctx, slog.LevelDebug, msg,
		slog.String("key", key), slog.Uint64("gen", n.Gen), slog.String("fp", tokenmgr.Fingerprint(n.Token.Value)))
	s.keep(sl, n, foreign)
	return n, true, nil
}

// keep makes n, which is not stored in Redis, this process's entry of the key and tells the
// key's watchers here. Without foreign, n is written back once Redis is reachable (dirty);
// with foreign, it was fetched while the stored entry is sealed with a key this Store lacks,
// and is never written.
func (s *Store) keep(sl *slot, n tokenmgr.Entry, foreign bool) {
	s.mu.Lock()
	sl.local = n
	if foreign {
		sl.dirty, sl.foreign = false, true
	} else {
		sl.dirty = true
	}
	fns := watchersOf(sl)
	s.mu.Unlock()
	notify(fns, tokenmgr.Change{Gen: n.Gen})
}

// remember records e, read from or written to Redis, as the newest entry seen, unless a newer
// one fetched here waits to be written back, or Redis lost the entry (Gen 0): the local copy
// then keeps the state for the next fetch.
func (s *Store) remember(sl *slot, e tokenmgr.Entry) {
	if e.Gen == 0 {
		return
	}
	s.mu.Lock()
	if !sl.dirty || e.Gen >= sl.local.Gen {
		sl.local, sl.dirty = e, false
	}
	s.mu.Unlock()
}

// writeBack stores the entry fetched here during an outage, unless Redis holds a newer one.
// It returns an error only if Redis failed.
func (s *Store) writeBack(ctx context.Context, key string, sl *slot) error {
	s.mu.Lock()
	e, dirty := sl.local, sl.dirty
	s.mu.Unlock()
	if !dirty {
		return nil
	}
	res, err := s.write(ctx, key, "lt", 0, e)
	if err != nil {
		s.fail(ctx, "write back", err)
		return err
	}
	s.mu.Lock()
	if sl.dirty && sl.local.Gen == e.Gen {
		sl.dirty = false
	}
	s.mu.Unlock()
	switch res {
	case written:
		s.stats.writeBacks.Add(1)
		s.log.LogAttrs(ctx, slog.LevelInfo, "redisstore: stored a token fetched while redis was unavailable",
			slog.String("key", key), slog.Uint64("gen", e.Gen), slog.String("fp", tokenmgr.Fingerprint(e.Token.Value)))
	case writeForeign: // the load that follows logs why
		s.log.LogAttrs(ctx, slog.LevelInfo, "redisstore: kept a token fetched while redis was unavailable in this process: the stored one is encrypted with a key this host does not have",
			slog.String("key", key), slog.Uint64("gen", e.Gen), slog.String("fp", tokenmgr.Fingerprint(e.Token.Value)))
	default:
		s.log.LogAttrs(ctx, slog.LevelInfo, "redisstore: dropped a token fetched while redis was unavailable: a newer one is stored",
			slog.String("key", key), slog.Uint64("gen", e.Gen), slog.String("fp", tokenmgr.Fingerprint(e.Token.Value)))
	}
	return nil
}

// fail records that Redis failed; the first failure of an outage is logged. Errors of a ctx
// that is done are the caller's, not Redis's.
func (s *Store) fail(ctx context.Context, op string, err error) {
	if err == nil || ctx.Err() != nil {
		return
	}
	s.lastFail.Store(time.Now().UnixNano())
	s.stats.errors.Add(1)
	if s.down.CompareAndSwap(false, true) {
		s.stats.outages.Add(1)
		s.mu.Lock()
		s.downSince = time.Now()
		s.mu.Unlock()
		s.log.LogAttrs(ctx, slog.LevelWarn, "redisstore: redis unavailable: tokens are refreshed in each process until it is back",
			slog.String("op", op), slog.String("error", err.Error()))
	}
}

// skip reports whether Redis is unavailable and was tried less than probeInterval ago.
func (s *Store) skip() bool {
	return s.down.Load() && time.Since(time.Unix(0, s.lastFail.Load())) < probeInterval
}

// up records that Redis answered.
func (s *Store) up(ctx context.Context) {
	if !s.down.Load() || !s.down.CompareAndSwap(true, false) {
		return
	}
	s.mu.Lock()
	since := s.downSince
	s.mu.Unlock()
	s.log.LogAttrs(ctx, slog.LevelInfo, "redisstore: redis available again: sharing tokens",
		slog.Duration("outage", time.Since(since).Round(time.Millisecond)),
		slog.Uint64("local_refreshes", s.stats.localRefreshes.Load()))
}

// sharedEntry returns e, which another process or Manager fetched, as Refresh's result.
func (s *Store) sharedEntry(e tokenmgr.Entry) (tokenmgr.Entry, bool, error) {
	s.stats.shared.Add(1)
	return e, false, nil
}

func (s *Store) addWaiter(sl *slot) chan wakeup {
	ch := make(chan wakeup, 1)
	s.mu.Lock()
	sl.waiters[ch] = struct{}{}
	s.mu.Unlock()
	return ch
}

func (s *Store) removeWaiter(sl *slot, ch chan wakeup) {
	s.mu.Lock()
	delete(sl.waiters, ch)
	s.mu.Unlock()
}

// wakeLocked wakes the Refresh calls waiting on sl with w. A waiter that has a wake-up pending
// keeps it, unless w is a failure, which replaces it so that it is not lost. It never blocks:
// s.mu must be held, and the waiter may be taking the pending wake-up at this very moment.
func wakeLocked(sl *slot, w wakeup) {
	for ch := range sl.waiters {
		select {
		case ch <- w:
			continue
		default:
		}
		if w.kind != "f" {
			continue
		}
		// Every send happens under s.mu, so once the pending value is gone (taken here or by
		// the waiter) the send below succeeds; neither step waits.
		select {
		case <-ch:
		default:
		}
		select {
		case ch <- w:
		default:
		}
	}
}

func watchersOf(sl *slot) []func(tokenmgr.Change) {
	fns := make([]func(tokenmgr.Change), 0, len(sl.watchers))
	for _, fn := range sl.watchers {
		fns = append(fns, fn)
	}
	return fns
}

func notify(fns []func(tokenmgr.Change), c tokenmgr.Change) {
	for _, fn := range fns {
		fn(c)
	}
}

func newOwner() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// pollBackoff returns the waits between a lock waiter's polls: d each time, spread over
// [d/2, 3d/2].
func pollBackoff(d time.Duration) backoff.Backoff {
	return backoff.Backoff{Base: d * 3 / 2, Max: d * 3 / 2, Jitter: 2.0 / 3}
}
