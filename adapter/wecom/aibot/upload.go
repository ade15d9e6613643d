package aibot

import (
	"context"
	"crypto/md5"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/seed-a64d9e1f/chatwire/adapter"
)

// Upload limits over the socket (specs/wecom-aibot.md §2.7). The per-type size limits are not
// documented; these are the ones WeCom's own clients assume.
const (
	ChunkBytes = 512 << 10 // before base64
	MaxChunks  = 100
)

var typeLimits = map[string]int64{
	adapter.AttachImage: 10 << 20,
	adapter.AttachVideo: 10 << 20,
	adapter.AttachVoice: 2 << 20,
	adapter.AttachFile:  20 << 20,
}

var _ adapter.Uploader = (*Bot)(nil)

// Upload uploads a over the long connection (aibot_upload_media_init, _chunk with 0-based
// indexes of at most 512 KB, _finish with the md5 checked) and returns it with ID set to the
// media_id, which lives 3 days. A failed chunk is retried twice, after 500 ms and 1 s, as the
// SDK does.
func (b *Bot) Upload(ctx context.Context, a adapter.Attachment) (adapter.Attachment, error) {
	if b.webhook {
		return adapter.Attachment{}, adapter.Errorf(adapter.KindInvalidRequest, "wecom_aibot: uploads need the long connection")
	}
	typ := a.AttachType()
	limit, ok := typeLimits[typ]
	if !ok {
		return adapter.Attachment{}, adapter.Errorf(adapter.KindInvalidRequest, "wecom_aibot: cannot upload an attachment of type %q", typ)
	}
	r, size, err := a.Open()
	if err != nil {
		return adapter.Attachment{}, err
	}
	if size > limit {
		return adapter.Attachment{}, adapter.Errorf(adapter.KindTooLarge, "wecom_aibot: %s of %d bytes is over the %d-byte limit", typ, size, limit)
	}
	data, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err != nil {
		return adapter.Attachment{}, adapter.Errorf(adapter.KindInvalidRequest, "wecom_aibot: reading attachment %q: %w", a.Name, err)
	}
	if int64(len(data)) != size || size == 0 {
		return adapter.Attachment{}, adapter.Errorf(adapter.KindInvalidRequest, "wecom_aibot: attachment %q has %d bytes; its Size says %d", a.Name, len(data), size)
	}
	name := a.Name
	if name == "" {
		name = typ
	}
	chunks := (len(data) + ChunkBytes - 1) / ChunkBytes
	sum := md5.Sum(data)
	ack, err := b.call(ctx, "aibot_upload_media_init", newReqID("aibot_upload_media_init"), map[string]any{
		"type": typ, "filename": name, "total_size": len(data), "total_chunks": chunks, "md5": hex.EncodeToString(sum[:])})
	if err != nil {
		return adapter.Attachment{}, asAdapterError(err, "wecom_aibot: upload "+name)
	}
	var init struct {
		UploadID string `json:"upload_id"`
	}
	if json.Unmarshal(ack, &init) != nil || init.UploadID == "" {
		return adapter.Attachment{}, adapter.Errorf(adapter.KindUnavailable, "wecom_aibot: upload init answered without upload_id")
	}
	for i := 0; i < chunks; i++ {
		part := data[i*ChunkBytes : min((i+1)*ChunkBytes, len(data))]
		body := map[string]any{"upload_id": init.UploadID, "chunk_index": i, "base64_data": base64.StdEncoding.EncodeToString(part)}
		for try := 0; ; try++ {
			_, err = b.call(ctx, "aibot_upload_media_chunk", newReqID("aibot_upload_media_chunk"), body)
			if err == nil || try == 2 || ctx.Err() != nil {
				break
			}
			sleep(ctx, time.Duration(try+1)*500*time.Millisecond)
		}
		if err != nil {
			return adapter.Attachment{}, asAdapterError(err, fmt.Sprintf("wecom_aibot: upload %s chunk %d", name, i))
		}
	}
	ack, err = b.call(ctx, "aibot_upload_media_finish", newReqID("aibot_upload_media_finish"), map[string]string{"upload_id": init.UploadID})
	if err != nil {
		return adapter.Attachment{}, asAdapterError(err, "wecom_aibot: upload "+name)
	}
	var fin struct {
		MediaID string `json:"media_id"`
	}
	if json.Unmarshal(ack, &fin) != nil || fin.MediaID == "" {
		return adapter.Attachment{}, adapter.Errorf(adapter.KindUnavailable, "wecom_aibot: upload finish answered without media_id")
	}
	out := a
	out.Type, out.ID, out.Data, out.Body, out.Size, out.Name = typ, fin.MediaID, nil, nil, int64(len(data)), name
	return out, nil
}

type mediaMsg struct {
	ChatID   string         `json:"chatid,omitempty"`
	ChatType int            `json:"chat_type,omitempty"`
	MsgType  string         `json:"msgtype"`
	File     map[string]any `json:"file,omitempty"`
	Image    map[string]any `json:"image,omitempty"`
	Voice    map[string]any `json:"voice,omitempty"`
	Video    map[string]any `json:"video,omitempty"`
}

// sendAttachments uploads (where needed) and sends each attachment as its own message: on
// c's req_id while it can take a reply, else by aibot_send_msg to chat.
func (b *Bot) sendAttachments(ctx context.Context, c *call, chat string, group bool, atts []adapter.Attachment) (adapter.Receipt, error) {
	var r adapter.Receipt
	for _, a := range atts {
		if a.ID == "" {
			up, err := b.Upload(ctx, a)
			if err != nil {
				return r, err
			}
			a = up
		}
		typ := a.AttachType()
		obj := map[string]any{"media_id": a.ID}
		m := mediaMsg{MsgType: typ}
		switch typ {
		case adapter.AttachFile:
			m.File = obj
		case adapter.AttachImage:
			m.Image = obj
		case adapter.AttachVoice:
			m.Voice = obj
		case adapter.AttachVideo:
			if a.Title != "" {
				obj["title"] = truncateBytes(a.Title, 128)
			}
			if a.Description != "" {
				obj["description"] = truncateBytes(a.Description, 512)
			}
			m.Video = obj
		default:
			return r, adapter.Errorf(adapter.KindInvalidRequest, "wecom_aibot: cannot send an attachment of type %q", typ)
		}
		if c != nil && c.kind == kindMsg && c.usable() {
			if _, err := b.call(ctx, "aibot_respond_msg", c.reqID, m); err == nil {
				r.IDs = append(r.IDs, a.ID)
				continue
			} else if !b.fallbackable(c, err) {
				return r, asAdapterError(err, "wecom_aibot: reply with "+typ)
			}
		}
		m.ChatID, m.ChatType = chat, chatType(group)
		if _, err := b.call(ctx, "aibot_send_msg", newReqID("aibot_send_msg"), m); err != nil {
			return r, asAdapterError(err, "wecom_aibot: send "+typ+" to "+chat)
		}
		r.IDs = append(r.IDs, a.ID)
	}
	if len(r.IDs) > 0 && r.ID == "" {
		r.ID = r.IDs[0]
	}
	return r, nil
}

// truncateBytes cuts s to at most n bytes at a character boundary.
func truncateBytes(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:cutAt(s, n)]
}
