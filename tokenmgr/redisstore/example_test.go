package redisstore_test

import (
	"context"
	"encoding/base64"
	"log"
	"log/slog"
	"os"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/seed-a64d9e1f/chatwire/tokenmgr"
	"github.com/seed-a64d9e1f/chatwire/tokenmgr/redisstore"
)

// Every host of a fleet builds the same Store and Manager; they make one upstream fetch per
// refresh between them, and an invalidation in one host reaches all of them.
func ExampleNew() {
	// Single node, Sentinel (MasterName) or Cluster (several Addrs) by configuration.
	client := redis.NewUniversalClient(&redis.UniversalOptions{Addrs: []string{"127.0.0.1:6379"}})
	defer client.Close()

	key, err := base64.StdEncoding.DecodeString(os.Getenv("CHATWIRE_TOKEN_KEY")) // 32 bytes
	if err != nil {
		log.Fatal(err)
	}
	store, err := redisstore.New(client, redisstore.Options{
		EncryptionKey: key, // optional: AES-256-GCM at rest
		Logger:        slog.Default(),
	})
	if err != nil {
		log.Fatal(err)
	}
	defer store.Close()

	src := tokenmgr.SourceFunc(func(ctx context.Context) (tokenmgr.Token, error) {
		// Call the platform's token endpoint here.
		return tokenmgr.Token{Value: "…", ExpiresAt: time.Now().Add(2 * time.Hour)}, nil
	})
	m := tokenmgr.New("wecom/ww0123/1000002", src, tokenmgr.Options{Store: store})
	defer m.Close()

	tok, err := m.Token(context.Background()) // no Redis round trip once the token is fresh
	if err != nil {
		log.Fatal(err)
	}
	_ = tok
	log.Printf("redis outages so far: %d", store.Stats().Outages)
}
