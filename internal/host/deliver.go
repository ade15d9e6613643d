package host

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/seed-a64d9e1f/chatwire/internal/backoff"
	"github.com/seed-a64d9e1f/chatwire/internal/eventlog"
)

// SignatureHeader carries the HMAC-SHA256 of a delivered event's body.
const signatureHeader = "X-Chatwire-Signature"

// Sign returns the X-Chatwire-Signature value for body: "sha256=" and the hex HMAC-SHA256
// of body keyed with secret.
func sign(secret string, body []byte) string {
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write(body)
	return "sha256=" + hex.EncodeToString(mac.Sum(nil))
}

// Verify reports whether sig is body's signature under secret, in constant time.
func verify(secret string, body []byte, sig string) bool {
	return hmac.Equal([]byte(sign(secret, body)), []byte(sig))
}

// deliverer POSTs a bot's events to its webhook URL, retrying each with jittered
// exponential backoff until it gets a 2xx or the host stops. Events of one chat are
// delivered one after the other, in log order; up to lanes chats are delivered at once,
// so one slow conversation or a burst does not hold up the rest. The log's consumed mark
// only ever covers an unbroken run of delivered events.
type deliverer struct {
	bot    string
	url    string
	secret string
	events eventlog.Log
	client *http.Client
	log    *slog.Logger
	// lanes is how many POSTs may be in flight at once (each for a different chat); 0 or 1
	// delivers every event in queue order.
	lanes int
	// backoffMin and backoffMax bound the wait between attempts.
	backoffMin, backoffMax time.Duration
	result                 func(ok bool)
}

// defaultDeliverLanes is deliver.concurrency's default.
const defaultDeliverLanes = 4

func (d *deliverer) run(ctx context.Context) {
	var pos eventlog.ID
	started := false
	failing := false
	for ctx.Err() == nil {
		var events []eventlog.Entry
		var err error
		if !started {
			pos, err = d.events.ConsumedID(ctx)
			started = err == nil
		} else {
			events, err = d.events.Read(ctx, pos, 100)
		}
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			if !failing {
				d.log.Warn("reading the event log failed; retrying", "bot", d.bot, "error", err)
				failing = true
			}
			backoff.Sleep(ctx, time.Second)
			continue
		}
		failing = false
		if len(events) == 0 {
			continue
		}
		if !d.deliverBatch(ctx, events) {
			return
		}
		pos = events[len(events)-1].ID
	}
}

// consumed raises the log's consumed mark to id.
func (d *deliverer) consumed(ctx context.Context, id eventlog.ID) {
	if err := d.events.Consumed(ctx, id); err != nil && ctx.Err() == nil {
		d.log.Warn("recording delivered events failed; they may be delivered again", "bot", d.bot, "error", err)
	}
}

// deliverBatch delivers events (in log order) and reports whether all of them were
// delivered before ctx ended. Events are spread over lanes by chat; each lane delivers its
// events in order; the consumed mark advances over the delivered prefix as lanes finish.
func (d *deliverer) deliverBatch(ctx context.Context, events []eventlog.Entry) bool {
	lanes := min(max(d.lanes, 1), len(events))
	if lanes == 1 {
		for _, ev := range events {
			if !d.deliver(ctx, ev) {
				return false
			}
			d.consumed(ctx, ev.ID)
		}
		return true
	}
	byLane := make([][]int, lanes) // indexes into events, in order
	for i, ev := range events {
		chat := ev.Key
		if chat == "" {
			chat = chatOf(ev.Data) // an entry written before entries carried their chat
		}
		l := int(laneHash(chat) % uint32(lanes))
		byLane[l] = append(byLane[l], i)
	}
	var mu sync.Mutex // guards done and next
	done := make([]bool, len(events))
	next := 0 // events[:next] are all delivered
	var wg sync.WaitGroup
	for _, idx := range byLane {
		if len(idx) == 0 {
			continue
		}
		wg.Go(func() {
			for _, i := range idx {
				if !d.deliver(ctx, events[i]) {
					return
				}
				mu.Lock()
				done[i] = true
				advanced := false
				for next < len(done) && done[next] {
					next++
					advanced = true
				}
				upTo := events[max(next, 1)-1].ID
				mu.Unlock()
				if advanced {
					d.consumed(ctx, upTo) // raises the mark only, so calls may overlap
				}
			}
		})
	}
	wg.Wait()
	return next == len(events)
}

// chatOf returns the chat id of an event's JSON, or "" if it has none.
func chatOf(data []byte) string {
	var e struct {
		Chat struct {
			ID string `json:"id"`
		} `json:"chat"`
	}
	json.Unmarshal(data, &e)
	return e.Chat.ID
}

// laneHash is FNV-1a of s.
func laneHash(s string) uint32 {
	h := uint32(2166136261)
	for i := 0; i < len(s); i++ {
		h ^= uint32(s[i])
		h *= 16777619
	}
	return h
}

// deliver posts one event until it is accepted; false if ctx ended first.
func (d *deliverer) deliver(ctx context.Context, ev eventlog.Entry) bool {
	bo := backoff.Backoff{Base: d.backoffMin, Max: d.backoffMax, Jitter: 0.5}
	for attempt := 1; ; attempt++ {
		err := d.post(ctx, ev)
		if err == nil {
			d.result(true)
			return true
		}
		d.result(false)
		if ctx.Err() != nil {
			return false
		}
		wait := bo.Next()
		d.log.Warn("event delivery failed; retrying", "bot", d.bot, "event", ev.ID.String(), "attempt", attempt, "in", wait, "error", err)
		if backoff.Sleep(ctx, wait) != nil {
			return false
		}
	}
}

func (d *deliverer) post(ctx context.Context, ev eventlog.Entry) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, d.url, bytes.NewReader(ev.Data))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(signatureHeader, sign(d.secret, ev.Data))
	req.Header.Set("X-Chatwire-Event-Id", ev.ID.String())
	req.Header.Set("X-Chatwire-Bot", d.bot)
	resp, err := d.client.Do(req)
	if err != nil {
		return err
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("webhook answered %s", resp.Status)
	}
	return nil
}
