package main

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"strconv"
	"time"
)

// SignatureHeader carries the HMAC-SHA256 of a delivered event's body.
const SignatureHeader = "X-Chatwire-Signature"

// Sign returns the X-Chatwire-Signature value for body: "sha256=" and the hex HMAC-SHA256
// of body keyed with secret.
func Sign(secret string, body []byte) string {
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write(body)
	return "sha256=" + hex.EncodeToString(mac.Sum(nil))
}

// Verify reports whether sig is body's signature under secret, in constant time.
func Verify(secret string, body []byte, sig string) bool {
	return hmac.Equal([]byte(Sign(secret, body)), []byte(sig))
}

// deliverer POSTs a bot's events, in order, to its webhook URL, retrying each with jittered
// exponential backoff until it gets a 2xx or the host stops.
type deliverer struct {
	bot    string
	url    string
	secret string
	queue  eventQueue
	client *http.Client
	log    *slog.Logger
	// backoffMin and backoffMax bound the wait between attempts.
	backoffMin, backoffMax time.Duration
	result                 func(ok bool)
}

func (d *deliverer) run(ctx context.Context) {
	seq, _ := d.queue.Start(0, false)
	for {
		events, wake, lost := d.queue.Read(seq, 100)
		if lost > 0 {
			d.log.Warn("events dropped before delivery", "bot", d.bot, "count", lost)
		}
		if len(events) == 0 {
			select {
			case <-wake:
				continue
			case <-ctx.Done():
				return
			}
		}
		for _, ev := range events {
			if !d.deliver(ctx, ev) {
				return
			}
			d.queue.Consumed(ev.seq)
			seq = ev.seq + 1
		}
	}
}

// deliver posts one event until it is accepted; false if ctx ended first.
func (d *deliverer) deliver(ctx context.Context, ev queued) bool {
	wait := d.backoffMin
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
		d.log.Warn("event delivery failed; retrying", "bot", d.bot, "seq", ev.seq, "attempt", attempt, "in", wait, "error", err)
		select {
		case <-time.After(wait/2 + rand.N(wait/2+1)):
		case <-ctx.Done():
			return false
		}
		wait = min(2*wait, d.backoffMax)
	}
}

func (d *deliverer) post(ctx context.Context, ev queued) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, d.url, bytes.NewReader(ev.data))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(SignatureHeader, Sign(d.secret, ev.data))
	req.Header.Set("X-Chatwire-Event-Id", strconv.FormatUint(ev.seq, 10))
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
