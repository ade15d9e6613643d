// Package robottest emulates WeCom's group robot webhook (群机器人): POST
// /cgi-bin/webhook/send?key=KEY and /cgi-bin/webhook/upload_media?key=KEY&type=file|voice,
// with the 20-messages-a-minute limit. The zero [Server] is ready, with key "KEY1".
package robottest

import (
	"crypto/md5"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"
)

// Limits and codes the emulator applies.
const (
	MaxText      = 2048 // text content, bytes
	MaxMarkdown  = 4096 // markdown and markdown_v2 content, bytes
	MaxImage     = 2 << 20
	MaxFile      = 20 << 20
	MaxVoice     = 2 << 20
	MaxArticles  = 8
	CodeBadKey   = 93000 // invalid webhook url
	CodeFreq     = 45009
	CodeBadParam = 40058
	CodeBadMedia = 40007
)

// Server emulates one group robot. Set fields before serving; methods are safe for
// concurrent use.
type Server struct {
	Key string // "" means "KEY1"
	// PerMinute is the send limit (45009 above it). Zero means 20; negative, no limit.
	PerMinute int

	mu    sync.Mutex // protects below
	sent  []Sent
	times []time.Time
	media map[string]Media
}

// Sent is one accepted message.
type Sent struct {
	MsgType string
	Content string // text/markdown/markdown_v2 content
	Body    json.RawMessage
	At      time.Time
}

// Media is one uploaded file.
type Media struct {
	Type, Filename string
	Data           []byte
}

func answer(w http.ResponseWriter, code int, msg string, extra map[string]any) {
	out := map[string]any{"errcode": code, "errmsg": msg}
	for k, v := range extra {
		out[k] = v
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(out)
}

// ServeHTTP serves send and upload_media.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	key := s.Key
	if key == "" {
		key = "KEY1"
	}
	if r.Method != http.MethodPost {
		http.Error(w, "POST only", http.StatusMethodNotAllowed)
		return
	}
	if r.URL.Query().Get("key") != key {
		answer(w, CodeBadKey, "invalid webhook url", nil)
		return
	}
	switch r.URL.Path {
	case "/cgi-bin/webhook/send":
		s.send(w, r)
	case "/cgi-bin/webhook/upload_media":
		s.upload(w, r)
	default:
		http.NotFound(w, r)
	}
}

type content struct {
	Content string `json:"content"`
}

func (s *Server) send(w http.ResponseWriter, r *http.Request) {
	raw, _ := io.ReadAll(io.LimitReader(r.Body, 4<<20))
	var b struct {
		MsgType    string   `json:"msgtype"`
		Text       *content `json:"text"`
		Markdown   *content `json:"markdown"`
		MarkdownV2 *content `json:"markdown_v2"`
		Image      *struct {
			Base64 string `json:"base64"`
			MD5    string `json:"md5"`
		} `json:"image"`
		News *struct {
			Articles []struct {
				Title string `json:"title"`
				URL   string `json:"url"`
			} `json:"articles"`
		} `json:"news"`
		File *struct {
			MediaID string `json:"media_id"`
		} `json:"file"`
		Voice *struct {
			MediaID string `json:"media_id"`
		} `json:"voice"`
		TemplateCard json.RawMessage `json:"template_card"`
	}
	if err := json.Unmarshal(raw, &b); err != nil {
		answer(w, CodeBadParam, "invalid json", nil)
		return
	}
	text, why := "", ""
	limit := func(c *content, max int) {
		switch {
		case c == nil || c.Content == "":
			why = b.MsgType + " without content"
		case len(c.Content) > max || !utf8.ValidString(c.Content):
			why = fmt.Sprintf("%s content of %d bytes (max %d)", b.MsgType, len(c.Content), max)
		default:
			text = c.Content
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	switch b.MsgType {
	case "text":
		limit(b.Text, MaxText)
	case "markdown":
		limit(b.Markdown, MaxMarkdown)
	case "markdown_v2":
		limit(b.MarkdownV2, MaxMarkdown)
	case "image":
		if b.Image == nil {
			why = "image without image"
			break
		}
		data, err := base64.StdEncoding.DecodeString(b.Image.Base64)
		sum := md5.Sum(data)
		if err != nil || len(data) == 0 || len(data) > MaxImage || hex.EncodeToString(sum[:]) != b.Image.MD5 {
			why = "image base64/md5 invalid or over 2 MB"
		}
	case "news":
		if b.News == nil || len(b.News.Articles) < 1 || len(b.News.Articles) > MaxArticles {
			why = "news takes 1 to 8 articles"
		}
	case "file", "voice":
		ref := b.File
		if b.MsgType == "voice" {
			ref = b.Voice
		}
		if ref == nil || s.media[ref.MediaID].Type != b.MsgType {
			answer(w, CodeBadMedia, "invalid media_id", nil)
			return
		}
	case "template_card":
		if len(b.TemplateCard) == 0 {
			why = "template_card without template_card"
		}
	default:
		why = "unknown msgtype " + b.MsgType
	}
	if why != "" {
		answer(w, CodeBadParam, why, nil)
		return
	}
	now := time.Now()
	i := 0
	for i < len(s.times) && now.Sub(s.times[i]) >= time.Minute {
		i++
	}
	s.times = s.times[i:]
	perMin := s.PerMinute
	if perMin == 0 {
		perMin = 20
	}
	if perMin > 0 && len(s.times) >= perMin {
		answer(w, CodeFreq, "api freq out of limit", nil)
		return
	}
	s.times = append(s.times, now)
	s.sent = append(s.sent, Sent{MsgType: b.MsgType, Content: text, Body: raw, At: now})
	answer(w, 0, "ok", nil)
}

func (s *Server) upload(w http.ResponseWriter, r *http.Request) {
	typ := r.URL.Query().Get("type")
	max := map[string]int64{"file": MaxFile, "voice": MaxVoice}[typ]
	if max == 0 {
		answer(w, CodeBadParam, "type must be file or voice", nil)
		return
	}
	f, hdr, err := r.FormFile("media")
	if err != nil {
		answer(w, CodeBadParam, "multipart field media missing", nil)
		return
	}
	defer f.Close()
	data, _ := io.ReadAll(io.LimitReader(f, max+1))
	if int64(len(data)) > max || len(data) <= 5 {
		answer(w, CodeBadParam, fmt.Sprintf("%s of %d bytes (6 to %d)", typ, len(data), max), nil)
		return
	}
	b := make([]byte, 12)
	rand.Read(b)
	id := "ROBOTMEDIA_" + hex.EncodeToString(b)
	s.mu.Lock()
	if s.media == nil {
		s.media = map[string]Media{}
	}
	s.media[id] = Media{Type: typ, Filename: hdr.Filename, Data: data}
	s.mu.Unlock()
	answer(w, 0, "ok", map[string]any{"type": typ, "media_id": id, "created_at": strconv.FormatInt(time.Now().Unix(), 10)})
}

// Sent returns the accepted messages in order.
func (s *Server) Sent() []Sent {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Sent(nil), s.sent...)
}

// Uploaded returns the media uploaded under id (zero Media if none).
func (s *Server) Uploaded(id string) Media {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.media[id]
}
