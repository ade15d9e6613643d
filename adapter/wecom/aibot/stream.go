package aibot

import (
	"context"
	"errors"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/seed-a64d9e1f/chatwire/adapter"
)

// OpenStream opens a streamed reply. Answering a message callback, the text grows in one
// bubble (aibot_respond_msg stream frames, each carrying the whole text so far): frames are
// at least StreamPace apart (500 ms by default) with one in flight; a bubble is finished and
// the text continues in a new one when it would pass 20,480 bytes or when it is
// StreamMaxAge old (5 minutes; WeCom expires streams at 6); on 846605/846606/846608, an ack
// timeout or a lost connection, the text not yet acknowledged goes out by aibot_send_msg
// when the stream is finished. Answering anything else (an event, a req_id that can no
// longer stream) or sending to msg.To, the text is collected and sent by aibot_send_msg at
// Finish. In webhook mode the text is served to WeCom's stream-refresh polls.
func (b *Bot) OpenStream(ctx context.Context, msg adapter.Message) (adapter.Stream, error) {
	if err := adapter.CheckStreamHeader(msg); err != nil {
		return nil, err
	}
	if b.ctx.Err() != nil {
		return nil, errClosed
	}
	if b.webhook {
		return b.webhookStream(ctx, msg)
	}
	s := &stream{b: b, wake: make(chan struct{}, 1), done: make(chan struct{}),
		maxBytes: orInt(b.opts.MaxReplyBytes, 1<<20), bubble: MaxBubbleBytes}
	var c *call
	if msg.ReplyTo != "" {
		if c = b.lookup(ctx, msg.ReplyTo); c == nil {
			return nil, adapter.Errorf(adapter.KindNotFound, "wecom_aibot: reply_to %q: no such callback (callbacks are kept 24 h)", msg.ReplyTo)
		}
	}
	chat, group, err := b.target(msg, c)
	if err != nil {
		return nil, err
	}
	s.chat, s.group = chat, group
	if c != nil && c.kind == kindMsg && c.usable() {
		s.call = c
	} else {
		s.fallback = true
	}
	go s.pump()
	return s, nil
}

func orInt(v, def int) int {
	if v <= 0 {
		return def
	}
	return v
}

// stream is a streamed reply on the long connection.
type stream struct {
	b        *Bot
	call     *call // nil: collect and send by aibot_send_msg
	chat     string
	group    bool
	maxBytes int
	bubble   int // bytes per bubble
	wake     chan struct{}
	done     chan struct{} // closed when pump returns

	mu        sync.Mutex // protects text, finishing, aborted, failed, receipt, err
	text      []byte
	finishing bool
	aborted   bool
	failed    error // set when delivery failed for good
	receipt   adapter.Receipt
	err       error

	// pump state, owned by the pump goroutine
	fallback    bool
	base        int       // where the open (or next) bubble starts in text
	sent        int       // end of the text the last accepted frame carried
	sid         string    // open bubble's stream id; "" when none is open
	bubbleStart time.Time // when the open bubble's first frame went out
	lastFrame   time.Time
}

var _ adapter.Stream = (*stream)(nil)

func (s *stream) signal() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// Append adds delta to the reply.
func (s *stream) Append(ctx context.Context, delta string) error {
	if delta == "" {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.finishing || s.aborted:
		return adapter.Errorf(adapter.KindInvalidRequest, "wecom_aibot: stream is closed")
	case s.failed != nil:
		return s.failed
	case len(s.text)+len(delta) > s.maxBytes:
		return adapter.Errorf(adapter.KindTooLarge, "wecom_aibot: streamed reply over %d bytes", s.maxBytes)
	}
	s.text = append(s.text, delta...)
	s.signal()
	return nil
}

// Finish completes the reply and waits for its delivery.
func (s *stream) Finish(ctx context.Context) (adapter.Receipt, error) {
	s.mu.Lock()
	if s.finishing || s.aborted {
		s.mu.Unlock()
		return adapter.Receipt{}, adapter.Errorf(adapter.KindInvalidRequest, "wecom_aibot: stream is closed")
	}
	s.finishing = true
	s.mu.Unlock()
	s.signal()
	select {
	case <-s.done:
	case <-ctx.Done():
		return adapter.Receipt{}, ctx.Err()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.receipt, s.err
}

// Abort ends the stream, finishing the open bubble with what it already shows.
func (s *stream) Abort(ctx context.Context, reason string) error {
	s.mu.Lock()
	if s.finishing || s.aborted {
		s.mu.Unlock()
		return nil
	}
	s.aborted = true
	s.mu.Unlock()
	s.b.log.InfoContext(ctx, "wecom_aibot: stream aborted", "reason", reason)
	s.signal()
	select {
	case <-s.done:
	case <-ctx.Done():
		return ctx.Err()
	}
	return nil
}

func (s *stream) snapshot() (n int, finishing, aborted bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.text), s.finishing, s.aborted
}

// wholeRunes backs n off so that text[:n] does not end inside a UTF-8 sequence.
func (s *stream) wholeRunes(n int) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := n
	for r > 0 && n-r < utf8.UTFMax && !utf8.RuneStart(s.text[r-1]) {
		r--
	}
	if r > 0 && !utf8.FullRune(s.text[r-1:n]) {
		return r - 1
	}
	return n
}

func (s *stream) textRange(from, to int) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return string(s.text[from:to])
}

// wait blocks until Append/Finish/Abort signals or d passes (d <= 0: no timeout).
func (s *stream) wait(d time.Duration) bool {
	var t <-chan time.Time
	if d > 0 {
		timer := time.NewTimer(d)
		defer timer.Stop()
		t = timer.C
	}
	select {
	case <-s.wake:
	case <-t:
	case <-s.b.ctx.Done():
		return false
	}
	return true
}

func (s *stream) end(err error) {
	s.mu.Lock()
	if err != nil && s.err == nil {
		s.err = err
		s.failed = err
	}
	if len(s.receipt.IDs) > 0 {
		s.receipt.ID = s.receipt.IDs[0]
	}
	s.mu.Unlock()
	close(s.done)
}

func (s *stream) addID(id string) {
	s.mu.Lock()
	s.receipt.IDs = append(s.receipt.IDs, id)
	s.mu.Unlock()
}

// pump delivers the stream: the only goroutine that sends its frames.
func (s *stream) pump() {
	b := s.b
	pace := orDur(b.opts.StreamPace, 500*time.Millisecond)
	maxAge := orDur(b.opts.StreamMaxAge, 5*time.Minute)
	for {
		n, finishing, aborted := s.snapshot()
		if b.ctx.Err() != nil {
			s.end(errClosed)
			return
		}
		if aborted {
			if !s.fallback && s.sid != "" {
				ctx, cancel := context.WithTimeout(b.ctx, orDur(b.opts.AckTimeout, 5*time.Second)+time.Second)
				b.call(ctx, "aibot_respond_msg", s.call.reqID, streamMsg{MsgType: "stream",
					Stream: streamFrame{ID: s.sid, Finish: true, Content: s.textRange(s.base, s.sent)}})
				cancel()
			}
			s.end(adapter.Errorf(adapter.KindInvalidRequest, "wecom_aibot: stream aborted"))
			return
		}
		if s.fallback {
			if !finishing {
				s.wait(0)
				continue
			}
			s.deliverRest(n)
			return
		}
		if finishing && n == 0 {
			s.end(adapter.Errorf(adapter.KindInvalidRequest, "wecom_aibot: stream finished without any text"))
			return
		}
		now := time.Now()
		ageDue := s.sid != "" && now.Sub(s.bubbleStart) >= maxAge
		if finishing && s.sid == "" && s.base == n {
			s.end(nil) // every byte is in a finished bubble
			return
		}
		if !finishing {
			n = s.wholeRunes(n) // a delta may end inside a character
		}
		if n == s.sent && !finishing && !ageDue {
			var d time.Duration
			if s.sid != "" {
				d = s.bubbleStart.Add(maxAge).Sub(now)
			}
			s.wait(d)
			continue
		}
		if d := pace - now.Sub(s.lastFrame); d > 0 {
			// Let deltas pile up until the pace allows the next frame; Abort cuts in.
			timer := time.NewTimer(d)
			select {
			case <-timer.C:
			case <-b.ctx.Done():
			}
			timer.Stop()
			continue
		}
		end := n
		closeBubble := ageDue
		if end-s.base > s.bubble {
			cut := s.base + s.bubble
			s.mu.Lock()
			for cut > s.base && !utf8.RuneStart(s.text[cut]) {
				cut--
			}
			s.mu.Unlock()
			end, closeBubble = cut, true
		}
		finish := closeBubble || finishing && end == n
		if s.sid == "" {
			s.sid, s.bubbleStart = newStreamID(), now
			s.addID(s.sid)
		}
		ctx, cancel := context.WithTimeout(b.ctx, orDur(b.opts.ConnectWait, 30*time.Second)+orDur(b.opts.AckTimeout, 5*time.Second))
		_, err := b.call(ctx, "aibot_respond_msg", s.call.reqID, streamMsg{MsgType: "stream",
			Stream: streamFrame{ID: s.sid, Finish: finish, Content: s.textRange(s.base, end)}})
		cancel()
		s.lastFrame = time.Now()
		if err != nil {
			b.log.WarnContext(b.ctx, "wecom_aibot: stream frame failed; the rest goes by aibot_send_msg", "err", err)
			var te *ackTimeoutError
			if errors.As(err, &te) {
				s.call.mu.Lock()
				s.call.tainted = true
				s.call.mu.Unlock()
			} else {
				b.fallbackable(s.call, err)
			}
			// What the open bubble showed at its last accepted frame stays; the rest is
			// sent again. A timed-out frame may have shown more: some text may repeat.
			s.fallback = true
			s.base = s.sent
			continue
		}
		s.sent = end
		if finish {
			s.base, s.sid = end, ""
		}
	}
}

// deliverRest sends text[base:n] (everything no accepted frame carried) by aibot_send_msg.
func (s *stream) deliverRest(n int) {
	b := s.b
	from := s.base
	if s.call != nil && s.sent > from {
		from = s.sent
	}
	if n == 0 {
		s.end(adapter.Errorf(adapter.KindInvalidRequest, "wecom_aibot: stream finished without any text"))
		return
	}
	if from >= n {
		s.end(nil)
		return
	}
	ctx, cancel := context.WithTimeout(b.ctx, 5*time.Minute)
	defer cancel()
	r, err := b.sendMarkdown(ctx, s.chat, s.group, s.textRange(from, n), true)
	s.mu.Lock()
	s.receipt.IDs = append(s.receipt.IDs, r.IDs...)
	s.mu.Unlock()
	s.end(err)
}
