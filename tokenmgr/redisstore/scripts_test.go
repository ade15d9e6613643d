package redisstore

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/seed-a64d9e1f/chatwire/internal/redistest"
	"github.com/seed-a64d9e1f/chatwire/tokenmgr"
)

func newTestStore(t *testing.T, opts Options) (*Store, *redis.Client) {
	t.Helper()
	srv := redistest.Start(t)
	c := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	t.Cleanup(func() { _ = c.Close() })
	s, err := New(c, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s, c
}

func entry(v string, gen uint64) tokenmgr.Entry {
	return tokenmgr.Entry{Token: tokenmgr.Token{Value: v, ExpiresAt: time.Now().Add(time.Hour)}, Gen: gen}
}

// TestWriteScript proves the conditions of the conditional write: "eq" writes only over the
// generation the fetch started from (a stale holder cannot overwrite), "lt" only over an
// older generation.
func TestWriteScript(t *testing.T) {
	s, c := newTestStore(t, Options{})
	ctx := t.Context()
	const key = "k"
	type step struct {
		name   string
		mode   string
		expect uint64
		e      tokenmgr.Entry
		want   bool
		gen    uint64 // stored gen after the step
		value  string // stored token after the step
	}
	for _, st := range []step{
		{"first write over absent entry", "eq", 0, entry("a", 1), true, 1, "a"},
		{"stale holder based on gen 0", "eq", 0, entry("b", 1), false, 1, "a"},
		{"holder based on gen 1", "eq", 1, entry("c", 2), true, 2, "c"},
		{"stale holder based on gen 1", "eq", 1, entry("d", 2), false, 2, "c"},
		{"write-back of an older gen", "lt", 0, entry("e", 2), false, 2, "c"},
		{"write-back of a newer gen", "lt", 0, entry("f", 5), true, 5, "f"},
	} {
		res, err := s.write(ctx, key, st.mode, st.expect, st.e)
		if err != nil {
			t.Fatalf("%s: write: %v", st.name, err)
		}
		if wrote := res == written; wrote != st.want {
			t.Errorf("%s: write(%s, expect %d, gen %d) = %v; want %v", st.name, st.mode, st.expect, st.e.Gen, wrote, st.want)
		}
		got, err := s.Load(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		if got.Gen != st.gen || got.Token.Value != st.value {
			t.Errorf("%s: stored gen %d token %q; want gen %d token %q", st.name, got.Gen, got.Token.Value, st.gen, st.value)
		}
	}
	if n := c.Exists(ctx, s.valueKey(key)).Val(); n != 1 {
		t.Fatalf("entry key %s missing", s.valueKey(key))
	}
}

// TestInvalidateScript proves compare-and-invalidate: only the stored generation is
// invalidated, and state and generation survive.
func TestInvalidateScript(t *testing.T) {
	s, _ := newTestStore(t, Options{})
	ctx := t.Context()
	e := entry("tok", 3)
	e.State = []byte("refresh-1")
	if _, err := s.write(ctx, "k", "lt", 0, e); err != nil {
		t.Fatal(err)
	}
	if err := s.Invalidate(ctx, "k", 2); err != nil { // a late report about an old token
		t.Fatal(err)
	}
	if got, _ := s.Load(ctx, "k"); got.Token.Value != "tok" {
		t.Fatalf("after Invalidate(gen 2) token = %q; want %q kept", got.Token.Value, "tok")
	}
	if err := s.Invalidate(ctx, "k", 3); err != nil {
		t.Fatal(err)
	}
	got, _ := s.Load(ctx, "k")
	if got.Token.Value != "" || got.Gen != 3 || string(got.State) != "refresh-1" {
		t.Fatalf("after Invalidate(gen 3) = token %q gen %d state %q; want no token, gen 3, state kept", got.Token.Value, got.Gen, got.State)
	}
}

// TestScriptsLeaveForeignEntries proves that the write and invalidate scripts never replace or
// delete an entry sealed with a key the Store lacks, in any mode, while a Store holding that key
// (as EncryptionKey or in PreviousKeys) does replace it.
func TestScriptsLeaveForeignEntries(t *testing.T) {
	k1, k2 := make([]byte, 32), make([]byte, 32)
	k1[0], k2[0] = 1, 2
	owner, c := newTestStore(t, Options{EncryptionKey: k1})
	ctx := t.Context()
	const key = "k"
	seal := func(gen uint64) map[string]string {
		e := entry("sealed", gen)
		e.State = []byte("state")
		c.Del(ctx, owner.valueKey(key))
		if res, err := owner.write(ctx, key, "eq", 0, e); err != nil || res != written {
			t.Fatalf("owner write = %v, %v; want written", res, err)
		}
		return c.HGetAll(ctx, owner.valueKey(key)).Val()
	}
	for _, tc := range []struct {
		name string
		opts Options
		ok   bool
	}{
		{"no key", Options{}, false},
		{"other key", Options{EncryptionKey: k2}, false},
		{"other key, ours previous", Options{EncryptionKey: k2, PreviousKeys: [][]byte{k1}}, true},
		{"same key", Options{EncryptionKey: k1}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st, err := New(c, tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			defer st.Close()
			want := func(what string, before map[string]string, res, wantOK, wantNo writeResult) {
				t.Helper()
				after := c.HGetAll(ctx, owner.valueKey(key)).Val()
				changed := fmt.Sprint(before) != fmt.Sprint(after)
				if tc.ok && (res != wantOK || !changed) || !tc.ok && (res != wantNo || changed) {
					t.Errorf("%s = %d (entry changed: %v); want %d and changed %v", what, res, changed, map[bool]writeResult{true: wantOK, false: wantNo}[tc.ok], tc.ok)
				}
			}
			h := seal(3)
			res, err := st.write(ctx, key, "eq", 3, entry("new", 4))
			if err != nil {
				t.Fatal(err)
			}
			want("write eq", h, res, written, writeForeign)
			h = seal(3)
			res, err = st.write(ctx, key, "lt", 0, entry("new", 9))
			if err != nil {
				t.Fatal(err)
			}
			want("write lt", h, res, written, writeForeign)
			h = seal(3)
			if res, _ = st.write(ctx, key, "eq", 2, entry("new", 3)); res != writeStale {
				t.Errorf("write on a wrong gen = %d; want %d (stale) before any key check", res, writeStale)
			}
			n, err := invalidateScript.Run(ctx, c, []string{st.valueKey(key)}, "3", st.channel, "i 3 k", st.codec.openKeyIDs).Int()
			if err != nil {
				t.Fatal(err)
			}
			want("invalidate", h, writeResult(n), 1, 2)
		})
	}
}

// TestLockScripts proves the lock is released and extended only by its owner.
func TestLockScripts(t *testing.T) {
	s, c := newTestStore(t, Options{LockTTL: 600 * time.Millisecond})
	ctx := t.Context()
	lk := s.lockKey("k")
	if !c.SetNX(ctx, lk, "owner-a", time.Minute).Val() {
		t.Fatal("SetNX on a free lock failed")
	}
	if n, _ := releaseScript.Run(ctx, c, []string{lk}, "owner-b", s.channel, "r 0 k").Int(); n != 0 {
		t.Errorf("release by a non-owner = %d; want 0", n)
	}
	if n, _ := extendScript.Run(ctx, c, []string{lk}, "owner-b", 60000).Int(); n != 0 {
		t.Errorf("extend by a non-owner = %d; want 0", n)
	}
	if v := c.Get(ctx, lk).Val(); v != "owner-a" {
		t.Fatalf("lock owner = %q; want owner-a", v)
	}
	if n, _ := extendScript.Run(ctx, c, []string{lk}, "owner-a", 60000).Int(); n != 1 {
		t.Errorf("extend by the owner = %d; want 1", n)
	}
	if n, _ := releaseScript.Run(ctx, c, []string{lk}, "owner-a", s.channel, "r 0 k").Int(); n != 1 {
		t.Errorf("release by the owner = %d; want 1", n)
	}
	if n := c.Exists(ctx, lk).Val(); n != 0 {
		t.Fatalf("lock still exists after release by owner")
	}

	// hold keeps extending the lease while a fetch runs and releases it at the end.
	if !c.SetNX(ctx, lk, "owner-c", s.opts.LockTTL).Val() {
		t.Fatal("SetNX on a free lock failed")
	}
	release := s.hold(lk, "owner-c")
	deadline := time.Now().Add(3 * s.opts.LockTTL)
	for time.Now().Before(deadline) {
		if v := c.Get(ctx, lk).Val(); v != "owner-c" {
			t.Fatalf("lock lost while held (after %v): owner %q", 3*s.opts.LockTTL-time.Until(deadline), v)
		}
		time.Sleep(20 * time.Millisecond)
	}
	release("r 0 k")
	if n := c.Exists(ctx, lk).Val(); n != 0 {
		t.Fatalf("lock still exists after release")
	}
}

// TestCodec proves sealed values round-trip, are bound to key, field and generation, and
// that previous keys are accepted for reading.
func TestCodec(t *testing.T) {
	k1, k2 := make([]byte, 32), make([]byte, 32)
	k1[0], k2[0] = 1, 2
	c1, err := newCodec(k1, nil, false)
	if err != nil {
		t.Fatal(err)
	}
	c2, _ := newCodec(k2, [][]byte{k1}, false)
	c2only, _ := newCodec(k2, nil, false)
	plain, _ := newCodec(nil, nil, false)
	rollout, _ := newCodec(k1, nil, true)
	v, err := c1.encode("key", "tok", 7, []byte("secret"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		c     *codec
		key   string
		field string
		gen   uint64
		in    string
		ok    bool
		// foreign: sealed with a key the codec lacks, so never to be overwritten by it
		foreign bool
	}{
		{"same key", c1, "key", "tok", 7, v, true, false},
		{"previous key", c2, "key", "tok", 7, v, true, false},
		{"unknown key", c2only, "key", "tok", 7, v, false, true},
		{"no key", plain, "key", "tok", 7, v, false, true},
		{"other key name", c1, "other", "tok", 7, v, false, false},
		{"other field", c1, "key", "st", 7, v, false, false},
		{"other generation", c1, "key", "tok", 8, v, false, false},
		{"tampered", c1, "key", "tok", 7, v[:len(v)-1] + "x", false, false},
		{"truncated key id", plain, "key", "tok", 7, v[:5], false, false},
		{"plaintext refused", c1, "key", "tok", 7, "psecret", false, false},
		{"plaintext accepted in a rollout", rollout, "key", "tok", 7, "psecret", true, false},
		{"sealed still checked in a rollout", rollout, "key", "tok", 8, v, false, false},
		{"plaintext accepted without key", plain, "key", "tok", 7, "psecret", true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.c.decode(tc.key, tc.field, tc.gen, tc.in)
			if tc.ok && (err != nil || string(got) != "secret") {
				t.Fatalf("decode = %q, %v; want secret", got, err)
			}
			if !tc.ok && err == nil {
				t.Fatalf("decode = %q; want an error", got)
			}
			if f := errors.Is(err, errForeign); f != tc.foreign {
				t.Fatalf("decode error %v: foreign = %v; want %v", err, f, tc.foreign)
			}
		})
	}
	if _, err := newCodec(make([]byte, 16), nil, false); err == nil {
		t.Error("newCodec(16-byte key) succeeded; want an error")
	}
	if _, err := newCodec(nil, [][]byte{k1}, false); err == nil {
		t.Error("newCodec(previous keys without a key) succeeded; want an error")
	}
}
