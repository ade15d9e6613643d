package aibottest

import (
	"encoding/json"
	"io"
	"net/http"
	"time"
)

// responseCode is one response_url: usable once, for an hour.
type responseCode struct {
	chat string
	at   time.Time
	used bool
}

// ResponseURL returns a fresh response_url for conv, served by this Server under
// /cgi-bin/aibot/response. It must be served on the host set in ResponseHost.
func (s *Server) ResponseURL(conv Conv) string {
	s.init()
	code := randHex(12)
	s.mu.Lock()
	if s.codes == nil {
		s.codes = map[string]*responseCode{}
	}
	s.codes[code] = &responseCode{chat: conv.key(), at: time.Now()}
	host := s.ResponseHost
	s.mu.Unlock()
	return "http://" + host + "/cgi-bin/aibot/response?response_code=" + code
}

// serveResponse accepts one POST per code within an hour: markdown or template_card JSON,
// not encrypted. A second POST answers ok and shows nothing, as WeCom does.
func (s *Server) serveResponse(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	answer := func(code int, msg string) {
		json.NewEncoder(w).Encode(map[string]any{"errcode": code, "errmsg": msg})
	}
	if r.Method != http.MethodPost {
		http.Error(w, "POST only", http.StatusMethodNotAllowed)
		return
	}
	raw, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	var b replyBody
	if err := json.Unmarshal(raw, &b); err != nil {
		answer(CodeBadParam, "invalid json")
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	rc := s.codes[r.URL.Query().Get("response_code")]
	if rc == nil || time.Since(rc.at) > time.Hour {
		answer(CodeBadParam, "invalid response_code")
		return
	}
	if rc.used {
		s.responsePosts++
		answer(0, "ok") // shown nowhere
		return
	}
	switch {
	case b.MsgType == "markdown" && b.Markdown != nil && len(b.Markdown.Content) <= MaxStreamBytes:
		s.show(rc.chat, nil, b.Markdown.Content, "markdown")
	case b.MsgType == "template_card" && len(b.TemplateCard) > 0:
		s.show(rc.chat, nil, "", "template_card")
	default:
		answer(CodeBadParam, "response_url takes markdown (<= 20480 bytes) or template_card")
		return
	}
	rc.used = true
	s.responsePosts++
	s.sent = append(s.sent, Sent{Cmd: "response_url", Chat: rc.chat, MsgType: b.MsgType, Body: raw, At: time.Now(),
		Content: func() string {
			if b.Markdown != nil {
				return b.Markdown.Content
			}
			return ""
		}()})
	answer(0, "ok")
}

// ResponsePosts returns how many POSTs response_url endpoints received (used or not).
func (s *Server) ResponsePosts() int {
	s.init()
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.responsePosts
}
