package adapter

import (
	"encoding/json"
	"time"
)

// Kinds of [Event].
const (
	EventMessage = "message" // a person sent something
	EventNotice  = "event"   // anything else: a click, a subscription, a member joining
)

// Types of [Chat].
const (
	ChatDirect  = "direct"
	ChatGroup   = "group"
	ChatChannel = "channel"
	ChatMail    = "mail"
)

// An Event is one thing that happened on a platform: a message received or a platform
// event. Its JSON form is the event JSON of the host's HTTP API.
type Event struct {
	// ID is stable across redeliveries of the same event, for dedup: WeCom "wecom:<MsgId>"
	// or, for events (which have no MsgId), "wecom:<FromUserName>:<CreateTime>:<Event>:<digest>"
	// with a digest of every field, so distinct events in one second keep distinct ids;
	// WeCom AI bot "wecom_aibot:<msgid>" (events carry a msgid too); Graph its resource id.
	ID       string `json:"id"`
	Bot      string `json:"bot"`      // the configured bot name
	Platform string `json:"platform"` // PlatformWeCom, PlatformGraph
	Kind     string `json:"kind"`     // EventMessage or EventNotice
	Chat     Chat   `json:"chat"`
	Sender   Sender `json:"sender"`
	// Text is the message text; for a platform event, its name (WeCom "click",
	// "enter_agent").
	Text        string       `json:"text"`
	Attachments []Attachment `json:"attachments,omitempty"`
	Time        time.Time    `json:"time"`
	// Raw is the platform's own payload as a JSON object (WeCom: the decrypted XML's fields,
	// {"MsgType":"event","Event":"click","EventKey":"k",...}), so consumers can read fields
	// the model does not carry.
	Raw json.RawMessage `json:"raw,omitempty"`
}

// Chat is the conversation an [Event] happened in.
type Chat struct {
	ID   string `json:"id"`
	Type string `json:"type"` // ChatDirect, ChatGroup, ChatChannel or ChatMail
}

// Sender is who caused an [Event].
type Sender struct {
	ID   string `json:"id"`
	Name string `json:"name"`
}
