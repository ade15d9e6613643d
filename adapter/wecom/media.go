package wecom

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/textproto"
	"net/url"
	"strings"

	"github.com/seed-a64d9e1f/chatwire/adapter"
	"github.com/seed-a64d9e1f/chatwire/tokenmgr"
)

// mediaLimits are media/upload's size limits per type, in bytes.
var mediaLimits = map[string]int64{
	adapter.AttachImage: 10 << 20,
	adapter.AttachVoice: 2 << 20,
	adapter.AttachVideo: 10 << 20,
	adapter.AttachFile:  20 << 20,
}

// checkMedia checks an attachment's type and size before any upload.
func checkMedia(a adapter.Attachment) error {
	typ := a.AttachType()
	limit, ok := mediaLimits[typ]
	if !ok {
		return invalid("WeCom cannot upload a %s attachment", typ)
	}
	size := a.Size
	if a.Body == nil {
		size = int64(len(a.Data))
	}
	switch {
	case a.Body == nil && a.Data == nil:
		return invalid("attachment %q has no content", a.Name)
	case size <= 5:
		return invalid("attachment %q has %d bytes; WeCom needs more than 5", a.Name, size)
	case size > limit:
		return &adapter.Error{Kind: adapter.KindTooLarge, Platform: adapter.PlatformWeCom,
			Message: fmt.Sprintf("%s %q has %d bytes; WeCom takes at most %d", typ, a.Name, size, limit)}
	case typ == adapter.AttachVoice && a.ContentType != "" && !strings.Contains(strings.ToLower(a.ContentType), "amr"):
		return invalid("voice must be AMR; got %s (send it as a file instead)", a.ContentType)
	}
	return nil
}

// Upload uploads a as temporary media (media/upload, valid 3 days) and returns it with ID
// set to the media_id. Type and size limits (more than 5 bytes; image 10 MB, voice 2 MB AMR,
// video 10 MB, file 20 MB) are checked before anything is sent. A Body is read once into
// memory (at most the limit), so the upload can be repeated after a token refresh.
func (c *Client) Upload(ctx context.Context, a adapter.Attachment) (adapter.Attachment, error) {
	if err := checkMedia(a); err != nil {
		return a, err
	}
	typ := a.AttachType()
	r, size, err := a.Open()
	if err != nil {
		return a, withPlatform(err)
	}
	data, err := io.ReadAll(io.LimitReader(r, size+1))
	if err != nil {
		return a, &adapter.Error{Kind: adapter.KindInvalidRequest, Platform: adapter.PlatformWeCom, Message: fmt.Sprintf("reading attachment %q", a.Name), Err: err}
	}
	if int64(len(data)) != size {
		return a, invalid("attachment %q: Size is %d but the content has %d bytes or more", a.Name, size, len(data))
	}
	name := a.Name
	if name == "" {
		name = typ
	}
	ct := a.ContentType
	if ct == "" {
		ct = "application/octet-stream"
	}
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	h := textproto.MIMEHeader{}
	h.Set("Content-Disposition", fmt.Sprintf(`form-data; name="media"; filename="%s"; filelength=%d`, escapeQuotes(name), len(data)))
	h.Set("Content-Type", ct)
	pw, err := mw.CreatePart(h)
	if err == nil {
		_, err = pw.Write(data)
	}
	if err == nil {
		err = mw.Close()
	}
	if err != nil {
		return a, &adapter.Error{Kind: adapter.KindInternal, Platform: adapter.PlatformWeCom, Message: "building upload", Err: err}
	}
	var out struct {
		Type      string `json:"type"`
		MediaID   string `json:"media_id"`
		CreatedAt string `json:"created_at"`
	}
	b := &body{data: buf.Bytes(), contentType: mw.FormDataContentType()}
	if err := c.call(ctx, http.MethodPost, EndpointMediaUpload, url.Values{"type": {typ}}, b, &out); err != nil {
		return a, err
	}
	a.ID, a.Type, a.Size = out.MediaID, typ, size
	a.Data, a.Body = nil, nil
	return a, nil
}

func escapeQuotes(s string) string {
	return strings.NewReplacer("\\", "\\\\", `"`, "\\\"", "\r", "", "\n", "").Replace(s)
}

// Recall withdraws a message sent within the last 24 hours (message/recall), given the id
// from its receipt.
func (c *Client) Recall(ctx context.Context, id string) error {
	if id == "" {
		return invalid("recall: empty message id")
	}
	data, _ := json.Marshal(map[string]string{"msgid": id})
	return c.call(ctx, http.MethodPost, EndpointRecall, nil, &body{data: data, contentType: "application/json"}, nil)
}

// maxMedia bounds media/get downloads: the largest upload WeCom accepts.
const maxMedia = 20 << 20

// Media downloads temporary media (media/get) by media_id, for example an image a user sent
// (Attachment.ID of a received event). It returns the content and its metadata.
func (c *Client) Media(ctx context.Context, mediaID string) (adapter.Attachment, error) {
	a := adapter.Attachment{ID: mediaID}
	if mediaID == "" {
		return a, invalid("media: empty media_id")
	}
	err := c.tokens.Do(ctx, func(ctx context.Context, tok tokenmgr.Token) error {
		return c.retrying(ctx, EndpointMediaGet, func() error {
			q := url.Values{"access_token": {tok.Value}, "media_id": {mediaID}}
			resp, err := send(ctx, c.hc, http.MethodGet, c.base, EndpointMediaGet, q, nil)
			if err != nil {
				return err
			}
			defer resp.Body.Close()
			data, err := io.ReadAll(io.LimitReader(resp.Body, maxMedia+1))
			if err != nil {
				return fmt.Errorf("wecom: %s: %w: %w", EndpointMediaGet, tokenmgr.ErrTemporary, sanitizeErr(err))
			}
			if mediaError(data) {
				return decode(EndpointMediaGet, data, nil)
			}
			if len(data) == 0 { // media has more than 5 bytes (upload limit)
				return fmt.Errorf("wecom: %s: %w: empty answer", EndpointMediaGet, tokenmgr.ErrTemporary)
			}
			if len(data) > maxMedia {
				return fmt.Errorf("wecom: %s: media over %d bytes", EndpointMediaGet, maxMedia)
			}
			a.Data, a.Size, a.ContentType = data, int64(len(data)), resp.Header.Get("Content-Type")
			if _, params, err := mime.ParseMediaType(resp.Header.Get("Content-Disposition")); err == nil {
				a.Name = params["filename"]
			}
			return nil
		})
	})
	return a, wrapErr(EndpointMediaGet, err)
}

// mediaError reports whether a media/get body is an error answer: a JSON object with a
// non-zero errcode. Anything else is the file itself, whatever its Content-Type: a text or
// JSON file is content too.
func mediaError(data []byte) bool {
	data = bytes.TrimLeft(data, " \t\r\n")
	if len(data) == 0 || data[0] != '{' || len(data) > maxResponse {
		return false
	}
	var st struct {
		ErrCode *int `json:"errcode"`
	}
	return json.Unmarshal(data, &st) == nil && st.ErrCode != nil && *st.ErrCode != 0
}

// CreateAppChat creates an app group chat (appchat/create) with owner and users (2 to
// 2000 members in all) and returns its chat id; chatID may be empty to let WeCom choose.
// Send to it with Target.Chat.
func (c *Client) CreateAppChat(ctx context.Context, name, owner string, users []string, chatID string) (string, error) {
	if len(users) < 2 || len(users) > 2000 {
		return "", invalid("appchat: needs 2 to 2000 members; got %d", len(users))
	}
	req := struct {
		Name     string   `json:"name,omitempty"`
		Owner    string   `json:"owner,omitempty"`
		UserList []string `json:"userlist"`
		ChatID   string   `json:"chatid,omitempty"`
	}{name, owner, users, chatID}
	data, _ := json.Marshal(req)
	var out struct {
		ChatID string `json:"chatid"`
	}
	if err := c.call(ctx, http.MethodPost, EndpointAppChatMake, nil, &body{data: data, contentType: "application/json"}, &out); err != nil {
		return "", err
	}
	return out.ChatID, nil
}
