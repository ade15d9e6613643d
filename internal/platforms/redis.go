package platforms

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net/url"

	"github.com/redis/go-redis/v9"

	"github.com/seed-a64d9e1f/chatwire/plugin"
	"github.com/seed-a64d9e1f/chatwire/tokenmgr/redisstore"
)

// RedisClient returns a go-redis client for the Redis store sc names, or nil if it names none.
// It is the one place a client is built from the configuration, for the plugin's token store
// and the host's event queues, deduplication and delivery leases alike:
//   - RedisURL: one node (redis:// or rediss://);
//   - RedisAddrs with RedisMasterName: a Sentinel-managed master (a FailoverClient);
//   - several RedisAddrs without it: a Cluster (a ClusterClient);
//   - one RedisAddrs entry: one node.
//
// Errors never quote the URL, which may carry a password.
func RedisClient(sc plugin.StoreConfig) (redis.UniversalClient, error) {
	if sc.RedisURL != "" {
		if len(sc.RedisAddrs) > 0 {
			return nil, errors.New("store: set redis_url or redis, not both")
		}
		ro, err := redis.ParseURL(sc.RedisURL)
		if err != nil {
			var ue *url.Error
			if errors.As(err, &ue) {
				err = ue.Err // url.Error quotes the whole URL
			}
			return nil, fmt.Errorf("store.redis_url: %w", err)
		}
		return redis.NewClient(ro), nil
	}
	if len(sc.RedisAddrs) == 0 {
		return nil, nil
	}
	uo := RedisOptions(sc)
	if len(uo.Addrs) > 1 && uo.MasterName == "" && uo.DB != 0 {
		return nil, errors.New("store.redis.db: Redis Cluster has only database 0")
	}
	return redis.NewUniversalClient(uo), nil
}

// RedisOptions returns the go-redis options for sc's RedisAddrs (see [RedisClient]).
func RedisOptions(sc plugin.StoreConfig) *redis.UniversalOptions {
	uo := &redis.UniversalOptions{
		Addrs:            append([]string(nil), sc.RedisAddrs...),
		MasterName:       sc.RedisMasterName,
		Username:         sc.RedisUsername,
		Password:         sc.RedisPassword,
		SentinelPassword: sc.RedisSentinelPassword,
		DB:               sc.RedisDB,
	}
	if sc.RedisTLS {
		// ServerName is left empty: crypto/tls takes it from each address dialed, which differ
		// between Sentinels, masters and Cluster nodes.
		uo.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	return uo
}

// RedisStoreOptions returns the redisstore options for sc: key prefix and encryption.
func RedisStoreOptions(sc plugin.StoreConfig, log *slog.Logger) redisstore.Options {
	prefix := sc.KeyPrefix
	if prefix != "" {
		prefix += ":tok:"
	}
	return redisstore.Options{KeyPrefix: prefix, Logger: log, EncryptionKey: sc.EncryptionKey,
		PreviousKeys: sc.PreviousEncryptionKeys, AcceptPlaintext: sc.AcceptPlaintext}
}

// OpenRedisStore opens the token store on the Redis sc names, with its own client, which
// Close on the store does not close: closeClient does. It fails if sc names no Redis.
func OpenRedisStore(sc plugin.StoreConfig, log *slog.Logger) (s *redisstore.Store, closeClient func() error, err error) {
	rdb, err := RedisClient(sc)
	if err != nil {
		return nil, nil, err
	}
	if rdb == nil {
		return nil, nil, errors.New("store: no Redis configured")
	}
	s, err = redisstore.New(rdb, RedisStoreOptions(sc, log))
	if err != nil {
		rdb.Close()
		return nil, nil, err
	}
	return s, rdb.Close, nil
}
