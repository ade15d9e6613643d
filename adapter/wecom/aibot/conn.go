package aibot

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"github.com/seed-a64d9e1f/chatwire/adapter"
)

// Errors Receive returns.
var (
	// ErrKicked means WeCom sent disconnected_event: another connection subscribed for this
	// bot. Receive returns it instead of reconnecting, so two processes never kick each other
	// in a loop; run exactly one connection per bot.
	ErrKicked = &adapter.Error{Kind: adapter.KindUnavailable, Platform: adapter.PlatformWeComAIBot, Code: "disconnected_event",
		Message: "another connection subscribed for this bot (disconnected_event); not reconnecting, to avoid a kick loop: run one connection per bot"}
)

type frameHeaders struct {
	ReqID string `json:"req_id"`
}

type outFrame struct {
	Cmd     string       `json:"cmd"`
	Headers frameHeaders `json:"headers"`
	Body    any          `json:"body,omitempty"`
}

type inFrame struct {
	Cmd     string          `json:"cmd"`
	Headers frameHeaders    `json:"headers"`
	Body    json.RawMessage `json:"body"`
	Errcode *int            `json:"errcode"`
	Errmsg  string          `json:"errmsg"`
}

// ack is the answer to one frame.
type ack struct {
	code int
	msg  string
	body json.RawMessage
}

// wsConn is one subscribed connection.
type wsConn struct {
	ws      *websocket.Conn
	mu      sync.Mutex // protects pending
	pending map[string]chan ack
	done    chan struct{} // closed when the read loop ends
	missed  atomic.Int32  // pings without an ack
	kicked  atomic.Bool
}

// newReqID returns a fresh client req_id in the SDK's form: <cmd>_<ms>_<8 hex>.
func newReqID(cmd string) string {
	var b [4]byte
	rand.Read(b[:])
	return cmd + "_" + strconv.FormatInt(time.Now().UnixMilli(), 10) + "_" + hex.EncodeToString(b[:])
}

// sanitize removes the control characters the SDK strips before JSON decoding
// ([\x00-\x08\x0B-\x1F]: all but tab and newline). UTF-8 multi-byte sequences never hold
// such bytes, so this works on bytes.
func sanitize(b []byte) []byte {
	bad := func(c byte) bool { return c < 0x20 && c != '\t' && c != '\n' }
	i := bytes.IndexFunc(b, func(r rune) bool { return r < 0x20 && r != '\t' && r != '\n' })
	if i < 0 {
		return b
	}
	out := append([]byte(nil), b[:i]...)
	for _, c := range b[i:] {
		if !bad(c) {
			out = append(out, c)
		}
	}
	return out
}

// Receive runs the long connection: dial, subscribe, heartbeat, and reconnect with the
// SDK's backoff after a drop. It calls emit with each callback (in order, one event per
// call); when emit fails, the same event is offered again after a short wait. It returns
// ctx.Err() when ctx ends, an *adapter.Error of KindUnauthorized on 853000 (the error says
// what to fix), [ErrKicked] after disconnected_event, or an error of KindUnavailable after
// MaxReconnects failed attempts in a row. Only one Receive may run at a time.
func (b *Bot) Receive(ctx context.Context, emit func(ctx context.Context, events []adapter.Event) error) error {
	if b.webhook {
		return adapter.Errorf(adapter.KindInvalidRequest, "wecom_aibot: bot is in webhook mode: events arrive through HandleWebhook")
	}
	b.mu.Lock()
	if b.receiving {
		b.mu.Unlock()
		return adapter.Errorf(adapter.KindInvalidRequest, "wecom_aibot: Receive is already running")
	}
	b.receiving = true
	b.mu.Unlock()
	defer func() { b.mu.Lock(); b.receiving = false; b.mu.Unlock() }()

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(b.ctx, cancel)
	defer stop()

	in := newInbox()
	emitted := make(chan struct{})
	go func() {
		defer close(emitted)
		b.emitLoop(ctx, in, emit)
	}()
	var err error
	if b.opts.Lease == nil {
		err = b.connectLoop(ctx, in)
	} else {
		err = b.leasedLoop(ctx, in)
	}
	in.close()
	<-emitted
	if b.ctx.Err() != nil {
		return errClosed
	}
	return err
}

// leasedLoop runs connectLoop while this process holds the lease, and waits to hold it
// again after losing it.
func (b *Bot) leasedLoop(ctx context.Context, in *inbox) error {
	for {
		held, release, err := b.opts.Lease.Acquire(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return &adapter.Error{Kind: adapter.KindUnavailable, Platform: adapter.PlatformWeComAIBot, Message: "acquiring the connection lease", Err: err}
		}
		b.log.InfoContext(ctx, "wecom_aibot: holding the connection lease")
		hctx, cancel := context.WithCancel(ctx)
		stop := context.AfterFunc(held, cancel)
		err = b.connectLoop(hctx, in)
		stop()
		cancel()
		if errors.Is(err, ErrKicked) {
			// Another host that took the lease over, or something outside the fleet?
			t := time.NewTimer(orDur(b.opts.KickGrace, 5*time.Second))
			select {
			case <-held.Done():
			case <-t.C:
			case <-ctx.Done():
			}
			t.Stop()
		}
		lost := held.Err() != nil
		release()
		switch {
		case ctx.Err() != nil:
			return ctx.Err()
		case lost:
			b.log.WarnContext(ctx, "wecom_aibot: lost the connection lease; waiting to hold it again")
			continue
		}
		return err
	}
}

func (b *Bot) connectLoop(ctx context.Context, in *inbox) error {
	base := orDur(b.opts.ReconnectBase, time.Second)
	maxDelay := orDur(b.opts.ReconnectMax, 30*time.Second)
	attempt := 0
	for {
		subscribed, err := b.session(ctx, in)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		b.mu.Lock()
		b.lastErr = err
		b.mu.Unlock()
		var ae *APIError
		switch {
		case errors.Is(err, ErrKicked):
			return err
		case errors.As(err, &ae) && ae.Code == CodeBadSecret:
			b.log.ErrorContext(ctx, "wecom_aibot: subscribe refused", "platform", adapter.PlatformWeComAIBot, "bot_id", b.opts.BotID, "errcode", ae.Code)
			return asAdapterError(err, "wecom_aibot: subscribe as bot "+b.opts.BotID)
		case errors.As(err, &ae) && ae.Code == CodeFreq:
			wait := b.subscribeWait()
			b.log.WarnContext(ctx, "wecom_aibot: subscribe rate-limited, waiting", "wait", wait)
			if !sleep(ctx, wait) {
				return ctx.Err()
			}
			continue
		}
		if subscribed {
			attempt = 0
		}
		attempt++
		if b.opts.MaxReconnects > 0 && attempt > b.opts.MaxReconnects {
			return &adapter.Error{Kind: adapter.KindUnavailable, Platform: adapter.PlatformWeComAIBot,
				Message: fmt.Sprintf("long connection: gave up after %d attempts", b.opts.MaxReconnects), Err: err}
		}
		delay := backoff(base, maxDelay, attempt)
		b.log.WarnContext(ctx, "wecom_aibot: connection lost, reconnecting", "attempt", attempt, "delay", delay, "err", err)
		if !sleep(ctx, delay) {
			return ctx.Err()
		}
	}
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// session dials, subscribes and serves one connection until it drops. subscribed reports
// whether the subscribe succeeded.
func (b *Bot) session(ctx context.Context, in *inbox) (subscribed bool, err error) {
	ws, err := b.dialSubscribe(ctx)
	if err != nil {
		return false, err
	}
	defer ws.CloseNow()
	c := &wsConn{ws: ws, pending: map[string]chan ack{}, done: make(chan struct{})}
	b.log.InfoContext(ctx, "wecom_aibot: subscribed", "bot_id", b.opts.BotID)

	b.setConn(c)
	defer b.setConn(nil)
	hctx, stopHeartbeat := context.WithCancel(ctx)
	defer stopHeartbeat()
	go b.heartbeat(hctx, c)
	go b.serveRelay(hctx)
	err = b.readLoop(ctx, c, in)
	if c.kicked.Load() {
		return true, ErrKicked
	}
	return true, err
}

// dialSubscribe dials and subscribes; nothing else is sent before the subscribe ack. A
// refused subscribe is an *APIError.
func (b *Bot) dialSubscribe(ctx context.Context) (*websocket.Conn, error) {
	ackTimeout := orDur(b.opts.AckTimeout, 5*time.Second)
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	ws, _, err := websocket.Dial(dctx, b.opts.WSURL, &websocket.DialOptions{HTTPClient: b.opts.HTTPClient})
	cancel()
	if err != nil {
		return nil, fmt.Errorf("wecom_aibot: dial: %w", err)
	}
	ws.SetReadLimit(orDurInt(b.opts.ReadLimit, 4<<20))
	reqID := newReqID("aibot_subscribe")
	c := &wsConn{ws: ws}
	if err := c.write(ctx, outFrame{Cmd: "aibot_subscribe", Headers: frameHeaders{reqID},
		Body: map[string]string{"bot_id": b.opts.BotID, "secret": b.opts.Secret}}); err != nil {
		ws.CloseNow()
		return nil, err
	}
	sctx, cancel := context.WithTimeout(ctx, ackTimeout)
	defer cancel()
	for {
		_, data, err := ws.Read(sctx)
		if err != nil {
			ws.CloseNow()
			return nil, fmt.Errorf("wecom_aibot: waiting for the subscribe ack: %w", err)
		}
		var f inFrame
		if json.Unmarshal(sanitize(data), &f) != nil || f.Cmd != "" || f.Headers.ReqID != reqID {
			continue
		}
		if f.Errcode == nil || *f.Errcode != 0 {
			code := -1
			if f.Errcode != nil {
				code = *f.Errcode
			}
			ws.CloseNow()
			return nil, &APIError{Code: code, Msg: f.Errmsg, Cmd: "aibot_subscribe"}
		}
		return ws, nil
	}
}

func orDurInt(v, def int64) int64 {
	if v <= 0 {
		return def
	}
	return v
}

func (b *Bot) setConn(c *wsConn) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.conn = c
	if c != nil {
		b.lastErr = nil
	}
	close(b.connCh)
	b.connCh = make(chan struct{})
}

func (c *wsConn) write(ctx context.Context, f outFrame) error {
	data, err := json.Marshal(f)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := c.ws.Write(ctx, websocket.MessageText, data); err != nil {
		return fmt.Errorf("wecom_aibot: write %s: %w", f.Cmd, err)
	}
	return nil
}

// heartbeat pings every interval; with two pings unanswered, the next tick drops the
// connection (the SDK's rule).
func (b *Bot) heartbeat(ctx context.Context, c *wsConn) {
	t := time.NewTicker(orDur(b.opts.HeartbeatInterval, 30*time.Second))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if c.missed.Load() >= 2 {
			b.log.WarnContext(ctx, "wecom_aibot: no heartbeat ack for 2 pings; dropping the connection")
			c.ws.CloseNow()
			return
		}
		c.missed.Add(1)
		if err := c.write(ctx, outFrame{Cmd: "ping", Headers: frameHeaders{newReqID("ping")}}); err != nil {
			c.ws.CloseNow()
			return
		}
	}
}

func (b *Bot) readLoop(ctx context.Context, c *wsConn, in *inbox) error {
	defer func() {
		c.mu.Lock()
		close(c.done)
		c.mu.Unlock()
	}()
	for {
		_, data, err := c.ws.Read(ctx)
		if err != nil {
			return fmt.Errorf("wecom_aibot: connection: %w", err)
		}
		if err := b.dispatch(ctx, c, data, in); err == ErrKicked {
			c.kicked.Store(true)
			c.ws.Close(websocket.StatusNormalClosure, "disconnected_event")
			return ErrKicked
		}
	}
}

// errBadFrame means a frame read from the connection is not a JSON frame object; it is
// logged and dropped.
var errBadFrame = errors.New("wecom_aibot: frame is not a JSON object")

// parseFrame decodes one frame as the SDK does: control characters stripped, then JSON. An
// error wraps errBadFrame.
func parseFrame(data []byte) (inFrame, error) {
	var f inFrame
	if err := json.Unmarshal(sanitize(data), &f); err != nil {
		return inFrame{}, fmt.Errorf("%w: %w", errBadFrame, err)
	}
	return f, nil
}

// dispatch handles one frame read from c: an ack goes to the frame waiting for it (a ping's
// resets the missed count), a callback to in. It returns [ErrKicked] after
// disconnected_event, an error wrapping errBadFrame for a frame that is not JSON (logged and
// dropped), and nil otherwise; frames it cannot use are logged and dropped.
func (b *Bot) dispatch(ctx context.Context, c *wsConn, data []byte, in *inbox) error {
	f, err := parseFrame(data)
	if err != nil {
		b.log.WarnContext(ctx, "wecom_aibot: dropping a frame that is not JSON", "err", err, "bytes", len(data))
		return err
	}
	switch f.Cmd {
	case "":
		if strings.HasPrefix(f.Headers.ReqID, "ping") {
			c.missed.Store(0)
			return nil
		}
		a := ack{code: -1, msg: f.Errmsg, body: f.Body}
		if f.Errcode != nil {
			a.code = *f.Errcode // an ack without errcode is a failure, as in the SDK
		}
		c.mu.Lock()
		ch := c.pending[f.Headers.ReqID]
		delete(c.pending, f.Headers.ReqID)
		c.mu.Unlock()
		if ch == nil {
			b.log.DebugContext(ctx, "wecom_aibot: ack for no pending frame", "req_id", f.Headers.ReqID)
			return nil
		}
		ch <- a
	case "aibot_msg_callback", "aibot_event_callback":
		if b.callback(ctx, f, in) {
			return ErrKicked
		}
	default:
		b.log.WarnContext(ctx, "wecom_aibot: dropping a frame with an unknown cmd", "cmd", f.Cmd)
	}
	return nil
}

// reqLock is one req_id's queue: one frame in flight at a time.
type reqLock struct {
	ch   chan struct{}
	refs int
}

// maxQueue is how many frames may wait on one req_id (the SDK's 500).
const maxQueue = 500

func (b *Bot) lockReq(ctx context.Context, id string) (func(), error) {
	b.qmu.Lock()
	l := b.locks[id]
	if l == nil {
		l = &reqLock{ch: make(chan struct{}, 1)}
		b.locks[id] = l
	}
	if l.refs >= maxQueue {
		b.qmu.Unlock()
		return nil, &adapter.Error{Kind: adapter.KindRateLimited, Platform: adapter.PlatformWeComAIBot, RetryAfter: time.Second,
			Message: fmt.Sprintf("over %d replies queued for one callback", maxQueue)}
	}
	l.refs++
	b.qmu.Unlock()
	release := func() {
		b.qmu.Lock()
		l.refs--
		if l.refs == 0 {
			delete(b.locks, id)
		}
		b.qmu.Unlock()
	}
	select {
	case l.ch <- struct{}{}:
		return func() { <-l.ch; release() }, nil
	case <-ctx.Done():
		release()
		return nil, ctx.Err()
	}
}

// errAckTimeout is a frame's ack not arriving in time: its outcome is unknown.
type ackTimeoutError struct{ cmd, reqID string }

func (e *ackTimeoutError) Error() string {
	return fmt.Sprintf("wecom_aibot: %s: no ack for req_id %s in time; outcome unknown", e.cmd, e.reqID)
}
func (e *ackTimeoutError) Is(target error) bool { return target == adapter.ErrUnavailable }

// call sends one frame on reqID, after any earlier frame on the same req_id is acked (or
// timed out), waiting up to ConnectWait for a connection, and returns its ack. A non-zero
// errcode is an *APIError.
func (b *Bot) call(ctx context.Context, cmd, reqID string, body any) (json.RawMessage, error) {
	if b.opts.Redis != nil && !b.webhook {
		b.mu.Lock()
		local := b.conn != nil
		b.mu.Unlock()
		if !local {
			unlock, err := b.lockReq(ctx, reqID)
			if err != nil {
				return nil, err
			}
			defer unlock()
			return b.relayWait(ctx, cmd, reqID, body)
		}
	}
	return b.callLocal(ctx, cmd, reqID, body)
}

// callLocal is call on this host's own connection.
func (b *Bot) callLocal(ctx context.Context, cmd, reqID string, body any) (json.RawMessage, error) {
	unlock, err := b.lockReq(ctx, reqID)
	if err != nil {
		return nil, err
	}
	defer unlock()
	return b.callConn(ctx, cmd, reqID, body)
}

// callConn sends one frame on this host's connection; the caller holds reqID's lock.
func (b *Bot) callConn(ctx context.Context, cmd, reqID string, body any) (json.RawMessage, error) {
	c, err := b.waitConn(ctx)
	if err != nil {
		return nil, err
	}
	ch := make(chan ack, 1)
	c.mu.Lock()
	select {
	case <-c.done:
		c.mu.Unlock()
		return nil, &adapter.Error{Kind: adapter.KindUnavailable, Platform: adapter.PlatformWeComAIBot, Message: "connection lost before " + cmd}
	default:
	}
	c.pending[reqID] = ch
	c.mu.Unlock()
	forget := func() {
		c.mu.Lock()
		if c.pending[reqID] == ch {
			delete(c.pending, reqID)
		}
		c.mu.Unlock()
	}
	if err := c.write(ctx, outFrame{Cmd: cmd, Headers: frameHeaders{reqID}, Body: body}); err != nil {
		forget()
		return nil, &adapter.Error{Kind: adapter.KindUnavailable, Platform: adapter.PlatformWeComAIBot, Message: "sending " + cmd, Err: err}
	}
	t := time.NewTimer(orDur(b.opts.AckTimeout, 5*time.Second))
	defer t.Stop()
	select {
	case a := <-ch:
		if a.code != 0 {
			return nil, &APIError{Code: a.code, Msg: a.msg, Cmd: cmd}
		}
		return a.body, nil
	case <-t.C:
		forget()
		return nil, &ackTimeoutError{cmd, reqID}
	case <-c.done:
		forget()
		return nil, &ackTimeoutError{cmd, reqID} // sent, then the connection dropped: unknown outcome
	case <-ctx.Done():
		forget()
		return nil, ctx.Err()
	}
}

// waitConn returns the live connection, waiting up to ConnectWait for one.
func (b *Bot) waitConn(ctx context.Context) (*wsConn, error) {
	if b.webhook {
		return nil, adapter.Errorf(adapter.KindInvalidRequest, "wecom_aibot: webhook mode has no long connection")
	}
	t := time.NewTimer(orDur(b.opts.ConnectWait, 30*time.Second))
	defer t.Stop()
	for {
		b.mu.Lock()
		c, ch, last := b.conn, b.connCh, b.lastErr
		b.mu.Unlock()
		if c != nil {
			return c, nil
		}
		select {
		case <-ch:
		case <-t.C:
			e := &adapter.Error{Kind: adapter.KindUnavailable, Platform: adapter.PlatformWeComAIBot, Message: "long connection not up", Err: last}
			return nil, e
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-b.ctx.Done():
			return nil, errClosed
		}
	}
}

// backoff is the SDK's reconnect delay before attempt n (1-based): min(base·2^(n-1), max).
func backoff(base, max time.Duration, n int) time.Duration {
	if n < 1 {
		n = 1
	}
	if n > 30 {
		return max
	}
	d := base << (n - 1)
	if d > max || d <= 0 {
		return max
	}
	return d
}

// subscribeWait is how long to wait after 45009 on subscribe: at least [RateLimitWait].
func (b *Bot) subscribeWait() time.Duration {
	wait := orDur(b.opts.SubscribeRateLimitWait, RateLimitWait)
	if wait < RateLimitWait && !b.opts.AllowShortRateLimitWait {
		wait = RateLimitWait
	}
	return wait
}
