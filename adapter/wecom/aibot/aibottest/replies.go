package aibottest

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"
)

type replyBody struct {
	ChatID   string `json:"chatid"`
	MsgType  string `json:"msgtype"`
	Markdown *struct {
		Content  string `json:"content"`
		Feedback *struct {
			ID string `json:"id"`
		} `json:"feedback"`
	} `json:"markdown"`
	Text *struct {
		Content string `json:"content"`
	} `json:"text"`
	Stream       *streamBody     `json:"stream"`
	TemplateCard json.RawMessage `json:"template_card"`
	ResponseType string          `json:"response_type"`
	File         *mediaRef       `json:"file"`
	Image        *mediaRef       `json:"image"`
	Voice        *mediaRef       `json:"voice"`
	Video        *mediaRef       `json:"video"`
}

type mediaRef struct {
	MediaID string `json:"media_id"`
}

func (b replyBody) mediaID() string {
	for _, m := range []*mediaRef{b.File, b.Image, b.Voice, b.Video} {
		if m != nil {
			return m.MediaID
		}
	}
	return ""
}

type streamBody struct {
	ID       string            `json:"id"`
	Finish   bool              `json:"finish"`
	Content  string            `json:"content"`
	MsgItem  []json.RawMessage `json:"msg_item"`
	Feedback *struct {
		ID string `json:"id"`
	} `json:"feedback"`
}

// handle applies one reply or send and returns the errcode, the ack body and why a frame
// was refused.
func (s *Server) handle(f inFrame) (int, json.RawMessage, string) {
	now := time.Now()
	if strings.HasPrefix(f.Cmd, "aibot_upload_media_") {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.handleUpload(f.Cmd, f.Body, now)
	}
	var b replyBody
	if err := json.Unmarshal(f.Body, &b); err != nil {
		return CodeBadParam, nil, "body is not a JSON object: " + err.Error()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	switch f.Cmd {
	case "aibot_send_msg":
		if !s.chats[b.ChatID] {
			return CodeInvalidChat, nil, fmt.Sprintf("chat %q never messaged the bot", b.ChatID)
		}
		return s.accept(f, b, b.ChatID, now, true)
	case "aibot_respond_msg", "aibot_respond_welcome_msg", "aibot_respond_update_msg":
	default:
		return CodeBadParam, nil, "unknown cmd " + f.Cmd
	}
	cb := s.reqs[f.Headers.ReqID]
	if cb == nil {
		return CodeInvalidReqID, nil, "req_id was never pushed"
	}
	want, window := "aibot_respond_msg", or(s.MsgReplyWindow, 24*time.Hour)
	switch cb.kind {
	case "enter_chat":
		want, window = "aibot_respond_welcome_msg", or(s.EventReplyWindow, 5*time.Second)
	case "template_card_event":
		want, window = "aibot_respond_update_msg", or(s.EventReplyWindow, 5*time.Second)
	case "event":
		return CodeInvalidReqID, nil, "this event's req_id takes no reply"
	}
	if f.Cmd != want {
		return CodeInvalidReqID, nil, fmt.Sprintf("%s on a %s req_id", f.Cmd, cb.kind)
	}
	if now.Sub(cb.at) > window {
		return CodeInvalidReqID, nil, fmt.Sprintf("req_id older than %s", window)
	}
	if cb.responded {
		return CodeResponded, nil, "req_id already consumed"
	}
	return s.accept(f, b, cb.chat, now, false)
}

// accept checks and records a reply to chat; s.mu is held.
func (s *Server) accept(f inFrame, b replyBody, chat string, now time.Time, send bool) (int, json.RawMessage, string) {
	cb := s.reqs[f.Headers.ReqID]
	switch b.MsgType {
	case "stream", "stream_with_template_card":
		if send {
			return CodeBadParam, nil, "aibot_send_msg takes no stream"
		}
		if b.MsgType == "stream_with_template_card" && cb != nil {
			cb.responded = true
		}
		return s.streamFrame(f.Headers.ReqID, chat, b.Stream, now)
	case "markdown":
		if b.Markdown == nil {
			return CodeBadParam, nil, "markdown without markdown object"
		}
		if len(b.Markdown.Content) > MaxStreamBytes {
			return CodeBadParam, nil, fmt.Sprintf("markdown content is %d bytes, over %d", len(b.Markdown.Content), MaxStreamBytes)
		}
		if !utf8.ValidString(b.Markdown.Content) {
			return CodeBadParam, nil, "markdown content is not UTF-8"
		}
		if code, why := s.count(chat, now); code != 0 {
			return code, nil, why
		}
		s.show(chat, nil, b.Markdown.Content, "markdown")
	case "text":
		if f.Cmd != "aibot_respond_welcome_msg" || b.Text == nil {
			return CodeBadParam, nil, "text only as a welcome reply"
		}
		cb.responded = true
		s.show(chat, nil, b.Text.Content, "text")
	case "template_card":
		if len(b.TemplateCard) == 0 {
			return CodeBadParam, nil, "template_card without template_card object"
		}
		if cb != nil {
			cb.responded = true
		}
		if code, why := s.count(chat, now); code != 0 {
			return code, nil, why
		}
		s.show(chat, nil, "", "template_card")
	case "file", "image", "voice", "video":
		if id := b.mediaID(); s.mediaIDs[id] == nil {
			return CodeInvalidMedia, nil, fmt.Sprintf("%s media_id %q was never uploaded", b.MsgType, id)
		}
		if code, why := s.count(chat, now); code != 0 {
			return code, nil, why
		}
		s.show(chat, nil, "", b.MsgType)
	case "":
		if f.Cmd == "aibot_respond_update_msg" && b.ResponseType == "update_template_card" && len(b.TemplateCard) > 0 {
			cb.responded = true
			s.show(chat, nil, "", "update_template_card")
			break
		}
		return CodeBadParam, nil, "no msgtype"
	default:
		return CodeBadParam, nil, "unknown msgtype " + b.MsgType
	}
	content := ""
	if b.Markdown != nil {
		content = b.Markdown.Content
	} else if b.Text != nil {
		content = b.Text.Content
	}
	s.sent = append(s.sent, Sent{Cmd: f.Cmd, ReqID: f.Headers.ReqID, Chat: chat, MsgType: b.MsgType, Content: content, Body: f.Body, At: now})
	return 0, nil, ""
}

// streamFrame applies one stream frame; s.mu is held.
func (s *Server) streamFrame(reqID, chat string, st *streamBody, now time.Time) (int, json.RawMessage, string) {
	if st == nil || st.ID == "" {
		return CodeBadParam, nil, "stream without id"
	}
	if len(st.Content) > MaxStreamBytes {
		return CodeBadParam, nil, fmt.Sprintf("stream content is %d bytes, over %d", len(st.Content), MaxStreamBytes)
	}
	if !utf8.ValidString(st.Content) {
		return CodeBadParam, nil, "stream content is not UTF-8"
	}
	if len(st.MsgItem) > 0 && (!st.Finish || len(st.MsgItem) > MaxMsgItems) {
		return CodeBadParam, nil, "msg_item only on finish, at most 10"
	}
	key := streamKey{reqID, st.ID}
	b := s.streams[key]
	if b == nil {
		if st.Feedback != nil && len(st.Feedback.ID) > MaxFeedbackID {
			return CodeBadParam, nil, "feedback id over 256 bytes"
		}
		if code, why := s.count(chat, now); code != 0 {
			return code, nil, why
		}
		b = &Bubble{ReqID: reqID, StreamID: st.ID, Chat: chat, first: now}
		s.streams[key] = b
		s.show(chat, b, "", "stream")
	} else {
		if st.Feedback != nil {
			return CodeBadParam, nil, "feedback only on a stream's first frame"
		}
		ttl := or(s.StreamTTL, 6*time.Minute)
		since := b.first
		if s.StreamTTLSinceLastUpdate {
			since = b.last
		}
		if b.expired || now.Sub(since) >= ttl {
			b.expired = true
			return CodeExpired, nil, "stream expired"
		}
		if b.Finished {
			return CodeBadParam, nil, "stream already finished"
		}
		if s.StreamFramesCount {
			if code, why := s.count(chat, now); code != 0 {
				return code, nil, why
			}
		}
	}
	b.Content, b.Finished, b.last = st.Content, st.Finish, now
	b.Frames = append(b.Frames, StreamFrame{Content: st.Content, Finish: st.Finish, At: now})
	return 0, nil, ""
}

// count applies the per-conversation limits; s.mu is held.
func (s *Server) count(chat string, now time.Time) (int, string) {
	perMin, perHour := or(s.PerMinute, 30), or(s.PerHour, 1000)
	ts := s.rate[chat]
	i := 0
	for i < len(ts) && now.Sub(ts[i]) >= time.Hour {
		i++
	}
	ts = ts[i:]
	inMin := 0
	for _, t := range ts {
		if now.Sub(t) < time.Minute {
			inMin++
		}
	}
	if perMin > 0 && inMin >= perMin || perHour > 0 && len(ts) >= perHour {
		s.rate[chat] = ts
		return CodeRateLimited, fmt.Sprintf("chat %q over %d/min or %d/h", chat, perMin, perHour)
	}
	s.rate[chat] = append(ts, now)
	return 0, ""
}

func (s *Server) show(chat string, b *Bubble, text, kind string) {
	s.seq++
	s.shown = append(s.shown, shownItem{seq: s.seq, chat: chat, bubble: b, text: text, kind: kind})
}
