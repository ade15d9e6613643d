package adapter

import (
	"context"
	"strings"
	"sync"
)

// A Streamer can stream a reply: it opens a [Stream] to which the caller appends text as it
// is produced (an LLM's tokens) and which it finishes when the text is complete. Streaming is
// an optional capability, found by type assertion on an [Adapter]; a platform that cannot
// stream does not implement it (the host then collects the text and calls [Adapter.Send]).
//
// The caller always sends deltas: each [Stream.Append] adds text after what was appended
// before, and the reply's text is the concatenation of every delta. How the text reaches the
// platform is the adapter's business, not the caller's: an adapter whose platform shows
// cumulative snapshots (WeCom AI Bot) sends the whole text so far in each frame; the adapter
// coalesces deltas to the platform's pace, splits text over the platform's size limit into
// further messages or bubbles, renews a platform stream before it expires, and falls back to
// an ordinary send when the platform refuses further updates, so that a finished stream
// always delivers the whole text, in order, once (a frame whose outcome is unknown, such as
// one whose acknowledgement timed out, may make a few characters appear twice, never lose
// them).
type Streamer interface {
	// OpenStream starts a reply described by msg without content: msg.ReplyTo is the id of
	// the event being answered (as the bot received it) or, for a proactive message, msg.To
	// names the target. Text, Markdown, HTML, Card and Attachments must be empty. ctx bounds
	// the opening only; the stream lives until Finish or Abort (or the adapter's Close).
	//
	// OpenStream returns an *Error of KindInvalidRequest for content in msg, KindNotFound for
	// a ReplyTo the adapter does not know (or no longer can answer in any way).
	OpenStream(ctx context.Context, msg Message) (Stream, error)
}

// A Stream is one reply being streamed. Append may be called from one goroutine at a time;
// Finish and Abort may be called from any goroutine, and once either has been called the
// stream is closed. A Stream is not plain data: across the plugin boundary it is a streaming
// RPC, over HTTP an application/x-ndjson request body.
type Stream interface {
	// Append adds delta to the end of the reply's text. It does not wait for the platform:
	// the adapter sends at its own pace and may merge many deltas into one update. It fails
	// (and the stream is then unusable except for Abort) when the stream is closed, when the
	// reply's text would exceed the adapter's limit (KindTooLarge), or when delivery has failed
	// for good (the error says why). An empty delta is allowed and does nothing.
	Append(ctx context.Context, delta string) error

	// Finish marks the text complete and waits, until ctx is done, for the platform to have
	// the whole reply: the last update acknowledged, or the remainder delivered by the
	// fallback. Its receipt lists every platform message the reply used. If ctx ends first,
	// delivery goes on in the background and Finish returns ctx's error. A stream finished
	// without any text returns an *Error of KindInvalidRequest and sends nothing.
	Finish(ctx context.Context) (Receipt, error)

	// Abort ends the stream without completing it: the platform shows what was already
	// sent, closed so that no bubble is left "typing", and nothing more is delivered.
	// reason is for logs. Abort after Finish or Abort does nothing.
	Abort(ctx context.Context, reason string) error
}

// OpenStream opens a reply stream on a: a's own if a is a [Streamer], otherwise a [Stream]
// that collects the deltas and, at Finish, sends the whole text with one [Adapter.Send] of
// msg (as Text, or as Markdown when markdown is true). Either way the caller sends deltas.
func OpenStream(ctx context.Context, a Adapter, msg Message, markdown bool) (Stream, error) {
	if s, ok := a.(Streamer); ok {
		return s.OpenStream(ctx, msg)
	}
	if err := checkStreamHeader(msg); err != nil {
		return nil, err
	}
	return &collectStream{a: a, msg: msg, markdown: markdown}, nil
}

// checkStreamHeader refuses a stream header that carries content.
func checkStreamHeader(msg Message) error {
	if msg.Text != "" || msg.Markdown != "" || msg.HTML != "" || len(msg.Card) > 0 || len(msg.Attachments) > 0 {
		return &Error{Kind: KindInvalidRequest, Message: "a stream's header carries no content: send the text as deltas"}
	}
	if msg.ReplyTo == "" {
		if _, err := msg.To.Kind(); err != nil {
			return err
		}
	}
	return nil
}

// CheckStreamHeader returns an *Error of KindInvalidRequest if msg cannot open a stream:
// it carries content, or it has neither ReplyTo nor exactly one target. Adapters
// implementing [Streamer] call it first.
func CheckStreamHeader(msg Message) error { return checkStreamHeader(msg) }

// collectStream is the Stream of an adapter that cannot stream.
type collectStream struct {
	a        Adapter
	msg      Message
	markdown bool
	mu       sync.Mutex // protects text and closed
	text     strings.Builder
	closed   bool
}

func (s *collectStream) Append(ctx context.Context, delta string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return &Error{Kind: KindInvalidRequest, Message: "stream is closed"}
	}
	s.text.WriteString(delta)
	return nil
}

func (s *collectStream) Finish(ctx context.Context) (Receipt, error) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return Receipt{}, &Error{Kind: KindInvalidRequest, Message: "stream is closed"}
	}
	s.closed = true
	text := s.text.String()
	s.mu.Unlock()
	if text == "" {
		return Receipt{}, &Error{Kind: KindInvalidRequest, Message: "stream finished without any text"}
	}
	msg := s.msg
	if s.markdown {
		msg.Markdown = text
	} else {
		msg.Text = text
	}
	return s.a.Send(ctx, msg)
}

func (s *collectStream) Abort(ctx context.Context, reason string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	return nil
}
