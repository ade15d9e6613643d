package aibot

import (
	"context"
	"sync"
	"time"

	"github.com/seed-a64d9e1f/chatwire/adapter"
)

// pollState feeds [Bot.Poll] from a background Receive.
type pollState struct {
	once   sync.Once
	mu     sync.Mutex // protects queue, err, done
	queue  []adapter.Event
	err    error // Receive's final error
	done   bool
	notify chan struct{}
}

// maxPollBatch is the most events one Poll returns.
const maxPollBatch = 100

var _ adapter.Poller = (*Bot)(nil)

// Poll implements [adapter.Poller] for the long connection, so a host that polls (across
// the plugin boundary too) runs it: the first call starts [Bot.Receive] in the background
// for the bot's lifetime; each call returns the events received since the previous batch
// (at most 100, in order), waiting up to 25 s (or until ctx ends) for the first. The events
// wait in memory and each is returned once: WeCom does not redeliver over the long
// connection, so there is no cursor to replay from. Across the plugin boundary the plugin
// server keeps each returned batch until the host names it as queued (PollRequest.queued),
// so an answer lost on the way back is answered again. When the connection has stopped for
// good (853000, disconnected_event, Close) Poll returns the remaining events, then that
// error.
func (b *Bot) Poll(ctx context.Context) ([]adapter.Event, error) {
	if b.webhook {
		return nil, adapter.Errorf(adapter.KindInvalidRequest, "wecom_aibot: bot is in webhook mode: events arrive through HandleWebhook")
	}
	p := &b.poll
	p.once.Do(func() {
		p.notify = make(chan struct{}, 1)
		go func() {
			err := b.Receive(b.ctx, func(_ context.Context, evs []adapter.Event) error {
				p.mu.Lock()
				p.queue = append(p.queue, evs...)
				p.mu.Unlock()
				select {
				case p.notify <- struct{}{}:
				default:
				}
				return nil
			})
			p.mu.Lock()
			p.err, p.done = err, true
			p.mu.Unlock()
			select {
			case p.notify <- struct{}{}:
			default:
			}
		}()
	})
	t := time.NewTimer(25 * time.Second)
	defer t.Stop()
	for {
		p.mu.Lock()
		if n := min(len(p.queue), maxPollBatch); n > 0 {
			batch := append([]adapter.Event(nil), p.queue[:n]...)
			p.queue = p.queue[n:]
			p.mu.Unlock()
			return batch, nil
		}
		done, err := p.done, p.err
		p.mu.Unlock()
		if done {
			return nil, err
		}
		select {
		case <-p.notify:
		case <-t.C:
			return nil, nil
		case <-ctx.Done():
			return nil, nil
		}
	}
}
