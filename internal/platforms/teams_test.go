package platforms

import (
	"context"
	"encoding/json"
	"net/http/httptest"
	"net/url"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/seed-a64d9e1f/chatwire/adapter"
	"github.com/seed-a64d9e1f/chatwire/adapter/teams"
	"github.com/seed-a64d9e1f/chatwire/adapter/teams/teamstest"
	"github.com/seed-a64d9e1f/chatwire/internal/redistest"
	"github.com/seed-a64d9e1f/chatwire/plugin"
)

const (
	tAppID    = "0b7e4c1a-3f25-4d6e-9a8b-1c2d3e4f5a6b"
	tPassword = "teams-password-x9"
	tTenant   = "tenant-teams-1"
)

// openTeamsBot opens a Teams bot through o against emu, serving its messaging endpoint.
func openTeamsBot(t *testing.T, o *Opener, sc plugin.StoreConfig, emu *teamstest.Server) *teams.Adapter {
	t.Helper()
	u, _ := url.Parse(emu.URL)
	cfg, _ := json.Marshal(Teams{AppID: tAppID, AppPassword: tPassword, TenantID: tTenant, LoginBase: emu.URL,
		OpenIDMetadataURL: emu.MetadataURL(), ServiceHosts: []string{u.Host}})
	a, err := o.Open(t.Context(), sc, plugin.BotConfig{Name: "tbot", Platform: adapter.PlatformTeams, Config: cfg})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	ta := a.(*teams.Adapter)
	ep := httptest.NewServer(ta.Handler(func(context.Context, []adapter.Event) error { return nil }, 0))
	t.Cleanup(ep.Close)
	emu.AddBot(teamstest.Bot{AppID: tAppID, Password: tPassword, TenantID: tTenant, Endpoint: ep.URL})
	return ta
}

func newEmulator(t *testing.T) *teamstest.Server {
	emu := &teamstest.Server{}
	srv := httptest.NewServer(emu)
	t.Cleanup(srv.Close)
	emu.URL = srv.URL
	return emu
}

// TestTeamsReferencesBesideTokens: a Teams bot keeps its conversation references where the
// host keeps tokens, so another process on the same store (another host of the fleet, or this
// host after a restart) can send proactively to a user who installed the bot: Redis keys under
// the host's prefix, the state file in store.dir; memory without a store.
func TestTeamsReferencesBesideTokens(t *testing.T) {
	rds := redistest.Start(t)
	cases := []struct {
		name string
		sc   plugin.StoreConfig
	}{
		{"redis", plugin.StoreConfig{RedisURL: "redis://" + rds.Addr() + "/0", KeyPrefix: "pfx"}},
		{"dir", plugin.StoreConfig{Dir: t.TempDir()}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			emu := newEmulator(t)
			openTeamsBot(t, New(nil, nil), tc.sc, emu)
			user := emu.NewUser("Megan", tTenant)
			if _, err := emu.InstallPersonal(t.Context(), tAppID, user); err != nil {
				t.Fatal(err)
			}
			// A second opener is another process on the same store.
			other := openTeamsBot(t, New(nil, nil), tc.sc, emu)
			rc, err := other.Send(t.Context(), adapter.Message{To: adapter.Target{User: user.AADObjectID}, Text: "hello"})
			if err != nil {
				t.Fatalf("proactive send from another process: %v", err)
			}
			sent := emu.Sent()
			if len(sent) == 0 || sent[len(sent)-1].Activity.Text != "hello" || rc.ID == "" {
				t.Fatalf("sent %+v, receipt %+v", sent, rc)
			}
			if tc.name == "redis" {
				rdb := redis.NewClient(&redis.Options{Addr: rds.Addr()})
				defer rdb.Close()
				keys, _ := rdb.Keys(context.Background(), "pfx:teams:{"+tAppID+"}:*").Result()
				if len(keys) < 3 { // conversation, user, aad link
					t.Errorf("Redis keys under the prefix: %v; want conversation, user and Entra id", keys)
				}
			}
		})
	}
	t.Run("memory", func(t *testing.T) {
		emu := newEmulator(t)
		a := openTeamsBot(t, New(nil, nil), plugin.StoreConfig{}, emu)
		if _, ok := a.References().(*teams.MemoryReferences); !ok {
			t.Errorf("references without a store: %T; want memory", a.References())
		}
	})
}
