package wecom

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/seed-a64d9e1f/chatwire/adapter"
)

// HandleWebhook answers a WeCom callback. A GET is URL verification: it verifies the
// signature over echostr and answers with the decrypted echo as plain text (no time check).
// A POST carries a message: HandleWebhook checks the body size, verifies msg_signature
// before decrypting anything, refuses timestamps outside the window as replays, decrypts,
// checks the receiveid, and parses the message into one event, answering 200 with an empty
// body (no passive reply).
//
// Refusals come back as a 4xx response plus an *adapter.Error: 401 (KindUnauthorized) for a
// bad signature, 403 (KindUnauthorized) for a replayed timestamp or another corp's payload,
// 400 (KindInvalidRequest) for a malformed request, 413 (KindTooLarge) for an oversized
// body, 404 (KindNotFound) if the Client has no callback token and key. Each is logged at
// Warn without secrets.
func (c *Client) HandleWebhook(ctx context.Context, req *adapter.WebhookRequest) (*adapter.WebhookResponse, []adapter.Event, error) {
	if c.crypto == nil {
		return c.refuse(ctx, req, http.StatusNotFound, adapter.KindNotFound, "callbacks are not configured (token, encoding_aes_key)", nil)
	}
	q := req.Query
	sig, ts, nonce := q.Get("msg_signature"), q.Get("timestamp"), q.Get("nonce")
	if sig == "" || ts == "" || nonce == "" {
		return c.refuse(ctx, req, http.StatusBadRequest, adapter.KindInvalidRequest, "missing msg_signature, timestamp or nonce", nil)
	}
	switch req.Method {
	case http.MethodGet:
		echo := q.Get("echostr")
		if echo == "" {
			return c.refuse(ctx, req, http.StatusBadRequest, adapter.KindInvalidRequest, "missing echostr", nil)
		}
		if !c.crypto.Verify(sig, ts, nonce, echo) {
			return c.refuse(ctx, req, http.StatusUnauthorized, adapter.KindUnauthorized, "bad signature", ErrSignature)
		}
		msg, err := c.crypto.Decrypt(echo)
		if err != nil {
			return c.refuseDecrypt(ctx, req, err)
		}
		return &adapter.WebhookResponse{
			Status: http.StatusOK,
			Header: http.Header{"Content-Type": {"text/plain; charset=utf-8"}},
			Body:   msg,
		}, nil, nil
	case http.MethodPost:
		if int64(len(req.Body)) > c.maxBody {
			return c.refuse(ctx, req, http.StatusRequestEntityTooLarge, adapter.KindTooLarge,
				fmt.Sprintf("body of %d bytes is over the %d-byte limit", len(req.Body), c.maxBody), nil)
		}
		ev, err := c.parsePost(sig, ts, nonce, req.Body)
		if err != nil {
			var r *refusal
			if errors.As(err, &r) {
				return c.refuse(ctx, req, r.status, r.kind, r.msg, r.err)
			}
			return c.refuseDecrypt(ctx, req, err)
		}
		return &adapter.WebhookResponse{Status: http.StatusOK}, []adapter.Event{ev}, nil
	}
	return c.refuse(ctx, req, http.StatusMethodNotAllowed, adapter.KindInvalidRequest, "method "+req.Method+" not allowed", nil)
}

// refusal is a reason to refuse a callback, carried out of parsePost.
type refusal struct {
	status int
	kind   adapter.Kind
	msg    string
	err    error
}

func (r *refusal) Error() string { return r.msg }

// parsePost verifies, decrypts and parses a callback POST body into an event.
func (c *Client) parsePost(sig, ts, nonce string, body []byte) (adapter.Event, error) {
	env, err := parseXML(body)
	encrypted, _ := env["Encrypt"].(string)
	if err != nil || encrypted == "" {
		return adapter.Event{}, &refusal{http.StatusBadRequest, adapter.KindInvalidRequest, "body is not a WeCom callback envelope", nil}
	}
	if !c.crypto.Verify(sig, ts, nonce, encrypted) {
		return adapter.Event{}, &refusal{http.StatusUnauthorized, adapter.KindUnauthorized, "bad signature", ErrSignature}
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return adapter.Event{}, &refusal{http.StatusBadRequest, adapter.KindInvalidRequest, "timestamp is not a number", nil}
	}
	if c.window > 0 {
		if d := time.Since(time.Unix(sec, 0)); d > c.window || d < -c.window {
			return adapter.Event{}, &refusal{http.StatusForbidden, adapter.KindUnauthorized,
				fmt.Sprintf("timestamp %s off by %s, outside the %s window: refused as a replay", ts, d.Round(time.Second), c.window), nil}
		}
	}
	plain, err := c.crypto.Decrypt(encrypted)
	if err != nil {
		return adapter.Event{}, err
	}
	ev, err := ParseMessage(plain)
	if err != nil {
		return adapter.Event{}, &refusal{http.StatusBadRequest, adapter.KindInvalidRequest, err.Error(), err}
	}
	ev.Bot = c.cfg.Bot
	return ev, nil
}

func (c *Client) refuseDecrypt(ctx context.Context, req *adapter.WebhookRequest, err error) (*adapter.WebhookResponse, []adapter.Event, error) {
	if errors.Is(err, ErrReceiveID) {
		return c.refuse(ctx, req, http.StatusForbidden, adapter.KindUnauthorized, err.Error(), err)
	}
	return c.refuse(ctx, req, http.StatusBadRequest, adapter.KindInvalidRequest, err.Error(), err)
}

// refuse logs a refused callback and returns its response and error.
func (c *Client) refuse(ctx context.Context, req *adapter.WebhookRequest, status int, kind adapter.Kind, msg string, cause error) (*adapter.WebhookResponse, []adapter.Event, error) {
	msg = strings.TrimPrefix(msg, "wecom: ")
	c.log.LogAttrs(ctx, slog.LevelWarn, "wecom: callback refused", slog.String("platform", adapter.PlatformWeCom),
		slog.String("bot", c.cfg.Bot), slog.String("method", req.Method), slog.String("path", req.Path),
		slog.String("remote", req.RemoteAddr), slog.Int("status", status), slog.String("reason", msg))
	resp := &adapter.WebhookResponse{
		Status: status,
		Header: http.Header{"Content-Type": {"text/plain; charset=utf-8"}},
		Body:   []byte(http.StatusText(status) + "\n"),
	}
	return resp, nil, &adapter.Error{Kind: kind, Platform: adapter.PlatformWeCom, Message: "callback: " + msg, Err: cause}
}

// Limits of the message parser.
const (
	maxXMLDepth    = 8
	maxXMLElements = 2000
)

// ParseMessage parses a decrypted callback message (spec §5.4: text, image, voice, video,
// location, link, and events of every kind) into an event. Event.Raw holds every field of
// the XML as a JSON object (nested elements as objects, repeated ones as arrays), so fields
// the model lacks (EventKey, ScanCodeInfo, …) reach consumers. Bot is left empty.
//
// Event.ID is "wecom:<MsgId>" for messages. Events have no MsgId, and several distinct ones
// can share sender, second and name (a bulk import sends change_contact events from "sys",
// two clicks on different menu entries), so their id is
// "wecom:<FromUserName>:<CreateTime>:<Event>:<digest>", where digest is the first 128 bits
// of the SHA-256 of Raw, in hex: it covers every field, so a redelivery (the same message
// again) keeps its id and any two events that differ in a field do not share one.
func ParseMessage(plain []byte) (adapter.Event, error) {
	m, err := parseXML(plain)
	if err != nil {
		return adapter.Event{}, err
	}
	str := func(k string) string { s, _ := m[k].(string); return s }
	typ, from := str("MsgType"), str("FromUserName")
	if typ == "" {
		return adapter.Event{}, errors.New("wecom: message has no MsgType")
	}
	ct, err := strconv.ParseInt(strings.TrimSpace(str("CreateTime")), 10, 64)
	if err != nil {
		return adapter.Event{}, errors.New("wecom: message has no valid CreateTime")
	}
	raw := appendJSON(make([]byte, 0, len(plain)), m)
	ev := adapter.Event{
		Platform: adapter.PlatformWeCom,
		Kind:     adapter.EventMessage,
		Chat:     adapter.Chat{ID: from, Type: adapter.ChatDirect},
		Sender:   adapter.Sender{ID: from},
		Time:     time.Unix(ct, 0).UTC(),
		Raw:      raw,
	}
	if id := strings.TrimSpace(str("MsgId")); id != "" {
		ev.ID = "wecom:" + id
	} else {
		sum := sha256.Sum256(raw)
		ev.ID = "wecom:" + from + ":" + strconv.FormatInt(ct, 10) + ":" + str("Event") + ":" + hex.EncodeToString(sum[:16])
	}
	switch typ {
	case "text":
		ev.Text = str("Content")
	case "image":
		ev.Attachments = []adapter.Attachment{{Type: adapter.AttachImage, ID: str("MediaId"), URL: str("PicUrl")}}
	case "voice":
		a := adapter.Attachment{Type: adapter.AttachVoice, ID: str("MediaId")}
		if f := strings.ToLower(str("Format")); f != "" {
			a.ContentType = "audio/" + f
		}
		ev.Text = str("Recognition")
		ev.Attachments = []adapter.Attachment{a}
	case "video":
		ev.Attachments = []adapter.Attachment{{Type: adapter.AttachVideo, ID: str("MediaId")}}
	case "location":
		ev.Text = str("Label")
		ev.Attachments = []adapter.Attachment{{Type: adapter.AttachLocation, Title: str("Label"),
			Description: str("Location_X") + "," + str("Location_Y")}}
	case "link":
		ev.Text = str("Url")
		ev.Attachments = []adapter.Attachment{{Type: adapter.AttachLink, Title: str("Title"),
			Description: str("Description"), URL: str("Url")}}
	case "event":
		ev.Kind = adapter.EventNotice
		ev.Text = str("Event")
	default:
		// Unknown message types still reach consumers, with everything in Raw.
		ev.Text = str("Content")
	}
	return ev, nil
}

// parseXML returns the children of the root element as a map: a leaf's text, a nested
// element's own map, repeated names as []any. Attributes are ignored. It tries the fast
// scanner first and falls back to encoding/xml.
func parseXML(data []byte) (map[string]any, error) {
	m, err := scanXML(data)
	if err != errSlowPath {
		return m, err
	}
	return parseXMLSlow(data)
}

// parseXMLSlow is parseXML on encoding/xml.
func parseXMLSlow(data []byte) (map[string]any, error) {
	d := xml.NewDecoder(bytes.NewReader(data))
	d.Strict = true
	count := 0
	type frame struct {
		name string
		m    map[string]any
		text strings.Builder
		kids bool
	}
	var stack []*frame
	var root map[string]any
	for {
		tok, err := d.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("wecom: message is not XML: %w", err)
		}
		switch t := tok.(type) {
		case xml.StartElement:
			if count++; count > maxXMLElements {
				return nil, errors.New("wecom: message has too many elements")
			}
			if len(stack) >= maxXMLDepth {
				return nil, errors.New("wecom: message nests too deep")
			}
			if len(stack) == 0 && root != nil {
				return nil, errors.New("wecom: message has several root elements")
			}
			if len(stack) > 0 {
				stack[len(stack)-1].kids = true
			}
			stack = append(stack, &frame{name: t.Name.Local, m: map[string]any{}})
		case xml.CharData:
			if len(stack) > 0 {
				stack[len(stack)-1].text.Write(t)
			}
		case xml.EndElement:
			f := stack[len(stack)-1]
			stack = stack[:len(stack)-1]
			if len(stack) == 0 {
				root = f.m
				continue
			}
			var v any = f.text.String()
			if f.kids {
				v = f.m
			}
			parent := stack[len(stack)-1].m
			switch old := parent[f.name].(type) {
			case nil:
				parent[f.name] = v
			case []any:
				parent[f.name] = append(old, v)
			default:
				parent[f.name] = []any{old, v}
			}
		}
	}
	if root == nil {
		return nil, errors.New("wecom: message has no root element")
	}
	return root, nil
}
