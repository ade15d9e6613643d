package redisstore_test

import (
	"time"

	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/seed-a64d9e1f/chatwire/internal/redistest"
	"github.com/seed-a64d9e1f/chatwire/tokenmgr"
	"github.com/seed-a64d9e1f/chatwire/tokenmgr/redisstore"
)

// testSkew is the Managers' ExpirySkew. Tokens in these tests live a second or two, and a
// Manager judges a token read from the store before it knows any lifetime, when its skew is
// the unscaled default of 30 s: such a token would never be usable.
const testSkew = 20 * time.Millisecond

func startRedis(t testing.TB) *redistest.Server { return redistest.Start(t) }

// newHost returns a Store on its own client, as a separate host would have.
func newHost(t *testing.T, addr string, opts redisstore.Options) (*redisstore.Store, *redis.Client) {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: addr})
	s, err := redisstore.New(c, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = s.Close()
		_ = c.Close()
	})
	return s, c
}

type managerWithStore struct {
	m  *tokenmgr.Manager
	st *redisstore.Store
}
