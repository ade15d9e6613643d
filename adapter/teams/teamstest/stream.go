package teamstest

import (
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Teams' streaming messages (spec §4, T3): the messages of its 403 ContentStreamNotAllowed
// answers, which clients tell apart by text (the Teams SDK does).
const (
	StreamNotAllowed  = "Content stream is not allowed"
	StreamCompleted   = "Content stream is not allowed on an already completed streamed message"
	StreamTimedOut    = "Content stream finished due to exceeded streaming time."
	StreamTooLarge    = "Message size too large"
	StreamCanceled    = "Content stream was canceled by user"
	StreamNotPrevious = "Request streamed content should contain the previously streamed content"
	// StreamStartNoText is the 400 BadRequest of a first streaming request without text.
	StreamStartNoText = "Start streaming activities should include text"
	// StreamOutOfOrder is the code of the 202 answer dropping an out-of-order chunk.
	StreamOutOfOrder = "ContentStreamSequenceOrderPreConditionFailed"
	// StreamQuota is the message of the 429 answer to a request faster than 1 per second.
	StreamQuota = "API calls quota exceeded"
	// InformativeMaxChars is the longest informative text (spec §4: 1 KB / 1000 characters).
	InformativeMaxChars = 1000
)

// StreamUpdate is one streaming request the connector received: a typing chunk
// (Type "informative" or "streaming") or the final message (Type "final").
type StreamUpdate struct {
	StreamID       string // empty on a refused first request
	ConversationID string
	At             time.Time // by [Server.Now]
	Type           string    // informative, streaming, final
	Sequence       int       // streamSequence; 0 when absent
	Text           string
	Status         int    // the answer's HTTP status
	Code           string // the error code when refused or dropped (202 out of order)
	Message        string
}

// Accepted reports whether the connector took the update (2xx without an error code).
func (u StreamUpdate) Accepted() bool { return u.Status < 300 && u.Code == "" }

// Stream is what the connector knows of one streamed message.
type Stream struct {
	ID             string
	ConversationID string
	ReplyToID      string
	// Updates are every request addressed to the stream, refused ones included, in order.
	Updates []StreamUpdate
	// Text is the message's text as users see it: the last streaming text, or the final.
	Text string
	// Final reports the final message was accepted (or the message was updated by PUT
	// after the stream ended).
	Final bool
	// Ended is why the stream ended: "final", "timeout", "canceled"; empty while open.
	Ended string
}

type streamState struct {
	Stream
	started time.Time
	seq     int    // last accepted streamSequence
	text    string // last accepted streaming text
	cancel  bool   // the user pressed Stop
}

type streamInfo struct {
	id, typ string
	seq     int
	hasSeq  bool
}

// streamInfoOf reads the stream fields of an activity: the streaminfo entity, or channelData
// (the Teams SDK sends both, spec §4). ok is false for an activity without them.
func streamInfoOf(a Activity) (si streamInfo, ok bool) {
	get := func(m map[string]any) {
		if v, isStr := m["streamId"].(string); isStr && v != "" && si.id == "" {
			si.id = v
		}
		if v, isStr := m["streamType"].(string); isStr && v != "" && si.typ == "" {
			si.typ = v
		}
		if !si.hasSeq {
			switch v := m["streamSequence"].(type) {
			case float64:
				si.seq, si.hasSeq = int(v), true
			case string:
				if n, err := strconv.Atoi(v); err == nil {
					si.seq, si.hasSeq = n, true
				}
			}
		}
	}
	for _, e := range a.Entities {
		if strings.EqualFold(e.Type, "streaminfo") {
			ok = true
			get(e.Extra)
		}
	}
	if len(a.ChannelData) > 0 {
		var cd map[string]any
		if json.Unmarshal(a.ChannelData, &cd) == nil {
			if _, has := cd["streamType"]; has || cd["streamId"] != nil {
				ok = ok || a.Type == "typing" || cd["streamType"] == "final"
				get(cd)
			}
		}
	}
	if !ok {
		return si, false
	}
	if si.typ == "" {
		si.typ = "streaming" // the default (spec §4)
	}
	return si, true
}

func (s *Server) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

func (s *Server) streamInterval() time.Duration {
	if s.StreamInterval > 0 {
		return s.StreamInterval
	}
	return time.Second
}

func (s *Server) streamTimeout() time.Duration {
	if s.StreamTimeout > 0 {
		return s.StreamTimeout
	}
	return 2 * time.Minute
}

// streamLocked applies spec §4 to one streaming request of conversation c.
func (s *Server) streamLocked(w http.ResponseWriter, c *conversation, convID, replyTo string, a Activity, si streamInfo, body []byte, appID string) {
	now := s.now()
	u := StreamUpdate{StreamID: si.id, ConversationID: c.ID, At: now, Type: si.typ, Sequence: si.seq, Text: a.Text}
	var st *streamState
	answer := func(status int, code, msg string, v any) {
		u.Status, u.Code, u.Message = status, code, msg
		if st != nil {
			st.Updates = append(st.Updates, u)
		}
		s.streamAll = append(s.streamAll, u)
		s.onStreamQ = append(s.onStreamQ, u)
		if v != nil {
			writeJSON(w, status, v)
		} else {
			connectorError(w, status, code, msg)
		}
	}
	final := si.typ == "final"
	switch {
	case final && a.Type != "message":
		answer(http.StatusBadRequest, "BadArgument", "The final streamed message must be a message activity", nil)
		return
	case !final && a.Type != "typing":
		answer(http.StatusBadRequest, "BadArgument", "Streaming chunks must be typing activities", nil)
		return
	case si.typ != "informative" && si.typ != "streaming" && !final:
		answer(http.StatusBadRequest, "BadArgument", "Unknown streamType "+strconv.Quote(si.typ), nil)
		return
	}
	if c.ConversationType != "personal" || s.RefuseStreams {
		answer(http.StatusForbidden, "ContentStreamNotAllowed", StreamNotAllowed, nil)
		return
	}
	if last, ok := s.streamLast[c.ID]; ok && now.Sub(last) < s.streamInterval() {
		w.Header().Set("Retry-After", "1")
		st = s.streams[si.id]
		answer(http.StatusTooManyRequests, "Throttled", StreamQuota, nil)
		return
	}
	if si.typ == "informative" && utf8.RuneCountInString(a.Text) > InformativeMaxChars {
		answer(http.StatusBadRequest, "BadRequest", "Informative text is longer than 1000 characters", nil)
		return
	}
	if si.id == "" {
		// The first request opens the stream.
		switch {
		case final:
			answer(http.StatusBadRequest, "BadRequest", "The final streamed message needs the streamId of the first response", nil)
			return
		case a.Text == "":
			answer(http.StatusBadRequest, "BadRequest", StreamStartNoText, nil)
			return
		case !si.hasSeq || si.seq != 1:
			answer(http.StatusBadRequest, "BadRequest", "The first streaming request must have streamSequence 1", nil)
			return
		}
		for _, id := range s.streamOrder {
			if o := s.streams[id]; o.ConversationID == c.ID && o.Ended == "" && now.Sub(o.started) < s.streamTimeout() {
				answer(http.StatusForbidden, "ContentStreamNotAllowed", StreamNotAllowed+": another stream is open in this chat", nil)
				return
			}
		}
		if s.streamTooLarge(a) {
			answer(http.StatusForbidden, "ContentStreamNotAllowed", StreamTooLarge, nil)
			return
		}
		id := s.nextIDLocked()
		st = &streamState{Stream: Stream{ID: id, ConversationID: c.ID, ReplyToID: firstNonEmpty(replyTo, a.ReplyToID)}, started: now, seq: 1}
		if si.typ == "streaming" {
			st.text, st.Text = a.Text, a.Text
		}
		s.streams[id] = st
		s.streamOrder = append(s.streamOrder, id)
		s.streamLast[c.ID] = now
		msg := Activity{Type: "message", ID: id, Text: st.Text, From: a.From, ReplyToID: st.ReplyToID}
		c.activities[id] = &activity{fromBot: true, act: msg}
		u.StreamID = id
		answer(http.StatusCreated, "", "", map[string]string{"id": id})
		return
	}
	st = s.streams[si.id]
	if st == nil || st.ConversationID != c.ID {
		st = nil
		answer(http.StatusNotFound, "ActivityNotFoundInConversation", "No stream "+si.id+" in this conversation", nil)
		return
	}
	switch {
	case st.Ended == "timeout":
		answer(http.StatusForbidden, "ContentStreamNotAllowed", StreamTimedOut, nil)
		return
	case st.Ended == "canceled" || st.cancel:
		st.Ended = "canceled"
		answer(http.StatusForbidden, "ContentStreamNotAllowed", StreamCanceled, nil)
		return
	case st.Ended != "":
		answer(http.StatusForbidden, "ContentStreamNotAllowed", StreamCompleted, nil)
		return
	case now.Sub(st.started) >= s.streamTimeout():
		st.Ended = "timeout"
		answer(http.StatusForbidden, "ContentStreamNotAllowed", StreamTimedOut, nil)
		return
	}
	s.streamLast[c.ID] = now
	if final {
		switch {
		case s.StrictStream && si.hasSeq:
			answer(http.StatusBadRequest, "BadRequest", "The final streamed message must not carry streamSequence", nil)
			return
		case a.Text == "" && len(a.Attachments) == 0:
			answer(http.StatusBadRequest, "BadRequest", "The final streamed message has no text", nil)
			return
		case !strings.HasPrefix(a.Text, st.text):
			answer(http.StatusForbidden, "ContentStreamNotAllowed", StreamNotPrevious, nil)
			return
		case messageBytes(a) > s.maxMessageBytes():
			answer(http.StatusForbidden, "ContentStreamNotAllowed", StreamTooLarge, nil)
			return
		}
		st.Text, st.Final, st.Ended = a.Text, true, "final"
		a.ID = st.ID
		c.activities[st.ID].act = a
		s.sent = append(s.sent, Sent{Kind: kindOf(st.ReplyToID), AppID: appID, ConversationID: convID, ActivityID: st.ID,
			ReplyToID: st.ReplyToID, Activity: a, Raw: body})
		answer(http.StatusCreated, "", "", map[string]string{"id": st.ID})
		return
	}
	if !si.hasSeq || si.seq != st.seq+1 {
		// Out of order: Teams drops the chunk and says so in a 202 (spec §4).
		answer(http.StatusAccepted, StreamOutOfOrder, "Stream sequence out of order: the chunk was dropped",
			map[string]any{"error": map[string]string{"code": StreamOutOfOrder, "message": "Stream sequence out of order: the chunk was dropped"}})
		return
	}
	if si.typ == "streaming" {
		switch {
		case a.Text == "":
			answer(http.StatusBadRequest, "BadRequest", "Streaming activities should include text", nil)
			return
		case !strings.HasPrefix(a.Text, st.text):
			answer(http.StatusForbidden, "ContentStreamNotAllowed", StreamNotPrevious, nil)
			return
		case s.streamTooLarge(a):
			answer(http.StatusForbidden, "ContentStreamNotAllowed", StreamTooLarge, nil)
			return
		}
		st.text, st.Text = a.Text, a.Text
		c.activities[st.ID].act.Text = a.Text
	}
	st.seq = si.seq
	answer(http.StatusAccepted, "", "", map[string]any{})
}

func (s *Server) streamTooLarge(a Activity) bool { return messageBytes(a) > s.maxMessageBytes() }

func firstNonEmpty(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// streamUpdatedLocked records a PUT of a streamed message (the Teams SDK's way to finish a
// stream that exceeded its time, spec §4).
func (s *Server) streamUpdatedLocked(id, text string) {
	if st := s.streams[id]; st != nil {
		st.Text, st.Final = text, true
		if st.Ended == "" {
			st.Ended = "final"
		}
	}
}

// StopStream acts as the user pressing Stop on a streaming message: the stream's next
// request gets 403 "Content stream was canceled by user".
func (s *Server) StopStream(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.initLocked()
	if st := s.streams[id]; st != nil {
		st.cancel = true
	}
}

// Streams returns every stream the connector opened, oldest first (refused first requests
// open none: see [Server.StreamRequests]).
func (s *Server) Streams() []Stream {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.initLocked()
	var out []Stream
	for _, id := range s.streamOrder {
		st := *s.streams[id]
		st.Updates = append([]StreamUpdate(nil), st.Updates...)
		if st.Ended == "" && s.now().Sub(s.streams[id].started) >= s.streamTimeout() {
			st.Ended = "timeout"
		}
		out = append(out, st.Stream)
	}
	return out
}

// StreamRequests returns every streaming request in order, refused ones included.
func (s *Server) StreamRequests() []StreamUpdate {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]StreamUpdate(nil), s.streamAll...)
}
