package eventlog

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/seed-a64d9e1f/chatwire/internal/backoff"
)

// pollEvery is how often a hub that cannot block on all its streams in one XREAD (Redis
// Cluster, Ring) polls them.
const pollEvery = 100 * time.Millisecond

// lookHooks holds, for tests, a func(phase string) per client that the hub calls at each
// phase of a look: "start" (before it), "snapshot" (the streams were looked at, nothing was
// handed to the logs yet) and "done".
var lookHooks sync.Map

func (h *hub) hook(phase string) {
	if f, ok := lookHooks.Load(h.rdb); ok {
		f.(func(string))(phase)
	}
}

// hubs holds the watcher hub of each Redis client that has open Logs.
var hubs = struct {
	mu sync.Mutex
	m  map[redis.UniversalClient]*hub
}{m: map[redis.UniversalClient]*hub{}}

// A hub watches every Redis Log of one client with one goroutine, so that watching costs
// one connection per process however many logs (bots) it has, not one per log: a blocking
// XREAD per log held every connection of the client's pool once a host had more logs than
// the pool has connections, and appends, reads and leases waited for a connection.
//
// On one server (redis.Client, Sentinel failover included) the hub runs one XREAD BLOCK, on a
// connection of its own, over the streams that have a Read under way (or that it just
// delivered to: their readers are about to read again), which returns as soon as any of them
// gets an entry; a reader coming to a stream it does not name ends it early (CLIENT UNBLOCK,
// see want). Naming only those keeps a round's cost in Redis to what the events need: an
// XREAD's cost grows with the streams it names, and a host may have 1,000 bots. Keys of different hash
// slots cannot be in one command in Redis Cluster, and a Ring shards by key, so there the
// hub groups the streams by hash slot and polls them every pollEvery with one pipeline of
// non-blocking XREADs, one per slot (go-redis sends each node its part of a pipeline on one
// connection): a blocking XREAD per slot would again hold a connection per bot, since each
// bot's keys have a hash tag of their own.
//
// Every watchEvery it looks at every stream (lookScript) in one pipeline, read or not, and
// reports resets; a stream nobody reads has its position moved to its end then (looked).
type hub struct {
	rdb     redis.UniversalClient
	cluster bool // group by slot and poll, see above

	mu   sync.Mutex // guards logs and lookSoon
	logs map[*Redis]struct{}
	// lookSoon asks for a look before the next read: a log was added, and its readers read
	// with XRANGE until the hub's first look at its stream gives the hub a position there.
	lookSoon bool
	// kick wakes a polling hub (cluster) early: this process appended, or a reader came to a
	// stream the current poll does not name; and a hub with no stream to read.
	kick chan struct{}
	// conn is the connection of the hub's XREAD on one server, and connID its CLIENT ID, so
	// that a reader coming to a stream the current XREAD does not name can end it early
	// (CLIENT UNBLOCK). Only the hub goroutine uses them.
	conn   *redis.Conn
	connID int64
	// Under mu: wanted is set when a reader came to a stream the round being prepared or
	// under way does not name; blockID is the connection's id while its XREAD is under way,
	// round counts the XREADs, unblocking is set while one goroutine ends the current one.
	wanted     bool
	blockID    int64
	round      uint64
	unblocking bool
	roundDone  chan struct{}  // closed when the XREAD of round returned
	seen       map[string]int // streamArgs' scratch space; only the hub goroutine uses it
	// proc is held while the hub hands a round's results to its logs, so that once
	// unregister returns the hub no longer touches that log.
	proc sync.Mutex

	stop context.CancelFunc
	done chan struct{}

	// Outage state; only the hub goroutine uses it.
	failing        bool
	partial        int             // streams whose last look failed while others succeeded
	retry          backoff.Backoff // waits between failed rounds: 100 ms doubling to 5 s, half jittered
	outageStart    time.Time
	outageFailures int
}

// register adds l to the hub of its client, starting the hub if l is its first log.
func register(l *Redis) *hub {
	hubs.mu.Lock()
	defer hubs.mu.Unlock()
	h := hubs.m[l.rdb]
	if h == nil {
		ctx, cancel := context.WithCancel(context.Background())
		h = &hub{rdb: l.rdb, logs: map[*Redis]struct{}{}, stop: cancel, done: make(chan struct{}), kick: make(chan struct{}, 1), seen: map[string]int{},
			retry: backoff.Backoff{Base: 100 * time.Millisecond, Max: 5 * time.Second, Jitter: 0.5}}
		switch l.rdb.(type) {
		case *redis.ClusterClient, *redis.Ring:
			h.cluster = true
		}
		hubs.m[l.rdb] = h
		h.logs[l] = struct{}{}
		go h.run(ctx)
		return h
	}
	h.mu.Lock()
	h.logs[l] = struct{}{}
	h.lookSoon = true
	h.mu.Unlock()
	return h
}

// pollNow makes a polling hub poll without waiting out pollEvery.
func (h *hub) pollNow() {
	select {
	case h.kick <- struct{}{}:
	default:
	}
}

// unregister removes l from h, stopping h when l was its last log. Once it returns, the hub
// does not call l's OnReset.
func (h *hub) unregister(l *Redis) {
	hubs.mu.Lock()
	h.proc.Lock()
	h.mu.Lock()
	delete(h.logs, l)
	last := len(h.logs) == 0
	h.mu.Unlock()
	h.proc.Unlock()
	if last && hubs.m[h.rdb] == h {
		delete(hubs.m, h.rdb)
	}
	hubs.mu.Unlock()
	if last {
		h.stop()
		<-h.done
	}
}

// snapshot returns the logs, and whether one of them was added since the last snapshot.
func (h *hub) snapshot() ([]*Redis, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]*Redis, 0, len(h.logs))
	for l := range h.logs {
		out = append(out, l)
	}
	added := h.lookSoon
	h.lookSoon = false
	return out, added
}

// registered reports whether l is still watched; call with h.proc held.
func (h *hub) registered(l *Redis) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	_, ok := h.logs[l]
	return ok
}

func (h *hub) logger(logs []*Redis) *slog.Logger {
	if len(logs) > 0 {
		return logs[0].opts.Logger
	}
	return slog.Default()
}

func (h *hub) run(ctx context.Context) {
	defer close(h.done)
	defer h.closeConn()
	lookNext := time.Time{}
	for ctx.Err() == nil {
		logs, added := h.snapshot()
		if len(logs) == 0 {
			return
		}
		if added || time.Now().After(lookNext) {
			if err := h.lookAll(ctx, logs); err != nil {
				if !h.failed(ctx, logs, err) {
					return
				}
				continue
			}
			h.recovered(logs)
			lookNext = time.Now().Add(watchEvery)
		}
		h.mu.Lock()
		h.wanted = false
		h.mu.Unlock()
		round := h.roundLogs(logs)
		if _, ok := h.rdb.(*redis.Client); !ok && !h.cluster {
			round = logs // no connection of its own to end an XREAD early: name every stream
		}
		var err error
		switch {
		case h.cluster:
			err = h.poll(ctx, round)
		case len(round) == 0:
			h.idle(ctx, lookNext)
		default:
			err = h.block(ctx, round)
		}
		if err != nil {
			if ctx.Err() != nil || !h.failed(ctx, logs, err) {
				return
			}
			lookNext = time.Time{}
		}
	}
}

// lookAll looks at every stream in one pipeline and hands each log its state. It fails only
// when no look succeeded (Redis unreachable); a stream whose look failed alone is looked at
// again next time.
func (h *hub) lookAll(ctx context.Context, logs []*Redis) error {
	h.hook("start")
	defer h.hook("done")
	for _, l := range logs {
		l.mu.Lock()
		l.looking, l.lookSaw, l.lookAppended = true, l.lookSaw[:0], l.lookAppended[:0]
		l.mu.Unlock()
	}
	cmds := make([]*redis.Cmd, len(logs))
	// Errors are per command (below).
	h.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, l := range logs {
			cmds[i] = lookScript.EvalSha(ctx, p, []string{l.stream})
		}
		return nil
	})
	if anyNoScript(cmds) {
		// Redis lost its script cache (restart, failover, SCRIPT FLUSH): send the script.
		h.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for i, l := range logs {
				if redis.HasErrorPrefix(cmds[i].Err(), "NOSCRIPT") {
					cmds[i] = lookScript.Eval(ctx, p, []string{l.stream})
				}
			}
			return nil
		})
	}
	h.hook("snapshot")
	ok := 0
	var lastErr error
	h.proc.Lock()
	defer h.proc.Unlock()
	for i, l := range logs {
		if !h.registered(l) {
			continue
		}
		now, err := parseLook(l.stream, cmds[i])
		if err != nil {
			l.mu.Lock()
			l.looking = false
			l.mu.Unlock()
			lastErr = err
			continue
		}
		ok++
		if r, reset := l.looked(now); reset {
			l.reportReset(r)
		}
	}
	if ok == 0 && lastErr != nil {
		return lastErr
	}
	// Logged when the number of streams that cannot be looked at changes, not every look.
	if failed := len(logs) - ok; failed != h.partial && lastErr != nil {
		h.logger(logs).Warn("event stream look failed for some streams", "failed", failed, "streams", len(logs), "error", lastErr)
		h.partial = failed
	} else if lastErr == nil {
		h.partial = 0
	}
	return nil
}

func anyNoScript(cmds []*redis.Cmd) bool {
	for _, c := range cmds {
		if c != nil && redis.HasErrorPrefix(c.Err(), "NOSCRIPT") {
			return true
		}
	}
	return false
}

// parseLook reads lookScript's answer.
func parseLook(stream string, cmd *redis.Cmd) (streamState, error) {
	res, err := cmd.Slice()
	if err != nil {
		return streamState{}, err
	}
	if len(res) == 1 {
		return streamState{}, nil // no stream
	}
	if len(res) != 4 {
		return streamState{}, fmt.Errorf("eventlog: look at %s: script answered %d values", stream, len(res))
	}
	lastS, _ := res[0].(string)
	last, err := ParseID(lastS)
	if err != nil {
		return streamState{}, err
	}
	added, _ := res[1].(int64)
	held, _ := res[2].(int64)
	unconsumed, _ := res[3].(int64)
	return streamState{exists: true, entriesAdded: added, last: last, held: held, unconsumed: unconsumed}, nil
}

// streamArgs returns the XREAD STREAMS arguments for logs (each stream once, from the lowest
// position of the logs on it). seen is scratch space, kept from call to call.
func streamArgs(logs []*Redis, seen map[string]int) []string {
	clear(seen)
	args := make([]string, 0, 2*len(logs))
	lows := make([]*Redis, 0, len(logs))
	for _, l := range logs {
		if i, ok := seen[l.stream]; ok {
			if l.watchLast.Less(lows[i].watchLast) {
				lows[i] = l
			}
			continue
		}
		seen[l.stream] = len(lows)
		lows = append(lows, l)
		args = append(args, l.stream)
	}
	for _, l := range lows {
		args = append(args, l.watchPos)
	}
	return args
}

// roundLogs returns the logs whose streams the next XREAD names: those with a Read under
// way, and those it delivered to last time (their readers are about to read again). A round's
// cost in Redis grows with the streams it names, and a host has logs (bots) nobody reads
// (every stream is looked at every watchEvery regardless, for resets: lookAll).
func (h *hub) roundLogs(logs []*Redis) []*Redis {
	out := make([]*Redis, 0, 8)
	for _, l := range logs {
		l.mu.Lock()
		in := l.readers > 0 || l.fresh
		l.fresh, l.inRound = false, in
		l.mu.Unlock()
		if in {
			out = append(out, l)
		}
	}
	return out
}

// want asks for an XREAD that names a stream a reader came to: the current one may not.
func (h *hub) want() {
	h.pollNow()
	h.mu.Lock()
	defer h.mu.Unlock()
	h.wanted = true
	if h.blockID == 0 || h.unblocking {
		return // the hub prepares its next round and sees wanted, or unblock runs and does
	}
	h.unblocking = true
	go h.unblock()
}

// unblock ends the hub's XREAD early (CLIENT UNBLOCK) while a reader wants a round it does
// not name: the one under way when want was called, and any later one that a reader wanted
// meanwhile (their want left it to this goroutine). CLIENT UNBLOCK may reach Redis before
// the XREAD it is meant for (it is sent on another connection): it is sent again until it
// ended that XREAD or the XREAD returned by itself.
func (h *hub) unblock() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*watchEvery)
	defer cancel()
	var ended uint64 // the round a CLIENT UNBLOCK ended
	for {
		h.mu.Lock()
		id, round, done := h.blockID, h.round, h.roundDone
		if id == 0 || !h.wanted || ctx.Err() != nil {
			h.unblocking = false
			h.mu.Unlock()
			return
		}
		h.mu.Unlock()
		if round == ended {
			select { // the hub is about to see its XREAD ended
			case <-done:
			case <-ctx.Done():
			}
			continue
		}
		n, err := h.rdb.ClientUnblock(ctx, id).Result()
		if err != nil {
			h.mu.Lock()
			h.unblocking = false
			h.mu.Unlock()
			return
		}
		if n == 1 {
			ended = round
			continue
		}
		// Not blocked yet (or it has just returned): try again shortly.
		t := time.NewTimer(50 * time.Microsecond)
		select {
		case <-t.C:
		case <-done:
			t.Stop()
		}
	}
}

// idle waits, when no stream has a reader, for one (want) or the next look.
func (h *hub) idle(ctx context.Context, lookNext time.Time) {
	h.mu.Lock()
	wanted := h.wanted
	h.mu.Unlock()
	if wanted {
		return
	}
	t := time.NewTimer(time.Until(lookNext))
	defer t.Stop()
	select {
	case <-t.C:
	case <-h.kick:
	case <-ctx.Done():
	}
}

func (h *hub) closeConn() {
	if h.conn != nil {
		h.conn.Close()
		h.conn, h.connID = nil, 0
	}
}

// block waits up to watchEvery in one XREAD over the streams of logs. On one server
// (redis.Client) it runs on a connection of its own whose XREAD a reader ends early (want);
// on another single-server client it names every stream (see run).
func (h *hub) block(ctx context.Context, logs []*Redis) error {
	if c, ok := h.rdb.(*redis.Client); ok && h.conn == nil {
		conn := c.Conn()
		id, err := conn.ClientID(ctx).Result()
		if err != nil {
			conn.Close()
			return err
		}
		h.conn, h.connID = conn, id
	}
	args := streamArgs(logs, h.seen)
	h.mu.Lock()
	if h.wanted {
		// A reader came while the round was prepared: prepare it again.
		h.mu.Unlock()
		return nil
	}
	h.round++
	h.blockID = h.connID
	h.roundDone = make(chan struct{})
	h.mu.Unlock()
	var res []redis.XStream
	var err error
	if h.conn != nil {
		res, err = h.conn.XRead(ctx, &redis.XReadArgs{Streams: args, Count: 100, Block: watchEvery}).Result()
	} else {
		res, err = h.rdb.XRead(ctx, &redis.XReadArgs{Streams: args, Count: 100, Block: watchEvery}).Result()
	}
	h.mu.Lock()
	h.blockID = 0
	close(h.roundDone)
	h.mu.Unlock()
	if errors.Is(err, redis.Nil) {
		return nil
	}
	if err != nil {
		h.closeConn() // a new one next time (after a failover, say)
		return err
	}
	h.deliver(logs, res)
	return nil
}

// poll reads every slot group's streams without blocking, in one pipeline, and waits
// pollEvery when nothing came.
func (h *hub) poll(ctx context.Context, logs []*Redis) error {
	bySlot := map[int][]*Redis{}
	for _, l := range logs {
		s := slot(l.stream)
		bySlot[s] = append(bySlot[s], l)
	}
	cmds := make([]*redis.XStreamSliceCmd, 0, len(bySlot))
	groups := make([][]*Redis, 0, len(bySlot))
	_, err := h.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, group := range bySlot {
			cmds = append(cmds, p.XRead(ctx, &redis.XReadArgs{Streams: streamArgs(group, h.seen), Count: 100, Block: -1}))
			groups = append(groups, group)
		}
		return nil
	})
	var res []redis.XStream
	var failedLogs []*Redis
	for i, c := range cmds {
		r, err := c.Result()
		switch {
		case err == nil:
			res = append(res, r...)
		case errors.Is(err, redis.Nil):
		default:
			failedLogs = append(failedLogs, groups[i]...)
		}
	}
	if len(failedLogs) == len(logs) && err != nil {
		return err
	}
	// The readers of a slot that failed read themselves until the next look succeeds.
	for _, l := range failedLogs {
		l.hubFailing()
	}
	h.deliver(logs, res)
	if len(res) == 0 {
		t := time.NewTimer(pollEvery)
		defer t.Stop()
		select {
		case <-t.C:
		case <-h.kick:
		case <-ctx.Done():
		}
	}
	return nil
}

// deliver hands what XREAD returned to the logs on those streams and wakes their readers.
func (h *hub) deliver(logs []*Redis, res []redis.XStream) {
	if len(res) == 0 {
		return
	}
	got := make(map[string][]Entry, len(res))
	for _, s := range res {
		got[s.Stream] = append(got[s.Stream], toEntries(s.Messages)...)
	}
	now := time.Now().UnixNano()
	h.proc.Lock()
	defer h.proc.Unlock()
	for _, l := range logs {
		es := got[l.stream]
		if len(es) == 0 || !h.registered(l) {
			continue
		}
		l.delivered(es, now)
	}
}

// failed logs a failing Redis once per outage and waits (jittered, growing to 5 s); false if
// ctx ended. Readers are woken so they see the error themselves.
func (h *hub) failed(ctx context.Context, logs []*Redis, err error) bool {
	if ctx.Err() != nil {
		return false
	}
	if !h.failing {
		h.logger(logs).Warn("event stream unreachable; retrying", "stream", streamsName(logs), "streams", len(logs), "error", err)
		h.failing = true
		h.outageStart, h.outageFailures = time.Now(), 0
	}
	h.outageFailures++
	for _, l := range logs {
		l.hubFailing()
	}
	return backoff.Sleep(ctx, h.retry.Next()) == nil
}

func (h *hub) recovered(logs []*Redis) {
	if !h.failing {
		return
	}
	h.logger(logs).Info("event stream reachable again", "stream", streamsName(logs), "streams", len(logs),
		"failures", h.outageFailures, "took_ms", time.Since(h.outageStart).Milliseconds())
	h.failing = false
	h.retry.Reset()
}

// streamsName names the streams of logs for a log line: the stream, or the first and a count.
func streamsName(logs []*Redis) string {
	switch len(logs) {
	case 0:
		return ""
	case 1:
		return logs[0].stream
	}
	return fmt.Sprintf("%s and %d more", logs[0].stream, len(logs)-1)
}

// slot returns the Redis Cluster hash slot of key: CRC16 (XMODEM) of the key's hash tag (the
// part between the first { and the next }, when not empty) or of the whole key, mod 16384.
func slot(key string) int {
	if i := strings.IndexByte(key, '{'); i >= 0 {
		if j := strings.IndexByte(key[i+1:], '}'); j > 0 {
			key = key[i+1 : i+1+j]
		}
	}
	var crc uint16
	for k := 0; k < len(key); k++ {
		crc ^= uint16(key[k]) << 8
		for range 8 {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
	}
	return int(crc) % 16384
}
