package teamstest

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode/utf16"
)

// Activity is a Bot Framework activity, with the fields Teams uses (spec §2).
type Activity struct {
	Type             string          `json:"type"`
	ID               string          `json:"id,omitempty"`
	Timestamp        string          `json:"timestamp,omitempty"`
	LocalTimestamp   string          `json:"localTimestamp,omitempty"`
	ServiceURL       string          `json:"serviceUrl,omitempty"`
	ChannelID        string          `json:"channelId,omitempty"`
	From             *Account        `json:"from,omitempty"`
	Recipient        *Account        `json:"recipient,omitempty"`
	Conversation     *Conversation   `json:"conversation,omitempty"`
	TextFormat       string          `json:"textFormat,omitempty"`
	Text             string          `json:"text,omitempty"`
	Attachments      []Attachment    `json:"attachments,omitempty"`
	Entities         []Entity        `json:"entities,omitempty"`
	ChannelData      json.RawMessage `json:"channelData,omitempty"`
	ReplyToID        string          `json:"replyToId,omitempty"`
	Name             string          `json:"name,omitempty"`
	Value            json.RawMessage `json:"value,omitempty"`
	Action           string          `json:"action,omitempty"`
	MembersAdded     []Account       `json:"membersAdded,omitempty"`
	MembersRemoved   []Account       `json:"membersRemoved,omitempty"`
	ReactionsAdded   []Reaction      `json:"reactionsAdded,omitempty"`
	ReactionsRemoved []Reaction      `json:"reactionsRemoved,omitempty"`
	Locale           string          `json:"locale,omitempty"`
}

// Account is a channel account (user or bot).
type Account struct {
	ID          string `json:"id"`
	Name        string `json:"name,omitempty"`
	AADObjectID string `json:"aadObjectId,omitempty"`
}

// Conversation is an activity's conversation. In Go code it also serves as the handle the
// scenario methods return (AppID, TeamID and ChannelID are not sent).
type Conversation struct {
	ID               string `json:"id"`
	ConversationType string `json:"conversationType,omitempty"` // personal, groupChat, channel
	TenantID         string `json:"tenantId,omitempty"`
	IsGroup          bool   `json:"isGroup,omitempty"`
	Name             string `json:"name,omitempty"`

	AppID     string `json:"-"`
	TeamID    string `json:"-"`
	ChannelID string `json:"-"`
}

// Attachment is an activity attachment.
type Attachment struct {
	ContentType string          `json:"contentType"`
	ContentURL  string          `json:"contentUrl,omitempty"`
	Content     json.RawMessage `json:"content,omitempty"`
	Name        string          `json:"name,omitempty"`
}

// Entity is an activity entity: mention, clientInfo, streaminfo, …
type Entity struct {
	Type      string   `json:"type"`
	Mentioned *Account `json:"mentioned,omitempty"`
	Text      string   `json:"text,omitempty"`
	// Other fields, kept verbatim.
	Extra map[string]any `json:"-"`
}

// MarshalJSON writes the known fields and Extra.
func (e Entity) MarshalJSON() ([]byte, error) {
	m := map[string]any{}
	for k, v := range e.Extra {
		m[k] = v
	}
	m["type"] = e.Type
	if e.Mentioned != nil {
		m["mentioned"] = e.Mentioned
	}
	if e.Text != "" {
		m["text"] = e.Text
	}
	return json.Marshal(m)
}

// UnmarshalJSON reads the known fields and keeps the rest in Extra.
func (e *Entity) UnmarshalJSON(b []byte) error {
	var known struct {
		Type      string   `json:"type"`
		Mentioned *Account `json:"mentioned"`
		Text      string   `json:"text"`
	}
	if err := json.Unmarshal(b, &known); err != nil {
		return err
	}
	var all map[string]any
	json.Unmarshal(b, &all)
	delete(all, "type")
	delete(all, "mentioned")
	delete(all, "text")
	*e = Entity{Type: known.Type, Mentioned: known.Mentioned, Text: known.Text, Extra: all}
	return nil
}

// Reaction is a messageReaction entry.
type Reaction struct {
	Type string `json:"type"`
}

type conversation struct {
	Conversation
	roster     bool                 // the bot is a member
	members    []User               // users in the conversation
	activities map[string]*activity // by id
}

type activity struct {
	fromBot bool
	deleted bool
	act     Activity
}

// Teams' error codes and messages per status (spec §3.4).
func defaultError(status int) (code, msg string) {
	switch status {
	case http.StatusTooManyRequests:
		return "Throttled", "Too many requests."
	case http.StatusPreconditionFailed:
		return "PreconditionFailed", "Precondition failed, please try again."
	case http.StatusRequestEntityTooLarge:
		return "MessageSizeTooBig", "Message size too large."
	case http.StatusNotFound:
		return "ConversationNotFound", "Conversation not found."
	case http.StatusForbidden:
		return "BotNotInConversationRoster", "The bot is not part of the conversation roster."
	case http.StatusBadRequest:
		return "BadArgument", "Bad request."
	}
	return "ServiceError", "Service error."
}

func connectorError(w http.ResponseWriter, status int, code, msg string) {
	writeJSON(w, status, map[string]any{"error": map[string]string{"code": code, "message": msg}})
}

// blockedError is the 403 a user who blocked the bot causes (spec §3.4, T5).
func blockedError(w http.ResponseWriter) {
	writeJSON(w, http.StatusForbidden, map[string]any{"errorCode": 209,
		"message": `{"message":"User blocked the conversation with the bot.","errorCode":209,"subCode":"MessageWritesBlocked"}`})
}

func (s *Server) maxMessageBytes() int {
	if s.MaxMessageBytes > 0 {
		return s.MaxMessageBytes
	}
	return 100 * 1024
}

// messageBytes is a message's size as Teams counts it: UTF-16 bytes of its text and
// attachments, base64 (data:) images excluded.
func messageBytes(a Activity) int {
	n := len(utf16.Encode([]rune(a.Text))) * 2
	for _, at := range a.Attachments {
		if strings.HasPrefix(at.ContentURL, "data:") {
			continue
		}
		b, _ := json.Marshal(at)
		n += len(utf16.Encode([]rune(string(b)))) * 2
	}
	return n
}

// Default per-thread limits of spec §3.5.
var threadLimits = []struct {
	n   int
	per time.Duration
}{{7, time.Second}, {8, 2 * time.Second}, {60, 30 * time.Second}, {1800, time.Hour}}

// throttleLocked records a send to key, or returns how long to wait if it would exceed a
// per-thread limit.
func (s *Server) throttleLocked(key string, now time.Time) time.Duration {
	if s.NoThrottle {
		return 0
	}
	w := s.windows[key]
	for len(w) > 0 && now.Sub(w[0]) >= time.Hour {
		w = w[1:]
	}
	var wait time.Duration
	for _, l := range threadLimits {
		if len(w) < l.n {
			continue
		}
		// The l.n-th most recent send must leave the window first.
		oldest := w[len(w)-l.n]
		if d := oldest.Add(l.per).Sub(now); d > wait {
			wait = d
		}
	}
	if wait > 0 {
		s.windows[key] = w
		return wait
	}
	s.windows[key] = append(w, now)
	return 0
}

// splitConnectorPath returns the segments after /v3/conversations, unescaped (ids may be sent
// percent-encoded as botbuilder does or raw as the Teams SDK does, spec §3.2).
func splitConnectorPath(escaped string) ([]string, bool) {
	i := strings.Index(escaped, "/v3/conversations")
	rest := strings.Trim(escaped[i+len("/v3/conversations"):], "/")
	if rest == "" {
		return nil, true
	}
	var out []string
	for _, seg := range strings.Split(rest, "/") {
		u, err := url.PathUnescape(seg)
		if err != nil {
			return nil, false
		}
		out = append(out, u)
	}
	return out, true
}

// baseConversation strips a channel thread's ";messageid=…".
func baseConversation(id string) string {
	if i := strings.Index(id, ";messageid="); i >= 0 {
		return id[:i]
	}
	return id
}

func (s *Server) serveConnector(w http.ResponseWriter, r *http.Request) {
	rec := Request{Method: r.Method, Path: r.URL.EscapedPath()}
	rw := &statusWriter{ResponseWriter: w}
	defer func() {
		rec.Status = rw.status
		s.mu.Lock()
		s.requests = append(s.requests, rec)
		s.mu.Unlock()
	}()
	appID, ok := s.checkToken(r)
	rec.TokenOK = ok
	if !ok {
		rw.Header().Set("Content-Type", "application/json; charset=utf-8")
		rw.WriteHeader(http.StatusUnauthorized)
		io.WriteString(rw, DeniedBody)
		return
	}
	segs, ok := splitConnectorPath(r.URL.EscapedPath())
	if !ok {
		connectorError(rw, http.StatusBadRequest, "BadSyntax", "malformed path")
		return
	}
	var body []byte
	if r.Body != nil {
		var err error
		body, err = io.ReadAll(io.LimitReader(r.Body, 256<<10+1))
		if err != nil {
			connectorError(rw, http.StatusBadRequest, "BadSyntax", "reading body")
			return
		}
		if len(body) > 256<<10 {
			connectorError(rw, http.StatusRequestEntityTooLarge, "MessageSizeTooBig", "Message size too large.")
			return
		}
	}
	s.mu.Lock()
	s.initLocked()
	var fault *Fault
	if len(s.faults) > 0 {
		f := s.faults[0]
		s.faults = s.faults[1:]
		fault = &f
	}
	s.mu.Unlock()
	if fault != nil && !fault.Deliver {
		writeFault(rw, *fault)
		return
	}
	if fault != nil {
		// Accept the write, then answer with the fault.
		s.route(&discardWriter{h: http.Header{}}, r.Method, segs, body, appID)
		writeFault(rw, *fault)
		return
	}
	s.route(rw, r.Method, segs, body, appID)
	s.mu.Lock()
	notify := s.onStreamQ
	s.onStreamQ = nil
	s.mu.Unlock()
	if s.OnStream != nil {
		for _, u := range notify {
			s.OnStream(u)
		}
	}
}

func writeFault(w http.ResponseWriter, f Fault) {
	code, msg := defaultError(f.Status)
	if f.Code != "" {
		code = f.Code
	}
	if f.Message != "" {
		msg = f.Message
	}
	if f.RetryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(int((f.RetryAfter+time.Second-1)/time.Second)))
	}
	connectorError(w, f.Status, code, msg)
}

func (s *Server) route(w http.ResponseWriter, method string, segs []string, body []byte, appID string) {
	switch {
	case len(segs) == 0 && method == http.MethodPost:
		s.createConversation(w, body, appID)
	case len(segs) == 2 && segs[1] == "activities" && method == http.MethodPost:
		s.postActivity(w, segs[0], "", body, appID)
	case len(segs) == 3 && segs[1] == "activities" && method == http.MethodPost:
		s.postActivity(w, segs[0], segs[2], body, appID)
	case len(segs) == 3 && segs[1] == "activities" && (method == http.MethodPut || method == http.MethodDelete):
		s.changeActivity(w, method, segs[0], segs[2], body, appID)
	case len(segs) == 2 && (segs[1] == "members" || segs[1] == "pagedmembers") && method == http.MethodGet:
		s.members(w, segs[0], segs[1] == "pagedmembers", appID)
	default:
		connectorError(w, http.StatusNotFound, "NotFound", fmt.Sprintf("no route for %s %s", method, strings.Join(segs, "/")))
	}
}

// convLocked finds the conversation a request addresses and checks the bot may write to it.
func (s *Server) convLocked(w http.ResponseWriter, id, appID string) *conversation {
	c := s.convs[baseConversation(id)]
	if c == nil || c.AppID != appID {
		connectorError(w, http.StatusNotFound, "ConversationNotFound", "Conversation not found.")
		return nil
	}
	if !c.roster {
		connectorError(w, http.StatusForbidden, "BotNotInConversationRoster", "The bot is not part of the conversation roster.")
		return nil
	}
	if c.ConversationType == "personal" && len(c.members) == 1 && s.blocked[appID+"|"+c.members[0].ID] {
		blockedError(w)
		return nil
	}
	return c
}

func (s *Server) postActivity(w http.ResponseWriter, convID, replyTo string, body []byte, appID string) {
	var a Activity
	if err := json.Unmarshal(body, &a); err != nil || a.Type == "" {
		connectorError(w, http.StatusBadRequest, "BadArgument", "Activity is not valid JSON or has no type.")
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.convLocked(w, convID, appID)
	if c == nil {
		return
	}
	if si, ok := streamInfoOf(a); ok {
		s.streamLocked(w, c, convID, replyTo, a, si, body, appID)
		return
	}
	if a.Type == "message" && a.Text == "" && len(a.Attachments) == 0 {
		connectorError(w, http.StatusBadRequest, "BadArgument", "Message has no text or attachments.")
		return
	}
	if messageBytes(a) > s.maxMessageBytes() {
		connectorError(w, http.StatusRequestEntityTooLarge, "MessageSizeTooBig", "Message size too large.")
		return
	}
	if a.Type != "message" {
		// Typing and other non-message activities: no id, not stored (spec §3.2 [U]).
		s.sent = append(s.sent, Sent{Kind: kindOf(replyTo), AppID: appID, ConversationID: convID, ReplyToID: replyTo, Activity: a, Raw: body})
		writeJSON(w, http.StatusOK, map[string]any{})
		return
	}
	now := time.Now()
	if wait := s.throttleLocked(appID+"|"+c.ID, now); wait > 0 {
		secs := int((wait + time.Second - 1) / time.Second)
		w.Header().Set("Retry-After", strconv.Itoa(secs))
		connectorError(w, http.StatusTooManyRequests, "Throttled", "Too many requests.")
		return
	}
	id := s.nextIDLocked()
	a.ID = id
	c.activities[id] = &activity{fromBot: true, act: a}
	s.sent = append(s.sent, Sent{Kind: kindOf(replyTo), AppID: appID, ConversationID: convID, ActivityID: id, ReplyToID: replyTo, Activity: a, Raw: body})
	writeJSON(w, http.StatusCreated, map[string]string{"id": id})
}

func kindOf(replyTo string) string {
	if replyTo != "" {
		return "reply"
	}
	return "send"
}

func (s *Server) changeActivity(w http.ResponseWriter, method, convID, id string, body []byte, appID string) {
	var a Activity
	if method == http.MethodPut {
		if err := json.Unmarshal(body, &a); err != nil || a.Type == "" {
			connectorError(w, http.StatusBadRequest, "BadArgument", "Activity is not valid JSON or has no type.")
			return
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.convLocked(w, convID, appID)
	if c == nil {
		return
	}
	old := c.activities[id]
	if old == nil || old.deleted {
		connectorError(w, http.StatusNotFound, "ActivityNotFoundInConversation", "Activity not found in conversation.")
		return
	}
	if !old.fromBot {
		connectorError(w, http.StatusForbidden, "ForbiddenOperationException", "The bot can't update or delete messages sent by the user.")
		return
	}
	if method == http.MethodDelete {
		old.deleted = true
		s.sent = append(s.sent, Sent{Kind: "delete", AppID: appID, ConversationID: convID, ActivityID: id})
		w.WriteHeader(http.StatusOK)
		return
	}
	if messageBytes(a) > s.maxMessageBytes() {
		connectorError(w, http.StatusRequestEntityTooLarge, "MessageSizeTooBig", "Message size too large.")
		return
	}
	a.ID = id
	old.act = a
	s.streamUpdatedLocked(id, a.Text)
	s.sent = append(s.sent, Sent{Kind: "update", AppID: appID, ConversationID: convID, ActivityID: id, Activity: a, Raw: body})
	writeJSON(w, http.StatusOK, map[string]string{"id": id})
}

func (s *Server) members(w http.ResponseWriter, convID string, paged bool, appID string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.convLocked(w, convID, appID)
	if c == nil {
		return
	}
	var out []map[string]string
	for _, u := range c.members {
		out = append(out, map[string]string{"id": u.ID, "name": u.Name, "aadObjectId": u.AADObjectID, "tenantId": u.TenantID})
	}
	if paged {
		writeJSON(w, http.StatusOK, map[string]any{"members": out})
		return
	}
	writeJSON(w, http.StatusOK, out)
}

// createConversation is POST v3/conversations (spec §3.3): a 1:1 with a user who installed
// the bot (idempotent per user), or a channel thread; group chats cannot be created.
func (s *Server) createConversation(w http.ResponseWriter, body []byte, appID string) {
	var p struct {
		IsGroup     bool      `json:"isGroup"`
		Members     []Account `json:"members"`
		TenantID    string    `json:"tenantId"`
		Activity    *Activity `json:"activity"`
		ChannelData struct {
			Tenant  struct{ ID string } `json:"tenant"`
			Channel struct{ ID string } `json:"channel"`
		} `json:"channelData"`
	}
	if err := json.Unmarshal(body, &p); err != nil {
		connectorError(w, http.StatusBadRequest, "BadSyntax", "Incorrect conversation creation parameters")
		return
	}
	tenant := p.TenantID
	if tenant == "" {
		tenant = p.ChannelData.Tenant.ID
	}
	if tenant == "" {
		connectorError(w, http.StatusBadRequest, "BadArgument", "Tenant id is required.")
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if p.IsGroup {
		ch := p.ChannelData.Channel.ID
		c := s.convs[ch]
		if ch == "" || p.Activity == nil {
			connectorError(w, http.StatusBadRequest, "BadSyntax", "Incorrect conversation creation parameters")
			return
		}
		if c == nil || c.AppID != appID || c.ConversationType != "channel" {
			connectorError(w, http.StatusNotFound, "ConversationNotFound", "Conversation not found.")
			return
		}
		if !c.roster {
			connectorError(w, http.StatusForbidden, "BotNotInConversationRoster", "The bot is not part of the conversation roster.")
			return
		}
		id := s.nextIDLocked()
		a := *p.Activity
		a.ID = id
		c.activities[id] = &activity{fromBot: true, act: a}
		thread := c.ID + ";messageid=" + id
		s.sent = append(s.sent, Sent{Kind: "create", AppID: appID, ConversationID: thread, ActivityID: id, Activity: a, Raw: body})
		writeJSON(w, http.StatusCreated, map[string]string{"id": thread, "activityId": id})
		return
	}
	if len(p.Members) != 1 {
		connectorError(w, http.StatusBadRequest, "BadSyntax", "Incorrect conversation creation parameters")
		return
	}
	mri := p.Members[0].ID
	u, known := s.users[mri]
	key := appID + "|" + mri
	if !known || u.TenantID != tenant || !s.installed[key] {
		connectorError(w, http.StatusForbidden, "ForbiddenOperationException", "Bot isn't installed in user's personal scope")
		return
	}
	if s.blocked[key] {
		blockedError(w)
		return
	}
	c := s.personalLocked(appID, u)
	c.roster = true
	resp := map[string]string{"id": c.ID}
	if p.Activity != nil {
		id := s.nextIDLocked()
		a := *p.Activity
		a.ID = id
		c.activities[id] = &activity{fromBot: true, act: a}
		resp["activityId"] = id
	}
	s.sent = append(s.sent, Sent{Kind: "create", AppID: appID, ConversationID: c.ID, ActivityID: resp["activityId"], Raw: body})
	writeJSON(w, http.StatusCreated, resp)
}

// personalLocked returns the personal conversation of app and user, creating it.
func (s *Server) personalLocked(appID string, u User) *conversation {
	key := appID + "|" + u.ID
	if id, ok := s.personal[key]; ok {
		return s.convs[id]
	}
	c := &conversation{Conversation: Conversation{ID: "a:1" + randomHex(24), ConversationType: "personal",
		TenantID: u.TenantID, AppID: appID}, members: []User{u}, activities: map[string]*activity{}}
	s.convs[c.ID] = c
	s.personal[key] = c.ID
	return c
}

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

type discardWriter struct{ h http.Header }

func (d *discardWriter) Header() http.Header         { return d.h }
func (d *discardWriter) Write(b []byte) (int, error) { return len(b), nil }
func (d *discardWriter) WriteHeader(int)             {}
