package host

import (
	"context"
	"sync"
	"time"

	"github.com/seed-a64d9e1f/chatwire/internal/eventlog"
)

// consumedEvery is how often, at most, an SSE stream raises the consumed mark while events
// flow. Raising it after every batch cost an event log round trip (a script in Redis) per
// batch, on the stream's path to its next event: at 2,000 events/s that was one per event.
const consumedEvery = 50 * time.Millisecond

// consumedMarker raises the consumed mark of an SSE stream's log to the highest id the
// stream has flushed to its client, beside the stream: the first id after a quiet spell
// at once, the ids that follow within every together after it. It never marks an id the
// client has not been sent (sent is called after the flush), so a marker that lags only
// means a client reconnecting without Last-Event-ID may get those events again, never that
// one is skipped; stop writes the last mark before the stream ends.
type consumedMarker struct {
	events eventlog.Log
	every  time.Duration
	failed func(error) // called when raising the mark fails

	mu      sync.Mutex
	high    eventlog.ID // the highest id flushed to the client
	written eventlog.ID // the highest id marked
	kick    chan struct{}
}

func newConsumedMarker(events eventlog.Log, every time.Duration, failed func(error)) *consumedMarker {
	return &consumedMarker{events: events, every: every, failed: failed, kick: make(chan struct{}, 1)}
}

// sent records that the client has been sent every event up to id.
func (m *consumedMarker) sent(id eventlog.ID) {
	m.mu.Lock()
	m.high = max2(m.high, id)
	m.mu.Unlock()
	select {
	case m.kick <- struct{}{}:
	default:
	}
}

// run marks until ctx ends; then call stop.
func (m *consumedMarker) run(ctx context.Context) {
	t := time.NewTimer(0)
	<-t.C
	for {
		select {
		case <-m.kick:
		case <-ctx.Done():
			return
		}
		m.write(ctx)
		t.Reset(m.every) // the ids sent meanwhile wait for one write after it
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return
		}
	}
}

// stop writes the mark run has not written yet (after run has returned), within a second
// of its own: the stream's context is over by then.
func (m *consumedMarker) stop() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	m.write(ctx)
}

func (m *consumedMarker) write(ctx context.Context) {
	m.mu.Lock()
	high, written := m.high, m.written
	m.mu.Unlock()
	if !written.Less(high) {
		return
	}
	if err := m.events.Consumed(ctx, high); err != nil {
		if ctx.Err() == nil && m.failed != nil {
			m.failed(err)
		}
		return
	}
	m.mu.Lock()
	m.written = max2(m.written, high)
	m.mu.Unlock()
}
