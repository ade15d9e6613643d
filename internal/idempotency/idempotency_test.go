package idempotency

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/seed-a64d9e1f/chatwire/internal/redistest"
)

// stores returns n Stores that share one backend: n hosts on one Redis, or n Keepers on one
// memory Store (one host).
type storesFunc func(t *testing.T, n int) []Store

func memoryStores(t *testing.T, n int) []Store {
	s := NewMemory(0)
	out := make([]Store, n)
	for i := range out {
		out[i] = s
	}
	return out
}

func redisStores(t *testing.T, n int) []Store {
	srv := redistest.Start(t)
	out := make([]Store, n)
	for i := range out {
		rdb := redis.NewClient(&redis.Options{Addr: srv.Addr()})
		t.Cleanup(func() { rdb.Close() })
		out[i] = NewRedis(rdb, "test")
	}
	return out
}

func TestMemory(t *testing.T) { testStore(t, memoryStores) }
func TestRedis(t *testing.T)  { testStore(t, redisStores) }

func fp(s string) [32]byte { return sha256.Sum256([]byte(s)) }

func answer(s string) Answer { return Answer{Status: 200, Body: []byte(`{"id":"` + s + `"}`)} }

// testStore is the suite every Store passes.
func testStore(t *testing.T, stores storesFunc) {
	t.Run("ConcurrentDuplicatesThroughThreeStores", func(t *testing.T) {
		ss := stores(t, 3)
		var runs atomic.Int32
		release := make(chan struct{})
		busy := make(chan struct{}, 100)
		var keepers []*Keeper
		for _, s := range ss {
			k := New(s, Options{})
			k.onBusy = func(string) { busy <- struct{}{} }
			keepers = append(keepers, k)
		}
		req := Request{Key: "k1", Fingerprint: fp("body")}
		type result struct {
			ans      Answer
			replayed bool
			err      error
		}
		results := make(chan result, 10)
		for i := range 10 {
			go func() {
				ans, rep, err := keepers[i%3].Do(t.Context(), req, func(ctx context.Context) (Answer, bool) {
					n := runs.Add(1)
					<-release
					return answer(fmt.Sprint("sent-", n)), true
				})
				results <- result{ans, rep, err}
			}()
		}
		// Nine duplicates found the key pending before the first may finish.
		seen := map[int]bool{}
		for len(seen) < 9 {
			<-busy
			seen[len(seen)] = true
		}
		close(release)
		replays := 0
		var first Answer
		for i := range 10 {
			r := <-results
			if r.err != nil {
				t.Fatalf("Do = %v", r.err)
			}
			if i == 0 {
				first = r.ans
			}
			if r.ans.Status != first.Status || string(r.ans.Body) != string(first.Body) {
				t.Errorf("answer %d = %d %s; want %d %s", i, r.ans.Status, r.ans.Body, first.Status, first.Body)
			}
			if r.replayed {
				replays++
			}
		}
		if n := runs.Load(); n != 1 {
			t.Errorf("work ran %d times; want 1", n)
		}
		if replays != 9 {
			t.Errorf("%d answers replayed; want 9", replays)
		}
		if string(first.Body) != `{"id":"sent-1"}` {
			t.Errorf("answer = %s; want the first run's", first.Body)
		}
	})

	t.Run("ReplayAfterDone", func(t *testing.T) {
		ss := stores(t, 2)
		a, b := New(ss[0], Options{}), New(ss[1], Options{})
		req := Request{Key: "k2", Fingerprint: fp("body")}
		runs := 0
		work := func(context.Context) (Answer, bool) { runs++; return answer(fmt.Sprint(runs)), true }
		ans1, rep1, err := a.Do(t.Context(), req, work)
		if err != nil || rep1 {
			t.Fatalf("first Do = %v, replayed %v", err, rep1)
		}
		ans2, rep2, err := b.Do(t.Context(), req, work)
		if err != nil || !rep2 {
			t.Fatalf("second Do = %v, replayed %v; want replayed", err, rep2)
		}
		if string(ans1.Body) != string(ans2.Body) || runs != 1 {
			t.Errorf("answers %s, %s after %d runs; want one run, one answer", ans1.Body, ans2.Body, runs)
		}
		// Another key is independent.
		if _, rep, err := b.Do(t.Context(), Request{Key: "other", Fingerprint: fp("body")}, work); err != nil || rep || runs != 2 {
			t.Errorf("other key: err %v replayed %v runs %d; want a second run", err, rep, runs)
		}
	})

	t.Run("ConflictOnOtherBody", func(t *testing.T) {
		ss := stores(t, 2)
		a, b := New(ss[0], Options{}), New(ss[1], Options{})
		started := make(chan struct{})
		release := make(chan struct{})
		done := make(chan error)
		go func() {
			_, _, err := a.Do(t.Context(), Request{Key: "k3", Fingerprint: fp("one")}, func(context.Context) (Answer, bool) {
				close(started)
				<-release
				return answer("x"), true
			})
			done <- err
		}()
		<-started
		ran := false
		work := func(context.Context) (Answer, bool) { ran = true; return answer("y"), true }
		if _, _, err := b.Do(t.Context(), Request{Key: "k3", Fingerprint: fp("two")}, work); !errors.Is(err, ErrConflict) {
			t.Errorf("other body while pending: Do = %v; want ErrConflict", err)
		}
		close(release)
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		if _, _, err := b.Do(t.Context(), Request{Key: "k3", Fingerprint: fp("two")}, work); !errors.Is(err, ErrConflict) {
			t.Errorf("other body after the answer: Do = %v; want ErrConflict", err)
		}
		if ran {
			t.Error("a conflicting request ran its work")
		}
	})

	t.Run("NotKeptIsReleased", func(t *testing.T) {
		ss := stores(t, 1)
		k := New(ss[0], Options{})
		req := Request{Key: "k4", Fingerprint: fp("body")}
		runs := 0
		ans, _, err := k.Do(t.Context(), req, func(context.Context) (Answer, bool) { runs++; return Answer{Status: 429}, false })
		if err != nil || ans.Status != 429 {
			t.Fatalf("Do = %v, %d", err, ans.Status)
		}
		ans, rep, err := k.Do(t.Context(), req, func(context.Context) (Answer, bool) { runs++; return answer("ok"), true })
		if err != nil || rep || ans.Status != 200 || runs != 2 {
			t.Errorf("retry after a released answer: err %v replayed %v status %d runs %d; want a second run", err, rep, ans.Status, runs)
		}
	})

	t.Run("AbandonedIsNotRepeated", func(t *testing.T) {
		ss := stores(t, 2)
		key := "k5"
		// A holder that stopped: it claimed the key and its lease lapsed.
		started := time.Now().Add(-time.Minute).Truncate(time.Millisecond)
		if st, err := ss[0].claim(t.Context(), key, fpHex("body"), "dead-host", started, time.Minute, time.Hour); err != nil || st.state != stateClaimed {
			t.Fatalf("claim = %v, %v", st.state, err)
		}
		if err := ss[0].expireLease(t.Context(), key); err != nil {
			t.Fatal(err)
		}
		k := New(ss[1], Options{})
		ran := 0
		work := func(context.Context) (Answer, bool) { ran++; return answer("again"), true }
		_, _, err := k.Do(t.Context(), Request{Key: key, Fingerprint: fp("body")}, work)
		var ae *AbandonedError
		if !errors.As(err, &ae) || !errors.Is(err, ErrConflict) {
			t.Fatalf("Do = %v; want *AbandonedError matching ErrConflict", err)
		}
		if !ae.Started.Equal(started) {
			t.Errorf("Started = %v; want %v", ae.Started, started)
		}
		// A platform that drops repeats: the key is taken over once and answered.
		var saw time.Time
		req := Request{Key: key, Fingerprint: fp("body"), Retake: func(s time.Time) bool { saw = s; return true }}
		ans, rep, err := k.Do(t.Context(), req, work)
		if err != nil || rep || string(ans.Body) != `{"id":"again"}` || ran != 1 {
			t.Fatalf("retake: Do = %v replayed %v %s, ran %d; want one run", err, rep, ans.Body, ran)
		}
		if !saw.Equal(started) {
			t.Errorf("Retake got started %v; want the first attempt's %v", saw, started)
		}
		ans, rep, err = New(ss[0], Options{}).Do(t.Context(), req, work)
		if err != nil || !rep || string(ans.Body) != `{"id":"again"}` || ran != 1 {
			t.Errorf("after the retake: Do = %v replayed %v %s, ran %d; want the replay", err, rep, ans.Body, ran)
		}
	})

	t.Run("LeaseRenewedWhileWorking", func(t *testing.T) {
		ss := stores(t, 2)
		a := New(ss[0], Options{Lease: 30 * time.Millisecond})
		extended := make(chan struct{}, 100)
		a.onExtend = func(string) { extended <- struct{}{} }
		req := Request{Key: "k6", Fingerprint: fp("body")}
		release := make(chan struct{})
		done := make(chan struct{})
		go func() {
			defer close(done)
			a.Do(t.Context(), req, func(context.Context) (Answer, bool) { <-release; return answer("slow"), true })
		}()
		for range 5 { // five renewals: well past the first lease
			<-extended
		}
		st, err := ss[1].claim(t.Context(), req.Key, fpHex("body"), "other", time.Now(), time.Minute, time.Hour)
		if err != nil || st.state != stateBusy {
			t.Errorf("claim while the holder works = %v, %v; want busy", st.state, err)
		}
		close(release)
		<-done
	})

	t.Run("WaiterLeavesOnContext", func(t *testing.T) {
		ss := stores(t, 2)
		a, b := New(ss[0], Options{}), New(ss[1], Options{})
		req := Request{Key: "k7", Fingerprint: fp("body")}
		started := make(chan struct{})
		release := make(chan struct{})
		done := make(chan Answer)
		go func() {
			ans, _, _ := a.Do(t.Context(), req, func(context.Context) (Answer, bool) { close(started); <-release; return answer("late"), true })
			done <- ans
		}()
		<-started
		ctx, cancel := context.WithCancel(t.Context())
		var once sync.Once
		b.onBusy = func(string) { once.Do(cancel) }
		if _, _, err := b.Do(ctx, req, func(context.Context) (Answer, bool) { t.Error("ran"); return Answer{}, true }); !errors.Is(err, context.Canceled) {
			t.Errorf("Do with a cancelled waiter = %v; want context.Canceled", err)
		}
		close(release)
		if ans := <-done; string(ans.Body) != `{"id":"late"}` {
			t.Errorf("holder's answer = %s", ans.Body)
		}
		ans, rep, err := b.Do(t.Context(), req, nil)
		if err != nil || !rep || string(ans.Body) != `{"id":"late"}` {
			t.Errorf("after: Do = %v replayed %v %s", err, rep, ans.Body)
		}
	})

	t.Run("BadKey", func(t *testing.T) {
		k := New(stores(t, 1)[0], Options{})
		for _, key := range []string{"", string(make([]byte, MaxKeyLen+1)), "a\nb", "é"} {
			if err := CheckKey(key); !errors.Is(err, ErrInvalidKey) {
				t.Errorf("CheckKey(%q) = %v; want ErrInvalidKey", key, err)
			}
		}
		if err := CheckKey("order-42:retry"); err != nil {
			t.Errorf("CheckKey(order-42:retry) = %v", err)
		}
		if _, _, err := k.Do(t.Context(), Request{}, nil); !errors.Is(err, ErrInvalidKey) {
			t.Errorf("Do(empty key) = %v; want ErrInvalidKey", err)
		}
	})
}

func fpHex(s string) string {
	sum := fp(s)
	return fmt.Sprintf("%x", sum[:])
}

// TestMemoryBound: the memory Store forgets its oldest keys beyond its bound.
func TestMemoryBound(t *testing.T) {
	s := NewMemory(2)
	k := New(s, Options{})
	runs := 0
	work := func(context.Context) (Answer, bool) { runs++; return answer("x"), true }
	for _, key := range []string{"a", "b", "c", "a"} {
		if _, _, err := k.Do(t.Context(), Request{Key: key, Fingerprint: fp("x")}, work); err != nil {
			t.Fatal(err)
		}
	}
	if runs != 4 {
		t.Errorf("runs = %d; want 4 (key a forgotten after c)", runs)
	}
}
