package adapter

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strings"
)

// A Message is what [Adapter.Send] delivers: one target and its content. Set exactly one of
// Text, Markdown, HTML and Card, or none of them when sending only attachments; a platform
// that cannot show a kind of content returns an *Error of KindInvalidRequest.
type Message struct {
	To Target `json:"to"`

	Text string `json:"text,omitempty"`
	// Markdown is sent as WeCom markdown, as Teams markdown by a Teams bot (textFormat
	// "markdown", which Teams renders), and as the HTML it stands for to Graph chats and
	// mail (which have no markdown type); raw HTML inside it is dropped there.
	Markdown string `json:"markdown,omitempty"`
	// HTML is for Graph (chats, channels, mail) and Teams bots. WeCom shows no HTML: it
	// refuses the message with KindInvalidRequest rather than guess (send Markdown or Text).
	HTML string `json:"html,omitempty"`
	// Card is a platform card as raw JSON with a "type": WeCom "news", "textcard",
	// "template_card" or "mpnews" (a WeCom video is an [Attachment] of type video, with Title
	// and Description); the card's fields sit either under a key named like its type
	// ({"type":"textcard","textcard":{...}}) or beside "type" ({"type":"textcard","title":..}).
	// Graph takes {"type":"adaptive", ...}.
	Card json.RawMessage `json:"card,omitempty"`

	Subject string `json:"subject,omitempty"`  // mail subject; ignored elsewhere
	ReplyTo string `json:"reply_to,omitempty"` // id of the message this one answers, where the platform supports it
	// Mentions are people to notify; where the text names them is platform-specific
	// (WeCom markdown "<@userid>", Graph "<at id=\"0\">Name</at>").
	Mentions []Mention `json:"mentions,omitempty"`
	// Attachments are files and images. Each is sent as its own message on platforms without
	// multi-part messages (WeCom).
	Attachments []Attachment `json:"attachments,omitempty"`
}

// Target says where a [Message] goes. Set exactly one field. User means a member (WeCom) or a
// 1:1 chat with that user (Graph). User, each element of Users, Party and Chat hold one id:
// WeCom refuses "|" or "@all" inside one (send to several users with Users, to everyone with
// All), and any id with white space around it or a control character in it.
type Target struct {
	User  string   `json:"user,omitempty"`
	Users []string `json:"users,omitempty"`
	Party string   `json:"party,omitempty"` // one WeCom department id ("|" is refused)
	Tag   string   `json:"tag,omitempty"`   // WeCom tag id; several as "1|4"
	All   bool     `json:"all,omitempty"`   // every member visible to the WeCom app ("@all")
	Chat  string   `json:"chat,omitempty"`  // WeCom app chat id, Graph chat id
	// Channel is a Graph team channel.
	Channel *Channel `json:"channel,omitempty"`
	Email   string   `json:"email,omitempty"` // mail address (Graph)
	// Emails are several mail addresses for one message (Graph).
	Emails []string `json:"emails,omitempty"`
}

// Channel names a Teams channel.
type Channel struct {
	Team    string `json:"team"`
	Channel string `json:"channel"`
}

// Kinds of [Target], as returned by [Target.Kind].
const (
	TargetUser    = "user"
	TargetUsers   = "users"
	TargetParty   = "party"
	TargetTag     = "tag"
	TargetAll     = "all"
	TargetChat    = "chat"
	TargetChannel = "channel"
	TargetEmail   = "email"
	TargetEmails  = "emails"
)

// Kind returns which field of t is set, one of the Target constants, or an *Error of
// KindInvalidRequest if none or several are.
func (t Target) Kind() (string, error) {
	var set []string
	add := func(ok bool, k string) {
		if ok {
			set = append(set, k)
		}
	}
	add(t.User != "", TargetUser)
	add(len(t.Users) > 0, TargetUsers)
	add(t.Party != "", TargetParty)
	add(t.Tag != "", TargetTag)
	add(t.All, TargetAll)
	add(t.Chat != "", TargetChat)
	add(t.Channel != nil, TargetChannel)
	add(t.Email != "", TargetEmail)
	add(len(t.Emails) > 0, TargetEmails)
	switch len(set) {
	case 1:
		return set[0], nil
	case 0:
		return "", &Error{Kind: KindInvalidRequest, Message: "no target: set one of user, users, party, tag, all, chat, channel, email"}
	}
	return "", &Error{Kind: KindInvalidRequest, Message: "several targets set (" + strings.Join(set, ", ") + "): set exactly one"}
}

// String describes t for errors and logs, e.g. "user zhangsan" or "channel T/C".
func (t Target) String() string {
	k, err := t.Kind()
	if err != nil {
		return "invalid target"
	}
	switch k {
	case TargetUser:
		return "user " + t.User
	case TargetUsers:
		return "users " + strings.Join(t.Users, "|")
	case TargetParty:
		return "party " + t.Party
	case TargetTag:
		return "tag " + t.Tag
	case TargetAll:
		return "all"
	case TargetChat:
		return "chat " + t.Chat
	case TargetChannel:
		return "channel " + t.Channel.Team + "/" + t.Channel.Channel
	case TargetEmail:
		return "email " + t.Email
	}
	return "emails " + strings.Join(t.Emails, ",")
}

// A Mention is a person to notify in a message.
type Mention struct {
	ID   string `json:"id"`             // user id (WeCom userid, Graph user id)
	Name string `json:"name,omitempty"` // display name, where the platform shows one
}

// Types of [Attachment].
const (
	AttachImage    = "image"
	AttachVoice    = "voice"
	AttachVideo    = "video"
	AttachFile     = "file"
	AttachLocation = "location" // received only
	AttachLink     = "link"     // received only
)

// An Attachment is a file or image, sent or received. To send one, set Name, ContentType and
// either Data, or Body and Size for large files; or set ID to something already uploaded
// through an [Uploader]. Received attachments carry ID and/or URL, not the content, except
// WeCom AI bot media: their URLs expire within 5 minutes and are encrypted, so that adapter
// delivers the decrypted content in Data (and keeps the URL).
type Attachment struct {
	// Type is one of the Attach constants. If empty when sending, it follows ContentType:
	// image/* → image, audio/* → voice, video/* → video, anything else → file.
	Type        string `json:"type,omitempty"`
	Name        string `json:"name,omitempty"`
	ContentType string `json:"content_type,omitempty"`
	// Size is the content length in bytes. Required with Body; set from Data otherwise.
	Size int64 `json:"size,omitempty"`
	// ID is the platform's id for uploaded content: WeCom media_id, Graph drive item or
	// attachment id.
	ID string `json:"id,omitempty"`
	// URL is where the content can be fetched (received images, links), if the platform
	// gave one.
	URL string `json:"url,omitempty"`
	// Title and Description describe links, videos and locations.
	Title       string `json:"title,omitempty"`
	Description string `json:"description,omitempty"`
	// Data is the content itself (base64 in JSON).
	Data []byte `json:"data,omitempty"`
	// Body streams large content; it is read once. Never serialized: a plugin client reads
	// it into Data before crossing the process boundary.
	Body io.Reader `json:"-"`
}

// AttachType returns a's type: Type if set, else derived from ContentType.
func (a Attachment) AttachType() string {
	if a.Type != "" {
		return a.Type
	}
	ct := strings.ToLower(a.ContentType)
	switch {
	case strings.HasPrefix(ct, "image/"):
		return AttachImage
	case strings.HasPrefix(ct, "audio/"):
		return AttachVoice
	case strings.HasPrefix(ct, "video/"):
		return AttachVideo
	}
	return AttachFile
}

// Open returns a's content and its size: Body and Size if Body is set, else Data. It fails
// with an *Error of KindInvalidRequest if a has neither.
func (a Attachment) Open() (io.Reader, int64, error) {
	switch {
	case a.Body != nil:
		if a.Size <= 0 {
			return nil, 0, &Error{Kind: KindInvalidRequest, Message: fmt.Sprintf("attachment %q: Body without Size", a.Name)}
		}
		return a.Body, a.Size, nil
	case a.Data != nil:
		return bytes.NewReader(a.Data), int64(len(a.Data)), nil
	}
	return nil, 0, &Error{Kind: KindInvalidRequest, Message: fmt.Sprintf("attachment %q has no content", a.Name)}
}

// A Receipt is the platform's answer to a sent message.
type Receipt struct {
	// ID is the platform's message id (WeCom msgid, used for recall; Graph chatMessage id);
	// empty where the platform gives none (mail, WeCom app chats).
	ID string `json:"id"`
	// Invalid lists recipients the platform refused while sending to the others, each as
	// "<target kind>:<id>" ("user:zhangsan", "party:4", "tag:2"); WeCom reports user ids
	// lower-cased.
	Invalid []string `json:"invalid,omitempty"`
	// IDs holds one message id per message sent when one Message needed several (WeCom sends
	// each attachment separately; long text may be split). ID is the first of them.
	IDs []string `json:"ids,omitempty"`
}
