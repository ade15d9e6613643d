package wecomtest

import (
	"bytes"
	"encoding/json"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// maxContent is WeCom's text and markdown limit; longer content is truncated, not refused.
const maxContent = 2048

type sendBody struct {
	ToUser  string          `json:"touser"`
	ToParty string          `json:"toparty"`
	ToTag   string          `json:"totag"`
	ChatID  string          `json:"chatid"`
	MsgType string          `json:"msgtype"`
	AgentID json.RawMessage `json:"agentid"`
	// enable_duplicate_check and duplicate_check_interval (seconds; default 1800, at most 4 h)
	DupCheck    int          `json:"enable_duplicate_check"`
	DupInterval int          `json:"duplicate_check_interval"`
	Text        *contentBody `json:"text"`
	Markdown    *contentBody `json:"markdown"`
	Image       *mediaBody   `json:"image"`
	Voice       *mediaBody   `json:"voice"`
	Video       *mediaBody   `json:"video"`
	File        *mediaBody   `json:"file"`
	TextCard    *struct {
		Title, Description, URL string
	} `json:"textcard"`
	News *struct {
		Articles []json.RawMessage `json:"articles"`
	} `json:"news"`
	MPNews *struct {
		Articles []json.RawMessage `json:"articles"`
	} `json:"mpnews"`
	TemplateCard *struct {
		CardType string `json:"card_type"`
	} `json:"template_card"`
}

type contentBody struct {
	Content string `json:"content"`
}

type mediaBody struct {
	MediaID string `json:"media_id"`
}

// agentID parses agentid: a JSON number, or a numeric string when lenient.
func (s *Server) agentID(raw json.RawMessage) (int64, int) {
	if len(raw) == 0 || string(raw) == "null" {
		return 0, 41011
	}
	var n int64
	if err := json.Unmarshal(raw, &n); err == nil {
		return n, 0
	}
	var str string
	if err := json.Unmarshal(raw, &str); err == nil && s.LenientAgentID {
		if n, err := strconv.ParseInt(str, 10, 64); err == nil {
			return n, 0
		}
	}
	return 0, 40056
}

// truncate cuts s to max bytes at a character boundary.
func truncate(s string, max int) (string, bool) {
	if len(s) <= max {
		return s, false
	}
	for max > 0 && !utf8.RuneStart(s[max]) {
		max--
	}
	return s[:max], true
}

func (s *Server) sendLocked(tok *token, data []byte, appchat bool) map[string]any {
	var b sendBody
	if err := json.Unmarshal(data, &b); err != nil {
		return errBody(47001, nil)
	}
	rec := Sent{Endpoint: "message/send", MsgType: b.MsgType, ToUser: b.ToUser, ToParty: b.ToParty, ToTag: b.ToTag,
		ChatID: b.ChatID, Time: s.now(), Body: append(json.RawMessage(nil), data...)}
	var chat *Chat
	if appchat {
		rec.Endpoint = "appchat/send"
		if !validChatID(b.ChatID) {
			return errBody(86001, nil)
		}
		chat = s.chats[b.ChatID]
		if chat == nil || (tok.agentID != 0 && chat.AgentID != tok.agentID) {
			return errBody(86003, nil)
		}
		rec.AgentID = chat.AgentID
	} else {
		agent, code := s.agentID(b.AgentID)
		if code != 0 {
			return errBody(code, nil)
		}
		if tok.agentID != 0 && agent != tok.agentID {
			return errBody(40056, nil)
		}
		rec.AgentID = agent
	}
	// Content checks.
	switch b.MsgType {
	case "text", "markdown":
		c := b.Text
		if b.MsgType == "markdown" {
			c = b.Markdown
		}
		if c == nil || c.Content == "" {
			return errBody(44004, nil)
		}
		rec.Content, rec.Truncated = truncate(c.Content, maxContent)
	case "image", "voice", "video", "file":
		m := map[string]*mediaBody{"image": b.Image, "voice": b.Voice, "video": b.Video, "file": b.File}[b.MsgType]
		if m == nil || m.MediaID == "" {
			return errBody(40007, nil)
		}
		if _, code := s.mediaLocked(m.MediaID); code != 0 {
			return errBody(code, nil)
		}
		rec.MediaID = m.MediaID
	case "textcard":
		switch {
		case b.TextCard == nil || b.TextCard.Title == "":
			return errBody(44004, nil)
		case b.TextCard.Description == "":
			return errBody(41033, nil)
		}
	case "news", "mpnews":
		n := b.News
		if b.MsgType == "mpnews" {
			n = b.MPNews
		}
		if n == nil || len(n.Articles) < 1 || len(n.Articles) > 8 {
			return errBody(45008, nil)
		}
	case "template_card":
		if appchat || b.TemplateCard == nil {
			return errBody(40008, nil)
		}
		switch b.TemplateCard.CardType {
		case "text_notice", "news_notice", "button_interaction", "vote_interaction", "multiple_interaction":
		default:
			return errBody(40008, nil)
		}
	default:
		return errBody(40008, nil)
	}
	resp := map[string]any{"errcode": 0, "errmsg": "ok"}
	if appchat {
		rec.Delivered = s.deliverLocked(rec.AgentID, append([]string{chat.Owner}, chat.Users...), &rec)
		s.sent = append(s.sent, rec)
		return resp
	}
	// Recipients.
	if b.ToUser == "" && b.ToParty == "" && b.ToTag == "" {
		return errBody(41009, nil)
	}
	var users, invUsers, invParties, invTags []string
	if b.ToUser == "@all" {
		users = []string{"@all"}
		if len(s.users) > 0 {
			users = users[:0]
			for u := range s.users {
				users = append(users, u)
			}
		}
	} else {
		for _, u := range split(b.ToUser) {
			lu := strings.ToLower(u)
			if len(s.users) > 0 && !s.users[lu] {
				invUsers = append(invUsers, lu)
				continue
			}
			users = append(users, lu)
		}
		for _, p := range split(b.ToParty) {
			if len(s.parties) > 0 && !s.parties[p] {
				invParties = append(invParties, p)
				continue
			}
			users = append(users, "party:"+p)
		}
		for _, t := range split(b.ToTag) {
			if len(s.tags) > 0 && !s.tags[t] {
				invTags = append(invTags, t)
				continue
			}
			users = append(users, "tag:"+t)
		}
	}
	extra := map[string]any{
		"invaliduser":  strings.Join(invUsers, "|"),
		"invalidparty": strings.Join(invParties, "|"),
		"invalidtag":   strings.Join(invTags, "|"),
	}
	if len(users) == 0 {
		return errBody(81013, extra)
	}
	for _, u := range invUsers {
		rec.Invalid = append(rec.Invalid, "user:"+u)
	}
	for _, p := range invParties {
		rec.Invalid = append(rec.Invalid, "party:"+p)
	}
	for _, t := range invTags {
		rec.Invalid = append(rec.Invalid, "tag:"+t)
	}
	if b.DupCheck == 1 && !s.IgnoreDuplicateCheck {
		if first := s.duplicateLocked(rec.AgentID, data, b.DupInterval); first != nil {
			// Accepted, not shown again: the answer names the first message (assumed; the
			// doc says only that the duplicate is not sent).
			rec.Duplicate, rec.MsgID = true, first.MsgID
			s.sent = append(s.sent, rec)
			for k, v := range extra {
				resp[k] = v
			}
			resp["unlicenseduser"] = ""
			resp["msgid"] = first.MsgID
			return resp
		}
	}
	if s.MemberLimitCode != 0 && s.overLimitLocked(rec.AgentID, users) {
		return errBody(s.MemberLimitCode, nil)
	}
	rec.MsgID = randHex(24)
	rec.Delivered = s.deliverLocked(rec.AgentID, users, &rec)
	for k, v := range extra {
		resp[k] = v
	}
	resp["unlicenseduser"] = ""
	resp["msgid"] = rec.MsgID
	if b.MsgType == "template_card" && b.TemplateCard.CardType != "text_notice" && b.TemplateCard.CardType != "news_notice" {
		resp["response_code"] = randHex(16)
	}
	s.byMsgID[rec.MsgID] = len(s.sent)
	s.sent = append(s.sent, rec)
	return resp
}

// duplicateLocked returns the message/send of app agentID shown within the last interval
// seconds (0: 1800; at most 4 h) whose request JSON is the same as data's, or nil.
func (s *Server) duplicateLocked(agentID int64, data []byte, interval int) *Sent {
	if interval <= 0 {
		interval = 1800
	}
	interval = min(interval, 4*3600)
	want := canonical(data)
	now := s.now()
	for i := len(s.sent) - 1; i >= 0; i-- {
		p := &s.sent[i]
		if now.Sub(p.Time) >= time.Duration(interval)*time.Second {
			break
		}
		if p.Endpoint == "message/send" && p.AgentID == agentID && !p.Duplicate && canonical(p.Body) == want {
			return p
		}
	}
	return nil
}

// canonical returns JSON with its object keys sorted and no insignificant space.
func canonical(data []byte) string {
	var v any
	if err := json.Unmarshal(data, &v); err != nil {
		return string(data)
	}
	out, _ := json.Marshal(v)
	return string(out)
}

// overLimitLocked reports whether one more message would exceed MemberLimit for a user.
func (s *Server) overLimitLocked(agentID int64, users []string) bool {
	limit := s.MemberLimit
	if limit == 0 {
		limit = 30
	}
	if limit < 0 {
		return false
	}
	now := s.now()
	for _, u := range users {
		n := 0
		for _, t := range s.recv[strconv.FormatInt(agentID, 10)+"/"+u] {
			if now.Sub(t) < time.Minute {
				n++
			}
		}
		if n >= limit {
			return true
		}
	}
	return false
}

// deliverLocked applies MemberLimit and returns who received the message.
func (s *Server) deliverLocked(agentID int64, users []string, rec *Sent) []string {
	limit := s.MemberLimit
	if limit == 0 {
		limit = 30
	}
	now := s.now()
	var out []string
	for _, u := range users {
		if limit < 0 {
			out = append(out, u)
			continue
		}
		key := strconv.FormatInt(agentID, 10) + "/" + u
		times := s.recv[key]
		i := 0
		for i < len(times) && now.Sub(times[i]) >= time.Minute {
			i++
		}
		times = times[i:]
		if len(times) >= limit {
			rec.Dropped = append(rec.Dropped, u)
			s.recv[key] = times
			continue
		}
		s.recv[key] = append(times, now)
		out = append(out, u)
	}
	return out
}

func split(list string) []string {
	var out []string
	for _, s := range strings.Split(list, "|") {
		if s != "" {
			out = append(out, s)
		}
	}
	return out
}

var chatIDRe = regexp.MustCompile(`^[0-9a-zA-Z]{1,32}$`)

func validChatID(id string) bool { return chatIDRe.MatchString(id) }

func (s *Server) createChatLocked(tok *token, data []byte) map[string]any {
	var b struct {
		Name     string   `json:"name"`
		Owner    string   `json:"owner"`
		UserList []string `json:"userlist"`
		ChatID   string   `json:"chatid"`
	}
	if err := json.Unmarshal(data, &b); err != nil {
		return errBody(47001, nil)
	}
	if len(b.UserList) < 2 || len(b.UserList) > 2000 {
		return errBody(86004, nil)
	}
	id := b.ChatID
	if id == "" {
		id = randHex(16)
	}
	if !validChatID(id) || s.chats[id] != nil {
		return errBody(86001, nil)
	}
	owner := b.Owner
	if owner == "" {
		owner = b.UserList[0]
	}
	s.chats[id] = &Chat{ID: id, Name: b.Name, Owner: owner, Users: b.UserList, AgentID: tok.agentID}
	return map[string]any{"errcode": 0, "errmsg": "ok", "chatid": id}
}

func (s *Server) recallLocked(data []byte) map[string]any {
	var b struct {
		MsgID string `json:"msgid"`
	}
	if err := json.Unmarshal(data, &b); err != nil {
		return errBody(47001, nil)
	}
	i, ok := s.byMsgID[b.MsgID]
	if !ok || time.Since(s.sent[i].Time) >= 24*time.Hour || s.sent[i].Recalled {
		return errBody(43001, nil)
	}
	s.sent[i].Recalled = true
	return map[string]any{"errcode": 0, "errmsg": "ok"}
}

var mediaLimits = map[string]struct {
	max  int64
	code int
}{
	"image": {10 << 20, 40009},
	"voice": {2 << 20, 40006},
	"video": {10 << 20, 40011},
	"file":  {20 << 20, 45001},
}

func (s *Server) uploadLocked(r *http.Request, data []byte) map[string]any {
	typ := r.URL.Query().Get("type")
	lim, ok := mediaLimits[typ]
	if !ok {
		return errBody(40005, nil)
	}
	m, code := readMedia(r, data, lim.max, lim.code)
	if code != 0 {
		return errBody(code, nil)
	}
	m.ID, m.Type = randHex(24), typ
	s.media[m.ID] = m
	return map[string]any{"errcode": 0, "errmsg": "", "type": typ, "media_id": m.ID,
		"created_at": strconv.FormatInt(m.Created.Unix(), 10)}
}

// readMedia reads the multipart part named "media" of an upload: 44001 if there is none or
// it is empty, 40006 if it has 5 bytes or fewer, tooLarge if it has more than max.
func readMedia(r *http.Request, data []byte, max int64, tooLarge int) (*Media, int) {
	_, params, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || params["boundary"] == "" {
		return nil, 44001
	}
	mr := multipart.NewReader(bytes.NewReader(data), params["boundary"])
	for {
		p, err := mr.NextPart()
		if err != nil {
			return nil, 44001 // no "media" part
		}
		if p.FormName() != "media" {
			continue
		}
		content, err := io.ReadAll(io.LimitReader(p, max+1))
		if err != nil {
			return nil, 44001
		}
		switch {
		case len(content) == 0:
			return nil, 44001
		case len(content) <= 5:
			return nil, 40006
		case int64(len(content)) > max:
			return nil, tooLarge
		}
		_, dp, _ := mime.ParseMediaType(p.Header.Get("Content-Disposition"))
		m := &Media{Name: p.FileName(), ContentType: p.Header.Get("Content-Type"),
			Data: content, Created: time.Now(), FileLength: dp["filelength"]}
		if m.ContentType == "" {
			m.ContentType = "application/octet-stream"
		}
		return m, 0
	}
}

// maxUploadImg is media/uploadimg's limit: "图片文件大小应在 5B ~ 2MB 之间" (doc 90256).
const maxUploadImg = 2 << 20

// imagePath is where the Server serves images uploaded with media/uploadimg, as WeCom
// serves them from http://p.qpic.cn/pic_wework/<n>/<hash>/0.
const imagePath = "/pic_wework/"

// uploadImgLocked answers media/uploadimg (doc 90256): a JPG or PNG of 5 B to 2 MB in the
// part "media" becomes a permanent image whose URL, on the Server's own host so a test can
// fetch it, is returned as "url". A file of another type gets 40005 (the errcode is assumed:
// the doc names only the formats).
func (s *Server) uploadImgLocked(r *http.Request, data []byte) map[string]any {
	m, code := readMedia(r, data, maxUploadImg, 40009)
	if code != 0 {
		return errBody(code, nil)
	}
	switch ct := http.DetectContentType(m.Data); ct {
	case "image/jpeg", "image/png":
		m.ContentType = ct
	default:
		return errBody(40005, nil)
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	m.ID, m.Type = randHex(24), "image"
	path := imagePath + m.ID + "/0"
	s.images[path] = m
	u := scheme + "://" + r.Host + path
	// errmsg "" as in the doc's sample (copied in several SDKs' comments), like media/upload.
	return map[string]any{"errcode": 0, "errmsg": "", "url": u}
}

func (s *Server) mediaLocked(id string) (*Media, int) {
	m, ok := s.media[id]
	if !ok || time.Since(m.Created) >= s.mediaLifetime() {
		return nil, 40007
	}
	return m, 0
}
