package aibot

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/seed-a64d9e1f/chatwire/adapter"
)

// Webhook streams in Redis (Options.Redis set in webhook mode): WeCom may send a stream's
// refresh polls to any host of a fleet, and the bot's reply may be accepted by any host, so
// the stream's text and state live in Redis: a hash (event, created, final, closed, served,
// taken) and the text, each kept an hour.

const hookTTL = time.Hour

func (b *Bot) hookID() string {
	if b.opts.BotID != "" {
		return b.opts.BotID
	}
	sum := sha256.Sum256([]byte(b.opts.Token)) // a stable name that reveals nothing
	return "t" + hex.EncodeToString(sum[:6])
}

func (b *Bot) hookKey(parts ...string) string {
	k := b.opts.RedisKeyPrefix
	if k != "" {
		k += ":"
	}
	k += "aibot-hook:" + b.hookID()
	for _, p := range parts {
		k += ":" + p
	}
	return k
}

// rCreate records a new stream for eventID.
func (b *Bot) rCreate(ctx context.Context, id, eventID string, created time.Time) error {
	pipe := b.opts.Redis.TxPipeline()
	pipe.HSet(ctx, b.hookKey("stream", id), "event", eventID, "created", created.UnixMilli())
	pipe.Expire(ctx, b.hookKey("stream", id), hookTTL)
	pipe.Set(ctx, b.hookKey("event", eventID), id, hookTTL)
	_, err := pipe.Exec(ctx)
	return err
}

// rTake claims the stream of eventID for one writer; it returns the stream id and when the
// stream was created.
func (b *Bot) rTake(ctx context.Context, eventID string) (string, time.Time, error) {
	id, err := b.opts.Redis.Get(ctx, b.hookKey("event", eventID)).Result()
	if err == redis.Nil {
		return "", time.Time{}, adapter.Errorf(adapter.KindNotFound, "wecom_aibot: reply_to %q: no message callback with a stream", eventID)
	}
	if err != nil {
		return "", time.Time{}, &adapter.Error{Kind: adapter.KindUnavailable, Platform: adapter.PlatformWeComAIBot, Message: "reading stream state", Err: err}
	}
	ok, err := b.opts.Redis.HSetNX(ctx, b.hookKey("stream", id), "taken", 1).Result()
	if err != nil {
		return "", time.Time{}, &adapter.Error{Kind: adapter.KindUnavailable, Platform: adapter.PlatformWeComAIBot, Message: "claiming the stream", Err: err}
	}
	st, _ := b.opts.Redis.HMGet(ctx, b.hookKey("stream", id), "closed", "created").Result()
	if !ok || st[0] != nil {
		return "", time.Time{}, adapter.Errorf(adapter.KindInvalidRequest, "wecom_aibot: %s was already answered", eventID)
	}
	ms, _ := strconv.ParseInt(str(st[1]), 10, 64)
	return id, time.UnixMilli(ms), nil
}

func str(v any) string {
	s, _ := v.(string)
	return s
}

// rRefresh answers a poll from Redis; known is false for a stream Redis does not know.
func (b *Bot) rRefresh(ctx context.Context, id string) (content string, finish, known bool) {
	key := b.hookKey("stream", id)
	vals, err := b.opts.Redis.HMGet(ctx, key, "created", "final", "closed").Result()
	if err != nil || vals[0] == nil {
		return "", true, false
	}
	text, _ := b.opts.Redis.Get(ctx, key+":text").Result()
	content = text
	if len(content) > MaxBubbleBytes {
		content = content[:cutAt(content, MaxBubbleBytes)]
	}
	if vals[2] != nil {
		// Closed: WeCom got finish:true; what it showed is fixed.
		served, _ := b.opts.Redis.HGet(ctx, key, "served").Int()
		return text[:min(served, len(text))], true, true
	}
	ms, _ := strconv.ParseInt(str(vals[0]), 10, 64)
	wait := orDur(b.opts.StreamWait, 5*time.Minute+30*time.Second)
	finish = vals[1] != nil || time.Since(time.UnixMilli(ms)) >= wait
	// served first, then closed: a writer that sees closed reads the final served.
	b.opts.Redis.HSet(ctx, key, "served", len(content))
	if finish {
		b.opts.Redis.HSet(ctx, key, "closed", 1)
	}
	return content, finish, true
}

// remoteWriter is the Stream of a webhook reply whose state lives in Redis.
type remoteWriter struct {
	b       *Bot
	id      string
	call    *call
	created time.Time
	max     int
	size    int // bytes appended
	final   bool
}

func (w *remoteWriter) key() string { return w.b.hookKey("stream", w.id) }

func (w *remoteWriter) Append(ctx context.Context, delta string) error {
	if w.final {
		return adapter.Errorf(adapter.KindInvalidRequest, "wecom_aibot: stream is closed")
	}
	if w.size+len(delta) > w.max {
		return adapter.Errorf(adapter.KindTooLarge, "wecom_aibot: streamed reply over %d bytes", w.max)
	}
	pipe := w.b.opts.Redis.TxPipeline()
	pipe.Append(ctx, w.key()+":text", delta)
	pipe.Expire(ctx, w.key()+":text", hookTTL)
	if _, err := pipe.Exec(ctx); err != nil {
		return &adapter.Error{Kind: adapter.KindUnavailable, Platform: adapter.PlatformWeComAIBot, Message: "appending to the stream", Err: err}
	}
	w.size += len(delta)
	return nil
}

// Finish marks the reply final and waits until a poll (on any host) served it; the part
// the stream could not carry goes to response_url.
func (w *remoteWriter) Finish(ctx context.Context) (adapter.Receipt, error) {
	if w.final {
		return adapter.Receipt{}, adapter.Errorf(adapter.KindInvalidRequest, "wecom_aibot: stream is closed")
	}
	w.final = true
	if w.size == 0 {
		return adapter.Receipt{}, adapter.Errorf(adapter.KindInvalidRequest, "wecom_aibot: stream finished without any text")
	}
	rdb := w.b.opts.Redis
	if err := rdb.HSet(ctx, w.key(), "final", 1).Err(); err != nil {
		return adapter.Receipt{}, &adapter.Error{Kind: adapter.KindUnavailable, Platform: adapter.PlatformWeComAIBot, Message: "finishing the stream", Err: err}
	}
	deadline := w.created.Add(orDur(w.b.opts.StreamWait, 5*time.Minute+30*time.Second) + 10*time.Second)
	for {
		closed, _ := rdb.HGet(ctx, w.key(), "closed").Result()
		if closed != "" || time.Now().After(deadline) {
			break
		}
		if !sleep(ctx, 50*time.Millisecond) {
			return adapter.Receipt{}, ctx.Err()
		}
	}
	served, _ := rdb.HGet(ctx, w.key(), "served").Int()
	text, _ := rdb.Get(ctx, w.key()+":text").Result()
	r := adapter.Receipt{ID: w.id, IDs: []string{w.id}}
	if served >= len(text) {
		return r, nil
	}
	rest := text[served:]
	if len(rest) > MaxBubbleBytes {
		return r, adapter.Errorf(adapter.KindTooLarge, "wecom_aibot: %d bytes left after the stream; response_url takes one message of at most %d", len(rest), MaxBubbleBytes)
	}
	m := markdownMsg{MsgType: "markdown"}
	m.Markdown.Content = rest
	if _, err := w.b.postResponseURL(ctx, w.call, m); err != nil {
		return r, err
	}
	r.IDs = append(r.IDs, "response_url")
	return r, nil
}

func (w *remoteWriter) Abort(ctx context.Context, reason string) error {
	w.final = true
	w.b.opts.Redis.HSet(ctx, w.key(), "final", 1)
	return nil
}
