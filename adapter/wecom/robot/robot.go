// Package robot is the adapter for WeCom group robots (群机器人): a send-only bot that posts
// text, markdown, markdown_v2, images, news, files, voice and template cards to the one group
// its webhook key belongs to, paced to the robot's 20 messages a minute.
package robot

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime/multipart"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/seed-a64d9e1f/chatwire/adapter"
)

// Limits of the group robot webhook.
const (
	MaxText     = 2048 // bytes of text content; longer text is sent as several messages
	MaxMarkdown = 4096 // bytes of markdown content; likewise
	MaxImage    = 2 << 20
	PerMinute   = 20
)

// Options configure a [Robot].
type Options struct {
	Name       string // the configured bot name
	WebhookKey string // the key= of the robot's webhook URL; a secret
	// APIBase is where the API lives. Empty means "https://qyapi.weixin.qq.com".
	APIBase string
	// HTTPClient makes the calls. Nil means http.DefaultClient.
	HTTPClient *http.Client
	// Logger receives logs. Nil means none.
	Logger *slog.Logger
	// PerMinute is the pace the robot keeps. Zero means 20 (WeCom's limit).
	PerMinute int
	// MaxWait is the longest a send waits for the pace before it returns a rate-limited
	// error instead. Zero means 10 s.
	MaxWait time.Duration
}

// Robot is a group robot. Its methods are safe for concurrent use.
type Robot struct {
	opts Options
	http *http.Client
	log  *slog.Logger
	mu   sync.Mutex  // protects sent
	sent []time.Time // the reserved send times of the last minute
}

var (
	_ adapter.Adapter  = (*Robot)(nil)
	_ adapter.Uploader = (*Robot)(nil)
)

// New returns a Robot.
func New(opts Options) (*Robot, error) {
	if opts.WebhookKey == "" {
		return nil, errors.New("wecom_robot: config: webhook_key is empty")
	}
	if opts.APIBase == "" {
		opts.APIBase = "https://qyapi.weixin.qq.com"
	}
	opts.APIBase = strings.TrimRight(opts.APIBase, "/")
	if opts.PerMinute <= 0 {
		opts.PerMinute = PerMinute
	}
	if opts.MaxWait <= 0 {
		opts.MaxWait = 10 * time.Second
	}
	r := &Robot{opts: opts, http: opts.HTTPClient, log: opts.Logger}
	if r.http == nil {
		r.http = http.DefaultClient
	}
	if r.log == nil {
		r.log = slog.New(slog.DiscardHandler)
	}
	return r, nil
}

func rerr(k adapter.Kind, format string, args ...any) error {
	e := adapter.Errorf(k, format, args...)
	e.Platform = adapter.PlatformWeComRobot
	return e
}

// pace reserves a send slot within the per-minute limit and waits for it; a wait longer
// than MaxWait (or ctx's deadline) returns a rate-limited error at once.
func (r *Robot) pace(ctx context.Context) error {
	r.mu.Lock()
	now := time.Now()
	i := 0
	for i < len(r.sent) && now.Sub(r.sent[i]) >= time.Minute {
		i++
	}
	r.sent = r.sent[i:]
	at := now
	if len(r.sent) >= r.opts.PerMinute {
		at = r.sent[len(r.sent)-r.opts.PerMinute].Add(time.Minute)
	}
	wait := at.Sub(now)
	dl, hasDL := ctx.Deadline()
	if wait > r.opts.MaxWait || hasDL && at.After(dl) {
		r.mu.Unlock()
		return &adapter.Error{Kind: adapter.KindRateLimited, Platform: adapter.PlatformWeComRobot, RetryAfter: wait.Round(time.Second) + time.Second,
			Message: fmt.Sprintf("the robot sends at most %d messages a minute", r.opts.PerMinute)}
	}
	r.sent = append(r.sent, at)
	r.mu.Unlock()
	if wait <= 0 {
		return nil
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// codes is the one table of robot errcodes.
var codes = map[int]struct {
	kind  adapter.Kind
	retry time.Duration
	hint  string
}{
	93000: {adapter.KindUnauthorized, 0, "the webhook key is wrong, or the robot was removed from its group: copy the webhook URL's key again"},
	45009: {adapter.KindRateLimited, 60 * time.Second, "over 20 messages a minute"},
	40058: {adapter.KindInvalidRequest, 0, "a field is missing or over its limit"},
	40007: {adapter.KindInvalidRequest, 0, "the media_id is unknown or expired (3 days)"},
	-1:    {adapter.KindUnavailable, 0, "WeCom system error; retry later"},
}

// call POSTs body (JSON, or multipart when contentType says so) to path and decodes the
// answer into out. The key never appears in an error.
func (r *Robot) call(ctx context.Context, path, query, contentType string, body []byte, out any) error {
	u := r.opts.APIBase + path + "?key=" + url.QueryEscape(r.opts.WebhookKey) + query
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(body))
	if err != nil {
		return rerr(adapter.KindInvalidRequest, "wecom_robot: api_base: %v", errors.New("invalid URL"))
	}
	req.Header.Set("Content-Type", contentType)
	resp, err := r.http.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return &adapter.Error{Kind: adapter.KindUnavailable, Platform: adapter.PlatformWeComRobot, Message: "calling " + path, Err: err}
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode != http.StatusOK {
		return &adapter.Error{Kind: adapter.KindUnavailable, Platform: adapter.PlatformWeComRobot, Message: fmt.Sprintf("%s answered HTTP %d", path, resp.StatusCode)}
	}
	var head struct {
		Errcode int    `json:"errcode"`
		Errmsg  string `json:"errmsg"`
	}
	if err := json.Unmarshal(raw, &head); err != nil {
		return &adapter.Error{Kind: adapter.KindUnavailable, Platform: adapter.PlatformWeComRobot, Message: path + " answered no JSON"}
	}
	if head.Errcode != 0 {
		info, ok := codes[head.Errcode]
		if !ok {
			info.kind = adapter.KindInternal
		}
		msg := fmt.Sprintf("%s: errcode %d: %s", path, head.Errcode, head.Errmsg)
		if info.hint != "" {
			msg += " (" + info.hint + ")"
		}
		return &adapter.Error{Kind: info.kind, Platform: adapter.PlatformWeComRobot, Code: strconv.Itoa(head.Errcode), Message: msg, RetryAfter: info.retry}
	}
	if out != nil {
		json.Unmarshal(raw, out)
	}
	return nil
}

func (r *Robot) post(ctx context.Context, body any) error {
	if err := r.pace(ctx); err != nil {
		return err
	}
	data, _ := json.Marshal(body)
	return r.call(ctx, "/cgi-bin/webhook/send", "", "application/json", data, nil)
}

// split cuts s into pieces of at most max bytes at character boundaries.
func split(s string, max int) []string {
	var out []string
	for len(s) > max {
		cut := max
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		if i := strings.LastIndexByte(s[:cut], '\n'); i >= cut/2 {
			cut = i + 1
		}
		out = append(out, s[:cut])
		s = s[cut:]
	}
	return append(out, s)
}

// Send posts msg to the robot's group (msg.To and ReplyTo are ignored: a robot has one
// group). Text over 2,048 bytes and markdown over 4,096 go out as several messages;
// Mentions become mentioned_list on text; Card takes "news", "template_card" or
// "markdown_v2"; image attachments are sent inline (≤ 2 MB), files and voice are uploaded
// first. Sends are paced to 20 a minute.
func (r *Robot) Send(ctx context.Context, msg adapter.Message) (adapter.Receipt, error) {
	if msg.HTML != "" {
		return adapter.Receipt{}, rerr(adapter.KindInvalidRequest, "wecom_robot: HTML is not supported")
	}
	var rec adapter.Receipt // the robot API returns no message ids
	n := 0
	add := func() { n++ }
	if msg.Text != "" {
		var ids []string
		for _, m := range msg.Mentions {
			ids = append(ids, m.ID)
		}
		for i, part := range split(msg.Text, MaxText) {
			body := map[string]any{"content": part}
			if i == 0 && len(ids) > 0 {
				body["mentioned_list"] = ids
			}
			if err := r.post(ctx, map[string]any{"msgtype": "text", "text": body}); err != nil {
				return rec, err
			}
			add()
		}
	}
	if msg.Markdown != "" {
		for _, part := range split(msg.Markdown, MaxMarkdown) {
			if err := r.post(ctx, map[string]any{"msgtype": "markdown", "markdown": map[string]string{"content": part}}); err != nil {
				return rec, err
			}
			add()
		}
	}
	if len(msg.Card) > 0 {
		body, err := card(msg.Card)
		if err != nil {
			return rec, err
		}
		if err := r.post(ctx, body); err != nil {
			return rec, err
		}
		add()
	}
	for _, a := range msg.Attachments {
		body, err := r.attachment(ctx, a)
		if err != nil {
			return rec, err
		}
		if err := r.post(ctx, body); err != nil {
			return rec, err
		}
		add()
	}
	if n == 0 {
		return rec, rerr(adapter.KindInvalidRequest, "wecom_robot: nothing to send")
	}
	return rec, nil
}

// card turns msg.Card into a send body.
func card(raw json.RawMessage) (map[string]any, error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, rerr(adapter.KindInvalidRequest, "wecom_robot: card is not a JSON object")
	}
	var typ string
	json.Unmarshal(m["type"], &typ)
	switch typ {
	case "news", "template_card", "markdown_v2":
	default:
		return nil, rerr(adapter.KindInvalidRequest, "wecom_robot: card type %q: a robot sends news, template_card or markdown_v2", typ)
	}
	inner, ok := m[typ]
	if !ok {
		delete(m, "type")
		inner, _ = json.Marshal(m)
	}
	return map[string]any{"msgtype": typ, typ: inner}, nil
}

func (r *Robot) attachment(ctx context.Context, a adapter.Attachment) (map[string]any, error) {
	switch t := a.AttachType(); t {
	case adapter.AttachImage:
		rd, size, err := a.Open()
		if err != nil {
			return nil, err
		}
		if size > MaxImage {
			return nil, rerr(adapter.KindTooLarge, "wecom_robot: image of %d bytes is over 2 MB", size)
		}
		data, err := io.ReadAll(io.LimitReader(rd, MaxImage+1))
		if err != nil {
			return nil, rerr(adapter.KindInvalidRequest, "wecom_robot: reading image: %v", err)
		}
		sum := md5.Sum(data)
		return map[string]any{"msgtype": "image", "image": map[string]string{"base64": base64.StdEncoding.EncodeToString(data), "md5": hex.EncodeToString(sum[:])}}, nil
	case adapter.AttachFile, adapter.AttachVoice:
		if a.ID == "" {
			up, err := r.Upload(ctx, a)
			if err != nil {
				return nil, err
			}
			a = up
		}
		return map[string]any{"msgtype": t, t: map[string]string{"media_id": a.ID}}, nil
	default:
		return nil, rerr(adapter.KindInvalidRequest, "wecom_robot: a robot cannot send an attachment of type %q", t)
	}
}

// Upload uploads a file or voice (webhook/upload_media) and returns it with ID set to the
// media_id (valid 3 days).
func (r *Robot) Upload(ctx context.Context, a adapter.Attachment) (adapter.Attachment, error) {
	t := a.AttachType()
	if t != adapter.AttachFile && t != adapter.AttachVoice {
		return adapter.Attachment{}, rerr(adapter.KindInvalidRequest, "wecom_robot: upload_media takes file or voice, not %q", t)
	}
	rd, _, err := a.Open()
	if err != nil {
		return adapter.Attachment{}, err
	}
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	name := a.Name
	if name == "" {
		name = t
	}
	fw, _ := mw.CreateFormFile("media", name)
	if _, err := io.Copy(fw, io.LimitReader(rd, 20<<20+1)); err != nil {
		return adapter.Attachment{}, rerr(adapter.KindInvalidRequest, "wecom_robot: reading attachment: %v", err)
	}
	mw.Close()
	var out struct {
		MediaID string `json:"media_id"`
	}
	if err := r.call(ctx, "/cgi-bin/webhook/upload_media", "&type="+t, mw.FormDataContentType(), buf.Bytes(), &out); err != nil {
		return adapter.Attachment{}, err
	}
	a.Type, a.ID, a.Data, a.Body, a.Name = t, out.MediaID, nil, nil, name
	return a, nil
}

// HandleWebhook refuses every request: a group robot receives nothing.
func (r *Robot) HandleWebhook(ctx context.Context, req *adapter.WebhookRequest) (*adapter.WebhookResponse, []adapter.Event, error) {
	return &adapter.WebhookResponse{Status: http.StatusNotFound, Body: []byte("Not Found\n")}, nil,
		rerr(adapter.KindNotFound, "wecom_robot: a group robot is send-only")
}

// Status is always healthy: the robot holds no token.
func (r *Robot) Status(ctx context.Context) (adapter.Status, error) {
	return adapter.Status{Bot: r.opts.Name, Platform: adapter.PlatformWeComRobot, Healthy: true}, nil
}

// Close does nothing; a Robot holds no resources.
func (r *Robot) Close() error { return nil }
