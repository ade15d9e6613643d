package outbox

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/seed-a64d9e1f/chatwire/adapter"
	"github.com/seed-a64d9e1f/chatwire/adapter/wecom"
	"github.com/seed-a64d9e1f/chatwire/adapter/wecom/wecomtest"
	"github.com/seed-a64d9e1f/chatwire/internal/eventlog"
	"github.com/seed-a64d9e1f/chatwire/internal/pacing"
	"github.com/seed-a64d9e1f/chatwire/internal/redistest"
)

// events collects emitted status events.
type events struct {
	mu  sync.Mutex
	evs []adapter.Event
}

func (e *events) emit(_ context.Context, ev adapter.Event) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.evs = append(e.evs, ev)
	return nil
}

func (e *events) count(kind string) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	n := 0
	for _, ev := range e.evs {
		if ev.Kind == kind {
			n++
		}
	}
	return n
}

func wecomClient(t *testing.T, srv *wecomtest.Server, dup time.Duration) *wecom.Client {
	t.Helper()
	srv.AddApp("ww1", "secret", 1000002)
	c, err := wecom.New(wecom.Config{Bot: "hr", CorpID: "ww1", CorpSecret: "secret", AgentID: 1000002},
		wecom.Options{HTTPClient: srv.Client(), DuplicateCheck: dup})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func text(i int) adapter.Message {
	return adapter.Message{To: adapter.Target{User: "zhangsan"}, Text: fmt.Sprint("m", i)}
}

// TestBurstPacedInOrder: 120 messages to one member accepted at once all reach an emulator
// that drops what exceeds 30 a minute: none dropped, in order, over 3 minutes (fake time);
// each gets message.sent and the status sent with WeCom's msgid.
func TestBurstPacedInOrder(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := &wecomtest.Server{}
		c := wecomClient(t, srv, 0)
		log := eventlog.NewMemory(eventlog.Options{})
		defer log.Close()
		sc, _ := pacing.New(pacing.NewMemory(), "hr", adapter.PlatformWeCom, pacing.Options{})
		var ev events
		ob := New("hr", adapter.PlatformWeCom, log, NewMemoryStatus(), sc, c.Send, ev.emit, Options{})
		var ids []string
		for i := range 120 {
			id, err := ob.Accept(t.Context(), text(i))
			if err != nil {
				t.Fatal(err)
			}
			ids = append(ids, id)
		}
		start := time.Now()
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan struct{})
		go func() { ob.Run(ctx); close(done) }()
		for ev.count(EventSent) < 120 {
			time.Sleep(time.Second)
		}
		cancel()
		<-done
		sent := srv.Sent()
		if len(sent) != 120 {
			t.Fatalf("emulator got %d; want 120", len(sent))
		}
		for i, s := range sent {
			if s.Content != fmt.Sprint("m", i) || len(s.Dropped) > 0 {
				t.Fatalf("message %d: %q dropped %v; want m%d delivered (in order)", i, s.Content, s.Dropped, i)
			}
		}
		if span := sent[119].Time.Sub(start); span != 3*62*time.Second {
			t.Errorf("last message at %v; want 3m6s (30 a minute, windows kept 2 s longer)", span)
		}
		st, ok, err := ob.Status(t.Context(), ids[5])
		if err != nil || !ok || st.State != StateSent || st.PlatformID != sent[5].MsgID || st.Attempts != 1 {
			t.Errorf("Status(6th) = %+v, %v, %v; want sent with WeCom's msgid", st, ok, err)
		}
		if l, _ := log.Len(t.Context()); l.Unconsumed != 0 {
			t.Errorf("outbox has %d unconsumed after delivering all; want 0", l.Unconsumed)
		}
	})
}

// TestRateLimitedRetried: a 45009 pauses the bot a minute and the message is sent after it;
// an invalid recipient fails at once with message.failed and the platform code.
func TestRateLimitedRetried(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := &wecomtest.Server{}
		c := wecomClient(t, srv, 0)
		srv.AddUsers("zhangsan")
		srv.Fail("message/send", 45009, 1)
		log := eventlog.NewMemory(eventlog.Options{})
		defer log.Close()
		sc, _ := pacing.New(pacing.NewMemory(), "hr", adapter.PlatformWeCom, pacing.Options{})
		var ev events
		ob := New("hr", adapter.PlatformWeCom, log, NewMemoryStatus(), sc, c.Send, ev.emit, Options{Lanes: 1})
		ok1, _ := ob.Accept(t.Context(), text(1))
		bad, _ := ob.Accept(t.Context(), adapter.Message{To: adapter.Target{User: "nobody"}, Text: "x"})
		start := time.Now()
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan struct{})
		go func() { ob.Run(ctx); close(done) }()
		for ev.count(EventSent)+ev.count(EventFailed) < 2 {
			time.Sleep(time.Second)
		}
		cancel()
		<-done
		st, _, _ := ob.Status(t.Context(), ok1)
		if st.State != StateSent || st.Attempts != 2 || len(srv.Sent()) != 1 || srv.Sent()[0].Time.Sub(start) < time.Minute {
			t.Errorf("after 45009: %+v, %d sends; want sent on attempt 2, a minute later", st, len(srv.Sent()))
		}
		st, _, _ = ob.Status(t.Context(), bad)
		if st.State != StateFailed || st.Error == nil || st.Error.PlatformCode != "81013" || st.Error.Kind != "invalid_recipient" {
			t.Errorf("invalid recipient: %+v; want failed, invalid_recipient, 81013", st)
		}
	})
}

// deadStatus is a StatusStore whose writes fail once dead is set.
type deadStatus struct {
	StatusStore
	dead *atomic.Bool
}

func (d deadStatus) Set(ctx context.Context, st Status) error {
	if d.dead.Load() {
		return errors.New("dead host")
	}
	return d.StatusStore.Set(ctx, st)
}

// TestStoppedSenderRedis: an outbox on Redis whose first sender stopped: messages it
// finished are not sent again, one it left "sending" fails as outcome unknown (at most once)
// unless a repeat is dropped by the platform (then it is sent, and shown once), and the rest
// are sent by the next sender. Every message is shown exactly once.
func TestStoppedSenderRedis(t *testing.T) {
	for _, repeat := range []bool{false, true} {
		t.Run(fmt.Sprint("repeat=", repeat), func(t *testing.T) {
			rs := redistest.Start(t)
			rdb := redis.NewClient(&redis.Options{Addr: rs.Addr()})
			defer rdb.Close()
			srv := &wecomtest.Server{MemberLimit: -1}
			var dup time.Duration
			if repeat {
				dup = 30 * time.Minute // WeCom drops the repeat
			}
			c := wecomClient(t, srv, dup)
			log := eventlog.NewRedis(rdb, "t:outbox:{hr}", "t:outbox:{hr}:dedup:", eventlog.Options{})
			defer log.Close()
			status := NewRedisStatus(rdb, "t")
			var ev events
			first := New("hr", adapter.PlatformWeCom, log, status, nil, c.Send, ev.emit, Options{Owner: "a", Lanes: 1, SendTimeout: 2 * time.Second})
			var ids []string
			for i := range 20 {
				id, err := first.Accept(t.Context(), text(i))
				if err != nil {
					t.Fatal(err)
				}
				ids = append(ids, id)
			}
			// The first sender sends 10 and dies while sending the 11th: WeCom accepted it,
			// the host never recorded it (its writes fail from then on, as a dead host's).
			var dead atomic.Bool
			block := make(chan struct{})
			defer close(block)
			first.status = deadStatus{status, &dead}
			var n atomic.Int32
			first.send = func(sctx context.Context, msg adapter.Message) (adapter.Receipt, error) {
				rc, err := c.Send(sctx, msg)
				if n.Add(1) == 11 {
					dead.Store(true)
					<-block // never returns while the test looks
					return rc, errors.New("killed")
				}
				return rc, err
			}
			ctx, cancel := context.WithCancel(t.Context())
			go first.Run(ctx)
			for len(srv.Sent()) < 11 {
				time.Sleep(5 * time.Millisecond)
			}
			cancel()
			second := New("hr", adapter.PlatformWeCom, log, status, nil, c.Send, ev.emit, Options{Owner: "b", RepeatUnknown: repeat, SendTimeout: 2 * time.Second})
			ctx2, cancel2 := context.WithCancel(t.Context())
			done := make(chan struct{})
			go func() { second.Run(ctx2); close(done) }()
			deadline := time.Now().Add(30 * time.Second)
			for ev.count(EventSent)+ev.count(EventFailed) < 20 && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond)
			}
			cancel2()
			<-done
			shown := map[string]int{}
			for _, s := range srv.Sent() {
				if !s.Duplicate {
					shown[s.Content]++
				}
			}
			for i := range 20 {
				if shown[fmt.Sprint("m", i)] != 1 {
					t.Errorf("m%d shown %d times; want once", i, shown[fmt.Sprint("m", i)])
				}
			}
			st, _, _ := second.Status(t.Context(), ids[10])
			switch {
			case !repeat && (st.State != StateFailed || st.Error == nil):
				t.Errorf("the 11th without repeat: %+v; want failed, outcome unknown", st)
			case repeat && st.State != StateSent:
				t.Errorf("the 11th with repeat: %+v; want sent", st)
			}
			if got := ev.count(EventSent) + ev.count(EventFailed); got != 20 {
				t.Errorf("%d status events; want 20 (one per message)", got)
			}
		})
	}
}

// TestStatusInitKeepsProgress: the queued status Accept writes never overwrites a status a
// sender already recorded (a fast sender on another host can get to the message first).
func TestStatusInitKeepsProgress(t *testing.T) {
	rs := redistest.Start(t)
	rdb := redis.NewClient(&redis.Options{Addr: rs.Addr()})
	defer rdb.Close()
	fs, err := OpenFileStatus(filepath.Join(t.TempDir(), "st"))
	if err != nil {
		t.Fatal(err)
	}
	defer fs.Close()
	for name, s := range map[string]StatusStore{"memory": NewMemoryStatus(), "redis": NewRedisStatus(rdb, "t"), "file": fs} {
		if err := s.Set(t.Context(), Status{ID: "1-0", Bot: "hr", State: StateSent, PlatformID: "p"}); err != nil {
			t.Fatal(err)
		}
		if err := s.Init(t.Context(), Status{ID: "1-0", Bot: "hr", State: StateQueued}); err != nil {
			t.Fatal(err)
		}
		if st, ok, _ := s.Get(t.Context(), "hr", "1-0"); !ok || st.State != StateSent {
			t.Errorf("%s: after Init, status %+v; want sent kept", name, st)
		}
		if err := s.Init(t.Context(), Status{ID: "2-0", Bot: "hr", State: StateQueued}); err != nil {
			t.Fatal(err)
		}
		if st, ok, _ := s.Get(t.Context(), "hr", "2-0"); !ok || st.State != StateQueued {
			t.Errorf("%s: Init of a new message: %+v; want queued", name, st)
		}
	}
}

// TestFileStatusSurvivesReopen: statuses written before the store is closed are there after
// it is opened again: a message recorded sent, one left sending (not taken by Begin), one
// queued (taken by Begin).
func TestFileStatusSurvivesReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "outbox", "hr.status")
	s, err := OpenFileStatus(path)
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	s.Set(ctx, Status{ID: "1-0", Bot: "hr", State: StateSent, PlatformID: "p1"})
	if _, mine, err := s.Begin(ctx, "hr", "2-0", "a", time.Now()); !mine || err != nil {
		t.Fatalf("Begin = %v, %v", mine, err)
	}
	s.Init(ctx, Status{ID: "3-0", Bot: "hr", State: StateQueued})
	s.Set(ctx, Status{ID: "4-0", Bot: "hr", State: StateSent, Updated: time.Now().Add(-Retention - time.Minute)})
	s.Close()
	for round := range 2 {
		s, err = OpenFileStatus(path)
		if err != nil {
			t.Fatal(err)
		}
		if st, ok, _ := s.Get(ctx, "hr", "1-0"); !ok || st.State != StateSent || st.PlatformID != "p1" {
			t.Fatalf("round %d: 1-0 = %+v, %v; want sent p1", round, st, ok)
		}
		if st, mine, _ := s.Begin(ctx, "hr", "2-0", "b", time.Now()); mine || st.State != StateSending || st.Owner != "a" {
			t.Fatalf("round %d: Begin of 2-0 = %+v, %v; want sending by a kept", round, st, mine)
		}
		if st, ok, _ := s.Get(ctx, "hr", "3-0"); !ok || st.State != StateQueued {
			t.Fatalf("round %d: 3-0 = %+v, %v; want queued", round, st, ok)
		}
		if _, ok, _ := s.Get(ctx, "hr", "4-0"); ok {
			t.Fatalf("round %d: a status older than Retention was kept", round)
		}
		s.Close()
	}
}
