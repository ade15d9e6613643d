package host

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"testing"
	"testing/synctest"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/seed-a64d9e1f/chatwire/adapter"
	"github.com/seed-a64d9e1f/chatwire/internal/eventlog"
	"github.com/seed-a64d9e1f/chatwire/internal/redistest"
)

// The host's retry loops (internal/backoff) end as soon as their ctx does, even in the middle
// of an hour-long wait.

type failingTransport struct{}

func (failingTransport) RoundTrip(*http.Request) (*http.Response, error) {
	return nil, errors.New("receiver down")
}

func TestDeliverStopsWhenCancelledDuringBackoff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d := &deliverer{bot: "hr", url: "http://receiver.invalid/", secret: "s", client: &http.Client{Transport: failingTransport{}},
			log: slog.New(slog.DiscardHandler), backoffMin: time.Hour, backoffMax: time.Hour, result: func(bool) {}}
		ctx, cancel := context.WithCancel(t.Context())
		go func() { time.Sleep(time.Second); cancel() }()
		start := time.Now()
		if d.deliver(ctx, eventlog.Entry{Data: []byte(`{}`)}) {
			t.Fatal("deliver = true to a receiver that is down")
		}
		if got := time.Since(start); got != time.Second {
			t.Errorf("deliver returned %v after the start; want 1s (when ctx was cancelled)", got)
		}
	})
}

type failingPoller struct{ polls int }

func (p *failingPoller) Poll(context.Context) ([]adapter.Event, error) {
	p.polls++
	return nil, errors.New("graph down")
}

func TestPollStopsWhenCancelledDuringBackoff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := &Host{log: slog.New(slog.DiscardHandler)}
		p := &failingPoller{}
		ctx, cancel := context.WithCancel(t.Context())
		go func() { time.Sleep(10 * time.Second); cancel() }()
		start := time.Now()
		h.poll(ctx, &bot{name: "g"}, p)
		if got := time.Since(start); got != 10*time.Second {
			t.Errorf("poll returned %v after the start; want 10s (when ctx was cancelled)", got)
		}
		// 1s + 2s + 4s waits fit in 10s: polls at 0, 1, 3 and 7 s.
		if p.polls != 4 {
			t.Errorf("polls = %d in 10s; want 4 (waits of 1, 2, 4 s)", p.polls)
		}
	})
}

func TestLeaseWaitStopsWhenCancelled(t *testing.T) {
	rs := redistest.Start(t)
	rdb := redis.NewClient(&redis.Options{Addr: rs.Addr()})
	defer rdb.Close()
	if err := rdb.Set(t.Context(), "lease", "someone else", 0).Err(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() {
		newLeaseSet(rdb, 3*time.Hour, slog.New(slog.DiscardHandler)).asLeader(ctx, "lease", func(context.Context) { t.Error("fn ran without the lease") })
		close(done)
	}()
	time.Sleep(100 * time.Millisecond) // let it find the lease taken and start its ≥1h wait
	cancel()
	select {
	case <-done:
	case <-time.After(30 * time.Second): // far below the hour asLeader would wait
		t.Fatal("asLeader did not return after its ctx was cancelled")
	}
}

func TestReadFailedStopsWhenCancelled(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := &server{log: slog.New(slog.DiscardHandler)}
		ctx, cancel := context.WithCancel(t.Context())
		go func() { time.Sleep(100 * time.Millisecond); cancel() }()
		start := time.Now()
		failing := false
		s.readFailed(ctx, &bot{name: "hr"}, errors.New("redis down"), &failing)
		if got := time.Since(start); got != 100*time.Millisecond {
			t.Errorf("readFailed returned after %v; want 100ms (when ctx was cancelled)", got)
		}
		if !failing {
			t.Error("readFailed did not record the outage")
		}
	})
}
