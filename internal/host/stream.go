package host

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"strings"

	"time"

	"github.com/seed-a64d9e1f/chatwire/adapter"
)

// ndjson is the Content-Type of a streamed send.
const ndjson = "application/x-ndjson"

// maxStreamLine bounds one line of a streamed send.
const maxStreamLine = 1 << 20

// isStreamedSend reports whether r is a streamed send (an NDJSON body).
func isStreamedSend(r *http.Request) bool {
	mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	return mt == ndjson
}

// streamHeader is the first line of a streamed send: a message without content, and the
// format the text has ("text", the default, or "markdown").
type streamHeader struct {
	adapter.Message
	Format string `json:"format"`
}

type streamLine struct {
	Delta *string `json:"delta"`
}

// markdownStreamer is a bot that can say the streamed text is markdown (the plugin proxy).
type markdownStreamer interface {
	OpenMarkdownStream(ctx context.Context, msg adapter.Message) (adapter.Stream, error)
}

// streamSend serves a streamed send: POST /v1/bots/{bot}/messages with Content-Type
// application/x-ndjson whose first line is the message header without content
// ({"to":{..}} or {"reply_to":"<event id>"}, optional "format":"markdown") and each later
// line {"delta":"..."}. Deltas are handed to the bot's stream as they arrive; the end of the
// body finishes the reply, and the answer (the normal send answer) comes when the platform
// has the whole reply. A malformed line or a client that goes away aborts the reply.
func (s *server) streamSend(w http.ResponseWriter, r *http.Request, b *bot) {
	// A stream lasts as long as the text takes to produce: no read deadline.
	http.NewResponseController(w).SetReadDeadline(time.Time{})
	sc := bufio.NewScanner(r.Body)
	sc.Buffer(make([]byte, 64<<10), maxStreamLine)
	next := func() ([]byte, error) {
		for sc.Scan() {
			if line := bytes.TrimSpace(sc.Bytes()); len(line) > 0 {
				return line, nil
			}
		}
		if err := sc.Err(); err != nil {
			if errors.Is(err, bufio.ErrTooLong) {
				return nil, &adapter.Error{Kind: adapter.KindTooLarge, Message: fmt.Sprintf("a line of the stream is over %d bytes", maxStreamLine)}
			}
			return nil, &adapter.Error{Kind: adapter.KindInvalidRequest, Message: "reading the stream: " + err.Error(), Err: err}
		}
		return nil, nil // end of body
	}
	line, err := next()
	if err == nil && line == nil {
		err = &adapter.Error{Kind: adapter.KindInvalidRequest, Message: "empty stream: the first line is the message header"}
	}
	if err != nil {
		writeError(w, err)
		return
	}
	var h streamHeader
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&h); err != nil {
		writeError(w, &adapter.Error{Kind: adapter.KindInvalidRequest, Message: "stream header: " + err.Error()})
		return
	}
	markdown := false
	switch h.Format {
	case "", "text":
	case "markdown":
		markdown = true
	default:
		writeError(w, &adapter.Error{Kind: adapter.KindInvalidRequest, Message: fmt.Sprintf("stream header: format %q: want text or markdown", h.Format)})
		return
	}
	s.gateStream(w, r, b, h, func(ctx context.Context) outcome { return s.runStream(ctx, r, b, h, markdown, next) })
}

// runStream opens the bot's stream, hands it the deltas as they arrive and finishes it; its
// platform calls are paced as sends (streamgate.go). The outcome is the send answer.
func (s *server) runStream(ctx context.Context, r *http.Request, b *bot, h streamHeader, markdown bool, next func() ([]byte, error)) outcome {
	p := newStreamPacing(s.sends, r, b)
	var st adapter.Stream
	err := p.open(ctx, h.Message, func(ctx context.Context) (err error) {
		ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		defer cancel()
		if ms, ok := b.adapter.(markdownStreamer); ok && markdown {
			st, err = ms.OpenMarkdownStream(ctx, h.Message)
		} else {
			st, err = adapter.OpenStream(ctx, b.adapter, h.Message, markdown)
		}
		return err
	})
	if err != nil {
		s.m.sends.WithLabelValues(b.name, string(adapter.KindOf(err)), adapter.Code(err)).Inc()
		return errorOutcome(err, adapter.KindOf(err) != adapter.KindRateLimited)
	}
	fail := func(err error, why string) outcome {
		st.Abort(context.WithoutCancel(ctx), why)
		s.m.sends.WithLabelValues(b.name, string(adapter.KindOf(err)), adapter.Code(err)).Inc()
		s.log.Warn("streamed send failed", "bot", b.name, "error", err)
		return errorOutcome(err, p.shown())
	}
	deltas := 0
	var text strings.Builder
	for {
		line, err := next()
		if err != nil {
			return fail(err, "request body failed")
		}
		if line == nil {
			break
		}
		var l streamLine
		dec := json.NewDecoder(bytes.NewReader(line))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&l); err != nil || l.Delta == nil {
			return fail(&adapter.Error{Kind: adapter.KindInvalidRequest, Message: fmt.Sprintf("stream line %d: want {\"delta\":\"...\"}", deltas+2)}, "malformed line")
		}
		if err := st.Append(ctx, *l.Delta); err != nil {
			return fail(err, "append failed")
		}
		text.WriteString(*l.Delta)
		deltas++
	}
	// The whole text is here: the reply is finished even if the client goes away now.
	fctx, fcancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Minute)
	defer fcancel()
	whole := h.Message
	if markdown {
		whole.Markdown = text.String()
	} else {
		whole.Text = text.String()
	}
	var rc adapter.Receipt
	finished := false
	err = p.finish(fctx, whole, func(ctx context.Context) (err error) {
		finished = true
		rc, err = st.Finish(ctx)
		return err
	})
	if err != nil {
		if !finished { // refused by pacing: nothing more reaches the platform
			st.Abort(fctx, "paced")
		}
		s.m.sends.WithLabelValues(b.name, string(adapter.KindOf(err)), adapter.Code(err)).Inc()
		s.log.Warn("streamed send failed", "bot", b.name, "error", err)
		return errorOutcome(err, finished || p.shown())
	}
	s.m.sends.WithLabelValues(b.name, "ok", "").Inc()
	s.log.Info("streamed message sent", "bot", b.name, "deltas", deltas, "id", rc.ID, "messages", max(1, len(rc.IDs)))
	invalid := rc.Invalid
	if invalid == nil {
		invalid = []string{}
	}
	return jsonOutcome(http.StatusOK, nil, streamResponse{sendResponse: sendResponse{ID: rc.ID, Bot: b.name, Platform: b.platform, Invalid: invalid}, IDs: rc.IDs}, true)
}

// streamResponse is the send answer plus the ids of every platform message the reply used.
type streamResponse struct {
	sendResponse
	IDs []string `json:"ids,omitempty"`
}
