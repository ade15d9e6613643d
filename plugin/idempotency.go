package plugin

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"fmt"

	"github.com/redis/go-redis/v9"
	"google.golang.org/protobuf/proto"

	"github.com/seed-a64d9e1f/chatwire/adapter"
	"github.com/seed-a64d9e1f/chatwire/internal/idempotency"
	pb "github.com/seed-a64d9e1f/chatwire/plugin/proto"
)

// Codes of the errors an idempotent Send answers (in [adapter.Code], kind invalid_request).
const (
	CodeIdempotencyConflict = "idempotency_conflict"
	CodeOutcomeUnknown      = "idempotency_outcome_unknown"
)

var (
	// ErrIdempotencyConflict matches (errors.Is) the error of a Send whose idempotency key
	// was used before with another message for the same bot: nothing was sent.
	ErrIdempotencyConflict = errors.New("idempotency key already used with a different message")
	// ErrOutcomeUnknown matches (errors.Is) the error of a Send whose key's first attempt
	// started and never finished (its plugin process died): it may or may not have been
	// delivered, and it is not sent again under that key. It matches ErrIdempotencyConflict too.
	ErrOutcomeUnknown = errors.New("idempotency key's first attempt never finished: outcome unknown")
	// ErrIdempotencyUnsupported matches (errors.Is) the error of a Send with an idempotency
	// key to a plugin older than protocol minor 2, which would ignore the key: nothing was sent.
	ErrIdempotencyUnsupported = errors.New("idempotency key not supported by this plugin")
)

type idemKeyCtx struct{}

// WithIdempotencyKey returns a ctx under which [Bot.Send] is idempotent for key: the plugin
// sends the message at most once per key and bot within 24 hours, and every Send with that
// key answers the first one's receipt (or error). Plugins configured with a Redis store
// share keys through it, so the promise holds across plugin processes and hosts. The same
// key with a different message fails with an error matching [ErrIdempotencyConflict]. key
// must be 1 to 255 printable ASCII characters; "" leaves ctx as it is.
func WithIdempotencyKey(ctx context.Context, key string) context.Context {
	if key == "" {
		return ctx
	}
	return context.WithValue(ctx, idemKeyCtx{}, key)
}

// IdempotencyKey returns the key [WithIdempotencyKey] put in ctx, or "".
func IdempotencyKey(ctx context.Context) string {
	k, _ := ctx.Value(idemKeyCtx{}).(string)
	return k
}

// idemError restores the sentinel of an idempotency refusal that crossed the wire.
func idemError(e *adapter.Error) {
	switch e.Code {
	case CodeIdempotencyConflict:
		e.Err = ErrIdempotencyConflict
	case CodeOutcomeUnknown:
		e.Err = fmt.Errorf("%w (%w)", ErrOutcomeUnknown, ErrIdempotencyConflict)
	}
}

// keeper returns the Keeper for store (Redis when it names one, memory otherwise) and the
// function that closes its Redis client, if any.
func (s *Server) keeper(store StoreConfig) (*idempotency.Keeper, func() error, error) {
	if store.UsesRedis() {
		newClient := s.opts.RedisClient
		if newClient == nil {
			newClient = defaultRedisClient
		}
		rdb, err := newClient(store)
		if err != nil {
			return nil, nil, err
		}
		if rdb != nil {
			return idempotency.New(idempotency.NewRedis(rdb, store.KeyPrefix), idempotency.Options{Logger: s.log, Lease: s.opts.IdempotencyLease}), rdb.Close, nil
		}
	}
	return idempotency.New(idempotency.NewMemory(0), idempotency.Options{Logger: s.log, Lease: s.opts.IdempotencyLease}), func() error { return nil }, nil
}

// defaultRedisClient builds a client from RedisURL or RedisAddrs (one node, Sentinel with
// RedisMasterName, Cluster with several). Errors never quote the URL.
func defaultRedisClient(sc StoreConfig) (redis.UniversalClient, error) {
	if sc.RedisURL != "" {
		ro, err := redis.ParseURL(sc.RedisURL)
		if err != nil {
			return nil, errors.New("store: redis_url does not parse")
		}
		return redis.NewClient(ro), nil
	}
	uo := &redis.UniversalOptions{Addrs: sc.RedisAddrs, MasterName: sc.RedisMasterName,
		Username: sc.RedisUsername, Password: sc.RedisPassword, SentinelPassword: sc.RedisSentinelPassword, DB: sc.RedisDB}
	if sc.RedisTLS {
		uo.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	return redis.NewUniversalClient(uo), nil
}

// sendOnce runs send once for req's idempotency key: the answer (the SendResponse or the
// error's pb.Error) is stored for the key and replayed to every later Send with it. Keys are
// scoped by "plugin/" and the bot, apart from the host's HTTP keys in a shared Redis.
func (s *Server) sendOnce(ctx context.Context, k *idempotency.Keeper, req *pb.SendRequest, send func(ctx context.Context) (*pb.SendResponse, error)) (*pb.SendResponse, error) {
	if err := idempotency.CheckKey(req.IdempotencyKey); err != nil {
		return nil, toStatus(&adapter.Error{Kind: adapter.KindInvalidRequest, Message: "idempotency_key must be 1 to 255 printable ASCII characters"})
	}
	canon, err := proto.MarshalOptions{Deterministic: true}.Marshal(req.Message)
	if err != nil {
		return nil, toStatus(&adapter.Error{Kind: adapter.KindInvalidRequest, Message: "message: " + err.Error()})
	}
	ireq := idempotency.Request{Key: "plugin/" + req.Bot + "/" + req.IdempotencyKey,
		Fingerprint: sha256.Sum256(append([]byte(req.Bot+"\x00"), canon...))}
	ans, replayed, err := k.Do(ctx, ireq, func(ctx context.Context) (idempotency.Answer, bool) {
		// The send finishes and its answer is stored even if this caller goes away.
		r, err := send(context.WithoutCancel(ctx))
		if err != nil {
			// throttled: nothing was shown, a retry with the key sends
			keep := adapter.KindOf(err) != adapter.KindRateLimited
			body, _ := proto.Marshal(errorToProto(err))
			return idempotency.Answer{Status: 1, Body: body}, keep
		}
		body, _ := proto.Marshal(r)
		return idempotency.Answer{Status: 0, Body: body}, true
	})
	var abandoned *idempotency.AbandonedError
	switch {
	case errors.As(err, &abandoned):
		return nil, toStatus(&adapter.Error{Kind: adapter.KindInvalidRequest, Code: CodeOutcomeUnknown, Message: abandoned.Error()})
	case errors.Is(err, idempotency.ErrConflict):
		return nil, toStatus(&adapter.Error{Kind: adapter.KindInvalidRequest, Code: CodeIdempotencyConflict,
			Message: "this idempotency key was used for a different message to this bot within 24 hours; nothing was sent: use a new key for a new message"})
	case err != nil:
		return nil, toStatus(&adapter.Error{Kind: adapter.KindUnavailable, Message: "idempotency key could not be checked (store unavailable); nothing was sent", Err: err})
	}
	if replayed {
		s.log.Info("send answered from its idempotency key", "bot", req.Bot)
	}
	if ans.Status != 0 {
		var pe pb.Error
		if err := proto.Unmarshal(ans.Body, &pe); err != nil {
			return nil, toStatus(&adapter.Error{Kind: adapter.KindInternal, Message: "stored answer unreadable", Err: err})
		}
		return nil, toStatus(errorFromProto(&pe))
	}
	var r pb.SendResponse
	if err := proto.Unmarshal(ans.Body, &r); err != nil {
		return nil, toStatus(&adapter.Error{Kind: adapter.KindInternal, Message: "stored answer unreadable", Err: err})
	}
	return &r, nil
}
