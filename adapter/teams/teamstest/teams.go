package teamstest

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// Fault modes for a delivered activity's token or body (spec §5 "Identity plane").
type TokenFault int

const (
	NoFault         TokenFault = iota
	WrongAudience              // aud is another app id
	WrongIssuer                // iss is an Entra issuer, not https://api.botframework.com
	WrongServiceURL            // the serviceurl claim names another connector
	Expired                    // exp and nbf an hour in the past
	NoExpiry                   // no exp claim (botbuilder accepts it; chatwire must not)
	UnendorsedKey              // signed by a published key that does not endorse msteams
	UnknownKey                 // signed by a key the JWKS never lists
	TamperedToken              // a claim changed after signing: the signature fails
	TamperedBody               // the body's serviceUrl changed after signing (replies redirected)
	NoToken                    // no Authorization header
	LowercaseScheme            // "bearer <jwt>"
	AlgNone                    // an unsigned token with alg "none"
)

// DeliverOptions change one delivery.
type DeliverOptions struct {
	Fault TokenFault
	// Headers are added to every attempt.
	Headers http.Header
}

// Attempt is one POST of an activity to a bot.
type Attempt struct {
	AppID      string
	ActivityID string
	Type       string
	Status     int // 0 if no answer
	Body       []byte
	TimedOut   bool
	Err        string
	Took       time.Duration
}

// Delivery is the outcome of delivering one activity, redeliveries included.
type Delivery struct {
	Activity Activity
	Attempts []Attempt
}

// Final returns the last attempt.
func (d *Delivery) Final() Attempt { return d.Attempts[len(d.Attempts)-1] }

// NewUser creates a user of tenant.
func (s *Server) NewUser(name, tenant string) User {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.initLocked()
	u := User{ID: "29:1" + randomHex(30), Name: name, AADObjectID: newGUID(), TenantID: tenant}
	s.users[u.ID] = u
	return u
}

func (s *Server) bot(appID string) (Bot, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.initLocked()
	b := s.bots[appID]
	if b == nil {
		return Bot{}, fmt.Errorf("teamstest: no bot %q (AddBot first)", appID)
	}
	return *b, nil
}

// newActivity builds an activity in c from from (nil: no from).
func (s *Server) newActivity(typ string, c Conversation, from *User, b Bot) Activity {
	s.mu.Lock()
	id := s.nextIDLocked()
	su := s.serviceURLLocked(c.TenantID)
	s.mu.Unlock()
	now := time.Now().UTC()
	a := Activity{Type: typ, ID: id, Timestamp: now.Format("2006-01-02T15:04:05.0000000Z"),
		LocalTimestamp: now.Format(time.RFC3339Nano), ServiceURL: su, ChannelID: "msteams",
		Recipient: &Account{ID: b.ID(), Name: b.name()}, Locale: "en-US"}
	conv := c
	a.Conversation = &conv
	if from != nil {
		a.From = &Account{ID: from.ID, Name: from.Name, AADObjectID: from.AADObjectID}
	}
	cd := map[string]any{"tenant": map[string]string{"id": c.TenantID}}
	if c.ConversationType == "channel" {
		cd["team"] = map[string]string{"id": c.TeamID, "name": "Team " + c.TeamID}
		cd["channel"] = map[string]string{"id": c.ChannelID, "name": c.Name}
	}
	a.ChannelData, _ = json.Marshal(cd)
	return a
}

func (s *Server) addConv(c *conversation) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.initLocked()
	s.convs[c.ID] = c
}

// InstallPersonal installs the app in u's personal scope and tells the bot, as Teams does:
// a conversationUpdate with membersAdded (bot and user) and an installationUpdate "add"
// (spec §2.3). It returns the personal conversation.
func (s *Server) InstallPersonal(ctx context.Context, appID string, u User) (Conversation, error) {
	c, err := s.InstallPersonalSilently(appID, u)
	if err != nil {
		return c, err
	}
	b, _ := s.bot(appID)
	up := s.newActivity("conversationUpdate", c, &u, b)
	up.ID = "f:" + newGUID()
	up.MembersAdded = []Account{{ID: b.ID()}, {ID: u.ID, AADObjectID: u.AADObjectID}}
	if _, err := s.Deliver(ctx, appID, up, DeliverOptions{}); err != nil {
		return c, err
	}
	in := s.newActivity("installationUpdate", c, &u, b)
	in.ID, in.Action = "f:"+newGUID(), "add"
	_, err = s.Deliver(ctx, appID, in, DeliverOptions{})
	return c, err
}

// InstallPersonalSilently installs the app for u without telling the bot (as when the
// install happened while the bot was down): proactive createConversation then works.
func (s *Server) InstallPersonalSilently(appID string, u User) (Conversation, error) {
	if _, err := s.bot(appID); err != nil {
		return Conversation{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.installed[appID+"|"+u.ID] = true
	c := s.personalLocked(appID, u)
	c.roster = true
	return c.Conversation, nil
}

// NewGroupChat creates a group chat of members with the bot added and tells the bot.
func (s *Server) NewGroupChat(ctx context.Context, appID, name string, members ...User) (Conversation, error) {
	b, err := s.bot(appID)
	if err != nil {
		return Conversation{}, err
	}
	if len(members) == 0 {
		return Conversation{}, errors.New("teamstest: a group chat needs members")
	}
	c := &conversation{Conversation: Conversation{ID: "19:" + randomHex(16) + "@thread.v2", ConversationType: "groupChat",
		IsGroup: true, TenantID: members[0].TenantID, Name: name, AppID: appID}, roster: true, members: members, activities: map[string]*activity{}}
	s.addConv(c)
	return c.Conversation, s.announce(ctx, b, c.Conversation, members[0], "")
}

// NewChannel creates a team channel with the bot installed in the team and tells the bot.
func (s *Server) NewChannel(ctx context.Context, appID, channelName string, members ...User) (Conversation, error) {
	b, err := s.bot(appID)
	if err != nil {
		return Conversation{}, err
	}
	if len(members) == 0 {
		return Conversation{}, errors.New("teamstest: a team needs members")
	}
	id := "19:" + randomHex(16) + "@thread.tacv2"
	c := &conversation{Conversation: Conversation{ID: id, ConversationType: "channel", IsGroup: true,
		TenantID: members[0].TenantID, Name: channelName, AppID: appID, TeamID: id, ChannelID: id},
		roster: true, members: members, activities: map[string]*activity{}}
	s.addConv(c)
	return c.Conversation, s.announce(ctx, b, c.Conversation, members[0], "teamMemberAdded")
}

func (s *Server) announce(ctx context.Context, b Bot, c Conversation, by User, eventType string) error {
	up := s.newActivity("conversationUpdate", c, &by, b)
	up.ID = "f:" + newGUID()
	up.MembersAdded = []Account{{ID: b.ID()}}
	if eventType != "" {
		up.ChannelData = withChannelData(up.ChannelData, "eventType", eventType)
	}
	if _, err := s.Deliver(ctx, b.AppID, up, DeliverOptions{}); err != nil {
		return err
	}
	in := s.newActivity("installationUpdate", c, &by, b)
	in.ID, in.Action = "f:"+newGUID(), "add"
	_, err := s.Deliver(ctx, b.AppID, in, DeliverOptions{})
	return err
}

func withChannelData(raw json.RawMessage, k string, v any) json.RawMessage {
	m := map[string]any{}
	json.Unmarshal(raw, &m)
	m[k] = v
	b, _ := json.Marshal(m)
	return b
}

// Uninstall removes the bot from c (for a personal chat: uninstalls the app for its user)
// and tells the bot: a conversationUpdate with the bot in membersRemoved (group chats and
// teams), then an installationUpdate "remove". Later writes there get 403
// BotNotInConversationRoster.
func (s *Server) Uninstall(ctx context.Context, c Conversation) error {
	b, err := s.bot(c.AppID)
	if err != nil {
		return err
	}
	s.mu.Lock()
	cv := s.convs[c.ID]
	if cv == nil {
		s.mu.Unlock()
		return fmt.Errorf("teamstest: no conversation %q", c.ID)
	}
	cv.roster = false
	var by User
	if len(cv.members) > 0 {
		by = cv.members[0]
	}
	if c.ConversationType == "personal" {
		delete(s.installed, c.AppID+"|"+by.ID)
	}
	s.mu.Unlock()
	if c.ConversationType != "personal" {
		// Removal from a team or group chat is also a conversationUpdate (spec §2.3).
		up := s.newActivity("conversationUpdate", c, &by, b)
		up.ID = "f:" + newGUID()
		up.MembersRemoved = []Account{{ID: b.ID()}}
		if c.ConversationType == "channel" {
			up.ChannelData = withChannelData(up.ChannelData, "eventType", "teamMemberRemoved")
		}
		if _, err := s.Deliver(ctx, c.AppID, up, DeliverOptions{}); err != nil {
			return err
		}
	}
	in := s.newActivity("installationUpdate", c, &by, b)
	in.ID, in.Action = "f:"+newGUID(), "remove"
	_, err = s.Deliver(ctx, c.AppID, in, DeliverOptions{})
	return err
}

// Block makes u block the bot: writes to their personal chat get 403 MessageWritesBlocked.
func (s *Server) Block(appID string, u User) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.initLocked()
	s.blocked[appID+"|"+u.ID] = true
}

// Message builds a message activity from u in c. In group chats and channels it @mentions
// the bot as Teams does (the bot only gets messages that mention it, spec §2.2): the text
// starts with "<at>Name</at> " and a mention entity names the bot. A channel message starts a
// thread: its conversation id ends with ";messageid=<its id>".
func (s *Server) Message(c Conversation, u User, text string) (Activity, error) {
	b, err := s.bot(c.AppID)
	if err != nil {
		return Activity{}, err
	}
	a := s.newActivity("message", c, &u, b)
	a.TextFormat = "plain"
	a.Text = text
	if c.IsGroup {
		at := "<at>" + b.name() + "</at>"
		a.Text = at + " " + text
		a.Entities = append(a.Entities, Entity{Type: "mention", Mentioned: &Account{ID: b.ID(), Name: b.name()}, Text: at})
	}
	a.Attachments = []Attachment{{ContentType: "text/html", Content: mustJSON("<div><div>" + htmlEscape(a.Text) + "</div>\n</div>")}}
	a.Entities = append(a.Entities, Entity{Type: "clientInfo", Extra: map[string]any{"locale": "en-US", "country": "US", "platform": "Web", "timezone": "UTC"}})
	if c.ConversationType == "channel" {
		conv := *a.Conversation
		conv.ID = c.ID + ";messageid=" + a.ID
		a.Conversation = &conv
	}
	s.mu.Lock()
	if cv := s.convs[c.ID]; cv != nil {
		cv.activities[a.ID] = &activity{act: a}
	}
	s.mu.Unlock()
	return a, nil
}

func htmlEscape(s string) string {
	// <at> tags stay as Teams renders them; only & is escaped here.
	return strings.ReplaceAll(s, "&", "&amp;")
}

func mustJSON(v any) json.RawMessage {
	b, _ := json.Marshal(v)
	return b
}

// Say sends text from u in c to the bot (see [Server.Message]).
func (s *Server) Say(ctx context.Context, c Conversation, u User, text string) (*Delivery, error) {
	a, err := s.Message(c, u, text)
	if err != nil {
		return nil, err
	}
	return s.Deliver(ctx, c.AppID, a, DeliverOptions{})
}

// React adds (or with remove, removes) u's reaction to message id in c.
func (s *Server) React(ctx context.Context, c Conversation, u User, messageID, reaction string, remove bool) (*Delivery, error) {
	b, err := s.bot(c.AppID)
	if err != nil {
		return nil, err
	}
	a := s.newActivity("messageReaction", c, &u, b)
	a.ID = "f:" + newGUID()
	a.ReplyToID = messageID
	if remove {
		a.ReactionsRemoved = []Reaction{{Type: reaction}}
	} else {
		a.ReactionsAdded = []Reaction{{Type: reaction}}
	}
	return s.Deliver(ctx, c.AppID, a, DeliverOptions{})
}

// Edit tells the bot u edited message id (messageUpdate, eventType editMessage); with
// deleted, that u soft-deleted it (messageDelete, softDeleteMessage).
func (s *Server) Edit(ctx context.Context, c Conversation, u User, messageID, text string, deleted bool) (*Delivery, error) {
	b, err := s.bot(c.AppID)
	if err != nil {
		return nil, err
	}
	typ, ev := "messageUpdate", "editMessage"
	if deleted {
		typ, ev = "messageDelete", "softDeleteMessage"
	}
	a := s.newActivity(typ, c, &u, b)
	a.ID = messageID
	a.Text = text
	a.ChannelData = withChannelData(a.ChannelData, "eventType", ev)
	return s.Deliver(ctx, c.AppID, a, DeliverOptions{})
}

// ExecuteAction sends the invoke a click on an Action.Execute button of the bot's card
// (message cardID) makes (spec §2.4). The bot's invoke response is the final attempt's Body.
func (s *Server) ExecuteAction(ctx context.Context, c Conversation, u User, cardID, verb string, data any) (*Delivery, error) {
	b, err := s.bot(c.AppID)
	if err != nil {
		return nil, err
	}
	a := s.newActivity("invoke", c, &u, b)
	a.ID = "f:" + newGUID()
	a.Name = "adaptiveCard/action"
	a.ReplyToID = cardID
	a.Value = mustJSON(map[string]any{"action": map[string]any{"type": "Action.Execute", "id": "btn-" + verb, "verb": verb, "data": data},
		"trigger": "manual"})
	return s.Deliver(ctx, c.AppID, a, DeliverOptions{})
}

func (s *Server) deliveryTimeout(invoke bool) time.Duration {
	if invoke {
		if s.InvokeTimeout > 0 {
			return s.InvokeTimeout
		}
		return 5 * time.Second
	}
	if s.DeliveryTimeout > 0 {
		return s.DeliveryTimeout
	}
	return 15 * time.Second
}

// Deliver POSTs activity a to the bot's endpoint with a fresh signed token, as the connector
// does: Content-Type application/json, x-ms-conversation-id and x-ms-tenant-id headers. An
// attempt that times out (DeliveryTimeout) or gets a 5xx is redelivered with the same id
// (Redeliveries times); invokes are not redelivered. It returns every attempt; an error only
// when nothing could be attempted.
func (s *Server) Deliver(ctx context.Context, appID string, a Activity, opt DeliverOptions) (*Delivery, error) {
	b, err := s.bot(appID)
	if err != nil {
		return nil, err
	}
	if b.Endpoint == "" {
		return nil, fmt.Errorf("teamstest: bot %q has no endpoint", appID)
	}
	if s.URL == "" {
		return nil, errors.New("teamstest: Server.URL is not set")
	}
	redeliveries := s.Redeliveries
	if redeliveries == 0 {
		redeliveries = 1
	}
	if a.Type == "invoke" || redeliveries < 0 {
		redeliveries = 0
	}
	d := &Delivery{Activity: a}
	for i := 0; i <= redeliveries; i++ {
		at, err := s.attempt(ctx, b, a, opt)
		if err != nil {
			return d, err
		}
		d.Attempts = append(d.Attempts, at)
		s.mu.Lock()
		s.attempts = append(s.attempts, at)
		s.mu.Unlock()
		if !at.TimedOut && at.Status != 0 && at.Status < 500 {
			break
		}
		if ctx.Err() != nil {
			break
		}
	}
	return d, nil
}

// SignedRequest returns the Authorization header and the body Teams would POST to bot appID
// for activity a, with fault applied, without sending them: for driving other validators
// (botbuilder) with the emulator's tokens. NoToken gives an empty header.
func (s *Server) SignedRequest(appID string, a Activity, fault TokenFault) (auth string, body []byte, err error) {
	b, err := s.bot(appID)
	if err != nil {
		return "", nil, err
	}
	auth, a, err = s.sign(b, a, fault)
	if err != nil {
		return "", nil, err
	}
	body, err = json.Marshal(a)
	return auth, body, err
}

// sign mints the token for a (with fault) and returns the Authorization header and the
// activity as it is sent.
func (s *Server) sign(b Bot, a Activity, fault TokenFault) (string, Activity, error) {
	s.mu.Lock()
	s.initLocked()
	claims := TokenClaims{Audience: b.AppID, ServiceURL: a.ServiceURL}
	kid := ""
	tenant := ""
	if a.Conversation != nil {
		tenant = a.Conversation.TenantID
	}
	switch fault {
	case WrongAudience:
		claims.Audience = newGUID()
	case WrongIssuer:
		claims.Issuer = "https://sts.windows.net/" + tenant + "/"
	case WrongServiceURL:
		claims.ServiceURL = "https://smba.trafficmanager.net/emea/" + tenant + "/"
	case Expired:
		claims.NotBefore, claims.Expires = time.Now().Add(-2*time.Hour), time.Now().Add(-time.Hour)
	case NoExpiry:
		claims.NoExpiry = true
	case UnendorsedKey:
		kid = s.unendorsed
	}
	var tok string
	var err error
	if fault == UnknownKey {
		k := newSigningKey("msteams")
		s.hidden[k.kid] = k
		tok, err = s.channelTokenLocked(k.kid, claims)
		delete(s.hidden, k.kid)
	} else {
		tok, err = s.channelTokenLocked(kid, claims)
	}
	s.mu.Unlock()
	if err != nil {
		return "", a, err
	}
	switch fault {
	case TamperedToken:
		tok = tamperPayload(tok)
	case TamperedBody:
		a.ServiceURL = "https://attacker.example/amer/"
	case AlgNone:
		parts := strings.Split(tok, ".")
		tok = b64(`{"alg":"none","typ":"JWT"}`) + "." + parts[1] + "."
	}
	switch fault {
	case NoToken:
		return "", a, nil
	case LowercaseScheme:
		return "bearer " + tok, a, nil
	}
	return "Bearer " + tok, a, nil
}

func (s *Server) attempt(ctx context.Context, b Bot, a Activity, opt DeliverOptions) (Attempt, error) {
	auth, a, err := s.sign(b, a, opt.Fault)
	if err != nil {
		return Attempt{}, err
	}
	body, _ := json.Marshal(a)
	timeout := s.deliveryTimeout(a.Type == "invoke")
	actx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(actx, http.MethodPost, b.Endpoint, bytes.NewReader(body))
	if err != nil {
		return Attempt{}, err
	}
	req.Header.Set("Content-Type", "application/json; charset=utf-8")
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	req.Header.Set("x-ms-conversation-id", a.Conversation.ID)
	req.Header.Set("x-ms-tenant-id", a.Conversation.TenantID)
	req.Header.Set("MS-CV", randomHex(11)+".1")
	for k, v := range opt.Headers {
		req.Header[k] = v
	}
	hc := s.Client
	if hc == nil {
		hc = &http.Client{}
	}
	at := Attempt{AppID: b.AppID, ActivityID: a.ID, Type: a.Type}
	start := time.Now()
	resp, err := hc.Do(req)
	at.Took = time.Since(start)
	if err != nil {
		at.Err = err.Error()
		at.TimedOut = actx.Err() == context.DeadlineExceeded && ctx.Err() == nil
		return at, nil
	}
	defer resp.Body.Close()
	at.Status = resp.StatusCode
	at.Body, err = io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		at.Err = err.Error()
		at.TimedOut = actx.Err() == context.DeadlineExceeded && ctx.Err() == nil
	}
	return at, nil
}

func b64(s string) string {
	return strings.TrimRight(strings.NewReplacer("+", "-", "/", "_").Replace(stdB64(s)), "=")
}

// tamperPayload changes one claim of a signed JWT, keeping its signature.
func tamperPayload(tok string) string {
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return tok
	}
	raw, err := decodeSegment(parts[1])
	if err != nil {
		return tok
	}
	var m map[string]any
	json.Unmarshal(raw, &m)
	m["tampered"] = true
	nb, _ := json.Marshal(m)
	parts[1] = b64(string(nb))
	return strings.Join(parts, ".")
}

func stdB64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

func decodeSegment(s string) ([]byte, error) { return base64.RawURLEncoding.DecodeString(s) }
