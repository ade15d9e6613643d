package platforms

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"

	"github.com/redis/go-redis/v9"

	"github.com/seed-a64d9e1f/chatwire/adapter"
	"github.com/seed-a64d9e1f/chatwire/adapter/teams"
	"github.com/seed-a64d9e1f/chatwire/internal/filestore"
	"github.com/seed-a64d9e1f/chatwire/plugin"
	"github.com/seed-a64d9e1f/chatwire/tokenmgr"
)

// Teams is a Teams bot's configuration section (the Bot Connector; adapter/teams).
// AppPassword and MSIHeader are secrets.
type Teams struct {
	AppID       string `yaml:"app_id" json:"app_id"`
	AppPassword string `yaml:"app_password" json:"app_password,omitempty"`
	TenantID    string `yaml:"tenant_id" json:"tenant_id,omitempty"`
	// AppType is SingleTenant (the default), MultiTenant (legacy) or UserAssignedMSI.
	AppType           string `yaml:"app_type" json:"app_type,omitempty"`
	LoginBase         string `yaml:"login_base" json:"login_base,omitempty"`
	OpenIDMetadataURL string `yaml:"openid_metadata_url" json:"openid_metadata_url,omitempty"`
	ChannelIssuer     string `yaml:"channel_issuer" json:"channel_issuer,omitempty"`
	// ServiceHosts are the connector hosts the bot token may be sent to ("host",
	// "*.suffix" or "host:port"). Empty means Teams' own (adapter/teams DefaultServiceHosts).
	ServiceHosts []string `yaml:"service_hosts" json:"service_hosts,omitempty"`
	// DefaultServiceURL is the connector used for a conversation the bot has no reference
	// for. Empty means such sends fail.
	DefaultServiceURL string `yaml:"default_service_url" json:"default_service_url,omitempty"`

	// MSIEndpoint and MSIHeader are the managed identity endpoint of the host's environment
	// (IDENTITY_ENDPOINT, IDENTITY_HEADER), passed by the host: the plugin does not see its
	// environment. Not in the config file.
	MSIEndpoint string `yaml:"-" json:"msi_endpoint,omitempty"`
	MSIHeader   string `yaml:"-" json:"msi_header,omitempty"`
}

// TeamsOptions turns a bot's Teams section into the adapter's options.
func TeamsOptions(bot string, c Teams, hc *http.Client, store tokenmgr.Store, refs teams.ReferenceStore, log *slog.Logger, topts tokenmgr.Options) teams.Options {
	return teams.Options{Bot: bot, AppID: c.AppID, AppPassword: c.AppPassword, TenantID: c.TenantID, AppType: c.AppType,
		MSIEndpoint: c.MSIEndpoint, MSIHeader: c.MSIHeader,
		LoginBase: c.LoginBase, OpenIDMetadataURL: c.OpenIDMetadataURL, ChannelIssuer: c.ChannelIssuer,
		ServiceHosts: c.ServiceHosts, DefaultServiceURL: c.DefaultServiceURL,
		HTTPClient: hc, Store: store, References: refs, Logger: log, TokenOptions: topts}
}

// openTeams opens a Teams bot whose tokens live in store and whose conversation references
// live beside them: in Redis for a fleet, in the state file on one host, in memory otherwise.
func (o *Opener) openTeams(sc plugin.StoreConfig, store tokenmgr.Store, bot plugin.BotConfig, hc *http.Client, log *slog.Logger, topts tokenmgr.Options) (adapter.Adapter, error) {
	var c Teams
	if err := json.Unmarshal(bot.Config, &c); err != nil {
		return nil, fmt.Errorf("teams config: %w", err)
	}
	refs, where := o.references(sc, store, c.AppID)
	a, err := teams.New(TeamsOptions(bot.Name, c, hc, store, refs, log, topts))
	if err != nil {
		return nil, err
	}
	o.m.watch(a.Tokens())
	o.health.open(bot.Name, bot.Platform, a.Tokens())
	if !o.NoStart {
		warm(a.Tokens(), log)
	}
	log.Info("bot opened", "platform", bot.Platform, "app_id", c.AppID, "tenant", c.TenantID, "app_type", c.AppType, "references", where)
	return a, nil
}

// references returns the reference store of app appID beside store, and where it is.
func (o *Opener) references(sc plugin.StoreConfig, store tokenmgr.Store, appID string) (teams.ReferenceStore, string) {
	o.mu.Lock()
	rdb := o.clients[storeID(sc)]
	o.mu.Unlock()
	switch s := store.(type) {
	case *filestore.Store:
		return &teams.KVReferences{KV: fileKV{s}, Prefix: "teams-refs/" + appID + "/"}, "state file"
	}
	if rdb != nil {
		prefix := sc.KeyPrefix
		if prefix != "" {
			prefix += ":"
		}
		return &teams.KVReferences{KV: RedisKV{Client: rdb}, Prefix: prefix + "teams:{" + appID + "}:"}, "redis"
	}
	return new(teams.MemoryReferences), "memory"
}

// RedisKV is a [teams.KV] on Redis strings.
type RedisKV struct{ Client redis.UniversalClient }

// Get implements [teams.KV].
func (k RedisKV) Get(ctx context.Context, key string) ([]byte, bool, error) {
	b, err := k.Client.Get(ctx, key).Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, false, nil
	}
	return b, err == nil, err
}

// Set implements [teams.KV].
func (k RedisKV) Set(ctx context.Context, key string, v []byte) error {
	return k.Client.Set(ctx, key, v, 0).Err()
}

// Delete implements [teams.KV].
func (k RedisKV) Delete(ctx context.Context, key string) error {
	return k.Client.Del(ctx, key).Err()
}

// fileKV is a [teams.KV] in a host's state file.
type fileKV struct{ s *filestore.Store }

func (k fileKV) Get(_ context.Context, key string) ([]byte, bool, error) {
	v := k.s.State(key)
	return v, v != nil, nil
}

func (k fileKV) Set(_ context.Context, key string, v []byte) error { return k.s.SetState(key, v) }

func (k fileKV) Delete(_ context.Context, key string) error { return k.s.DeleteState(key) }
