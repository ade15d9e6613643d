package wecom

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/seed-a64d9e1f/chatwire/adapter"
)

// MaxTextBytes is the longest text or markdown content WeCom delivers; it truncates longer
// content silently, so Send splits or refuses it instead.
const MaxTextBytes = 2048

// sendRequest is the body of message/send and appchat/send. silenceper's
// message.SendRequestCommon sends agentid as a string; the API documents an integer, so
// this struct is ours.
type sendRequest struct {
	ToUser  string `json:"touser,omitempty"`
	ToParty string `json:"toparty,omitempty"`
	ToTag   string `json:"totag,omitempty"`
	ChatID  string `json:"chatid,omitempty"`
	MsgType string `json:"msgtype"`
	AgentID int64  `json:"agentid,omitempty"`
	// EnableDuplicateCheck and DuplicateCheckInterval (seconds) make WeCom accept but not
	// show a request identical to one accepted within the interval (message/send only).
	EnableDuplicateCheck   int `json:"enable_duplicate_check,omitempty"`
	DuplicateCheckInterval int `json:"duplicate_check_interval,omitempty"`

	Text         *content        `json:"text,omitempty"`
	Markdown     *content        `json:"markdown,omitempty"`
	Image        *media          `json:"image,omitempty"`
	Voice        *media          `json:"voice,omitempty"`
	Video        *video          `json:"video,omitempty"`
	File         *media          `json:"file,omitempty"`
	TextCard     json.RawMessage `json:"textcard,omitempty"`
	News         json.RawMessage `json:"news,omitempty"`
	MPNews       json.RawMessage `json:"mpnews,omitempty"`
	TemplateCard json.RawMessage `json:"template_card,omitempty"`
}

type content struct {
	Content string `json:"content"`
}

type media struct {
	MediaID string `json:"media_id"`
}

type video struct {
	MediaID     string `json:"media_id"`
	Title       string `json:"title,omitempty"`
	Description string `json:"description,omitempty"`
}

// sendResponse is message/send's answer (the fields of silenceper's message.SendResponse).
type sendResponse struct {
	apiStatus             // errcode, errmsg, invaliduser, invalidparty, invalidtag
	UnlicensedUser string `json:"unlicenseduser"`
	MsgID          string `json:"msgid"`
	ResponseCode   string `json:"response_code"`
}

// Send sends msg to users, parties, tags or everyone (message/send) or to an app chat
// (appchat/send). Text and Markdown become one message each (several if SplitText is set
// and the content is over 2048 bytes), Card one news/textcard/template_card/mpnews message,
// and each attachment one image/voice/video/file message, uploaded first unless it has an
// ID. HTML, channels and mail addresses are refused (KindInvalidRequest).
//
// Mentions are appended to markdown as "<@userid>" (which notifies them) and to text as
// "@name" (WeCom app text has no real mention); cards and attachments carry none.
//
// Ids are checked before any call (see [adapter.Target]): "|" and "@all" inside one id, white
// space around an id or a control character in it are invalid requests naming the id.
//
// Recipients WeCom refused while delivering to the others are listed in Receipt.Invalid; if
// all are refused the error is KindInvalidRecipient (81013). If a later part of a
// multi-part message fails, the receipt still lists the parts sent.
func (c *Client) Send(ctx context.Context, msg adapter.Message) (adapter.Receipt, error) {
	base, endpoint, err := c.target(msg.To)
	if err != nil {
		return adapter.Receipt{}, err
	}
	parts, err := c.parts(msg)
	if err != nil {
		return adapter.Receipt{}, err
	}
	var rc adapter.Receipt
	seen := map[string]bool{}
	for _, p := range parts {
		if p.upload != nil {
			up, err := c.Upload(ctx, *p.upload)
			if err != nil {
				return rc, err
			}
			p.setMedia(up.ID)
		}
		req := p.req
		req.ToUser, req.ToParty, req.ToTag, req.ChatID, req.AgentID = base.ToUser, base.ToParty, base.ToTag, base.ChatID, base.AgentID
		if c.dupSecs > 0 && endpoint == EndpointSend {
			req.EnableDuplicateCheck, req.DuplicateCheckInterval = 1, c.dupSecs
		}
		data, err := json.Marshal(req)
		if err != nil {
			return rc, &adapter.Error{Kind: adapter.KindInvalidRequest, Platform: adapter.PlatformWeCom, Message: "encoding message", Err: err}
		}
		var out sendResponse
		if err := c.call(ctx, http.MethodPost, endpoint, nil, &body{data: data, contentType: "application/json"}, &out); err != nil {
			return rc, err
		}
		if out.MsgID != "" {
			if rc.ID == "" {
				rc.ID = out.MsgID
			}
			rc.IDs = append(rc.IDs, out.MsgID)
		}
		for _, inv := range invalidList(out.User, out.Party, out.Tag) {
			if !seen[inv] {
				seen[inv] = true
				rc.Invalid = append(rc.Invalid, inv)
			}
		}
	}
	return rc, nil
}

// Recipient limits per field of message/send (spec §4.1).
const (
	maxUsers   = 1000
	maxParties = 100
	maxTags    = 100
)

// target resolves msg.To into the recipient fields and the endpoint. WeCom reads "|" in a
// recipient field as a separator and "@all" as every member, so neither may hide inside a
// single id: several users go in Users, everyone is All. A party is one department ("|"
// would add others, and department 1 is the root: every member). Tag keeps "|" as the
// documented way to name several ("1|4"), each id checked like the others. No id may have
// white space around it or a control character in it: WeCom would not match it as given
// (" @all" would slip past the check for "@all").
func (c *Client) target(to adapter.Target) (sendRequest, string, error) {
	kind, err := to.Kind()
	if err != nil {
		return sendRequest{}, "", withPlatform(err)
	}
	r := sendRequest{AgentID: c.cfg.AgentID}
	switch kind {
	case adapter.TargetUser:
		if err := checkSingle("user", to.User, "list several users in Target.Users"); err != nil {
			return r, "", err
		}
		r.ToUser = to.User
	case adapter.TargetUsers:
		if len(to.Users) > maxUsers {
			return r, "", invalid("at most %d users per message; got %d", maxUsers, len(to.Users))
		}
		for i, u := range to.Users {
			if err := checkSingle(fmt.Sprintf("users[%d]", i), u, "list several users in Target.Users"); err != nil {
				return r, "", err
			}
		}
		r.ToUser = strings.Join(to.Users, "|")
	case adapter.TargetParty:
		if err := checkSingle("party", to.Party, "WeCom would read it as several departments; name one department per message"); err != nil {
			return r, "", err
		}
		r.ToParty = to.Party
	case adapter.TargetTag:
		if err := checkIDList("tag", to.Tag, maxTags); err != nil {
			return r, "", err
		}
		r.ToTag = to.Tag
	case adapter.TargetAll:
		r.ToUser = "@all"
	case adapter.TargetChat:
		if err := checkSingle("chat", to.Chat, "name one app chat"); err != nil {
			return r, "", err
		}
		return sendRequest{ChatID: to.Chat}, EndpointAppChatSend, nil
	default:
		return r, "", invalid("WeCom cannot send to %s", to)
	}
	return r, EndpointSend, nil
}

// checkSingle refuses an id that WeCom would read as more than one recipient, or not as
// given; several explains how to name more than one. The error names the id: ids are not
// secrets.
func checkSingle(field, id, several string) error {
	if p := idProblem(id); p != "" {
		if id == "" {
			return invalid("%s %s", field, p)
		}
		return invalid("%s %q %s", field, id, p)
	}
	if strings.Contains(id, "|") {
		return invalid(`%s %q contains "|": %s`, field, id, several)
	}
	return nil
}

// idProblem says what is wrong with one id, or returns "": empty, "@all" in any case, white
// space around it, or a control character in it.
func idProblem(id string) string {
	switch {
	case id == "":
		return "is empty"
	case strings.TrimSpace(id) != id:
		return "has white space around it"
	case strings.IndexFunc(id, unicode.IsControl) >= 0:
		return "contains a control character"
	case strings.EqualFold(id, "@all"):
		return `is "@all": set Target.All to send to every member`
	}
	return ""
}

// checkIDList checks a "|"-separated tag list: at most max ids, none with an idProblem.
func checkIDList(field, list string, max int) error {
	ids := strings.Split(list, "|")
	if len(ids) > max {
		return invalid("at most %d %s ids per message; got %d", max, field, len(ids))
	}
	for _, id := range ids {
		switch p := idProblem(id); {
		case p == "":
		case id == "":
			return invalid("%s %q has an empty id", field, list)
		case len(ids) == 1:
			return invalid("%s %q %s", field, id, p)
		default:
			return invalid("%s %q in %q %s", field, id, list, p)
		}
	}
	return nil
}

// part is one WeCom message of a Message, perhaps needing an upload first.
type part struct {
	req    sendRequest
	upload *adapter.Attachment
}

func (p *part) setMedia(id string) {
	switch {
	case p.req.Image != nil:
		p.req.Image.MediaID = id
	case p.req.Voice != nil:
		p.req.Voice.MediaID = id
	case p.req.Video != nil:
		p.req.Video.MediaID = id
	case p.req.File != nil:
		p.req.File.MediaID = id
	}
}

// parts splits msg into WeCom messages, checking everything that can be checked locally.
func (c *Client) parts(msg adapter.Message) ([]*part, error) {
	n := 0
	for _, set := range []bool{msg.Text != "", msg.Markdown != "", msg.HTML != "", len(msg.Card) > 0} {
		if set {
			n++
		}
	}
	switch {
	case n > 1:
		return nil, invalid("set only one of text, markdown, html and card")
	case msg.HTML != "":
		return nil, invalid("WeCom shows no HTML: send markdown or text")
	case n == 0 && len(msg.Attachments) == 0:
		return nil, invalid("message is empty")
	}
	var out []*part
	switch {
	case msg.Text != "":
		text := msg.Text
		for _, m := range msg.Mentions {
			text += " @" + mentionName(m)
		}
		chunks, err := c.chunks("text", text)
		if err != nil {
			return nil, err
		}
		for _, s := range chunks {
			out = append(out, &part{req: sendRequest{MsgType: "text", Text: &content{s}}})
		}
	case msg.Markdown != "":
		md := msg.Markdown
		for i, m := range msg.Mentions {
			field := fmt.Sprintf("mentions[%d]", i)
			if err := checkSingle(field, m.ID, "mention one user per Mention"); err != nil {
				return nil, err
			}
			if strings.ContainsAny(m.ID, "<>") {
				return nil, invalid(`%s %q contains "<" or ">", which would break out of the mention`, field, m.ID)
			}
			md += " <@" + m.ID + ">"
		}
		chunks, err := c.chunks("markdown", md)
		if err != nil {
			return nil, err
		}
		for _, s := range chunks {
			out = append(out, &part{req: sendRequest{MsgType: "markdown", Markdown: &content{s}}})
		}
	case len(msg.Card) > 0:
		p, err := cardPart(msg.Card)
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	for i := range msg.Attachments {
		a := msg.Attachments[i]
		typ := a.AttachType()
		var r sendRequest
		switch typ {
		case adapter.AttachImage:
			r = sendRequest{MsgType: "image", Image: &media{a.ID}}
		case adapter.AttachVoice:
			r = sendRequest{MsgType: "voice", Voice: &media{a.ID}}
		case adapter.AttachVideo:
			r = sendRequest{MsgType: "video", Video: &video{MediaID: a.ID, Title: a.Title, Description: a.Description}}
		case adapter.AttachFile:
			r = sendRequest{MsgType: "file", File: &media{a.ID}}
		default:
			return nil, invalid("WeCom cannot send a %s attachment", typ)
		}
		p := &part{req: r}
		if a.ID == "" {
			if err := checkMedia(a); err != nil {
				return nil, err
			}
			a.Type = typ
			p.upload = &a
		}
		out = append(out, p)
	}
	return out, nil
}

func mentionName(m adapter.Mention) string {
	if m.Name != "" {
		return m.Name
	}
	return m.ID
}

// chunks returns s as one chunk, or split into chunks of at most MaxTextBytes (at a line
// break if one is in the second half of a chunk, else at a character boundary) when
// SplitText is set; otherwise content over the limit is refused.
func (c *Client) chunks(what, s string) ([]string, error) {
	if len(s) <= MaxTextBytes {
		return []string{s}, nil
	}
	if !c.split {
		return nil, &adapter.Error{Kind: adapter.KindTooLarge, Platform: adapter.PlatformWeCom,
			Message: fmt.Sprintf("%s of %d bytes is over WeCom's %d-byte limit (WeCom would truncate it; enable SplitText to send it in parts)", what, len(s), MaxTextBytes)}
	}
	return splitText(s, MaxTextBytes), nil
}

// splitText splits s into pieces of at most max bytes without breaking a UTF-8 character,
// preferring to cut after a newline in the second half of a piece.
func splitText(s string, max int) []string {
	var out []string
	for len(s) > max {
		cut := max
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		if nl := strings.LastIndexByte(s[:cut], '\n'); nl >= max/2 {
			cut = nl + 1
		}
		if cut == 0 { // cannot happen with valid max >= 4; guard against loops anyway
			cut = max
		}
		out = append(out, s[:cut])
		s = s[cut:]
	}
	if s != "" {
		out = append(out, s)
	}
	return out
}

// cardPart turns a raw card ({"type": "textcard", ...}) into a message.
func cardPart(card json.RawMessage) (*part, error) {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(card, &fields); err != nil {
		return nil, invalid("card is not a JSON object: %v", err)
	}
	var typ string
	if err := json.Unmarshal(fields["type"], &typ); err != nil || typ == "" {
		return nil, invalid(`card has no "type" (news, textcard, template_card, mpnews)`)
	}
	inner, ok := fields[typ]
	if !ok {
		delete(fields, "type")
		b, err := json.Marshal(fields)
		if err != nil {
			return nil, invalid("card: %v", err)
		}
		inner = b
	}
	r := sendRequest{MsgType: typ}
	switch typ {
	case "textcard":
		var tc struct{ Title, Description, URL string }
		if err := json.Unmarshal(inner, &tc); err != nil {
			return nil, invalid("textcard: %v", err)
		}
		switch {
		case tc.Title == "":
			return nil, invalid("textcard needs a title")
		case tc.Description == "":
			return nil, invalid("textcard needs a description")
		case !strings.HasPrefix(tc.URL, "http://") && !strings.HasPrefix(tc.URL, "https://"):
			return nil, invalid("textcard needs an http(s) url")
		}
		r.TextCard = inner
	case "news", "mpnews":
		var n struct {
			Articles []json.RawMessage `json:"articles"`
		}
		if err := json.Unmarshal(inner, &n); err != nil {
			return nil, invalid("%s: %v", typ, err)
		}
		if len(n.Articles) < 1 || len(n.Articles) > 8 {
			return nil, invalid("%s needs 1 to 8 articles; got %d", typ, len(n.Articles))
		}
		if typ == "news" {
			r.News = inner
		} else {
			r.MPNews = inner
		}
	case "template_card":
		var tc struct {
			CardType string `json:"card_type"`
		}
		if err := json.Unmarshal(inner, &tc); err != nil {
			return nil, invalid("template_card: %v", err)
		}
		switch tc.CardType {
		case "text_notice", "news_notice", "button_interaction", "vote_interaction", "multiple_interaction":
		default:
			return nil, invalid("template_card has card_type %q", tc.CardType)
		}
		r.TemplateCard = inner
	case adapter.AttachImage, adapter.AttachVoice, adapter.AttachVideo, adapter.AttachFile:
		return nil, invalid("WeCom sends a %s as an attachment (Message.Attachments), not as a card", typ)
	default:
		return nil, invalid("card type %q is not one WeCom sends (news, textcard, template_card, mpnews)", typ)
	}
	return &part{req: r}, nil
}

func invalid(format string, args ...any) error {
	return &adapter.Error{Kind: adapter.KindInvalidRequest, Platform: adapter.PlatformWeCom, Message: fmt.Sprintf(format, args...)}
}

// withPlatform sets the platform of an *adapter.Error made by the adapter package.
func withPlatform(err error) error {
	if ae, ok := err.(*adapter.Error); ok && ae.Platform == "" {
		c := *ae
		c.Platform = adapter.PlatformWeCom
		return &c
	}
	return err
}
