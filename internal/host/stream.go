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
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Minute)
	var st adapter.Stream
	if ms, ok := b.adapter.(markdownStreamer); ok && markdown {
		st, err = ms.OpenMarkdownStream(ctx, h.Message)
	} else {
		st, err = adapter.OpenStream(ctx, b.adapter, h.Message, markdown)
	}
	cancel()
	if err != nil {
		s.m.sends.WithLabelValues(b.name, string(adapter.KindOf(err)), adapter.Code(err)).Inc()
		writeError(w, err)
		return
	}
	fail := func(err error, why string) {
		st.Abort(context.WithoutCancel(r.Context()), why)
		s.m.sends.WithLabelValues(b.name, string(adapter.KindOf(err)), adapter.Code(err)).Inc()
		s.log.Warn("streamed send failed", "bot", b.name, "error", err)
		writeError(w, err)
	}
	deltas := 0
	for {
		line, err := next()
		if err != nil {
			fail(err, "request body failed")
			return
		}
		if line == nil {
			break
		}
		var l streamLine
		dec := json.NewDecoder(bytes.NewReader(line))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&l); err != nil || l.Delta == nil {
			fail(&adapter.Error{Kind: adapter.KindInvalidRequest, Message: fmt.Sprintf("stream line %d: want {\"delta\":\"...\"}", deltas+2)}, "malformed line")
			return
		}
		if err := st.Append(r.Context(), *l.Delta); err != nil {
			fail(err, "append failed")
			return
		}
		deltas++
	}
	fctx, fcancel := context.WithTimeout(r.Context(), 10*time.Minute)
	defer fcancel()
	rc, err := st.Finish(fctx)
	if err != nil {
		s.m.sends.WithLabelValues(b.name, string(adapter.KindOf(err)), adapter.Code(err)).Inc()
		s.log.Warn("streamed send failed", "bot", b.name, "error", err)
		writeError(w, err)
		return
	}
	s.m.sends.WithLabelValues(b.name, "ok", "").Inc()
	s.log.Info("streamed message sent", "bot", b.name, "deltas", deltas, "id", rc.ID, "messages", max(1, len(rc.IDs)))
	invalid := rc.Invalid
	if invalid == nil {
		invalid = []string{}
	}
	writeJSON(w, http.StatusOK, streamResponse{sendResponse: sendResponse{ID: rc.ID, Bot: b.name, Platform: b.platform, Invalid: invalid}, IDs: rc.IDs})
}

// streamResponse is the send answer plus the ids of every platform message the reply used.
type streamResponse struct {
	sendResponse
	IDs []string `json:"ids,omitempty"`
}
