package teams

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

// Spec §1.3: keys cached ≤ 24 h; an unknown kid refetches at most once per 5 minutes; a
// failed refresh keeps serving the keys already known.
func TestKeySetRefreshAndUnknownKid(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var fetches atomic.Int32
		published := map[string]signingKey{"k1": {endorsements: []string{"msteams"}}}
		var failing atomic.Bool
		ks := &keySet{refresh: 24 * time.Hour, unknownEvery: 5 * time.Minute,
			fetch: func(ctx context.Context) (map[string]signingKey, error) {
				fetches.Add(1)
				if failing.Load() {
					return nil, errors.New("down")
				}
				out := map[string]signingKey{}
				for k, v := range published {
					out[k] = v
				}
				return out, nil
			}}
		ctx := context.Background()
		get := func(kid string) error { _, err := ks.key(ctx, kid); return err }
		if err := get("k1"); err != nil || fetches.Load() != 1 {
			t.Fatalf("first key: err %v, fetches %d; want nil, 1", err, fetches.Load())
		}
		for range 10 {
			get("k1")
		}
		if fetches.Load() != 1 {
			t.Errorf("fetches = %d after cached lookups; want 1", fetches.Load())
		}
		// A new key signed before we knew it: refetched at once only if 5 min passed.
		time.Sleep(6 * time.Minute)
		published["k2"] = signingKey{}
		if err := get("k2"); err != nil || fetches.Load() != 2 {
			t.Errorf("unknown kid after 6 min: err %v, fetches %d; want found after 1 refetch", err, fetches.Load())
		}
		for range 5 {
			if err := get("k3"); !errors.Is(err, errUnknownKey) {
				t.Errorf("k3 = %v; want unknown", err)
			}
		}
		if fetches.Load() != 2 {
			t.Errorf("fetches = %d after 5 lookups of an unknown kid right after a refetch; want 2 (one refetch per 5 min)", fetches.Load())
		}
		published["k3"] = signingKey{}
		time.Sleep(4 * time.Minute)
		if err := get("k3"); err == nil {
			t.Error("k3 found 4 min after the last refetch; want the floor to hold")
		}
		time.Sleep(time.Minute)
		if err := get("k3"); err != nil || fetches.Load() != 3 {
			t.Errorf("k3 after 5 min: %v, fetches %d; want found, 3", err, fetches.Load())
		}
		// After 24 h the set is refreshed even for a known kid; a failed refresh keeps it.
		time.Sleep(24 * time.Hour)
		failing.Store(true)
		if err := get("k1"); err != nil || fetches.Load() != 4 {
			t.Errorf("k1 after 24 h with the JWKS down: %v, fetches %d; want served from cache after 1 attempt", err, fetches.Load())
		}
		for range 5 {
			get("k1")
		}
		if fetches.Load() != 4 {
			t.Errorf("fetches = %d; want no new attempt within 10 s of a failure", fetches.Load())
		}
		time.Sleep(10 * time.Second)
		failing.Store(false)
		if err := get("k1"); err != nil || fetches.Load() != 5 {
			t.Errorf("k1 10 s after the failure: %v, fetches %d; want a new fetch", err, fetches.Load())
		}
		// A first fetch that fails: 503-worthy errors, one attempt per 10 s.
		cold := &keySet{refresh: 24 * time.Hour, unknownEvery: 5 * time.Minute, fetch: func(ctx context.Context) (map[string]signingKey, error) {
			fetches.Add(1)
			return nil, errors.New("down")
		}}
		n := fetches.Load()
		for range 3 {
			if _, err := cold.key(ctx, "k1"); !errors.Is(err, errKeysUnavailable) {
				t.Errorf("cold key = %v; want errKeysUnavailable", err)
			}
		}
		if fetches.Load()-n != 1 {
			t.Errorf("cold fetches = %d; want 1 within 10 s", fetches.Load()-n)
		}
	})
}
