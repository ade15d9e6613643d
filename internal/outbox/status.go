package outbox

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// States of a message in the outbox.
const (
	StateQueued  = "queued"  // accepted, waiting for its turn
	StateSending = "sending" // a host is sending it
	StateSent    = "sent"    // the platform accepted it
	StateFailed  = "failed"  // it will not be sent
)

// Status is what GET /v1/bots/{bot}/messages/{id} answers.
type Status struct {
	ID         string    `json:"id"`
	Bot        string    `json:"bot"`
	State      string    `json:"state"`
	PlatformID string    `json:"platform_id,omitempty"` // the platform's message id once sent
	Invalid    []string  `json:"invalid,omitempty"`     // recipients the platform refused
	Error      *Failure  `json:"error,omitempty"`
	Attempts   int       `json:"attempts"`
	Updated    time.Time `json:"updated"`
	// Owner is the host sending it (state sending); not shown.
	Owner string `json:"owner,omitempty"`
}

// Failure says why a message failed, as the API's errors do.
type Failure struct {
	Kind         string `json:"kind"`
	Message      string `json:"message"`
	PlatformCode string `json:"platform_code"`
}

// StatusStore keeps the status of each message for a day: [NewMemoryStatus] or
// [NewRedisStatus]. Its methods are safe for concurrent use.
type StatusStore interface {
	Get(ctx context.Context, bot, id string) (Status, bool, error)
	Set(ctx context.Context, st Status) error
	// Init stores st unless the message already has a status (a sender may have got to it
	// first).
	Init(ctx context.Context, st Status) error
	// Begin makes owner the sender of a message that has no status or is queued, and
	// returns true; otherwise it returns the status it has.
	Begin(ctx context.Context, bot, id, owner string, now time.Time) (Status, bool, error)
}

// Retention is how long a status is kept.
const Retention = 24 * time.Hour

type memoryStatus struct {
	mu sync.Mutex // guards m
	m  map[string]Status
}

// NewMemoryStatus returns a StatusStore in this process's memory.
func NewMemoryStatus() StatusStore { return &memoryStatus{m: map[string]Status{}} }

func (s *memoryStatus) Get(_ context.Context, bot, id string) (Status, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st, ok := s.m[bot+"/"+id]
	if ok && time.Since(st.Updated) > Retention {
		delete(s.m, bot+"/"+id)
		return Status{}, false, nil
	}
	return st, ok, nil
}

func (s *memoryStatus) Set(_ context.Context, st Status) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if st.Updated.IsZero() {
		st.Updated = time.Now()
	}
	s.m[st.Bot+"/"+st.ID] = st
	if len(s.m) > 200_000 { // forget the oldest finished ones
		cut := time.Now().Add(-Retention)
		for k, v := range s.m {
			if v.Updated.Before(cut) {
				delete(s.m, k)
			}
		}
	}
	return nil
}

func (s *memoryStatus) Init(_ context.Context, st Status) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.m[st.Bot+"/"+st.ID]; !ok {
		if st.Updated.IsZero() {
			st.Updated = time.Now()
		}
		s.m[st.Bot+"/"+st.ID] = st
	}
	return nil
}

func (s *memoryStatus) Begin(_ context.Context, bot, id, owner string, now time.Time) (Status, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st, ok := s.m[bot+"/"+id]
	if ok && st.State != StateQueued {
		return st, false, nil
	}
	st = Status{ID: id, Bot: bot, State: StateSending, Owner: owner, Updated: now, Attempts: st.Attempts}
	s.m[bot+"/"+id] = st
	return st, true, nil
}

type redisStatus struct {
	rdb    redis.UniversalClient
	prefix string
}

// NewRedisStatus returns a StatusStore on rdb: one JSON string per message,
// "<prefix>:outbox:{<bot>}:st:<id>", expiring after [Retention].
func NewRedisStatus(rdb redis.UniversalClient, prefix string) StatusStore {
	if prefix == "" {
		prefix = "chatwire"
	}
	return &redisStatus{rdb: rdb, prefix: prefix}
}

func (s *redisStatus) key(bot, id string) string { return s.prefix + ":outbox:{" + bot + "}:st:" + id }

func (s *redisStatus) Get(ctx context.Context, bot, id string) (Status, bool, error) {
	data, err := s.rdb.Get(ctx, s.key(bot, id)).Bytes()
	if err == redis.Nil {
		return Status{}, false, nil
	}
	if err != nil {
		return Status{}, false, fmt.Errorf("outbox: redis: %w", err)
	}
	var st Status
	if err := json.Unmarshal(data, &st); err != nil {
		return Status{}, false, fmt.Errorf("outbox: stored status: %w", err)
	}
	return st, true, nil
}

func (s *redisStatus) Set(ctx context.Context, st Status) error {
	data, err := json.Marshal(st)
	if err != nil {
		return err
	}
	if err := s.rdb.Set(ctx, s.key(st.Bot, st.ID), data, Retention).Err(); err != nil {
		return fmt.Errorf("outbox: redis: %w", err)
	}
	return nil
}

func (s *redisStatus) Init(ctx context.Context, st Status) error {
	data, err := json.Marshal(st)
	if err != nil {
		return err
	}
	if err := s.rdb.SetNX(ctx, s.key(st.Bot, st.ID), data, Retention).Err(); err != nil {
		return fmt.Errorf("outbox: redis: %w", err)
	}
	return nil
}

// beginScript sets ARGV[1] unless the key holds a status other than queued; it returns the
// status held (or "" when it set it).
var beginScript = redis.NewScript(`
local v = redis.call('GET', KEYS[1])
if v and not string.find(v, '"state":"queued"', 1, true) then return v end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return ''
`)

func (s *redisStatus) Begin(ctx context.Context, bot, id, owner string, now time.Time) (Status, bool, error) {
	st := Status{ID: id, Bot: bot, State: StateSending, Owner: owner, Updated: now}
	data, err := json.Marshal(st)
	if err != nil {
		return Status{}, false, err
	}
	held, err := beginScript.Run(ctx, s.rdb, []string{s.key(bot, id)}, data, Retention.Milliseconds()).Text()
	if err != nil {
		return Status{}, false, fmt.Errorf("outbox: redis: %w", err)
	}
	if held == "" {
		return st, true, nil
	}
	var cur Status
	if err := json.Unmarshal([]byte(held), &cur); err != nil {
		return Status{}, false, fmt.Errorf("outbox: stored status: %w", err)
	}
	return cur, false, nil
}
