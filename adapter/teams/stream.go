package teams

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/seed-a64d9e1f/chatwire/adapter"
)

// Streaming (spec §4). Teams streams only in 1:1 (personal) chats: a typing activity with a
// streaminfo entity opens the stream (201 with its id), further typing activities carry the
// whole text so far with streamSequence 2, 3, …, and a message with streamType "final" ends
// it. The adapter paces and cuts the stream itself:
const (
	// StreamInterval is the least time between two streaming requests of one reply. Teams
	// takes at most 1 request per second and advises buffering 1.5–2 s; 1.5 s leaves a
	// third of a second of headroom for clock and network jitter.
	StreamInterval = 1500 * time.Millisecond
	// StreamRenewAfter is the age at which a stream is finished and the reply continues in a
	// new streamed message: Teams ends a stream after 2 minutes; 100 s leaves room for the
	// final request and a slow connector.
	StreamRenewAfter = 100 * time.Second
	// StreamMessageBytes is the size (UTF-16 bytes, as Teams counts) at which a streamed
	// message is finished and the reply continues in a new one: Teams' "80 KB to guarantee
	// delivery" (spec §3.5), or Options.MaxMessageBytes when smaller.
	StreamMessageBytes = 80 * 1024
	// MaxStreamText is the longest reply a stream takes (bytes of UTF-8), over any number of
	// messages.
	MaxStreamText = 1 << 20
	// streamFailures is how many transient failures in a row make a stream fall back to
	// ordinary messages.
	streamFailures = 3
)

var _ adapter.Streamer = (*Adapter)(nil)

// clock is the time source of streams; tests use a virtual one.
type clock interface {
	Now() time.Time
	Sleep(ctx context.Context, d time.Duration) error
}

type realClock struct{}

func (realClock) Now() time.Time { return time.Now() }

func (realClock) Sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// OpenStream opens a reply streamed into Teams. In a 1:1 chat the text appears as it comes,
// at most one update every [StreamInterval], in streamed messages renewed before Teams' 2
// minutes and cut at [StreamMessageBytes]; in group chats and channels (where Teams does not
// stream) or when Teams refuses to stream, the text is sent as ordinary messages at Finish.
// msg.ReplyTo (an event id) or msg.To names the conversation as for [Adapter.Send].
func (a *Adapter) OpenStream(ctx context.Context, msg adapter.Message) (adapter.Stream, error) {
	if err := adapter.CheckStreamHeader(msg); err != nil {
		return nil, err
	}
	if a.isClosed() {
		return nil, adapter.Errorf(adapter.KindUnavailable, "teams: adapter closed")
	}
	t, err := a.resolve(ctx, msg)
	if err != nil {
		return nil, err
	}
	limit := min(a.opts.MaxMessageBytes, StreamMessageBytes)
	s := &stream{a: a, t: t, personal: t.ref.ConversationType == "personal", limit: limit,
		wake: make(chan struct{}, 1), done: make(chan struct{})}
	go s.run()
	return s, nil
}

// stream is a Teams reply stream: Append/Finish/Abort fill text, run sends it.
type stream struct {
	a        *Adapter
	t        target
	personal bool
	limit    int // UTF-16 bytes per message

	mu        sync.Mutex // guards the fields below
	buf       strings.Builder
	finishing bool
	aborted   bool
	empty     bool  // finished without text: run sends nothing
	err       error // delivery failed for good
	rc        adapter.Receipt
	result    error

	wake  chan struct{}
	done  chan struct{}
	waits atomic.Int64 // times run waited for the caller (tests wait for it to be idle)
}

func (s *stream) signal() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

func (s *stream) Append(ctx context.Context, delta string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.finishing || s.aborted:
		return &adapter.Error{Kind: adapter.KindInvalidRequest, Platform: Platform, Message: "stream is closed"}
	case s.err != nil:
		return s.err
	case delta == "":
		return nil
	case s.buf.Len()+len(delta) > MaxStreamText:
		return &adapter.Error{Kind: adapter.KindTooLarge, Platform: Platform,
			Message: fmt.Sprintf("a streamed reply takes at most %d bytes", MaxStreamText)}
	}
	s.buf.WriteString(delta)
	s.signal()
	return nil
}

func (s *stream) Finish(ctx context.Context) (adapter.Receipt, error) {
	s.mu.Lock()
	if s.finishing || s.aborted {
		s.mu.Unlock()
		return adapter.Receipt{}, &adapter.Error{Kind: adapter.KindInvalidRequest, Platform: Platform, Message: "stream is closed"}
	}
	s.finishing = true
	if s.buf.Len() == 0 && s.err == nil {
		s.empty = true
		s.mu.Unlock()
		s.signal()
		return adapter.Receipt{}, &adapter.Error{Kind: adapter.KindInvalidRequest, Platform: Platform, Message: "stream finished without any text"}
	}
	s.mu.Unlock()
	s.signal()
	select {
	case <-s.done:
	case <-ctx.Done():
		return adapter.Receipt{}, ctx.Err()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.rc, s.result
}

func (s *stream) Abort(ctx context.Context, reason string) error {
	s.mu.Lock()
	if s.finishing || s.aborted {
		s.mu.Unlock()
		return nil
	}
	s.aborted = true
	s.mu.Unlock()
	s.a.log.Info("teams: stream aborted", "platform", Platform, "conversation", clip(s.t.conv, 80), "reason", clip(reason, 200))
	s.signal()
	select {
	case <-s.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// state is what run sees of the caller's side.
type state struct {
	text               string
	finishing, aborted bool
	empty              bool
}

func (s *stream) state() state {
	s.mu.Lock()
	defer s.mu.Unlock()
	return state{text: s.buf.String(), finishing: s.finishing, aborted: s.aborted, empty: s.empty}
}

func (s *stream) fail(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.err, s.result = err, err
}

func (s *stream) delivered(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	eid := EventID(s.t.conv, id)
	if s.rc.ID == "" {
		s.rc.ID = eid
	} else {
		if len(s.rc.IDs) == 0 {
			s.rc.IDs = []string{s.rc.ID}
		}
		s.rc.IDs = append(s.rc.IDs, eid)
	}
}

// streamActivity is a streaming chunk or final message.
type streamActivity struct {
	Type         string         `json:"type"`
	ID           string         `json:"id,omitempty"`
	Text         string         `json:"text"`
	Entities     []any          `json:"entities"`
	ChannelData  map[string]any `json:"channelData,omitempty"`
	From         *Account       `json:"from,omitempty"`
	Conversation *Conversation  `json:"conversation,omitempty"`
	ReplyToID    string         `json:"replyToId,omitempty"`
}

// run delivers the stream: it waits for text, sends at most one request per StreamInterval,
// and ends with a final message (or ordinary messages where Teams does not stream).
func (s *stream) run() {
	defer close(s.done)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-s.a.closed:
			cancel()
		case <-s.done:
		}
	}()
	clk := s.a.clock
	var (
		seg       int    // offset in text where the current message starts
		shown     int    // offset up to which the current streamed message shows the text
		id        string // the current stream's id; empty when none is open
		seq       int
		began     time.Time
		next      time.Time // the earliest time of the next request
		streaming = s.personal
		failures  int
	)
	for {
		st := s.state()
		if st.empty {
			return
		}
		if !st.aborted && !st.finishing && (!streaming || len(st.text) <= shown) {
			s.waits.Add(1)
			select {
			case <-s.wake:
				continue
			case <-ctx.Done():
				s.fail(adapter.Errorf(adapter.KindUnavailable, "teams: adapter closed while streaming"))
				return
			}
		}
		if streaming || id != "" {
			if err := clk.Sleep(ctx, next.Sub(clk.Now())); err != nil {
				s.fail(adapter.Errorf(adapter.KindUnavailable, "teams: adapter closed while streaming"))
				return
			}
			st = s.state()
		}
		if st.aborted {
			if id != "" && shown > seg {
				// Close the bubble with what it shows.
				if _, err := s.final(ctx, id, st.text[seg:shown]); err != nil {
					s.a.log.Warn("teams: closing an aborted stream failed", "platform", Platform, "err", err)
				}
			}
			return
		}
		cur := st.text[seg:]
		if utf16Bytes(cur) > s.limit {
			// The message is full: finish it and go on in a new one.
			part := cur[:cutUTF16(cur, s.limit)]
			if err := s.complete(ctx, id, part); err != nil {
				s.fail(err)
				return
			}
			seg += len(part)
			shown, id, seq = seg, "", 0
			next = clk.Now().Add(StreamInterval)
			continue
		}
		if st.finishing {
			if cur != "" || id != "" {
				if err := s.complete(ctx, id, cur); err != nil {
					s.fail(err)
				}
			}
			return
		}
		if !streaming {
			continue // fallback: wait for Finish
		}
		if id != "" && clk.Now().Sub(began) >= StreamRenewAfter {
			if err := s.complete(ctx, id, cur); err != nil {
				s.fail(err)
				return
			}
			seg += len(cur)
			shown, id, seq = seg, "", 0
			next = clk.Now().Add(StreamInterval)
			continue
		}
		// An update: the first opens the stream.
		act := streamActivity{Type: "typing", Text: cur}
		if id == "" {
			act.Entities = []any{map[string]any{"type": "streaminfo", "streamType": "streaming", "streamSequence": 1}}
		} else {
			act.Entities = []any{map[string]any{"type": "streaminfo", "streamId": id, "streamType": "streaming", "streamSequence": seq + 1}}
		}
		var out struct {
			ID    string `json:"id"`
			Error *struct {
				Code string `json:"code"`
			} `json:"error"`
		}
		err := s.send(ctx, http.MethodPost, "", &act, &out)
		next = clk.Now().Add(StreamInterval)
		switch {
		case err == nil && out.Error != nil:
			// 202 with an error: the chunk was dropped as out of order; resynchronise.
			seq++
			failures++
		case err == nil && id == "":
			if out.ID == "" {
				s.a.log.Warn("teams: stream start answered without an id: sending the reply as a message", "platform", Platform)
				streaming = false
				continue
			}
			id, seq, began, shown, failures = out.ID, 1, clk.Now(), seg+len(cur), 0
		case err == nil:
			seq++
			shown, failures = seg+len(cur), 0
		default:
			var api *APIError
			isAPI := errors.As(err, &api)
			switch {
			case isAPI && api.StatusCode == http.StatusForbidden && strings.Contains(strings.ToLower(api.Message), "cancel"):
				// The user pressed Stop: nothing more is delivered.
				s.fail(&adapter.Error{Kind: adapter.KindInvalidRequest, Platform: Platform, Code: api.Code,
					Message: "teams: the user stopped the streamed reply", Err: err})
				return
			case isAPI && api.StatusCode == http.StatusForbidden && strings.Contains(strings.ToLower(api.Message), "exceeded streaming time"):
				// Teams ended the stream with what it showed; the rest goes into a new one.
				if id != "" && shown > seg {
					if err := s.finishTimedOut(ctx, id, st.text[seg:shown]); err != nil {
						s.fail(err)
						return
					}
					seg = shown
				}
				id, seq = "", 0
			case isAPI && api.StatusCode >= 400 && api.StatusCode < 500 && api.StatusCode != http.StatusTooManyRequests,
				failures+1 >= streamFailures:
				s.a.log.Info("teams: streaming refused: the reply is sent as a message at the end", "platform", Platform,
					"conversation", clip(s.t.conv, 80), "err", err)
				if id != "" && shown > seg {
					if fid, err := s.final(ctx, id, st.text[seg:shown]); err == nil {
						s.delivered(fid)
						seg = shown
					}
				}
				streaming, id, seq = false, "", 0
			default:
				failures++ // transient: try again at the next slot
			}
		}
	}
}

// complete ends the current message with text: the final message of stream id, or an
// ordinary message when no stream is open. A final Teams refuses is sent as a message.
func (s *stream) complete(ctx context.Context, id, text string) error {
	if id == "" {
		if text == "" {
			return nil
		}
		mid, err := s.a.post(ctx, s.t, outActivity{Type: "message", Text: text})
		if err != nil {
			return err
		}
		s.delivered(mid)
		return nil
	}
	fid, err := s.final(ctx, id, text)
	if err == nil {
		s.delivered(fid)
		return nil
	}
	var api *APIError
	if errors.As(err, &api) && api.StatusCode == http.StatusForbidden && strings.Contains(strings.ToLower(api.Message), "exceeded streaming time") {
		return s.finishTimedOut(ctx, id, text)
	}
	if errors.As(err, &api) && api.StatusCode == http.StatusForbidden && strings.Contains(strings.ToLower(api.Message), "cancel") {
		return &adapter.Error{Kind: adapter.KindInvalidRequest, Platform: Platform, Code: api.Code, Message: "teams: the user stopped the streamed reply", Err: err}
	}
	s.a.log.Warn("teams: final stream message refused: sending the text as a message", "platform", Platform, "err", err)
	return s.complete(ctx, "", text)
}

// final sends the final message of stream id.
func (s *stream) final(ctx context.Context, id, text string) (string, error) {
	act := streamActivity{Type: "message", ID: id, Text: text,
		Entities: []any{map[string]any{"type": "streaminfo", "streamId": id, "streamType": "final"}}}
	var out struct {
		ID string `json:"id"`
	}
	if err := s.send(ctx, http.MethodPost, "", &act, &out); err != nil {
		return "", err
	}
	if out.ID == "" {
		out.ID = id
	}
	return out.ID, nil
}

// finishTimedOut replaces a stream Teams ended for its age with text, as the Teams SDK does
// (an update of the streamed message), or sends text as a new message if that fails.
func (s *stream) finishTimedOut(ctx context.Context, id, text string) error {
	act := streamActivity{Type: "message", ID: id, Text: text, Entities: []any{}}
	if err := s.send(ctx, http.MethodPut, id, &act, nil); err != nil {
		s.a.log.Warn("teams: updating a timed-out stream failed: sending the text as a message", "platform", Platform, "err", err)
		return s.complete(ctx, "", text)
	}
	s.delivered(id)
	return nil
}

// send makes one streaming request: POST …/activities, or PUT …/activities/{id}.
func (s *stream) send(ctx context.Context, method, id string, act *streamActivity, out any) error {
	act.From = &Account{ID: s.a.botID()}
	act.Conversation = &Conversation{ID: s.t.conv}
	act.ReplyToID = s.t.replyTo
	path := convPath(s.t.conv) + "/activities"
	if id != "" {
		path += "/" + pathEscape(id)
	}
	if err := s.a.conn.do(ctx, method, s.t.ref.ServiceURL, path, act, out); err != nil {
		var api *APIError
		if errors.As(err, &api) && api.forgetReference() {
			s.a.forget(ctx, s.t.ref.ConversationID)
		}
		return err
	}
	return nil
}

// utf16Bytes is the size of text as Teams counts it.
func utf16Bytes(text string) int {
	n := 0
	for _, r := range text {
		n += utf16.RuneLen(r) * 2
	}
	return n
}

// cutUTF16 returns the length of the longest prefix of text within limit UTF-16 bytes,
// ending after a newline or a space when one is in the last tenth of it.
func cutUTF16(text string, limit int) int {
	n, end := 0, 0
	for i, r := range text {
		n += utf16.RuneLen(r) * 2
		if n > limit {
			break
		}
		end = i + utf8.RuneLen(r)
	}
	if end == 0 && text != "" {
		_, w := utf8.DecodeRuneInString(text)
		return w
	}
	if i := strings.LastIndexAny(text[:end], "\n "); i >= end-end/10 && i > 0 {
		return i + 1
	}
	return end
}
