package redisstore_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"maps"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/seed-a64d9e1f/chatwire/tokenmgr"
	"github.com/seed-a64d9e1f/chatwire/tokenmgr/redisstore"
)

// secretSource hands out SECRET-<name>-1, -2, … living life each (an hour while long is
// set), so a log scan can tell whether any of them leaked.
type secretSource struct {
	name string
	life time.Duration
	long atomic.Bool
	n    atomic.Int64
}

func (s *secretSource) Token(ctx context.Context) (tokenmgr.Token, error) {
	n := s.n.Add(1)
	life := s.life
	if s.long.Load() { // read after the Add: a token numbered above n.Load() after Store(true) is long
		life = time.Hour
	}
	return tokenmgr.Token{Value: fmt.Sprintf("SECRET-%s-%d", s.name, n), ExpiresAt: time.Now().Add(life)}, nil
}

const foreignMsg = "stored token for " + key + " is encrypted with a key this host does not have: set the same encryption key on every host"

// TestForeignKeyNeverOverwritten runs a host without the encryption key, and one with another
// key, next to a host that has it: they never overwrite (nor invalidate) the sealed entry,
// each logs one Error line for the key, and their Managers keep working by refreshing in the
// process, shared between the Managers of the host. The keyed host is not disturbed.
func TestForeignKeyNeverOverwritten(t *testing.T) {
	srv := startRedis(t)
	ctx := t.Context()
	k1, k2 := bytes.Repeat([]byte{1}, 32), bytes.Repeat([]byte{2}, 32)

	good, rc := newHost(t, srv.Addr(), redisstore.Options{EncryptionKey: k1})
	goodSrc := &secretSource{name: "GOOD", life: time.Hour}
	goodM := newManager(t, good, goodSrc)
	goodTok, err := goodM.Token(ctx)
	if err != nil {
		t.Fatal(err)
	}
	entryKey := "chatwire:tok:{" + key + "}"
	sealed := rc.HGetAll(ctx, entryKey).Val()
	if sealed["gen"] != "1" || !strings.HasPrefix(sealed["tok"], "e") {
		t.Fatalf("keyed host stored %q; want a sealed entry at gen 1", sealed)
	}

	for _, tc := range []struct {
		name string
		opts redisstore.Options
	}{
		{"no key", redisstore.Options{}},
		{"other key", redisstore.Options{EncryptionKey: k2}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var logs syncBuffer
			tc.opts.Logger = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
			st, _ := newHost(t, srv.Addr(), tc.opts)
			src := &secretSource{name: "LOCAL", life: 300 * time.Millisecond}
			ms := []*tokenmgr.Manager{newManager(t, st, src), newManager(t, st, src)}
			defer func() {
				if t.Failed() {
					t.Logf("log:\n%s", logs.String())
				}
			}()

			first := waitShared(t, "first local token", ms, 5*time.Second, func(string) bool { return true })
			// Both hold the first token fetched: the second Manager shared it, as a fetch of
			// its own would have made the second. (The fetch count could move on by now: the
			// token lives 300 ms.)
			if first != "SECRET-LOCAL-1" {
				t.Fatalf("Managers hold %s (token %d) after %d local fetches; want the first local token for both", tokenmgr.Fingerprint(first), tokNumOf(first), src.n.Load())
			}
			// Several refreshes (the local token lives 300 ms).
			waitShared(t, "refreshed local token", ms, 5*time.Second, func(v string) bool { return tokNumOf(v) >= 3 })
			// An invalidation shared by the host's Managers, of a token living an hour, so
			// that only the invalidation can replace it.
			src.long.Store(true)
			short := src.n.Load()
			cur := waitShared(t, "long-lived local token", ms, 5*time.Second, func(v string) bool { return tokNumOf(v) > short })
			after := sharedInvalidation(t, ms, cur)
			if !strings.HasPrefix(after, "SECRET-LOCAL-") {
				t.Fatalf("after invalidation the Managers hold %s; want a local token", tokenmgr.Fingerprint(after))
			}
			for _, m := range ms { // no refresh runs while the counters are compared
				m.Close()
			}

			if got := rc.HGetAll(ctx, entryKey).Val(); !maps.Equal(got, sealed) {
				t.Fatalf("entry sealed with the key changed under a host without it:\nbefore %q\nafter  %q", sealed, got)
			}
			log := logs.String()
			if n := strings.Count(log, foreignMsg); n != 1 || !strings.Contains(log, "level=ERROR msg=\"redisstore: "+foreignMsg) {
				t.Errorf("log has %d lines %q; want exactly one, at ERROR", n, foreignMsg)
			}
			if strings.Contains(log, "SECRET") {
				t.Errorf("log shows a token:\n%s", log)
			}
			s := st.Stats()
			if s.Unreadable == 0 || s.LocalRefreshes != uint64(src.n.Load()) || s.Fetches != 0 || s.Outages != 0 || !s.Available {
				t.Errorf("Stats %+v after %d local fetches; want Unreadable > 0, LocalRefreshes = fetches, no fleet fetch, no outage", s, src.n.Load())
			}
		})
	}

	// The keyed host saw none of it: its token is still stored, and still handed out.
	if tok, err := goodM.Token(ctx); err != nil || tok.Value != goodTok.Value || goodSrc.n.Load() != 1 {
		t.Fatalf("keyed host: Token = %s, %v after %d fetches; want its first token, 1 fetch", tokenmgr.Fingerprint(tok.Value), err, goodSrc.n.Load())
	}
	if e, err := good.Load(ctx, key); err != nil || e.Token.Value != goodTok.Value || e.Gen != 1 {
		t.Fatalf("keyed host Load = %s gen %d, %v; want its token at gen 1", tokenmgr.Fingerprint(e.Token.Value), e.Gen, err)
	}
	if s := good.Stats(); s.Unreadable != 0 {
		t.Errorf("keyed host Stats %+v; want nothing unreadable", s)
	}
}

// TestForeignKeyReadableAgain: once the entry is readable again (here: a host without the key
// finds the entry gone, and stores its own), the host shares through Redis again.
func TestForeignKeyReadableAgain(t *testing.T) {
	srv := startRedis(t)
	ctx := t.Context()
	k1 := bytes.Repeat([]byte{1}, 32)
	keyed, rc := newHost(t, srv.Addr(), redisstore.Options{EncryptionKey: k1})
	var n atomic.Int64
	if _, _, err := keyed.Refresh(ctx, key, 0, fixedFetch("SECRET-SEALED", &n)); err != nil {
		t.Fatal(err)
	}
	var logs syncBuffer
	plain, _ := newHost(t, srv.Addr(), redisstore.Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	e, fetched, err := plain.Refresh(ctx, key, 0, fixedFetch("SECRET-LOCAL", &n))
	if err != nil || !fetched || e.Token.Value != "SECRET-LOCAL" || e.Gen != 2 {
		t.Fatalf("Refresh over a foreign entry = %s gen %d fetched %v, %v; want a local fetch at gen 2", tokenmgr.Fingerprint(e.Token.Value), e.Gen, fetched, err)
	}
	if g := rc.HGet(ctx, "chatwire:tok:{"+key+"}", "gen").Val(); g != "1" {
		t.Fatalf("stored gen %s; want 1 (not overwritten)", g)
	}
	rc.Del(ctx, "chatwire:tok:{"+key+"}")
	e, fetched, err = plain.Refresh(ctx, key, e.Gen, fixedFetch("SECRET-SHARED", &n))
	if err != nil || !fetched || e.Token.Value != "SECRET-SHARED" || e.Gen != 3 {
		t.Fatalf("Refresh after the entry is gone = %s gen %d fetched %v, %v; want a fleet fetch at gen 3", tokenmgr.Fingerprint(e.Token.Value), e.Gen, fetched, err)
	}
	if g := rc.HGet(ctx, "chatwire:tok:{"+key+"}", "gen").Val(); g != "3" {
		t.Fatalf("stored gen %s; want 3: the host stores again", g)
	}
	if s := plain.Stats(); s.Fetches != 1 || s.LocalRefreshes != 1 {
		t.Errorf("Stats %+v; want 1 local refresh, then 1 fetch under the fleet lock", s)
	}
	if log := logs.String(); !strings.Contains(log, "readable again") || strings.Count(log, foreignMsg) != 1 {
		t.Errorf("log:\n%s\nwant one %q line, then one saying it is readable again", log, foreignMsg)
	}
}

// TestPlaintextRollout turns encryption on while an entry, with source state, is stored in the
// clear. By default a keyed host refuses the clear entry (anyone who can write to Redis could
// have planted it) and replaces it; with AcceptPlaintext it takes over its token and state and
// seals the next one. Either way, the host still without the key then leaves the sealed entry
// alone.
func TestPlaintextRollout(t *testing.T) {
	k1 := bytes.Repeat([]byte{1}, 32)
	const clearTok, clearState = "SECRET-CLEAR-TOKEN", "SECRET-CLEAR-REFRESH"
	for _, tc := range []struct {
		name   string
		accept bool
	}{{"default refuses", false}, {"AcceptPlaintext", true}} {
		t.Run(tc.name, func(t *testing.T) {
			srv := startRedis(t)
			ctx := t.Context()
			old, rc := newHost(t, srv.Addr(), redisstore.Options{})
			if _, _, err := old.Refresh(ctx, key, 0, func(ctx context.Context, prev tokenmgr.Entry) (tokenmgr.Entry, error) {
				return tokenmgr.Entry{Token: tokenmgr.Token{Value: clearTok, ExpiresAt: time.Now().Add(time.Hour)}, State: []byte(clearState), Issued: time.Now()}, nil
			}); err != nil {
				t.Fatal(err)
			}

			keyed, _ := newHost(t, srv.Addr(), redisstore.Options{EncryptionKey: k1, AcceptPlaintext: tc.accept})
			e, err := keyed.Load(ctx, key)
			if err != nil {
				t.Fatal(err)
			}
			if readable := e.Token.Value == clearTok && string(e.State) == clearState; readable != tc.accept || e.Gen != 1 {
				t.Fatalf("keyed Load of the clear entry: readable %v gen %d; want readable %v gen 1", readable, e.Gen, tc.accept)
			}
			if s := keyed.Stats(); (s.Unreadable == 0) == !tc.accept {
				t.Errorf("Stats %+v; want Unreadable counted only when the clear entry is refused", s)
			}
			// A Manager on the keyed host: with AcceptPlaintext it uses the clear token as is.
			src := &secretSource{name: "SEALED", life: time.Hour}
			m := newManager(t, keyed, src)
			tok, err := m.Token(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if tc.accept && (tok.Value != clearTok || src.n.Load() != 0) {
				t.Fatalf("Token = %s after %d fetches; want the clear token, no fetch", tokenmgr.Fingerprint(tok.Value), src.n.Load())
			}
			if !tc.accept && (tok.Value == clearTok || src.n.Load() != 1) {
				t.Fatalf("Token = %s after %d fetches; want a fetched one", tokenmgr.Fingerprint(tok.Value), src.n.Load())
			}
			// The next refresh seals; with AcceptPlaintext it redeems the clear state.
			if e, err = keyed.Load(ctx, key); err != nil {
				t.Fatal(err)
			}
			var gotState atomic.Value
			if _, _, err := keyed.Refresh(ctx, key, e.Gen, func(ctx context.Context, prev tokenmgr.Entry) (tokenmgr.Entry, error) {
				gotState.Store(string(prev.State))
				return tokenmgr.Entry{Token: tokenmgr.Token{Value: "SECRET-NEXT", ExpiresAt: time.Now().Add(time.Hour)}, State: []byte("SECRET-NEXT-REFRESH"), Issued: time.Now()}, nil
			}); err != nil {
				t.Fatal(err)
			}
			if tc.accept && gotState.Load() != clearState {
				t.Errorf("refresh redeemed state %q; want the clear entry's", gotState.Load())
			}
			h := rc.HGetAll(ctx, "chatwire:tok:{"+key+"}").Val()
			if !strings.HasPrefix(h["tok"], "e") || strings.Contains(fmt.Sprint(h), "SECRET") {
				t.Fatalf("entry after the keyed refresh: %q; want sealed, no secret", h)
			}
			// The host still without the key cannot read it and leaves it alone.
			var n atomic.Int64
			if _, fetched, err := old.Refresh(ctx, key, 1, fixedFetch("SECRET-OLD-HOST", &n)); err != nil || !fetched {
				t.Fatalf("old host Refresh: fetched %v, %v; want a local fetch", fetched, err)
			}
			if got := rc.HGetAll(ctx, "chatwire:tok:{"+key+"}").Val(); !maps.Equal(got, h) {
				t.Fatalf("old host changed the sealed entry:\nbefore %q\nafter  %q", h, got)
			}
		})
	}
}

// tokNumOf returns the number that ends v, "SECRET-LOCAL-3" → 3.
func tokNumOf(v string) int64 {
	n, _ := strconv.ParseInt(v[strings.LastIndexByte(v, '-')+1:], 10, 64)
	return n
}

// TestForeignEntryTurnedUnreadable: when the entry a host could not decrypt is replaced by
// one it cannot read at all, the host warns that it ignores it, and never says it is
// readable again.
func TestForeignEntryTurnedUnreadable(t *testing.T) {
	srv := startRedis(t)
	ctx := t.Context()
	keyed, rc := newHost(t, srv.Addr(), redisstore.Options{EncryptionKey: bytes.Repeat([]byte{1}, 32)})
	var n atomic.Int64
	if _, _, err := keyed.Refresh(ctx, key, 0, fixedFetch("SECRET-SEALED", &n)); err != nil {
		t.Fatal(err)
	}
	var logs syncBuffer
	plain, _ := newHost(t, srv.Addr(), redisstore.Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if _, _, err := plain.Refresh(ctx, key, 0, fixedFetch("SECRET-LOCAL", &n)); err != nil {
		t.Fatal(err)
	}
	rc.HSet(ctx, "chatwire:tok:{"+key+"}", "gen", "not-a-number")
	if _, err := plain.Load(ctx, key); err != nil {
		t.Fatal(err)
	}
	log := logs.String()
	if strings.Contains(log, "readable again") || !strings.Contains(log, "level=WARN msg=\"redisstore: ignoring an unreadable entry") {
		t.Errorf("log:\n%s\nwant a warning that the unreadable entry is ignored, and nothing saying it is readable again", log)
	}
}
