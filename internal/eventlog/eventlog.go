// Package eventlog is a bot's event log: an append-only sequence of entries with ids from the
// engine, deduplication of appends, broadcast readers that resume from a position, and
// consumer groups whose members compete for entries and acknowledge them. It has three
// implementations passing one test suite: [Memory] for one process, [File] (Memory with a
// journal file, surviving a restart) for one host, and [Redis] (Redis Streams) for a fleet.
//
// Ids are Redis stream ids, "<ms>-<n>", in both implementations: opaque to clients, and
// increasing. A log never hands out an id at or below one it has already issued or read,
// even after its Redis stream was reset (Redis restarted empty, FLUSHALL, DEL, eviction), so a
// client resuming from an id it holds receives every entry appended after the reset.
//
// Order. A reader gets entries in id order, which is append order. A consumer group hands
// out entries in id order, each to one consumer, and each consumer gets its entries in id
// order; but two consumers may hold entries of the same Record.Key (one chat) at once, and
// an entry handed to another consumer after AckTimeout arrives after later ones. A consumer
// that needs one chat's events strictly in order acknowledges in order and checks ids; the
// host's webhook delivery (one process, lanes by Key) keeps per-chat order.
//
// Limits. A reader that waits on a Redis stream and a writer that never saw the ids it holds
// (another process whose server clock is behind) can interleave: entries appended after a
// reset with ids below a reader's position are read only if the whole new stream is below it
// (then the reader starts over at the stream's first entry). The floor rule above makes this
// need both a reset and a clock skew between Redis servers.
package eventlog

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"
)

// ID is an entry id: milliseconds and a sequence number within the millisecond, as Redis
// stream ids. The zero ID is before every entry.
type ID struct {
	Ms, Seq uint64
}

// String returns "<ms>-<seq>".
func (id ID) String() string {
	return strconv.FormatUint(id.Ms, 10) + "-" + strconv.FormatUint(id.Seq, 10)
}

// IsZero reports whether id is the zero ID.
func (id ID) IsZero() bool { return id == ID{} }

// Compare returns -1, 0 or +1 as id is before, equal to or after o.
func (id ID) Compare(o ID) int {
	switch {
	case id.Ms < o.Ms || id.Ms == o.Ms && id.Seq < o.Seq:
		return -1
	case id == o:
		return 0
	}
	return 1
}

// Less reports whether id is before o.
func (id ID) Less(o ID) bool { return id.Compare(o) < 0 }

// Next returns the smallest id after id.
func (id ID) Next() ID {
	if id.Seq == ^uint64(0) {
		return ID{Ms: id.Ms + 1}
	}
	return ID{Ms: id.Ms, Seq: id.Seq + 1}
}

// ParseID parses "<ms>-<seq>" as String writes it.
func ParseID(s string) (ID, error) {
	ms, seq, ok := strings.Cut(s, "-")
	if !ok {
		return ID{}, fmt.Errorf("eventlog: id %q is not <ms>-<seq>", s)
	}
	m, err1 := strconv.ParseUint(ms, 10, 64)
	n, err2 := strconv.ParseUint(seq, 10, 64)
	if err1 != nil || err2 != nil {
		return ID{}, fmt.Errorf("eventlog: id %q is not <ms>-<seq>", s)
	}
	return ID{Ms: m, Seq: n}, nil
}

func maxID(a, b ID) ID {
	if a.Less(b) {
		return b
	}
	return a
}

// Record is what Append adds.
type Record struct {
	Kind string // the event kind, e.g. "message"
	// Key groups records whose order matters to a reader, such as one chat's events.
	Key  string
	Data []byte // the event as JSON
	// Dedup, if not empty, makes Append skip the record when a record with the same Dedup was
	// appended within the dedup window (24 h by default).
	Dedup string
}

// Entry is a record in the log.
type Entry struct {
	ID   ID
	Kind string
	Key  string
	Data []byte
	// Redelivered is set on an entry a group hands out again because the consumer it went to
	// did not acknowledge it in time.
	Redelivered bool
}

// Appended is the outcome of appending one record.
type Appended struct {
	// ID is the record's entry id or, for a duplicate, the id of the entry appended first
	// (zero if that entry was appended by a version that did not record it).
	ID        ID
	Duplicate bool
}

// Length is the state of a log's entries.
type Length struct {
	Held       int64 // entries in the log
	Unconsumed int64 // entries after the consumed mark
}

// Pending summarises a group's entries delivered and not yet acknowledged.
type Pending struct {
	Count     int64
	Oldest    ID               // zero when Count is 0
	Consumers map[string]int64 // pending entries per consumer
}

// Reset describes a Redis stream found reset: gone or recreated with fewer entries than this
// process saw in it.
type Reset struct {
	Stream string
	Cause  string
	// LastID is the highest id this process saw before the reset; entries appended after the
	// reset get ids above it.
	LastID ID
	// Held is how many entries the stream held when this process last looked, and Unconsumed
	// how many of those no reader had received: those are lost.
	Held, Unconsumed int64
}

// String says what happened and what may have been lost.
func (r Reset) String() string {
	return fmt.Sprintf("event stream %s was reset (%s): the %d entries it held (up to id %s) are gone, %d of them never received by a reader; group consumers lose their pending entries; new entries get ids above %s, so readers continue without reconnecting",
		r.Stream, r.Cause, r.Held, r.LastID, r.Unconsumed, r.LastID)
}

// Log is a bot's event log. Implementations are safe for concurrent use.
type Log interface {
	// Append adds records, all or none, and returns one Appended per record. A record whose
	// Dedup was appended within the dedup window (or earlier in the same call) is not added
	// again: its Appended is a Duplicate with the first entry's id. When the log holds
	// MaxLen entries, entries at or before the consumed mark make room; if that is not
	// enough, Append adds nothing and returns ErrFull.
	Append(ctx context.Context, recs ...Record) ([]Appended, error)
	// Read returns up to n entries after the position after, waiting until there is one or
	// ctx ends. A position beyond the log's last entry (the log was reset, or the position
	// came from elsewhere) reads from the log's first entry.
	Read(ctx context.Context, after ID, n int) ([]Entry, error)
	// Consumed raises the consumed mark to upTo (never lowers it, never past the last entry):
	// some reader received every entry up to it. ConsumedID returns the mark.
	Consumed(ctx context.Context, upTo ID) error
	ConsumedID(ctx context.Context) (ID, error)
	// Len returns how many entries the log holds and how many are after the consumed mark.
	Len(ctx context.Context) (Length, error)

	// CreateGroup creates a consumer group that hands out the entries after start, unless
	// a group of that name exists (then it does nothing).
	CreateGroup(ctx context.Context, group string, start ID) error
	// ReadGroup returns up to n entries for consumer: first entries of the group that their
	// consumer did not acknowledge within AckTimeout (Redelivered), else entries no consumer
	// of the group received yet, waiting until there is one or ctx ends. Each entry goes to
	// one consumer at a time, in id order. ErrNoGroup if the group was never created.
	ReadGroup(ctx context.Context, group, consumer string, n int) ([]Entry, error)
	// Ack acknowledges entries of a group and returns how many were pending.
	Ack(ctx context.Context, group string, ids ...ID) (int, error)
	// Claim gives consumer up to n of the group's entries pending for at least minIdle.
	Claim(ctx context.Context, group, consumer string, minIdle time.Duration, n int) ([]Entry, error)
	// Pending summarises the group's entries delivered and not acknowledged.
	Pending(ctx context.Context, group string) (Pending, error)

	// Close releases the log's resources; blocked reads return.
	Close() error
}

var (
	// ErrFull means the log holds MaxLen entries no reader has received.
	ErrFull = errors.New("eventlog: log full of unconsumed entries")
	// ErrNoGroup means a consumer group was not created.
	ErrNoGroup = errors.New("eventlog: no such consumer group")
	// ErrClosed means the log was closed.
	ErrClosed = errors.New("eventlog: log closed")
)

// consumedGroup is the Redis consumer group whose last-delivered id is the consumed mark; it
// lives inside the stream key, so no other key holds state appends depend on.
const consumedGroup = "_consumed"

// CheckName returns an error unless name can name a group or a consumer: 1 to 64 of
// A-Z a-z 0-9 . _ -, not starting with "_" (reserved).
func CheckName(name string) error {
	if name == "" || len(name) > 64 || name[0] == '_' {
		return fmt.Errorf("eventlog: name %q: want 1 to 64 of A-Z a-z 0-9 . _ -, not starting with _", name)
	}
	for _, c := range []byte(name) {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return fmt.Errorf("eventlog: name %q: want 1 to 64 of A-Z a-z 0-9 . _ -, not starting with _", name)
		}
	}
	return nil
}

// Options configure a log. The zero value is ready to use.
type Options struct {
	// MaxLen is how many entries the log holds at most. Zero means 10,000.
	MaxLen int
	// DedupTTL is how long a Record's Dedup is remembered. Zero means 24 hours.
	DedupTTL time.Duration
	// DedupMax bounds how many dedup keys a Memory log remembers (least recently appended
	// are forgotten first). Zero means 100,000. Redis expires keys by DedupTTL only.
	DedupMax int
	// AckTimeout is how long a group's entry may stay unacknowledged before ReadGroup hands
	// it to another consumer. Zero means 30 seconds.
	AckTimeout time.Duration
	// Logger receives warnings (a reset, a failing Redis). Nil means slog.Default().
	Logger *slog.Logger
	// OnReset, if set, is called (besides the log line) when a Redis stream is found reset,
	// on the watcher's goroutine that every log of the Redis client shares: it must return
	// soon and must not open or close a log of that client.
	OnReset func(Reset)
	// Now is the clock of a Memory log. Nil means time.Now.
	Now func() time.Time
}

func (o Options) withDefaults() Options {
	if o.MaxLen <= 0 {
		o.MaxLen = 10000
	}
	if o.DedupTTL <= 0 {
		o.DedupTTL = 24 * time.Hour
	}
	if o.DedupMax <= 0 {
		o.DedupMax = 100000
	}
	if o.AckTimeout <= 0 {
		o.AckTimeout = 30 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return o
}

// claimEvery is how often a waiting ReadGroup looks for entries whose consumer did not
// acknowledge them in time.
func (o Options) claimEvery() time.Duration { return max(o.AckTimeout/4, time.Millisecond) }
