package aibot

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/seed-a64d9e1f/chatwire/adapter"
)

// The fleet relay: WeCom allows one connection per bot, so in a fleet only the lease holder
// has a socket. Every host records each callback in Redis (so any host can answer it), and a
// host without the socket hands each frame to the holder over Redis pub/sub and waits for its
// ack: replies, streams and proactive sends accepted by any host reach the one socket, in
// order per req_id (the sending host waits for each frame's outcome before the next).

// relayRequest is one frame a host asks the holder to send.
type relayRequest struct {
	ID    string          `json:"id"`
	Cmd   string          `json:"cmd"`
	ReqID string          `json:"req_id"`
	Body  json.RawMessage `json:"body"`
}

// relayResponse is the holder's answer: the ack, or why there is none.
type relayResponse struct {
	Code    int             `json:"code"`
	Msg     string          `json:"msg"`
	Body    json.RawMessage `json:"body,omitempty"`
	Timeout bool            `json:"timeout,omitempty"` // the ack timed out: unknown outcome
	Err     string          `json:"err,omitempty"`     // any other failure
}

// callRecord is a call as stored in Redis.
type callRecord struct {
	ReqID       string `json:"req_id"`
	Kind        string `json:"kind"`
	Chat        string `json:"chat"`
	Group       bool   `json:"group,omitempty"`
	At          int64  `json:"at"` // unix ms
	ResponseURL string `json:"response_url,omitempty"`
}

func (b *Bot) relayKey(parts ...string) string {
	k := b.opts.RedisKeyPrefix
	if k != "" {
		k += ":"
	}
	k += "aibot:" + b.hookID()
	for _, p := range parts {
		k += ":" + p
	}
	return k
}

// storeCall records c in Redis for the other hosts (best effort, in the background).
func (b *Bot) storeCall(c *call) {
	if b.opts.Redis == nil {
		return
	}
	data, _ := json.Marshal(callRecord{ReqID: c.reqID, Kind: c.kind, Chat: c.chat, Group: c.group, At: c.at.UnixMilli(), ResponseURL: c.responseURL})
	go func() {
		ctx, cancel := context.WithTimeout(b.ctx, 5*time.Second)
		defer cancel()
		if err := b.opts.Redis.Set(ctx, b.relayKey("call", c.eventID), data, callTTL).Err(); err != nil {
			b.log.Warn("wecom_aibot: recording a callback in Redis failed", "err", err)
		}
	}()
}

// lookup returns the call of event id, from this host's memory or from Redis.
func (b *Bot) lookup(ctx context.Context, id string) *call {
	if c := b.calls.get(id); c != nil || b.opts.Redis == nil {
		return c
	}
	data, err := b.opts.Redis.Get(ctx, b.relayKey("call", id)).Bytes()
	if err != nil {
		return nil
	}
	var r callRecord
	if json.Unmarshal(data, &r) != nil {
		return nil
	}
	c := &call{eventID: id, reqID: r.ReqID, kind: r.Kind, chat: r.Chat, group: r.Group, at: time.UnixMilli(r.At), responseURL: r.ResponseURL}
	b.calls.add(c)
	return b.calls.get(id)
}

// serveRelay sends the frames other hosts hand over, while this host's connection lives.
func (b *Bot) serveRelay(ctx context.Context) {
	if b.opts.Redis == nil {
		return
	}
	sub := b.opts.Redis.Subscribe(ctx, b.relayKey("relay"))
	defer sub.Close()
	if _, err := sub.Receive(ctx); err != nil {
		return
	}
	ch := sub.Channel()
	for {
		select {
		case <-ctx.Done():
			return
		case m, ok := <-ch:
			if !ok {
				return
			}
			var req relayRequest
			if json.Unmarshal([]byte(m.Payload), &req) != nil || req.ID == "" {
				continue
			}
			go func() {
				cctx, cancel := context.WithTimeout(ctx, orDur(b.opts.AckTimeout, 5*time.Second)+5*time.Second)
				defer cancel()
				ack, err := b.callLocal(cctx, req.Cmd, req.ReqID, req.Body)
				var resp relayResponse
				var ae *APIError
				var te *ackTimeoutError
				switch {
				case err == nil:
					resp.Body = ack
				case errors.As(err, &ae):
					resp.Code, resp.Msg = ae.Code, ae.Msg
				case errors.As(err, &te):
					resp.Timeout = true
				default:
					resp.Err = err.Error()
				}
				data, _ := json.Marshal(resp)
				b.opts.Redis.Publish(context.WithoutCancel(cctx), b.relayKey("relay", req.ID), data)
			}()
		}
	}
}

// relayCall hands one frame to the holder and waits for its outcome. ok is false when no
// host holds the connection (nobody listens).
func (b *Bot) relayCall(ctx context.Context, cmd, reqID string, body any) (json.RawMessage, bool, error) {
	raw, err := json.Marshal(body)
	if err != nil {
		return nil, true, err
	}
	idb := make([]byte, 8)
	rand.Read(idb)
	id := hex.EncodeToString(idb)
	sub := b.opts.Redis.Subscribe(ctx, b.relayKey("relay", id))
	defer sub.Close()
	if _, err := sub.Receive(ctx); err != nil {
		return nil, false, err
	}
	data, _ := json.Marshal(relayRequest{ID: id, Cmd: cmd, ReqID: reqID, Body: raw})
	n, err := b.opts.Redis.Publish(ctx, b.relayKey("relay"), data).Result()
	if err != nil || n == 0 {
		return nil, false, err
	}
	t := time.NewTimer(orDur(b.opts.AckTimeout, 5*time.Second) + 10*time.Second)
	defer t.Stop()
	select {
	case m := <-sub.Channel():
		var resp relayResponse
		if err := json.Unmarshal([]byte(m.Payload), &resp); err != nil {
			return nil, true, &adapter.Error{Kind: adapter.KindUnavailable, Platform: adapter.PlatformWeComAIBot, Message: "relay answered garbage"}
		}
		switch {
		case resp.Timeout:
			return nil, true, &ackTimeoutError{cmd, reqID}
		case resp.Err != "":
			return nil, true, &adapter.Error{Kind: adapter.KindUnavailable, Platform: adapter.PlatformWeComAIBot, Message: "the connection's host: " + resp.Err}
		case resp.Code != 0:
			return nil, true, &APIError{Code: resp.Code, Msg: resp.Msg, Cmd: cmd}
		}
		return resp.Body, true, nil
	case <-t.C:
		return nil, true, &ackTimeoutError{cmd, reqID} // sent to the holder; outcome unknown
	case <-ctx.Done():
		return nil, true, ctx.Err()
	}
}

// relayWait sends a frame through the holder, retrying until one listens or ConnectWait
// passes.
func (b *Bot) relayWait(ctx context.Context, cmd, reqID string, body any) (json.RawMessage, error) {
	deadline := time.Now().Add(orDur(b.opts.ConnectWait, 30*time.Second))
	for wait := 50 * time.Millisecond; ; wait = min(2*wait, time.Second) {
		// A connection of our own may have come up meanwhile.
		b.mu.Lock()
		local := b.conn != nil
		b.mu.Unlock()
		if local {
			return b.callConn(ctx, cmd, reqID, body) // the caller holds reqID's lock
		}
		ack, ok, err := b.relayCall(ctx, cmd, reqID, body)
		if ok {
			return ack, err
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return nil, &adapter.Error{Kind: adapter.KindUnavailable, Platform: adapter.PlatformWeComAIBot, Message: "no host of the fleet holds the long connection", Err: err}
		}
		sleep(ctx, wait)
	}
}

var _ redis.UniversalClient = (*redis.Client)(nil)
