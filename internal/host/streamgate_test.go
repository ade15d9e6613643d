package host

import (
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/seed-a64d9e1f/chatwire/internal/config"
)

// ndjsonStream is a streamed send's body: the header line, then one delta line per delta.
func ndjsonStream(header map[string]any, deltas ...string) string {
	var b strings.Builder
	enc := json.NewEncoder(&b)
	enc.Encode(header)
	for _, d := range deltas {
		enc.Encode(map[string]string{"delta": d})
	}
	return b.String()
}

func toUser(user string) map[string]any { return map[string]any{"to": map[string]string{"user": user}} }

// TestStreamedSendIdempotencyKey: a streamed send with an Idempotency-Key runs once. A retry
// with the key (whatever deltas it carries) gets the first answer, replayed, and starts no
// second stream: WeCom gets one message. Concurrent duplicates wait for the first. The key
// used for another header, or for an ordinary send, is a conflict.
func TestStreamedSendIdempotencyKey(t *testing.T) {
	e := setup(t, setupOpts{quiet: true})
	first := e.post(ndjsonStream(toUser("alice"), "hello ", "world"), "Content-Type", ndjson, "Idempotency-Key", "s-1")
	if first.status != 200 {
		t.Fatalf("streamed send = %d %s", first.status, first.body)
	}
	var wg sync.WaitGroup
	answers := make([]answer, 3)
	for i := range answers {
		wg.Go(func() {
			answers[i] = e.post(ndjsonStream(toUser("alice"), "hello ", "again"), "Content-Type", ndjson, "Idempotency-Key", "s-1")
		})
	}
	wg.Wait()
	for _, a := range answers {
		if a.status != 200 || a.body != first.body || a.header.Get("Idempotent-Replayed") != "true" {
			t.Errorf("retry with the key = %d %s (%v); want the first answer %s, replayed", a.status, a.body, a.header, first.body)
		}
	}
	if sent := e.emu.Sent(); len(sent) != 1 || sent[0].Content != "hello world" {
		t.Fatalf("WeCom got %+v; want one message, \"hello world\"", sent)
	}
	if a := e.post(ndjsonStream(toUser("bob"), "hi"), "Content-Type", ndjson, "Idempotency-Key", "s-1"); a.status != 409 || errKind(t, a.body) != "conflict" {
		t.Errorf("the key for a stream to another user = %d %s; want 409 conflict", a.status, a.body)
	}
	if a := e.post(`{"to":{"user":"alice"},"text":"hello world"}`, "Idempotency-Key", "s-1"); a.status != 409 {
		t.Errorf("the key of a stream for an ordinary send = %d %s; want 409", a.status, a.body)
	}
	if a := e.post(ndjsonStream(toUser("alice"), "x"), "Content-Type", ndjson, "Idempotency-Key", strings.Repeat("x", 300)); a.status != 400 || errKind(t, a.body) != "invalid_request" {
		t.Errorf("300-byte key = %d %s; want 400 invalid_request", a.status, a.body)
	}
	if n := len(e.emu.Sent()); n != 1 {
		t.Errorf("WeCom got %d messages; want 1", n)
	}
	// Without a key every stream is sent.
	e.post(ndjsonStream(toUser("alice"), "two"), "Content-Type", ndjson)
	if n := len(e.emu.Sent()); n != 2 {
		t.Errorf("WeCom got %d messages; want 2", n)
	}
}

// TestStreamedSendPaced: a streamed reply counts against the bot's limits as an ordinary send
// of its whole text does: after a send and a stream to alice (member limit 2/1m) the next
// send waits past the max wait and gets 429, and so does a stream, before anything is sent.
// A stream refused so, retried with its Idempotency-Key after the wait, is sent.
func TestStreamedSendPaced(t *testing.T) {
	clock := &jumpClock{t: time.Date(2026, 3, 2, 10, 0, 0, 0, time.UTC)}
	e := setup(t, setupOpts{quiet: true, clock: clock, pacing: &config.PacingConfig{Limits: config.PacingLimits{Member: []string{"2/1m"}}, MaxWait: "20s"}})
	if a := e.post(`{"to":{"user":"alice"},"text":"one"}`); a.status != 200 {
		t.Fatalf("send = %d %s", a.status, a.body)
	}
	if a := e.post(ndjsonStream(toUser("alice"), "t", "wo"), "Content-Type", ndjson); a.status != 200 {
		t.Fatalf("streamed send = %d %s", a.status, a.body)
	}
	if a := e.post(`{"to":{"user":"alice"},"text":"three"}`); a.status != 429 || a.header.Get("Retry-After") != "62" {
		t.Errorf("third send in a minute, after a stream = %d %s (Retry-After %q); want 429, Retry-After 62", a.status, a.body, a.header.Get("Retry-After"))
	}
	a := e.post(ndjsonStream(toUser("alice"), "th", "ree"), "Content-Type", ndjson, "Idempotency-Key", "paced")
	if a.status != 429 || a.header.Get("Retry-After") != "62" || errKind(t, a.body) != "rate_limited" {
		t.Errorf("third stream in a minute = %d %s (Retry-After %q); want 429 rate_limited, Retry-After 62", a.status, a.body, a.header.Get("Retry-After"))
	}
	if n := len(e.emu.Sent()); n != 2 {
		t.Fatalf("WeCom got %d messages; want 2 (the third refused before sending)", n)
	}
	clock.advance(62 * time.Second)
	if a := e.post(ndjsonStream(toUser("alice"), "th", "ree"), "Content-Type", ndjson, "Idempotency-Key", "paced"); a.status != 200 || a.header.Get("Idempotent-Replayed") != "" {
		t.Errorf("the refused stream retried after the wait = %d %s (%v); want 200, sent now", a.status, a.body, a.header)
	}
	if sent := e.emu.Sent(); len(sent) != 3 || sent[2].Content != "three" {
		t.Errorf("WeCom got %+v; want 3 messages, the last \"three\"", sent)
	}
}

// TestStreamedSendNotAsync: a stream cannot wait in the outbox (its text arrives on the
// request): Prefer: respond-async is not applied, the answer is the synchronous one.
func TestStreamedSendNotAsync(t *testing.T) {
	e := setup(t, setupOpts{quiet: true})
	a := e.post(ndjsonStream(toUser("alice"), "now"), "Content-Type", ndjson, "Prefer", "respond-async")
	if a.status != 200 || a.header.Get("Preference-Applied") != "" || a.header.Get("Location") != "" {
		t.Errorf("streamed send with Prefer: respond-async = %d %s (%v); want 200, not 202, no Preference-Applied", a.status, a.body, a.header)
	}
	if n := len(e.emu.Sent()); n != 1 {
		t.Errorf("WeCom got %d messages; want 1", n)
	}
}
