package eventlog

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// opTimeout bounds an append, which runs detached from its caller's ctx so that a caller
// leaving does not leave the outcome of a script in flight unknown.
const opTimeout = 5 * time.Second

// watchEvery is how often the watcher looks at the stream (XREAD BLOCK timeout, XINFO).
const watchEvery = time.Second

// luaIDs are the id helpers every script uses. Ids are compared as numbers (ms fit a Lua
// double exactly); ms is kept as a string when an id is written back.
const luaIDs = `
local function split(id)
  local d = string.find(id, '-', 1, true)
  return tonumber(string.sub(id, 1, d - 1)), tonumber(string.sub(id, d + 1))
end
local function le(a, b)
  local am, as = split(a)
  local bm, bs = split(b)
  return am < bm or (am == bm and as <= bs)
end
local function nextid(id)
  local d = string.find(id, '-', 1, true)
  return string.sub(id, 1, d - 1) .. '-' .. (tonumber(string.sub(id, d + 1)) + 1)
end
local function consumed(stream)
  for _, g in ipairs(redis.call('XINFO', 'GROUPS', stream)) do
    local f = {}
    for j = 1, #g, 2 do f[g[j]] = g[j + 1] end
    if f['name'] == '_consumed' then return f['last-delivered-id'] end
  end
  return nil
end
local function lastgen(stream)
  local info = redis.call('XINFO', 'STREAM', stream)
  for j = 1, #info, 2 do
    if info[j] == 'last-generated-id' then return info[j + 1] end
  end
end
`

// appendScript deduplicates and appends in one atomic step, for one or several Append calls
// (a batch: see [Redis.Append]). A Lua script rather than MULTI/EXEC because what it writes
// depends on what it reads (whether each dedup key exists, the consumed mark, the id XADD
// generated), which a transaction cannot branch on without WATCH and retries. A dedup key
// exists if and only if its entry was appended, and it holds that entry's id, so a duplicate
// is answered with the original id.
//
// The calls of a batch are handled one after the other, each exactly as if the script ran
// for it alone at that point: all of a call's records or none, a call that does not fit is
// answered full while a later, smaller one may still fit, a call finds the dedup keys of the
// calls before it (a duplicate across calls is answered with the first call's id).
//
// Ids: XADD * (the server clock, after the stream's last id). If that id is not above floor
// (the highest id this process has seen) the stream was reset and the server's clock is
// behind the ids readers hold, so the entry is added again with the explicit id after floor.
// Once an XADD * answered above floor, every later one does: the check stops.
//
// Room: when the stream would hold more than max entries, consumed entries are trimmed from
// its start, up to max/100 more than needed, so a full log trims once every max/100 appends:
// trimming one entry per append cost an XINFO GROUPS, an XRANGE and an XTRIM in every
// script, and made the XADD itself ten times slower. The length is read once (XLEN) and
// then counted.
//
// Redis does not roll back a script that fails part way, so if an XADD fails (out of
// memory) the entries of that call added before it are deleted and the call answered with
// the error; nothing else of it was written (its dedup keys come last). The calls before it
// stand; the calls after it are tried, each as if alone.
//
// The script defines no function (luaIDs' helpers are inlined where needed, and the floor
// is passed as numbers): Redis spent 6.2 µs in a one-record call with them, 5.7 without.
//
// A call of one record (every Append of one record, alone or in a batch: most calls) takes a
// short path with no Lua table; the general path, for a call of several records or one that
// needs the log trimmed, allocates five per call (what it must remember between checking the
// dedup keys, adding, and writing them). Redis 7.0.15's EVALSHA usec_per_call, before ->
// after, medians of 40 rounds of 2000 script calls, old and new source in shuffled order on
// one redis-server: one Append of one record 8.0 -> 6.5 (p25 6.7 -> 6.1), a batch of two
// 11.4 -> 10.0, of four 19.5 -> 17.1. Where a one-record call's time goes: 1.7 µs is the
// EVALSHA itself (a script that only returns the answer, same KEYS and ARGV), 3.7 the four
// commands GET, XLEN, XADD, SET (a script of just those: 5.4), 0.6 the floor check.
// Measured and not kept, each under 1 µs: the short path only for a script call of one
// record, at the top (the same for one record alone, nothing for batches); returning from it
// without the answer table (0.1); fewer tables in the general path (-0.3); the two paths as
// local functions (a closure each per call: -0.7 where inline is -1.0); redis.call instead of
// redis.pcall (0); SET EX instead of PX (0); SET NX GET after the XADD instead of GET before
// it (-0.25, and a duplicate would cost an XADD and an XDEL); a #!lua shebang (0, and Redis
// would refuse a whole batch up front under maxmemory, duplicates included).
//
// KEYS: stream, then the dedup keys. ARGV: max, ttl ms, floor's ms and seq, the id after
// floor, then per call: its number of records m, then per record: index of its dedup key in
// KEYS (0: none), kind, key, data. Returns per call, in order: 'full'; or 'err' and the
// error message; or 'ok' and per record its id and 1 if a duplicate else 0.
var appendScript = redis.NewScript(appendSrc)

const appendSrc = `
local max, ttl, floorms, floorseq, floornext = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5]
local checkfloor = true
local len
local nargs = #ARGV
local out = {}
local a = 6
while a <= nargs do
  local m = tonumber(ARGV[a])
  local base = a + 1
  a = base + 4 * m
  -- A call of one record (most calls) takes this short path, with no Lua table: answered
  -- here when it is a duplicate or fits without trimming (done), else by the general path
  -- below (which reads its dedup key again: a full log makes room for max/100 records at a
  -- time, so that is rare). XADD and the floor check as in the general path.
  local done = false
  if m == 1 then
    local k = tonumber(ARGV[base])
    local v = k > 0 and redis.call('GET', KEYS[k])
    if v then
      out[#out + 1] = 'ok'
      out[#out + 1] = v
      out[#out + 1] = 1
      done = true
    else
      if not len then len = redis.call('XLEN', KEYS[1]) end
      if len < max then
        local r = redis.pcall('XADD', KEYS[1], '*', 'k', ARGV[base + 1], 'c', ARGV[base + 2], 'd', ARGV[base + 3])
        if checkfloor and type(r) == 'string' then
          local d = string.find(r, '-', 1, true)
          local ms = tonumber(string.sub(r, 1, d - 1))
          if ms < floorms or ms == floorms and tonumber(string.sub(r, d + 1)) <= floorseq then
            redis.call('XDEL', KEYS[1], r)
            r = redis.pcall('XADD', KEYS[1], floornext, 'k', ARGV[base + 1], 'c', ARGV[base + 2], 'd', ARGV[base + 3])
          end
          if type(r) == 'string' then checkfloor = false end
        end
        if type(r) == 'table' and r.err then
          out[#out + 1] = 'err'
          out[#out + 1] = r.err
        else
          len = len + 1
          if k > 0 then redis.call('SET', KEYS[k], r, 'PX', ttl) end
          out[#out + 1] = 'ok'
          out[#out + 1] = r
          out[#out + 1] = 0
        end
        done = true
      end
    end
  end
  if not done then
    -- The general path: check every dedup key, make room for the call's new records, add
    -- them (deleting them again if one XADD fails), then write their dedup keys.
    local ks, ids, dup, first, fresh = {}, {}, {}, {}, 0
    for i = 1, m do
      local k = tonumber(ARGV[base + 4 * (i - 1)])
      ks[i] = k
      dup[i] = 0
      if k > 0 then
        local key = KEYS[k]
        if first[key] then
          dup[i] = first[key]
        else
          local v = redis.call('GET', key)
          if v then dup[i] = -1; ids[i] = v else first[key] = i end
        end
      end
      if dup[i] == 0 then fresh = fresh + 1 end
    end
    local status = 'ok'
    if fresh > 0 then
      if not len then len = redis.call('XLEN', KEYS[1]) end
      local over = len + fresh - max
      if over > 0 then
        local c
        if len > 0 then
          for _, g in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
            local f = {}
            for j = 1, #g, 2 do f[g[j]] = g[j + 1] end
            if f['name'] == '_consumed' then c = f['last-delivered-id'] end
          end
        end
        local room = {}
        if c then room = redis.call('XRANGE', KEYS[1], '-', c, 'COUNT', over + math.floor(max / 100)) end
        if #room < over then
          status = 'full'
        else
          local last = room[#room][1]
          local d = string.find(last, '-', 1, true)
          local after = string.sub(last, 1, d - 1) .. '-' .. (tonumber(string.sub(last, d + 1)) + 1)
          len = len - redis.call('XTRIM', KEYS[1], 'MINID', after)
        end
      end
    end
    if status == 'ok' then
      local added = {}
      for i = 1, m do
        if dup[i] == 0 then
          local f = base + 4 * (i - 1)
          local r = redis.pcall('XADD', KEYS[1], '*', 'k', ARGV[f + 1], 'c', ARGV[f + 2], 'd', ARGV[f + 3])
          if checkfloor and type(r) == 'string' then
            local d = string.find(r, '-', 1, true)
            local ms = tonumber(string.sub(r, 1, d - 1))
            if ms < floorms or ms == floorms and tonumber(string.sub(r, d + 1)) <= floorseq then
              redis.call('XDEL', KEYS[1], r)
              r = redis.pcall('XADD', KEYS[1], floornext, 'k', ARGV[f + 1], 'c', ARGV[f + 2], 'd', ARGV[f + 3])
            end
            if type(r) == 'string' then checkfloor = false end
          end
          if type(r) == 'table' and r.err then
            if #added > 0 then redis.call('XDEL', KEYS[1], unpack(added)) end
            status = r.err
            break
          end
          added[#added + 1] = r
          ids[i] = r
        end
      end
      if status == 'ok' then len = len and len + #added end
    end
    if status == 'ok' then
      out[#out + 1] = 'ok'
      for i = 1, m do
        if dup[i] == 0 then
          if ks[i] > 0 then redis.call('SET', KEYS[ks[i]], ids[i], 'PX', ttl) end
          out[#out + 1] = ids[i]
          out[#out + 1] = 0
        elseif dup[i] == -1 then
          out[#out + 1] = ids[i]
          out[#out + 1] = 1
        else
          out[#out + 1] = ids[dup[i]]
          out[#out + 1] = 1
        end
      end
    elseif status == 'full' then
      out[#out + 1] = 'full'
    else
      out[#out + 1] = 'err'
      out[#out + 1] = status
    end
  end
end
return out
`

// consumedScript raises the consumed mark: the last-delivered id of the group _consumed,
// kept inside the stream key. It never lowers it and never raises it past the stream's last
// id. KEYS: stream. ARGV: id.
var consumedScript = redis.NewScript(luaIDs + `
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local id = ARGV[1]
local last = lastgen(KEYS[1])
if le(last, id) then id = last end
local cur = consumed(KEYS[1])
if not cur then
  redis.call('XGROUP', 'CREATE', KEYS[1], '_consumed', id)
elseif not le(id, cur) then
  redis.call('XGROUP', 'SETID', KEYS[1], '_consumed', id)
end
return 1
`)

// lookScript returns {0} when the stream does not exist, else {last-generated-id,
// entries-added, entries held, entries after the consumed mark}, as one snapshot. KEYS: stream.
var lookScript = redis.NewScript(luaIDs + `
if redis.call('EXISTS', KEYS[1]) == 0 then return {0} end
local info = redis.call('XINFO', 'STREAM', KEYS[1])
local last, added
for j = 1, #info, 2 do
  if info[j] == 'last-generated-id' then last = info[j + 1] end
  if info[j] == 'entries-added' then added = info[j + 1] end
end
local n = redis.call('XLEN', KEYS[1])
local c = consumed(KEYS[1])
if not c then return {last, added or n, n, n} end
local count, start = 0, '(' .. c
while true do
  local r = redis.call('XRANGE', KEYS[1], start, '+', 'COUNT', 1000)
  count = count + #r
  if #r < 1000 then break end
  start = '(' .. r[#r][1]
end
return {last, added or n, n, count}
`)

// lenScript returns {entries held, entries after the consumed mark}. KEYS: stream.
var lenScript = redis.NewScript(luaIDs + `
if redis.call('EXISTS', KEYS[1]) == 0 then return {0, 0} end
local n = redis.call('XLEN', KEYS[1])
local c = consumed(KEYS[1])
if not c then return {n, n} end
local count, start = 0, '(' .. c
while true do
  local r = redis.call('XRANGE', KEYS[1], start, '+', 'COUNT', 1000)
  count = count + #r
  if #r < 1000 then break end
  start = '(' .. r[#r][1]
end
return {n, count}
`)

// Redis is a Log on a Redis stream, shared by every process using the same key. Entries are
// stream entries with fields k (kind), c (key) and d (data); a dedup key per Record.Dedup
// holds its entry's id for DedupTTL; the consumed mark is the last-delivered id of the
// consumer group "_consumed" in the stream. No other key exists, so deleting any single key
// other than the stream only forgets that key's dedup record.
//
// A background watcher, one per Redis client shared by all its logs (see hub), reads what
// any process appends with one XREAD and hands the entries to this process's readers (a
// reader that keeps up sends no command of its own; see tail and Read), and looks at the
// stream every second: when it finds the stream gone or recreated, it logs one line saying
// what was lost and calls OnReset.
type Redis struct {
	rdb    redis.UniversalClient
	stream string
	dedup  string // prefix of dedup keys
	opts   Options

	hub *hub // the watcher of every log of rdb
	// watchLast is the hub's position in the stream: the last id it read (or skipped to);
	// only the hub goroutine changes it, under mu. While the tail is positioned, it is the
	// tail's last(). watchPos is watchLast.String(), for the hub's XREAD.
	watchLast ID
	watchPos  string

	mu sync.Mutex // guards the fields below
	// tail holds the entries the hub read last, for readers that are caught up (see tail).
	tail tail
	// mine is the highest id this process appended while the tail's generation was mineGen:
	// an entry in the stream (unless deleted by hand) that the hub's XREAD is about to return.
	mine    ID
	mineGen uint64
	// looking is set while the watcher looks at the stream; lookSaw collects the ids saw()
	// got meanwhile, lookAppended those this process appended.
	looking      bool
	lookSaw      []ID
	lookAppended []ID
	wake         chan struct{} // closed and replaced when the watcher sees new entries
	// readers is the number of Reads under way; the hub's XREAD names the stream only while
	// one is, or right after it delivered entries (fresh: the reader is about to come back).
	// inRound is set while the hub's current XREAD names the stream (set by the hub).
	readers int
	fresh   bool
	inRound bool
	floor   ID            // the highest id this process has seen in the stream
	groups  map[string]ID // groups this process created or used: the last id they handed out here
	// view is the stream as the watcher last looked at it, updated with the entries this
	// process has seen since (appended, read, watched), so a reset found soon after
	// activity still reports what was lost. Before the first look it holds what this process
	// has seen (nothing: no stream), so a reset before the watcher's first look is reported
	// with the entries this process appended.
	view streamState

	closed chan struct{}

	batchMu    sync.Mutex    // guards the fields below
	batchBusy  bool          // an append script is in Redis
	batchQueue []*appendCall // Appends waiting for the next script call

	// Used by appendBatch only, which runs one batch of the log at a time (the leader's):
	// buffers kept from one batch to the next, and the script's fixed arguments.
	keysBuf          []string
	argsBuf          []any
	addedBuf         []ID
	maxArg, ttlArg   any
	floorArg         ID
	floorArgs        [3]any // floorArg's ms and seq, and the id after it, as strings
	floorArgsPresent bool
}

// appendCall is one Append in a batch: its records, and its answer.
type appendCall struct {
	recs []Record
	out  []Appended
	err  error
	done chan struct{} // closed when out and err are set, or batch is
	// batch, set when done is closed, makes this call the leader of the next batch (it is
	// batch[0]).
	batch []*appendCall
	one   [1]*appendCall // the batch of a call that goes alone (saves an allocation)
}

// maxBatch bounds the calls in one batch, and maxBatchRecords the records (a batch takes at
// least one call, however many records it has).
const (
	maxBatch        = 64
	maxBatchRecords = 256
)

var _ Log = (*Redis)(nil)

// NewRedis returns the log on the stream at key stream, with dedup keys named dedupPrefix +
// Record.Dedup (in Redis Cluster, give both the same hash tag, e.g. "{bot}"), and registers
// it with the watcher of rdb (see hub), which one goroutine runs for all the logs of a
// client. Close unregisters it.
func NewRedis(rdb redis.UniversalClient, stream, dedupPrefix string, opts Options) *Redis {
	l := &Redis{rdb: rdb, stream: stream, dedup: dedupPrefix, opts: opts.withDefaults(),
		wake: make(chan struct{}), groups: map[string]ID{}, watchPos: ID{}.String(),
		closed: make(chan struct{})}
	l.maxArg, l.ttlArg = l.opts.MaxLen, l.opts.DedupTTL.Milliseconds()
	l.hub = register(l)
	return l
}

// saw raises the floor to the highest of ids and counts the ones after the view's last id
// as new entries of the stream.
func (l *Redis) saw(ids ...ID) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.sawLocked(ids...)
}

func (l *Redis) sawLocked(ids ...ID) {
	for _, id := range ids {
		l.floor = maxID(l.floor, id)
		if l.looking {
			l.lookSaw = append(l.lookSaw, id)
		}
		if !l.view.exists || l.view.last.Less(id) {
			l.view.last = id
			l.view.exists = true
			l.view.entriesAdded++
			l.view.held++
			l.view.unconsumed++
		}
	}
}

// delivered takes entries the hub's XREAD returned for the stream (in id order, following
// on from the position the hub gave it): into the tail, and wakes the readers. Entries at or
// before the hub's position for this log (another log on the stream was behind) are skipped.
func (l *Redis) delivered(es []Entry, now int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	last := es[len(es)-1].ID
	if !l.watchLast.Less(last) {
		return
	}
	l.setWatch(last)
	for i := range es {
		l.sawLocked(es[i].ID)
	}
	if l.tail.positioned {
		l.tail.add(es, now)
	}
	l.fresh = true
	close(l.wake)
	l.wake = make(chan struct{})
}

// setWatch sets the hub's position in the stream.
func (l *Redis) setWatch(id ID) {
	if id != l.watchLast || l.watchPos == "" {
		l.watchLast, l.watchPos = id, id.String()
	}
}

// hubFailing marks the tail unusable while the hub's reads fail, and wakes the readers so
// they read (and see the error) themselves.
func (l *Redis) hubFailing() {
	l.mu.Lock()
	l.tail.setFailing(true)
	close(l.wake)
	l.wake = make(chan struct{})
	l.mu.Unlock()
}

// sawAppended is saw for the ids of entries this process appended. It wakes this process's
// readers at once only when they do not wait for the hub (whose XREAD returns the entries as
// soon as Redis added them), and asks a polling hub to poll now.
func (l *Redis) sawAppended(ids ...ID) {
	if len(ids) == 0 {
		return
	}
	l.mu.Lock()
	if l.looking {
		l.lookAppended = append(l.lookAppended, ids...)
	}
	l.sawLocked(ids...)
	high := slices.MaxFunc(ids, ID.Compare)
	if l.mineGen != l.tail.gen || l.mine.Less(high) {
		l.mine, l.mineGen = high, l.tail.gen
	}
	if !l.tail.usable() {
		close(l.wake)
		l.wake = make(chan struct{})
	}
	l.mu.Unlock()
	if l.hub.cluster {
		l.hub.pollNow()
	}
}

func (l *Redis) broadcast() {
	l.mu.Lock()
	close(l.wake)
	l.wake = make(chan struct{})
	l.mu.Unlock()
}

func (l *Redis) wakeCh() <-chan struct{} {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.wake
}

func (l *Redis) isClosed() bool {
	select {
	case <-l.closed:
		return true
	default:
		return false
	}
}

// Append implements Log with one script call: see appendScript. Appends to the log that
// arrive while a script call is in Redis go together in the next one (group commit: the
// first goes at once, no timer): each gets the answer it would have got alone, in the order
// they queued (see appendScript), and every one returns only after Redis has its entries.
// An error of the call itself (Redis down, a script error) fails every Append in it, as it
// would each alone. Once queued, an Append waits for its batch whatever ctx does (at most two
// script calls, each bounded by opTimeout): its records may already be in Redis.
func (l *Redis) Append(ctx context.Context, recs ...Record) ([]Appended, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if l.isClosed() {
		return nil, ErrClosed
	}
	if len(recs) == 0 {
		return nil, nil
	}
	c := &appendCall{recs: recs}
	l.batchMu.Lock()
	if l.batchBusy {
		c.done = make(chan struct{})
		l.batchQueue = append(l.batchQueue, c)
		l.batchMu.Unlock()
		<-c.done
		if c.batch != nil {
			l.lead(ctx, c.batch)
		}
	} else {
		l.batchBusy = true
		l.batchMu.Unlock()
		c.one[0] = c
		l.lead(ctx, c.one[:])
	}
	if c.err == errBatchNotRun {
		return nil, fmt.Errorf("eventlog: append to %s: %w", l.stream, c.err)
	}
	return c.out, c.err
}

// errBatchNotRun answers the Appends of a batch whose leader panicked.
var errBatchNotRun = errors.New("the script call of its batch did not complete (panic); the records may or may not have been appended")

// lead runs batch (led by batch[0], the caller), hands the queue to its first call as the
// next batch, and wakes the rest of batch with their answers: even if running it panicked
// (each then has errBatchNotRun), so that no later Append waits for ever.
func (l *Redis) lead(ctx context.Context, batch []*appendCall) {
	for _, c := range batch {
		c.err = errBatchNotRun
	}
	defer l.handoff(batch)
	l.appendBatch(ctx, batch)
}

// handoff ends batch: the queue goes to its first call as the next batch, and the rest of
// batch wakes with its answers.
func (l *Redis) handoff(batch []*appendCall) {
	l.batchMu.Lock()
	var next *appendCall
	if len(l.batchQueue) > 0 {
		n, recs := 1, len(l.batchQueue[0].recs)
		for n < len(l.batchQueue) && n < maxBatch && recs+len(l.batchQueue[n].recs) <= maxBatchRecords {
			recs += len(l.batchQueue[n].recs)
			n++
		}
		next = l.batchQueue[0]
		next.batch = l.batchQueue[:n:n]
		l.batchQueue = l.batchQueue[n:]
		if len(l.batchQueue) == 0 {
			l.batchQueue = nil // let the backing array go
		}
	} else {
		l.batchBusy = false
	}
	l.batchMu.Unlock()
	if next != nil {
		close(next.done)
	}
	for _, c := range batch[1:] {
		close(c.done)
	}
}

// scriptError is an error appendScript answered for one call (what Redis would have
// returned had the script failed for that call alone).
type scriptError string

func (e scriptError) Error() string { return string(e) }

// RedisError marks it as an error Redis answered, as go-redis does its own.
func (e scriptError) RedisError() {}

// appendBatch runs appendScript for the calls of batch and sets each call's answer.
func (l *Redis) appendBatch(ctx context.Context, batch []*appendCall) {
	l.mu.Lock()
	floor := l.floor
	l.mu.Unlock()
	nrec := 0
	for _, c := range batch {
		nrec += len(c.recs)
	}
	if !l.floorArgsPresent || floor != l.floorArg {
		l.floorArg, l.floorArgsPresent = floor, true
		l.floorArgs = [3]any{strconv.FormatUint(floor.Ms, 10), strconv.FormatUint(floor.Seq, 10), floor.Next().String()}
	}
	keys := append(l.keysBuf[:0], l.stream)
	args := append(slices.Grow(l.argsBuf[:0], 5+len(batch)+4*nrec), l.maxArg, l.ttlArg, l.floorArgs[0], l.floorArgs[1], l.floorArgs[2])
	defer func() {
		// Keep the buffers for the next batch, without what they point to.
		clear(keys)
		clear(args)
		l.keysBuf, l.argsBuf = keys[:0], args[:0]
	}()
	for _, c := range batch {
		args = append(args, len(c.recs))
		for _, r := range c.recs {
			k := 0
			if r.Dedup != "" {
				keys = append(keys, l.dedup+r.Dedup)
				k = len(keys)
			}
			args = append(args, k, r.Kind, r.Key, r.Data)
		}
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), opTimeout)
	defer cancel()
	res, err := appendScript.Run(ctx, l.rdb, keys, args...).Slice()
	if err != nil {
		err = fmt.Errorf("eventlog: append to %s: %w", l.stream, err)
		for _, c := range batch {
			c.out, c.err = nil, err
		}
		return
	}
	added := l.addedBuf[:0]
	p := 0
	for _, c := range batch {
		out, err := l.answer(res, &p, len(c.recs), &added)
		c.out, c.err = out, err
	}
	l.sawAppended(added...)
	l.addedBuf = added[:0]
}

// answer reads the answer of one call of n records from the script's answer res at *p, moves
// *p past it, and appends the ids of the entries it added to *added.
func (l *Redis) answer(res []any, p *int, n int, added *[]ID) ([]Appended, error) {
	next := func() any {
		if *p >= len(res) {
			return nil
		}
		*p++
		return res[*p-1]
	}
	switch status := next(); status {
	case "full":
		return nil, ErrFull
	case "err":
		msg, _ := next().(string)
		return nil, fmt.Errorf("eventlog: append to %s: %w", l.stream, scriptError(msg))
	case "ok":
		if *p+2*n > len(res) {
			*p = len(res) // the rest of the answer cannot be trusted
			return nil, fmt.Errorf("eventlog: append to %s: script answered %d values, too few for a call of %d records", l.stream, len(res), n)
		}
	default:
		*p = len(res)
		return nil, fmt.Errorf("eventlog: append to %s: script answered %v for a call of %d records", l.stream, status, n)
	}
	out := make([]Appended, n)
	for i := range out {
		s, _ := res[*p].(string)
		dup := res[*p+1] == int64(1)
		*p += 2
		id, err := ParseID(s)
		if err != nil && !dup {
			*p = len(res)
			return nil, fmt.Errorf("eventlog: append to %s: script answered id %q", l.stream, s)
		}
		// A duplicate whose dedup key does not hold an id (written by an earlier version)
		// keeps the zero ID.
		out[i] = Appended{ID: id, Duplicate: dup}
		if !dup {
			*added = append(*added, id)
		}
	}
	return out, nil
}

// rangeArg is the exclusive XRANGE start after id.
func rangeArg(id ID) string {
	if id.IsZero() {
		return "-"
	}
	return "(" + id.String()
}

func toEntries(msgs []redis.XMessage) []Entry {
	out := make([]Entry, 0, len(msgs))
	for _, m := range msgs {
		id, err := ParseID(m.ID)
		if err != nil {
			continue
		}
		kind, _ := m.Values["k"].(string)
		key, _ := m.Values["c"].(string)
		data, _ := m.Values["d"].(string)
		out = append(out, Entry{ID: id, Kind: kind, Key: key, Data: []byte(data)})
	}
	return out
}

// lastGenerated returns the stream's last id and whether the stream exists.
func (l *Redis) lastGenerated(ctx context.Context) (ID, bool, error) {
	info, err := l.rdb.XInfoStream(ctx, l.stream).Result()
	if isNoSuchKey(err) {
		return ID{}, false, nil
	}
	if err != nil {
		return ID{}, false, err
	}
	id, err := ParseID(info.LastGeneratedID)
	return id, true, err
}

func isNoSuchKey(err error) bool { return err != nil && strings.Contains(err.Error(), "no such key") }
func isNoGroup(err error) bool   { return err != nil && strings.HasPrefix(err.Error(), "NOGROUP") }

// Read implements Log. A reader at or after the start of the tail (the entries the hub read
// last) takes the entries after its position from it, and waits for the hub when it has them
// all: a reader that keeps up costs no Redis command. A reader behind the tail, or on a
// stream the hub does not watch yet or fails to read, reads with XRANGE; when there is
// nothing after its position it checks the position is not beyond the stream's last id
// (else it reads from the first entry) and waits.
//
// A Read sees what this process appended before it: when the tail ends before an entry this
// process appended, it waits for the hub to read it (at most watchEvery, in case someone
// deleted it) rather than return a short batch.
func (l *Redis) Read(ctx context.Context, after ID, n int) ([]Entry, error) {
	n = max(n, 1)
	// checked: after is not beyond the stream's last id, as XINFO said while the tail's
	// generation was checkedGen.
	checked, checkedGen := false, uint64(0)
	var mineWait *time.Timer // bounds the wait for this process's appends
	defer func() {
		if mineWait != nil {
			mineWait.Stop()
		}
	}()
	waitedMine := false
	// While a Read is under way, the hub's XREAD names the stream; when its current one does
	// not, it is asked to start another.
	l.mu.Lock()
	l.readers++
	in := l.inRound
	l.mu.Unlock()
	defer func() {
		l.mu.Lock()
		l.readers--
		l.mu.Unlock()
	}()
	if !in {
		l.hub.want()
	}
	for {
		if l.isClosed() {
			return nil, ErrClosed
		}
		l.mu.Lock()
		wake, t := l.wake, &l.tail
		if t.usable() {
			last := t.last()
			var mine ID
			if l.mineGen == t.gen {
				mine = l.mine
			}
			switch {
			case !after.Less(t.from) && after.Less(last):
				out := t.read(after, n)
				l.mu.Unlock()
				if len(out) == n || !last.Less(mine) || waitedMine {
					return out, nil
				}
				if mineWait == nil {
					mineWait = time.NewTimer(watchEvery)
				}
				select {
				case <-wake:
				case <-mineWait.C:
					waitedMine = true
				case <-ctx.Done():
					return nil, ctx.Err()
				case <-l.closed:
					return nil, ErrClosed
				}
				continue
			case after == last || last.Less(after) && (!mine.Less(after) || checked && checkedGen == t.gen):
				// Caught up with the hub, or ahead of it at a position the stream reaches.
				l.mu.Unlock()
				if err := l.wait(ctx, wake); err != nil {
					return nil, err
				}
				continue
			}
		}
		gen := t.gen
		l.mu.Unlock()
		msgs, err := l.rdb.XRangeN(ctx, l.stream, rangeArg(after), "+", int64(n)).Result()
		if err != nil {
			return nil, fmt.Errorf("eventlog: read %s: %w", l.stream, err)
		}
		if out := toEntries(msgs); len(out) > 0 {
			l.saw(ids(out)...)
			return out, nil
		}
		last, _, err := l.lastGenerated(ctx)
		if err != nil {
			return nil, fmt.Errorf("eventlog: read %s: %w", l.stream, err)
		}
		if last.Less(after) {
			l.opts.Logger.Debug("reader beyond the event stream's last id; reading from its first entry",
				"stream", l.stream, "position", after.String(), "last", last.String())
			after, checked = ID{}, false
			continue
		}
		checked, checkedGen = true, gen
		if err := l.wait(ctx, wake); err != nil {
			return nil, err
		}
	}
}

// wait waits for wake, ctx or Close.
func (l *Redis) wait(ctx context.Context, wake <-chan struct{}) error {
	select {
	case <-wake:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-l.closed:
		return ErrClosed
	}
}

// Consumed implements Log.
func (l *Redis) Consumed(ctx context.Context, upTo ID) error {
	if err := consumedScript.Run(ctx, l.rdb, []string{l.stream}, upTo.String()).Err(); err != nil {
		return fmt.Errorf("eventlog: mark %s consumed: %w", l.stream, err)
	}
	return nil
}

// ConsumedID implements Log.
func (l *Redis) ConsumedID(ctx context.Context) (ID, error) {
	groups, err := l.rdb.XInfoGroups(ctx, l.stream).Result()
	if isNoSuchKey(err) {
		return ID{}, nil
	}
	if err != nil {
		return ID{}, fmt.Errorf("eventlog: consumed mark of %s: %w", l.stream, err)
	}
	for _, g := range groups {
		if g.Name == consumedGroup {
			return ParseID(g.LastDeliveredID)
		}
	}
	return ID{}, nil
}

// Len implements Log.
func (l *Redis) Len(ctx context.Context) (Length, error) {
	res, err := lenScript.Run(ctx, l.rdb, []string{l.stream}).Int64Slice()
	if err != nil {
		return Length{}, fmt.Errorf("eventlog: length of %s: %w", l.stream, err)
	}
	if len(res) != 2 {
		return Length{}, fmt.Errorf("eventlog: length of %s: script answered %d values", l.stream, len(res))
	}
	return Length{Held: res[0], Unconsumed: res[1]}, nil
}

// CreateGroup implements Log (XGROUP CREATE … MKSTREAM; BUSYGROUP is success).
func (l *Redis) CreateGroup(ctx context.Context, group string, start ID) error {
	if err := CheckName(group); err != nil {
		return err
	}
	err := l.rdb.XGroupCreateMkStream(ctx, l.stream, group, start.String()).Err()
	if err != nil && !strings.HasPrefix(err.Error(), "BUSYGROUP") {
		return fmt.Errorf("eventlog: create group %s on %s: %w", group, l.stream, err)
	}
	l.mu.Lock()
	if _, ok := l.groups[group]; !ok {
		l.groups[group] = start
	}
	l.mu.Unlock()
	return nil
}

// recreate creates again a group this process knows after Redis lost it (the stream was
// reset): from the last id it handed out here if the stream reaches that far, else from the
// stream's start. ErrNoGroup if this process never created the group.
func (l *Redis) recreate(ctx context.Context, group string) error {
	l.mu.Lock()
	pos, ok := l.groups[group]
	l.mu.Unlock()
	if !ok {
		return ErrNoGroup
	}
	last, _, err := l.lastGenerated(ctx)
	if err != nil {
		return fmt.Errorf("eventlog: recreate group %s on %s: %w", group, l.stream, err)
	}
	if last.Less(pos) {
		pos = ID{}
	}
	err = l.rdb.XGroupCreateMkStream(ctx, l.stream, group, pos.String()).Err()
	if err != nil && !strings.HasPrefix(err.Error(), "BUSYGROUP") {
		return fmt.Errorf("eventlog: recreate group %s on %s: %w", group, l.stream, err)
	}
	if err == nil {
		l.opts.Logger.Warn("consumer group recreated: the event stream lost it (reset); its unacknowledged entries are gone",
			"stream", l.stream, "group", group, "from", pos.String())
	}
	return nil
}

func (l *Redis) handed(group string, out []Entry) {
	if len(out) == 0 {
		return
	}
	last := out[len(out)-1].ID
	l.saw(ids(out)...)
	l.mu.Lock()
	if p, ok := l.groups[group]; !ok || p.Less(last) {
		l.groups[group] = last
	}
	l.mu.Unlock()
}

// ReadGroup implements Log: XAUTOCLAIM of entries idle for AckTimeout, else XREADGROUP >;
// a NOGROUP answer for a group this process created recreates it.
func (l *Redis) ReadGroup(ctx context.Context, group, consumer string, n int) ([]Entry, error) {
	if err := CheckName(consumer); err != nil {
		return nil, err
	}
	n = max(n, 1)
	for {
		if l.isClosed() {
			return nil, ErrClosed
		}
		wake := l.wakeCh()
		out, err := l.claim(ctx, group, consumer, l.opts.AckTimeout, n)
		if err == nil && len(out) == 0 {
			var res []redis.XStream
			res, err = l.rdb.XReadGroup(ctx, &redis.XReadGroupArgs{Group: group, Consumer: consumer,
				Streams: []string{l.stream, ">"}, Count: int64(n), Block: -1}).Result()
			if errors.Is(err, redis.Nil) {
				err = nil
			}
			for _, s := range res {
				out = append(out, toEntries(s.Messages)...)
			}
			l.handed(group, out)
		}
		if isNoGroup(err) {
			if err := l.recreate(ctx, group); err != nil {
				return nil, err
			}
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("eventlog: read group %s of %s: %w", group, l.stream, err)
		}
		if len(out) > 0 {
			return out, nil
		}
		t := time.NewTimer(l.opts.claimEvery())
		select {
		case <-wake:
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		case <-l.closed:
			t.Stop()
			return nil, ErrClosed
		}
		t.Stop()
	}
}

// claim runs XAUTOCLAIM over the whole pending list until it has n entries.
func (l *Redis) claim(ctx context.Context, group, consumer string, minIdle time.Duration, n int) ([]Entry, error) {
	var out []Entry
	start := "0-0"
	for len(out) < n {
		msgs, next, err := l.rdb.XAutoClaim(ctx, &redis.XAutoClaimArgs{Stream: l.stream, Group: group,
			Consumer: consumer, MinIdle: minIdle, Start: start, Count: int64(n - len(out))}).Result()
		if err != nil {
			return nil, err
		}
		for _, e := range toEntries(msgs) {
			e.Redelivered = true
			out = append(out, e)
		}
		if next == "0-0" || next == "" {
			break
		}
		start = next
	}
	return out, nil
}

// Ack implements Log.
func (l *Redis) Ack(ctx context.Context, group string, ids ...ID) (int, error) {
	if len(ids) == 0 {
		return 0, nil
	}
	s := make([]string, len(ids))
	for i, id := range ids {
		s[i] = id.String()
	}
	n, err := l.rdb.XAck(ctx, l.stream, group, s...).Result()
	if err != nil {
		return 0, fmt.Errorf("eventlog: ack on %s: %w", l.stream, err)
	}
	return int(n), nil
}

// Claim implements Log.
func (l *Redis) Claim(ctx context.Context, group, consumer string, minIdle time.Duration, n int) ([]Entry, error) {
	if err := CheckName(consumer); err != nil {
		return nil, err
	}
	out, err := l.claim(ctx, group, consumer, minIdle, max(n, 1))
	if isNoGroup(err) {
		return nil, l.recreate(ctx, group) // a group lost with its stream has nothing pending
	}
	if err != nil {
		return nil, fmt.Errorf("eventlog: claim in group %s of %s: %w", group, l.stream, err)
	}
	return out, nil
}

// Pending implements Log.
func (l *Redis) Pending(ctx context.Context, group string) (Pending, error) {
	p, err := l.rdb.XPending(ctx, l.stream, group).Result()
	if isNoGroup(err) {
		if err := l.recreate(ctx, group); err != nil {
			return Pending{}, err
		}
		return Pending{Consumers: map[string]int64{}}, nil
	}
	if err != nil {
		return Pending{}, fmt.Errorf("eventlog: pending of group %s of %s: %w", group, l.stream, err)
	}
	out := Pending{Count: p.Count, Consumers: p.Consumers}
	if out.Consumers == nil {
		out.Consumers = map[string]int64{}
	}
	if p.Count > 0 {
		out.Oldest, _ = ParseID(p.Lower)
	}
	return out, nil
}

// Close implements Log: it unregisters the log from the watcher (which stops with the last
// log of its client); blocked reads return ErrClosed. OnReset is not called once Close has
// returned.
func (l *Redis) Close() error {
	l.mu.Lock()
	if l.isClosed() {
		l.mu.Unlock()
		return nil
	}
	close(l.closed)
	l.mu.Unlock()
	l.hub.unregister(l)
	return nil
}

// streamState is what the watcher saw of the stream at one look.
type streamState struct {
	exists           bool
	entriesAdded     int64
	last             ID
	held, unconsumed int64
}

// resetCause compares two looks at the stream and says why it was reset, or "".
func resetCause(prev, now streamState) string {
	switch {
	case !prev.exists:
		return ""
	case !now.exists:
		return "the stream is gone: Redis restarted empty, FLUSHALL/FLUSHDB, DEL or eviction"
	case now.entriesAdded < prev.entriesAdded || now.last.Less(prev.last):
		return "the stream was recreated with fewer entries than before: Redis restarted empty or failed over to a replica without them, or the key was deleted and written again"
	}
	return ""
}

// ids returns the ids of es.
func ids(es []Entry) []ID {
	out := make([]ID, len(es))
	for i, e := range es {
		out[i] = e.ID
	}
	return out
}

// looked takes the stream's state now (one look of the hub) as the view, and returns the
// reset it shows, if any. Entries this process appended or read while the look was under
// way and after its snapshot are not in it: they are counted, or a reset right after would
// under-report what was lost.
func (l *Redis) looked(now streamState) (Reset, bool) {
	l.mu.Lock()
	l.looking = false
	// When the look found no stream, only entries this process appended since are known to
	// be in it: an entry read meanwhile may have been read before the stream was lost.
	merge := l.lookSaw
	if !now.exists {
		merge = l.lookAppended
	}
	slices.SortFunc(merge, ID.Compare)
	for _, id := range merge {
		if !now.exists || now.last.Less(id) {
			now.exists = true
			now.last = id
			now.entriesAdded++
			now.held++
			now.unconsumed++
		}
	}
	prev, floor := l.view, l.floor
	l.view = now
	t := &l.tail
	t.prune(time.Now().Add(-tailAge).UnixNano())
	changed := t.setFailing(false) // the hub reads the stream again
	cause := resetCause(prev, now)
	if cause == "" {
		if !t.positioned {
			// The hub's first look: its XREAD starts at the stream's end, not at its first
			// entry; readers behind that read with XRANGE. Later looks leave the position
			// to the XREAD, which returns every entry after it: the tail stays unbroken.
			if now.exists {
				l.sawLocked(now.last)
				l.setWatch(maxID(l.watchLast, now.last))
			}
			t.reposition(l.watchLast)
			changed = true
		} else if !l.inRound && now.exists && l.watchLast.Less(now.last) {
			// The hub has not read the stream since nobody reads it here: its position
			// moves to the stream's end, so that the XREAD, when a reader comes, does not
			// start with what was appended while nobody read (readers behind read with
			// XRANGE). No XREAD is under way while the hub looks.
			l.sawLocked(now.last)
			l.setWatch(now.last)
			t.reposition(l.watchLast)
			changed = true
		}
		if changed {
			close(l.wake)
			l.wake = make(chan struct{})
		}
		l.mu.Unlock()
		return Reset{}, false
	}
	l.setWatch(ID{}) // the new stream's ids may all be below the old position
	if now.exists {
		l.sawLocked(now.last)
		l.setWatch(now.last)
	}
	t.reposition(l.watchLast)
	l.mu.Unlock()
	return Reset{Stream: l.stream, Cause: cause, LastID: maxID(floor, prev.last), Held: prev.held, Unconsumed: prev.unconsumed}, true
}

// reportReset logs r and calls OnReset, and wakes the readers.
func (l *Redis) reportReset(r Reset) {
	l.opts.Logger.Warn(r.String())
	if l.opts.OnReset != nil {
		l.opts.OnReset(r)
	}
	l.broadcast()
}

// String names the log for messages.
func (l *Redis) String() string { return "redis stream " + strconv.Quote(l.stream) }
