package graph

import (
	"cmp"
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/seed-a64d9e1f/chatwire/adapter"
	"github.com/seed-a64d9e1f/chatwire/tokenmgr"
)

// Notification is one item of a change or lifecycle notification POST (spec §6).
type Notification struct {
	ID                     string `json:"id"`
	SubscriptionID         string `json:"subscriptionId"`
	SubscriptionExpiration string `json:"subscriptionExpirationDateTime"`
	ClientState            string `json:"clientState"`
	ChangeType             string `json:"changeType"`
	Resource               string `json:"resource"`
	TenantID               string `json:"tenantId"`
	// LifecycleEvent is set on lifecycle notifications: reauthorizationRequired,
	// subscriptionRemoved, missed.
	LifecycleEvent string `json:"lifecycleEvent"`
	ResourceData   *struct {
		ODataType string `json:"@odata.type"`
		ODataID   string `json:"@odata.id"`
		ID        string `json:"id"`
	} `json:"resourceData"`
}

// NotificationBatch is the body of a notification POST.
type NotificationBatch struct {
	Value            []Notification `json:"value"`
	ValidationTokens []string       `json:"validationTokens"`
}

// maxValidationToken bounds the validationToken echoed on the validation handshake. Graph's
// tokens are opaque text of about 120 bytes ("Validation: Testing client application
// reachability for subscription Request-Id: {guid}"); the echo answers an unauthenticated
// request with attacker-chosen text, so anything much larger is refused rather than
// reflected. 4 KiB leaves room for a longer format.
const maxValidationToken = 4 << 10

// maxNotifications bounds the items accepted in one POST.
const maxNotifications = 1000

// maxConcurrentFetches bounds the message fetches (and lifecycle handlers) running at once
// for one adapter: Outlook allows 4 concurrent requests per app and mailbox (spec §3).
const maxConcurrentFetches = 4

// ParseNotifications parses a notification POST body. It rejects anything that is not a JSON
// object with a "value" array of at most 1000 items; it never panics.
func ParseNotifications(body []byte) (*NotificationBatch, error) {
	var b NotificationBatch
	if err := json.Unmarshal(body, &b); err != nil {
		return nil, fmt.Errorf("graph: notification body is not a notification collection: %w", err)
	}
	if b.Value == nil {
		return nil, errors.New(`graph: notification body has no "value" array`)
	}
	if len(b.Value) > maxNotifications {
		return nil, fmt.Errorf("graph: notification body has %d items (limit %d)", len(b.Value), maxNotifications)
	}
	return &b, nil
}

// Resource kinds of [ResourceRef].
const (
	ResourceChat    = "chat"
	ResourceChannel = "channel"
	ResourceReply   = "reply"
	ResourceMail    = "mail"
)

// ResourceRef is a parsed notification resource path.
type ResourceRef struct {
	Kind                  string // ResourceChat, ResourceChannel, ResourceReply, ResourceMail
	Chat, Team, Channel   string
	Message, Parent, User string
}

// ParseResource parses a notification resource such as "chats('19:x')/messages('1616')",
// "teams('T')/channels('C')/messages('M')/replies('R')" or "Users/{u}/Messages/{id}".
func ParseResource(res string) (ResourceRef, error) {
	var names, values []string
	rest := strings.TrimPrefix(res, "/")
	for rest != "" {
		i := strings.IndexAny(rest, "(/")
		if i < 0 {
			return ResourceRef{}, fmt.Errorf("graph: resource %q: segment %q has no value", res, rest)
		}
		name := strings.ToLower(rest[:i])
		var val string
		if rest[i] == '(' {
			inner := rest[i+1:]
			if !strings.HasPrefix(inner, "'") {
				return ResourceRef{}, fmt.Errorf("graph: resource %q: bad key", res)
			}
			end := strings.Index(inner[1:], "')")
			if end < 0 {
				return ResourceRef{}, fmt.Errorf("graph: resource %q: unterminated key", res)
			}
			val = inner[1 : 1+end]
			rest = inner[1+end+2:]
		} else {
			rest = rest[i+1:]
			j := strings.IndexByte(rest, '/')
			if j < 0 {
				j = len(rest)
			}
			val = rest[:j]
			rest = rest[j:]
		}
		rest = strings.TrimPrefix(rest, "/")
		if name == "" || val == "" || len(names) >= 4 {
			return ResourceRef{}, fmt.Errorf("graph: resource %q is not a message", res)
		}
		names, values = append(names, name), append(values, val)
	}
	pat := strings.Join(names, "/")
	switch pat {
	case "chats/messages":
		return ResourceRef{Kind: ResourceChat, Chat: values[0], Message: values[1]}, nil
	case "teams/channels/messages":
		return ResourceRef{Kind: ResourceChannel, Team: values[0], Channel: values[1], Message: values[2]}, nil
	case "teams/channels/messages/replies":
		return ResourceRef{Kind: ResourceReply, Team: values[0], Channel: values[1], Parent: values[2], Message: values[3]}, nil
	case "users/messages":
		return ResourceRef{Kind: ResourceMail, User: values[0], Message: values[1]}, nil
	}
	return ResourceRef{}, fmt.Errorf("graph: resource %q is not a chat, channel or mail message", res)
}

// eventID is the stable id of the event for a resource, for dedup across redeliveries.
func (r ResourceRef) eventID() string {
	switch r.Kind {
	case ResourceChat:
		return "graph:chats/" + r.Chat + "/messages/" + r.Message
	case ResourceChannel:
		return "graph:teams/" + r.Team + "/channels/" + r.Channel + "/messages/" + r.Message
	case ResourceReply:
		return "graph:teams/" + r.Team + "/channels/" + r.Channel + "/messages/" + r.Parent + "/replies/" + r.Message
	}
	return "graph:mail/" + r.Message
}

func (r ResourceRef) path() string {
	switch r.Kind {
	case ResourceChat:
		return "/chats/" + pathID(r.Chat) + "/messages/" + pathID(r.Message)
	case ResourceChannel:
		return "/teams/" + pathID(r.Team) + "/channels/" + pathID(r.Channel) + "/messages/" + pathID(r.Message)
	case ResourceReply:
		return "/teams/" + pathID(r.Team) + "/channels/" + pathID(r.Channel) + "/messages/" + pathID(r.Parent) + "/replies/" + pathID(r.Message)
	}
	return "/users/" + pathID(r.User) + "/messages/" + pathID(r.Message)
}

// fetchCache remembers the outcome of recent notification fetches by resource path, so the
// redelivery of a batch that ran out of fetch budget fetches only what it did not get to.
type fetchCache struct {
	mu    sync.Mutex
	m     map[string]fetchedItem
	order []string // oldest first
}

type fetchedItem struct {
	ev adapter.Event
	ok bool
}

// maxFetchCache bounds the fetch outcomes kept: a full batch (maxNotifications) and more.
const maxFetchCache = 2 * maxNotifications

func (c *fetchCache) get(key string) (adapter.Event, bool, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	it, hit := c.m[key]
	return it.ev, it.ok, hit
}

// forget drops every remembered outcome.
func (c *fetchCache) forget() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.m, c.order = nil, nil
}

func (c *fetchCache) put(key string, ev adapter.Event, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[string]fetchedItem{}
	}
	if _, dup := c.m[key]; !dup {
		c.order = append(c.order, key)
	}
	c.m[key] = fetchedItem{ev: ev, ok: ok}
	for len(c.order) > maxFetchCache {
		delete(c.m, c.order[0])
		c.order = c.order[1:]
	}
}

// seenChat moves the resync cursor of a chat to id if it is newer.
func (a *Adapter) seenChat(chat, id string) {
	a.pollMu.Lock()
	defer a.pollMu.Unlock()
	if last := a.poll.chatLast[chat]; last == "" || idAfter(id, last) {
		a.poll.setChat(chat, id, a.opts.Chats)
	}
}

func equalSecret(a, b string) bool { return subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1 }

// textResponse is a plain-text answer; nosniff keeps a browser from reading it as HTML
// (the validation echo carries caller-chosen text).
func textResponse(status int, body string) *adapter.WebhookResponse {
	return &adapter.WebhookResponse{Status: status, Body: []byte(body), Header: http.Header{
		"Content-Type": {"text/plain; charset=utf-8"}, "X-Content-Type-Options": {"nosniff"}}}
}

// HandleWebhook answers Graph's validation handshake, turns change notifications into
// events (fetching each message, dropping the bot's own and system messages) and handles
// lifecycle events. Items whose clientState does not match are dropped; a POST with only such
// items is refused with 401. If a message cannot be fetched for a temporary reason, or not
// within Options.FetchTimeout, the answer is 503 so Graph redelivers; it carries the events
// fetched so far, which the host queues too (events are deduplicated by id). Fetch outcomes
// are remembered, so a redelivery fetches only the items not fetched before.
func (a *Adapter) HandleWebhook(ctx context.Context, req *adapter.WebhookRequest) (*adapter.WebhookResponse, []adapter.Event, error) {
	// The validation handshake is a POST with ?validationToken= (Graph docs, "Receive change
	// notifications through webhooks", notificationUrl validation): any other method gets 405
	// below, never the echo.
	if tok := req.Query.Get("validationToken"); tok != "" && req.Method == http.MethodPost {
		if len(tok) > maxValidationToken {
			return textResponse(http.StatusBadRequest, "validationToken too long"), nil,
				adapter.Errorf(adapter.KindInvalidRequest, "graph: validationToken of %d bytes (limit %d)", len(tok), maxValidationToken)
		}
		// Query values are already URL-decoded, as Graph wants them echoed.
		return textResponse(http.StatusOK, tok), nil, nil
	}
	if req.Method != http.MethodPost {
		return textResponse(http.StatusMethodNotAllowed, "POST only"),
			nil, adapter.Errorf(adapter.KindInvalidRequest, "graph: webhook %s: POST only", req.Method)
	}
	batch, err := ParseNotifications(req.Body)
	if err != nil {
		return textResponse(http.StatusBadRequest, "bad notification body"), nil, &adapter.Error{Kind: adapter.KindInvalidRequest, Platform: adapter.PlatformGraph, Message: err.Error()}
	}
	var items []Notification
	bad := 0
	for _, n := range batch.Value {
		if a.opts.ClientState == "" || !equalSecret(n.ClientState, a.opts.ClientState) {
			bad++
			continue
		}
		items = append(items, n)
	}
	if bad > 0 {
		a.log.LogAttrs(ctx, slog.LevelWarn, "graph notification items with a wrong clientState dropped",
			slog.String("platform", "graph"), slog.String("bot", a.opts.Bot), slog.Int("dropped", bad))
	}
	if len(items) == 0 && bad > 0 {
		return textResponse(http.StatusUnauthorized, "clientState mismatch"), nil,
			&adapter.Error{Kind: adapter.KindUnauthorized, Platform: adapter.PlatformGraph, Message: "notification clientState does not match"}
	}
	fctx, cancel := context.WithTimeout(ctx, a.opts.FetchTimeout)
	defer cancel()
	var (
		mu     sync.Mutex
		events []adapter.Event
		retry  error
		wg     sync.WaitGroup
		seen   = map[string]bool{}
	)
	addEvents := func(evs []adapter.Event, err error) {
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			retry = err
			return
		}
		for _, ev := range evs {
			if !seen[ev.ID] {
				seen[ev.ID] = true
				events = append(events, ev)
			}
		}
	}
	// run runs f with one of the adapter's fetch slots; an item that gets no slot before the
	// fetch budget ends asks for a redelivery.
	run := func(f func()) {
		wg.Go(func() {
			if err := a.fetchSem.Acquire(fctx, 1); err != nil {
				addEvents(nil, err)
				return
			}
			defer a.fetchSem.Release(1)
			f()
		})
	}
	for _, n := range items {
		if n.LifecycleEvent != "" {
			run(func() { addEvents(a.lifecycle(fctx, n)) })
			continue
		}
		if n.ChangeType != "" && !strings.Contains(n.ChangeType, "created") {
			continue // updates and deletions are not messages
		}
		ref, err := ParseResource(n.Resource)
		if err != nil {
			a.log.LogAttrs(ctx, slog.LevelWarn, "graph notification for an unknown resource ignored",
				slog.String("platform", "graph"), slog.String("error", err.Error()))
			continue
		}
		// The resource is fetched with the bot's token: only one under the subscription the
		// notification names is trusted (a leaked clientState must not read other mailboxes
		// or chats).
		if ok, err := a.covers(ctx, n.SubscriptionID, ref); err != nil {
			addEvents(nil, err)
			continue
		} else if !ok {
			a.log.LogAttrs(ctx, slog.LevelWarn, "graph notification for a resource outside its subscription refused",
				slog.String("platform", "graph"), slog.String("bot", a.opts.Bot), slog.String("subscription", truncate(n.SubscriptionID, 64)),
				slog.String("resource", truncate(n.Resource, 200)))
			continue
		}
		if ref.Kind == ResourceChat {
			a.seenChat(ref.Chat, ref.Message)
		}
		if ev, ok, hit := a.fetched.get(ref.path()); hit {
			// Fetched for an earlier delivery of this item that asked for a redelivery: no
			// slot needed, so each redelivery of a big batch gets further.
			if ok {
				addEvents([]adapter.Event{ev}, nil)
			}
			continue
		}
		run(func() {
			ev, ok, err := a.fetchEvent(fctx, ref)
			if err == nil {
				a.fetched.put(ref.path(), ev, ok)
			}
			if ok {
				addEvents([]adapter.Event{ev}, nil)
			} else if err != nil {
				addEvents(nil, err)
			}
		})
	}
	wg.Wait()
	if retry != nil {
		// The events fetched so far go with the 503: the host queues them (deduplicated by id
		// when Graph redelivers), so a batch too big for one fetch budget is not refetched
		// from scratch, and lost, on every redelivery.
		a.log.LogAttrs(ctx, slog.LevelWarn, "graph notification not fully processed: asking for redelivery",
			slog.String("platform", "graph"), slog.Int("events", len(events)), slog.String("error", retry.Error()))
		return textResponse(http.StatusServiceUnavailable, "try again"), events, nil
	}
	return &adapter.WebhookResponse{Status: http.StatusAccepted}, events, nil
}

// maxSubIDs bounds the subscription ids remembered (current and recent ones).
const maxSubIDs = 256

// rememberSub records that id is (or was) this adapter's subscription to resource.
func (a *Adapter) rememberSub(id, resource string) {
	if id == "" {
		return
	}
	a.subsMu.Lock()
	defer a.subsMu.Unlock()
	if a.subIDs == nil {
		a.subIDs = map[string]string{}
	}
	if _, ok := a.subIDs[id]; !ok {
		a.subIDOrder = append(a.subIDOrder, id)
	}
	a.subIDs[id] = resource
	for len(a.subIDOrder) > maxSubIDs {
		delete(a.subIDs, a.subIDOrder[0])
		a.subIDOrder = a.subIDOrder[1:]
	}
}

// subscriptionResource returns the resource of this adapter's subscription id (current,
// or one it had recently), or false for an id that is not ours.
func (a *Adapter) subscriptionResource(ctx context.Context, id string) (string, bool) {
	if id == "" {
		return "", false
	}
	a.subsMu.Lock()
	res, ok := a.subIDs[id]
	subs := make([]*subscription, 0, len(a.subs))
	for _, s := range a.subs {
		subs = append(subs, s)
	}
	a.subsMu.Unlock()
	if ok {
		return res, true
	}
	// A subscription restored from the store (created by an earlier run) is known only
	// through its manager.
	for _, s := range subs {
		if t, err := s.m.Token(ctx); err == nil && t.Value == id {
			a.rememberSub(id, s.resource)
			return s.resource, true
		}
	}
	return "", false
}

// covers reports whether ref lies under the resource of subscription subID: the chat of a
// chats/{id}/messages subscription, any chat for getAllMessages, the bot's own mailbox for
// a mail subscription. Channel messages are under no subscription this adapter makes. err
// is set only when the bot's own user cannot be looked up (worth a redelivery).
func (a *Adapter) covers(ctx context.Context, subID string, ref ResourceRef) (bool, error) {
	res, ok := a.subscriptionResource(ctx, subID)
	if !ok {
		return false, nil
	}
	lower := strings.ToLower(res)
	switch {
	case lower == "chats/getallmessages" || strings.HasSuffix(lower, "/chats/getallmessages"):
		return ref.Kind == ResourceChat, nil
	case strings.HasPrefix(lower, "chats/") && strings.HasSuffix(lower, "/messages"):
		chat := res[len("chats/") : len(res)-len("/messages")]
		return ref.Kind == ResourceChat && strings.EqualFold(ref.Chat, chat), nil
	case strings.HasSuffix(lower, "/messages") && (strings.HasPrefix(lower, "me/") || strings.HasPrefix(lower, "users/")):
		if ref.Kind != ResourceMail {
			return false, nil
		}
		me, err := a.self(ctx)
		if err != nil {
			return false, err
		}
		user := ref.User
		// Graph names a mailbox in notifications as users/{user-id}@{tenant-id}/messages/…
		// (the documented change notification shape): the part before @{tenant GUID} is the id.
		if i := strings.LastIndexByte(user, '@'); i > 0 && isGUID(user[i+1:]) {
			user = user[:i]
		}
		for _, own := range []string{me.ID, me.UserPrincipalName, me.Mail, a.opts.User} {
			if own != "" && (strings.EqualFold(ref.User, own) || strings.EqualFold(user, own)) {
				return true, nil
			}
		}
	}
	return false, nil
}

// fetchEvent fetches the message a notification names and turns it into an event. ok is
// false for messages that are not events (the bot's own, system messages, deleted ones); err
// is set only for failures worth a redelivery.
func (a *Adapter) fetchEvent(ctx context.Context, ref ResourceRef) (ev adapter.Event, ok bool, err error) {
	me, err := a.self(ctx)
	if err != nil {
		return ev, false, err
	}
	var raw json.RawMessage
	if err := a.client.Do(ctx, http.MethodGet, ref.path(), nil, &raw); err != nil {
		var ae *APIError
		if errors.As(err, &ae) && !ae.Temporary() && ae.StatusCode != http.StatusUnauthorized {
			a.log.LogAttrs(ctx, slog.LevelInfo, "graph notified message not fetched: dropped",
				slog.String("platform", "graph"), slog.Int("status", ae.StatusCode), slog.String("code", ae.Code))
			return ev, false, nil
		}
		return ev, false, err
	}
	if ref.Kind == ResourceMail {
		ev, ok = a.mailEvent(ref, raw, me)
	} else {
		ev, ok = a.chatEvent(ref, raw, me)
	}
	return ev, ok, nil
}

func (a *Adapter) chatEvent(ref ResourceRef, raw json.RawMessage, me *User) (adapter.Event, bool) {
	var m ChatMessage
	if json.Unmarshal(raw, &m) != nil {
		return adapter.Event{}, false
	}
	if m.From == nil || m.From.User == nil || m.From.User.ID == "" || (m.MessageType != "" && m.MessageType != "message") {
		return adapter.Event{}, false // system events and app posts
	}
	if strings.EqualFold(m.From.User.ID, me.ID) {
		return adapter.Event{}, false // the bot's own message
	}
	ev := adapter.Event{ID: ref.eventID(), Bot: a.opts.Bot, Platform: adapter.PlatformGraph, Kind: adapter.EventMessage,
		Sender: adapter.Sender{ID: m.From.User.ID, Name: m.From.User.DisplayName}, Text: textOf(m.Body),
		Time: m.CreatedDateTime, Raw: raw}
	switch ref.Kind {
	case ResourceChat:
		ev.Chat = adapter.Chat{ID: ref.Chat, Type: adapter.ChatGroup}
		if strings.HasSuffix(ref.Chat, "@unq.gbl.spaces") {
			ev.Chat.Type = adapter.ChatDirect
		}
	default:
		ev.Chat = adapter.Chat{ID: ref.Team + "/" + ref.Channel, Type: adapter.ChatChannel}
	}
	for _, at := range m.Attachments {
		if at.ContentType == "reference" {
			ev.Attachments = append(ev.Attachments, adapter.Attachment{Type: adapter.AttachFile, ID: at.ID, Name: at.Name, URL: at.ContentURL})
		}
	}
	return ev, true
}

func (a *Adapter) mailEvent(ref ResourceRef, raw json.RawMessage, me *User) (adapter.Event, bool) {
	var m MailMessage
	if json.Unmarshal(raw, &m) != nil || m.IsDraft || m.Removed != nil || m.From == nil {
		return adapter.Event{}, false
	}
	from := m.From.EmailAddress.Address
	if strings.EqualFold(from, me.Mail) || strings.EqualFold(from, me.UserPrincipalName) || strings.EqualFold(from, a.opts.User) {
		return adapter.Event{}, false
	}
	if ref.Message == "" {
		ref = ResourceRef{Kind: ResourceMail, Message: m.ID}
	}
	return adapter.Event{ID: ref.eventID(), Bot: a.opts.Bot, Platform: adapter.PlatformGraph, Kind: adapter.EventMessage,
		Chat: adapter.Chat{ID: from, Type: adapter.ChatMail}, Sender: adapter.Sender{ID: from, Name: m.From.EmailAddress.Name},
		Text: textOf(m.Body), Time: m.ReceivedDateTime, Raw: raw}, true
}

// ---- subscriptions ----

type subscription struct {
	kind     string // SubscribeChats or SubscribeMail
	resource string
	m        *tokenmgr.Manager
}

// subSource keeps one subscription alive through the token manager's refresh-ahead
// machinery: the "token" is the subscription id, its expiry the subscription's, its state the
// id; a refresh renews (PATCH) and recreates it when Graph no longer knows it.
type subSource struct {
	a        *Adapter
	resource string
}

func (s *subSource) Token(ctx context.Context) (tokenmgr.Token, error) {
	t, _, err := s.TokenState(ctx, nil)
	return t, err
}

func (s *subSource) TokenState(ctx context.Context, state []byte) (tokenmgr.Token, []byte, error) {
	a := s.a
	exp := time.Now().Add(a.opts.SubscriptionLifetime).UTC().Truncate(time.Second)
	var out struct {
		ID         string    `json:"id"`
		Expiration time.Time `json:"expirationDateTime"`
	}
	if id := string(state); id != "" {
		err := a.client.Do(ctx, http.MethodPatch, "/subscriptions/"+pathID(id), map[string]any{"expirationDateTime": exp}, &out)
		if err == nil {
			a.rememberSub(id, s.resource)
			return tokenmgr.Token{Value: id, ExpiresAt: out.Expiration}, state, nil
		}
		if !isNotFound(err) {
			return tokenmgr.Token{}, nil, err
		}
		a.log.LogAttrs(ctx, slog.LevelWarn, "graph subscription gone: recreating", slog.String("platform", "graph"),
			slog.String("resource", s.resource))
	}
	lifecycle := a.opts.LifecycleURL
	if lifecycle == "" {
		lifecycle = a.opts.NotificationURL
	}
	body := map[string]any{"changeType": "created", "notificationUrl": a.opts.NotificationURL, "lifecycleNotificationUrl": lifecycle,
		"resource": s.resource, "expirationDateTime": exp, "clientState": a.opts.ClientState, "latestSupportedTlsVersion": "v1_2"}
	if err := a.client.Do(ctx, http.MethodPost, "/subscriptions", body, &out); err != nil {
		return tokenmgr.Token{}, nil, err
	}
	if out.Expiration.IsZero() {
		out.Expiration = exp
	}
	a.rememberSub(out.ID, s.resource)
	return tokenmgr.Token{Value: out.ID, ExpiresAt: out.Expiration}, []byte(out.ID), nil
}

// Start creates the subscriptions (when a NotificationURL is set) and keeps them renewed
// ahead of expiry until Close; without a NotificationURL it prepares polling. It looks up
// the bot's own user, so the token must work: it is the place to fail at start. Calling it
// again keeps the subscriptions already running and creates only missing ones.
func (a *Adapter) Start(ctx context.Context) error {
	me, err := a.self(ctx)
	if err != nil {
		return errorf(err, "graph: start")
	}
	if a.opts.NotificationURL == "" {
		return nil
	}
	var subs []*subscription
	mailbox := "me"
	if a.opts.User != "" {
		mailbox = "users/" + a.opts.User
	}
	for _, k := range a.opts.Subscribe {
		switch k {
		case SubscribeMail:
			subs = append(subs, &subscription{kind: k, resource: mailbox + "/mailFolders('Inbox')/messages"})
		case SubscribeChats:
			if len(a.opts.Chats) == 0 {
				subs = append(subs, &subscription{kind: k, resource: "users/" + me.ID + "/chats/getAllMessages"})
			}
			for _, c := range a.opts.Chats {
				subs = append(subs, &subscription{kind: k, resource: "chats/" + c + "/messages"})
			}
		}
	}
	tmo := a.opts.TokenOptions
	tmo.Store, tmo.Logger, tmo.Platform = a.opts.Store, a.opts.Logger, "graph"
	for _, s := range subs {
		a.subsMu.Lock()
		_, running := a.subs[s.resource]
		a.subsMu.Unlock()
		if running {
			continue // Start called again (or retried after a partial failure): keep it
		}
		key := a.tokens.Key() + "/subscription/" + s.resource
		s.m = tokenmgr.New(key, &subSource{a: a, resource: s.resource}, tmo)
		if _, err := s.m.Token(ctx); err != nil {
			s.m.Close()
			return errorf(err, "graph: subscribe to %s", s.resource)
		}
		a.subsMu.Lock()
		if a.isClosed() {
			a.subsMu.Unlock()
			s.m.Close()
			return adapter.Errorf(adapter.KindUnavailable, "graph: adapter closed")
		}
		if _, dup := a.subs[s.resource]; dup {
			a.subsMu.Unlock()
			s.m.Close() // a concurrent Start got there first
			continue
		}
		a.subs[s.resource] = s
		a.subsMu.Unlock()
	}
	// Cursors let a "missed" or "subscriptionRemoved" lifecycle event resync. Without
	// Options.Chats, chats no notification named are resynced from now on (Teams message
	// ids are epoch milliseconds).
	if a.subscribed(SubscribeChats) {
		a.pollMu.Lock()
		if a.poll.chatSince == "" {
			a.poll.chatSince = strconv.FormatInt(time.Now().UnixMilli()-1, 10)
		}
		a.pollMu.Unlock()
		for _, c := range a.opts.Chats {
			if _, newest, err := a.newChatMessages(ctx, c, ""); err == nil {
				a.seenChat(c, cmp.Or(newest, "0"))
			}
		}
	}
	if a.subscribed(SubscribeMail) {
		if err := a.baselineMail(ctx); err != nil {
			a.log.LogAttrs(ctx, slog.LevelWarn, "graph mail baseline failed", slog.String("platform", "graph"), slog.String("error", err.Error()))
		}
	}
	return nil
}

func (a *Adapter) subscribed(kind string) bool {
	for _, k := range a.opts.Subscribe {
		if k == kind {
			return true
		}
	}
	return false
}

// Subscriptions returns the ids of the live subscriptions by resource.
func (a *Adapter) Subscriptions(ctx context.Context) (map[string]string, error) {
	a.subsMu.Lock()
	subs := make([]*subscription, 0, len(a.subs))
	for _, s := range a.subs {
		subs = append(subs, s)
	}
	a.subsMu.Unlock()
	out := map[string]string{}
	for _, s := range subs {
		t, err := s.m.Token(ctx)
		if err != nil {
			return nil, errorf(err, "graph: subscription %s", s.resource)
		}
		out[s.resource] = t.Value
	}
	return out, nil
}

// lifecycle handles one lifecycle event: reauthorizationRequired renews the subscription,
// subscriptionRemoved recreates it and resyncs, missed resyncs.
func (a *Adapter) lifecycle(ctx context.Context, n Notification) ([]adapter.Event, error) {
	var sub *subscription
	a.subsMu.Lock()
	subs := make([]*subscription, 0, len(a.subs))
	for _, s := range a.subs {
		subs = append(subs, s)
	}
	a.subsMu.Unlock()
	for _, s := range subs {
		if t, err := s.m.Token(ctx); err == nil && t.Value == n.SubscriptionID {
			sub = s
		}
	}
	a.log.LogAttrs(ctx, slog.LevelInfo, "graph lifecycle event", slog.String("platform", "graph"),
		slog.String("event", n.LifecycleEvent), slog.Bool("known", sub != nil))
	switch n.LifecycleEvent {
	case "reauthorizationRequired", "subscriptionRemoved":
		if sub != nil {
			sub.m.Invalidate(n.SubscriptionID) // renews (PATCH) or recreates in the background
		}
		if n.LifecycleEvent == "reauthorizationRequired" || sub == nil {
			return nil, nil
		}
		if sub.kind == SubscribeMail {
			return a.resyncMail(ctx)
		}
		return a.resyncChats(ctx)
	case "missed":
		if sub != nil && sub.kind == SubscribeChats {
			return a.resyncChats(ctx)
		}
		return a.resyncMail(ctx)
	}
	return nil, nil
}

// isGUID reports whether s is a GUID in its 8-4-4-4-12 hex form.
func isGUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case i == 8 || i == 13 || i == 18 || i == 23:
			if c != '-' {
				return false
			}
		case '0' <= c && c <= '9', 'a' <= c && c <= 'f', 'A' <= c && c <= 'F':
		default:
			return false
		}
	}
	return true
}
