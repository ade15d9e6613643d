package host

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/seed-a64d9e1f/chatwire/internal/config"
)

// frozenClock is a pacing clock that never moves: a send that must wait for its turn waits
// until its context ends.
type frozenClock struct{ t time.Time }

func (c frozenClock) Now() time.Time { return c.t }
func (c frozenClock) SleepUntil(ctx context.Context, t time.Time) error {
	if !t.After(c.t) {
		return nil
	}
	<-ctx.Done()
	return ctx.Err()
}

// TestStoreDirSurvivesRestart: with store.dir (no Redis), a message accepted with 202 before
// the host restarts is sent after it, once, in order, and its status answers on the new
// host; a webhook event acknowledged to WeCom before the restart, never read, is delivered
// on SSE after it.
func TestStoreDirSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	emu := newEmulator()
	ws := httptest.NewServer(emu)
	t.Cleanup(ws.Close)
	start := time.Date(2026, 3, 2, 10, 0, 0, 0, time.UTC)
	pace := &config.PacingConfig{Limits: config.PacingLimits{Member: []string{"1/1m"}}}
	e1 := setup(t, setupOpts{emu: emu, apiBase: ws.URL, store: &config.StoreConfig{Dir: dir}, pacing: pace, clock: frozenClock{start}})

	var ids []string
	for i := range 3 {
		a := e1.post(fmt.Sprintf(`{"to":{"user":"alice"},"text":"restart %d"}`, i), "Prefer", "respond-async")
		var acc acceptResponse
		if err := json.Unmarshal([]byte(a.body), &acc); err != nil || a.status != 202 || acc.ID == "" {
			t.Fatalf("async send = %d %s; want 202 with an id", a.status, a.body)
		}
		ids = append(ids, acc.ID)
	}
	// The first goes out at once; the others wait for their turn (1 a minute, the clock
	// frozen) when the host stops.
	for deadline := time.Now().Add(10 * time.Second); len(emu.Sent()) < 1; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the first message was not sent within 10s")
		}
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		_, _, body := e1.do("GET", "/v1/bots/hr/messages/"+ids[0], testAPIKey, nil)
		var st struct{ State string }
		if json.Unmarshal(body, &st); st.State == "sent" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("status of the first message = %s; want sent within 10s", body)
		}
	}
	e1.push("alice", "before restart")
	if err := e1.h.Shutdown(); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	if n := len(emu.Sent()); n != 1 {
		t.Fatalf("WeCom got %d messages before the restart; want 1", n)
	}
	for _, f := range []string{"events/hr.log", "outbox/hr.log", "outbox/hr.status"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Errorf("store.dir has no %s: %v", f, err)
		}
	}

	e2 := setup(t, setupOpts{emu: emu, apiBase: ws.URL, store: &config.StoreConfig{Dir: dir}, pacing: pace, clock: &jumpClock{t: start}})
	events := e2.subscribe("")
	sawPush, sent := false, map[string]bool{}
	for !sawPush || !sent[ids[1]] || !sent[ids[2]] {
		ev := next(t, events)
		switch ev.kind {
		case "message":
			if ev.ev.Text != "before restart" || sawPush {
				t.Fatalf("event %+v; want the message pushed before the restart, once", ev)
			}
			sawPush = true
		case "message.sent":
			var st struct{ ID string }
			json.Unmarshal(ev.ev.Raw, &st)
			sent[st.ID] = true
		default:
			t.Fatalf("event %+v", ev)
		}
	}
	got := emu.Sent()
	if len(got) != 3 {
		t.Fatalf("WeCom got %d messages; want 3, each once", len(got))
	}
	for i, s := range got {
		if s.Content != fmt.Sprint("restart ", i) || len(s.Dropped) > 0 {
			t.Errorf("message %d = %q (dropped %v); want restart %d", i, s.Content, s.Dropped, i)
		}
	}
	for i, id := range ids {
		status, _, body := e2.do("GET", "/v1/bots/hr/messages/"+id, testAPIKey, nil)
		var st struct {
			State      string `json:"state"`
			PlatformID string `json:"platform_id"`
		}
		if json.Unmarshal(body, &st); status != 200 || st.State != "sent" || st.PlatformID != got[i].MsgID {
			t.Errorf("after the restart, GET message %d = %d %s; want sent with msgid %s", i, status, body, got[i].MsgID)
		}
	}
}

// TestStoreDirKeepsIdempotencyKeys: with store.dir (no Redis), an Idempotency-Key answered
// before the host restarts is answered from the store after it, and the message is not sent
// again; the same key with another message is still a conflict.
func TestStoreDirKeepsIdempotencyKeys(t *testing.T) {
	dir := t.TempDir()
	emu := newEmulator()
	ws := httptest.NewServer(emu)
	t.Cleanup(ws.Close)
	const body = `{"to":{"user":"alice"},"text":"pay invoice 7"}`
	e1 := setup(t, setupOpts{emu: emu, apiBase: ws.URL, store: &config.StoreConfig{Dir: dir}, quiet: true})
	first := e1.post(body, "Idempotency-Key", "invoice-7")
	if first.status != 200 {
		t.Fatalf("first send = %d %s", first.status, first.body)
	}
	if err := e1.h.Shutdown(); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	e2 := setup(t, setupOpts{emu: emu, apiBase: ws.URL, store: &config.StoreConfig{Dir: dir}, quiet: true})
	again := e2.post(body, "Idempotency-Key", "invoice-7")
	if again.status != 200 || again.body != first.body || again.header.Get("Idempotent-Replayed") != "true" {
		t.Errorf("after the restart, the same key = %d %s (replayed %q); want the first answer %s, replayed",
			again.status, again.body, again.header.Get("Idempotent-Replayed"), first.body)
	}
	if n := len(emu.Sent()); n != 1 {
		t.Errorf("WeCom got %d sends; want 1: the retry across the restart sent again", n)
	}
	if a := e2.post(`{"to":{"user":"alice"},"text":"pay invoice 8"}`, "Idempotency-Key", "invoice-7"); a.status != 409 {
		t.Errorf("same key, other message, after the restart = %d %s; want 409", a.status, a.body)
	}
}
