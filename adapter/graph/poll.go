package graph

import (
	"cmp"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/seed-a64d9e1f/chatwire/adapter"
)

// pollState holds the receive cursors. Committed cursors move only when the next Poll call
// shows the previous batch was taken (at-least-once delivery).
type pollState struct {
	baselined bool
	mailDelta string // committed delta link
	// mailSince is when mail watching began (the mail baseline): mail received before it
	// (less mailClockSlack) is never a new message, whatever a delta round says.
	mailSince    time.Time
	chatLast     map[string]string // chat id → newest message id seen (committed); at most maxChatCursors
	chatTouch    map[string]uint64 // chat id → chatClock when its cursor last moved (for eviction)
	chatClock    uint64
	pendingDelta string
	pendingChat  map[string]string
	// chatSince is the cursor of a chat without one when Options.Chats is empty (a Teams
	// message id, i.e. epoch milliseconds): the moment Start ran.
	chatSince string
	// polledChats is the chat list last logged, so the log says it once per change.
	polledChats string
	// skipWarned holds the chats warned about as unreadable, so the log says it once per
	// chat (until the chat is read again).
	skipWarned map[string]bool
}

func (p *pollState) commit(pinned []string) {
	if p.pendingDelta != "" {
		p.mailDelta = p.pendingDelta
		p.pendingDelta = ""
	}
	for k, v := range p.pendingChat {
		p.setChat(k, v, pinned)
	}
	p.pendingChat = nil
}

// setChat sets the cursor of chat, then drops the least recently moved cursors beyond
// maxChatCursors, never those of pinned chats (Options.Chats).
func (p *pollState) setChat(chat, id string, pinned []string) {
	if p.chatLast == nil {
		p.chatLast = map[string]string{}
	}
	if p.chatTouch == nil {
		p.chatTouch = map[string]uint64{}
	}
	p.chatLast[chat] = id
	p.chatClock++
	p.chatTouch[chat] = p.chatClock
	for len(p.chatLast) > maxChatCursors {
		victim, at := "", uint64(0)
		for c := range p.chatLast {
			if slices.Contains(pinned, c) {
				continue
			}
			if t := p.chatTouch[c]; victim == "" || t < at {
				victim, at = c, t
			}
		}
		if victim == "" {
			return
		}
		delete(p.chatLast, victim)
		delete(p.chatTouch, victim)
	}
}

func (a *Adapter) mailFolder() string {
	if a.opts.User != "" {
		return "/users/" + pathID(a.opts.User) + "/mailFolders/inbox/messages"
	}
	return "/me/mailFolders/inbox/messages"
}

// maxChatCursors bounds the chat resync cursors kept (chatLast). Every chat the user is in
// can be named by a getAllMessages notification, and polling without Options.Chats watches
// up to maxChatPages × 50 = 2,000 listed chats, so the bound is twice that: 4,096 entries of
// about 100 bytes. Past it the least recently moved cursor is dropped; that chat's next
// resync then starts at chatSince (repeats are dropped by event id, nothing is lost).
const maxChatCursors = 4096

// mailClockSlack absorbs clock skew between this host and Exchange when mail is compared
// with mailSince.
const mailClockSlack = 10 * time.Minute

// deltaMail follows a mail delta query from link (empty: start) to its deltaLink and returns
// the messages seen and the new deltaLink. The first round asks for changeType=created:
// Graph's message delta otherwise reports every change (an old mail marked read comes back
// as an item, a deleted one as @removed), and Graph keeps the option in the links it hands
// back (learn.microsoft.com/graph/api/message-delta, "changeType" query parameter;
// learn.microsoft.com/graph/delta-query-messages).
func (a *Adapter) deltaMail(ctx context.Context, link string) ([]json.RawMessage, string, error) {
	if link == "" {
		link = a.mailFolder() + "/delta?changeType=created"
	}
	var all []json.RawMessage
	for range 100 {
		var page struct {
			Value     []json.RawMessage `json:"value"`
			NextLink  string            `json:"@odata.nextLink"`
			DeltaLink string            `json:"@odata.deltaLink"`
		}
		if err := a.client.Do(ctx, http.MethodGet, link, nil, &page); err != nil {
			return nil, "", err
		}
		all = append(all, page.Value...)
		if page.DeltaLink != "" {
			return all, page.DeltaLink, nil
		}
		if page.NextLink == "" {
			break
		}
		link = page.NextLink
	}
	return all, link, nil
}

// baselineMail sets the mail cursor to "now" without emitting history.
func (a *Adapter) baselineMail(ctx context.Context) error {
	a.markMailSince(time.Now())
	_, link, err := a.deltaMail(ctx, "")
	if err != nil {
		return err
	}
	a.pollMu.Lock()
	a.poll.mailDelta = link
	a.pollMu.Unlock()
	return nil
}

// markMailSince records when mail watching began, once.
func (a *Adapter) markMailSince(t time.Time) {
	a.pollMu.Lock()
	if a.poll.mailSince.IsZero() {
		a.poll.mailSince = t
	}
	a.pollMu.Unlock()
}

// mailEvents turns the items of a mail delta round into events. Only created mail is a
// message: @removed items are deletions, and an item received before mail watching began
// (less mailClockSlack) is an update of an old mail (read, flagged, moved), even if the
// service did not apply changeType=created.
func (a *Adapter) mailEvents(ctx context.Context, msgs []json.RawMessage) ([]adapter.Event, error) {
	me, err := a.self(ctx)
	if err != nil {
		return nil, err
	}
	a.pollMu.Lock()
	since := a.poll.mailSince
	a.pollMu.Unlock()
	if !since.IsZero() {
		since = since.Add(-mailClockSlack)
	}
	var evs []adapter.Event
	skipped := 0
	for _, raw := range msgs {
		if mailChange(raw, since) != changeCreated {
			skipped++
			continue
		}
		if ev, ok := a.mailEvent(ResourceRef{Kind: ResourceMail}, raw, me); ok {
			evs = append(evs, ev)
		}
	}
	if skipped > 0 {
		a.log.LogAttrs(ctx, slog.LevelDebug, "graph mail delta: updates and deletions are not messages",
			slog.String("platform", "graph"), slog.String("bot", a.opts.Bot), slog.Int("skipped", skipped))
	}
	return evs, nil
}

// Kinds of change in a mail delta round.
const (
	changeCreated = "created"
	changeUpdated = "updated"
	changeRemoved = "removed"
)

// mailChange classifies a mail delta item: "removed" for an @removed item, "updated" for a
// message received before since (when since is set), "created" otherwise.
func mailChange(raw json.RawMessage, since time.Time) string {
	var m struct {
		Removed          json.RawMessage `json:"@removed"`
		ReceivedDateTime time.Time       `json:"receivedDateTime"`
		CreatedDateTime  time.Time       `json:"createdDateTime"`
	}
	if json.Unmarshal(raw, &m) != nil {
		return changeUpdated // not a message: never emitted
	}
	if len(m.Removed) > 0 && string(m.Removed) != "null" {
		return changeRemoved
	}
	at := m.ReceivedDateTime
	if at.IsZero() {
		at = m.CreatedDateTime
	}
	if !since.IsZero() && !at.IsZero() && at.Before(since) {
		return changeUpdated
	}
	return changeCreated
}

// resyncMail fetches the mail changes since the cursor and advances it (after a "missed"
// or "subscriptionRemoved" lifecycle event). Repeats are dropped by the host by event id.
func (a *Adapter) resyncMail(ctx context.Context) ([]adapter.Event, error) {
	a.pollMu.Lock()
	link := a.poll.mailDelta
	a.pollMu.Unlock()
	msgs, next, err := a.deltaMail(ctx, link)
	if err != nil {
		return nil, err
	}
	evs, err := a.mailEvents(ctx, msgs)
	if err != nil {
		return nil, err
	}
	a.pollMu.Lock()
	a.poll.mailDelta = next
	a.pollMu.Unlock()
	return evs, nil
}

// newChatMessages lists a chat newest first and returns the messages after last (oldest
// first) and the newest id. With last empty it returns no messages (a baseline).
func (a *Adapter) newChatMessages(ctx context.Context, chat, last string) ([]json.RawMessage, string, error) {
	link := "/chats/" + pathID(chat) + "/messages?" + url.Values{"$top": {"50"}, "$orderby": {"createdDateTime desc"}}.Encode()
	var out []json.RawMessage
	newest := last
	for page := 0; page < 20 && link != ""; page++ {
		var resp struct {
			Value    []json.RawMessage `json:"value"`
			NextLink string            `json:"@odata.nextLink"`
		}
		if err := a.client.Do(ctx, http.MethodGet, link, nil, &resp); err != nil {
			return nil, "", err
		}
		for _, raw := range resp.Value {
			var m struct {
				ID string `json:"id"`
			}
			json.Unmarshal(raw, &m)
			if page == 0 && newest == last && m.ID != "" && idAfter(m.ID, last) {
				newest = m.ID
			}
			if last == "" || !idAfter(m.ID, last) {
				slices.Reverse(out)
				return out, newest, nil
			}
			out = append(out, raw)
		}
		link = resp.NextLink
	}
	slices.Reverse(out)
	return out, newest, nil
}

// idAfter compares Teams message ids (epoch milliseconds).
func idAfter(a, b string) bool {
	x, err1 := strconv.ParseInt(a, 10, 64)
	y, err2 := strconv.ParseInt(b, 10, 64)
	if err1 != nil || err2 != nil {
		return a > b
	}
	return x > y
}

func (a *Adapter) chatEvents(ctx context.Context, chat string, msgs []json.RawMessage) ([]adapter.Event, error) {
	me, err := a.self(ctx)
	if err != nil {
		return nil, err
	}
	var evs []adapter.Event
	for _, raw := range msgs {
		var m struct {
			ID string `json:"id"`
		}
		json.Unmarshal(raw, &m)
		if ev, ok := a.chatEvent(ResourceRef{Kind: ResourceChat, Chat: chat, Message: m.ID}, raw, me); ok {
			evs = append(evs, ev)
		}
	}
	return evs, nil
}

// maxChatPages bounds the pages of GET /me/chats read (50 chats each).
const maxChatPages = 40

// listChats returns the ids of the user's chats (GET /me/chats, every page up to
// maxChatPages), for polling and resyncs when Options.Chats is empty.
func (a *Adapter) listChats(ctx context.Context) ([]string, error) {
	link := a.drivePrefix() + "/chats?$top=50"
	var ids []string
	for page := 0; page < maxChatPages && link != ""; page++ {
		var resp struct {
			Value []struct {
				ID string `json:"id"`
			} `json:"value"`
			NextLink string `json:"@odata.nextLink"`
		}
		if err := a.client.Do(ctx, http.MethodGet, link, nil, &resp); err != nil {
			return nil, err
		}
		for _, c := range resp.Value {
			if c.ID != "" {
				ids = append(ids, c.ID)
			}
		}
		link = resp.NextLink
	}
	if link != "" {
		a.log.LogAttrs(ctx, slog.LevelWarn, "graph chat list truncated: set chats to the ones to watch",
			slog.String("platform", "graph"), slog.String("bot", a.opts.Bot), slog.Int("chats", len(ids)))
	}
	return ids, nil
}

// chatsToWatch returns the chats polled and resynced: Options.Chats, else the user's chats
// (GET /me/chats) plus any chat a notification named. It logs the list once per change.
func (a *Adapter) chatsToWatch(ctx context.Context) (chats []string, discovered bool, err error) {
	source := "options"
	if chats = a.opts.Chats; len(chats) == 0 {
		if chats, err = a.listChats(ctx); err != nil {
			return nil, true, err
		}
		discovered, source = true, "GET /me/chats"
		if a.opts.NotificationURL != "" {
			a.pollMu.Lock()
			for c := range a.poll.chatLast {
				if !slices.Contains(chats, c) {
					chats = append(chats, c) // named by a notification
				}
			}
			a.pollMu.Unlock()
		}
	}
	// Sorted, so a list that did not change (notified chats come from a map) is logged once.
	chats = slices.Clone(chats)
	slices.Sort(chats)
	list := strings.Join(chats, ",")
	a.pollMu.Lock()
	changed := list != a.poll.polledChats
	a.poll.polledChats = list
	a.pollMu.Unlock()
	if changed {
		a.log.LogAttrs(ctx, slog.LevelInfo, "graph watching chats", slog.String("platform", "graph"), slog.String("bot", a.opts.Bot),
			slog.String("source", source), slog.Int("count", len(chats)), slog.String("chats", truncate(list, 1000)))
	}
	return chats, discovered, nil
}

// skippable reports whether a discovered chat cannot be read for good (left, deleted, no
// access): it is skipped rather than failing the whole sweep.
func skippable(err error) bool {
	e, ok := errorsAs[*APIError](err)
	return ok && (e.StatusCode == http.StatusNotFound || e.StatusCode == http.StatusForbidden)
}

// logSkipped warns that a chat is skipped, once per chat; later sweeps log it at debug level.
func (a *Adapter) logSkipped(ctx context.Context, chat string, err error) {
	a.pollMu.Lock()
	level := slog.LevelDebug
	if !a.poll.skipWarned[chat] {
		if a.poll.skipWarned == nil {
			a.poll.skipWarned = map[string]bool{}
		}
		a.poll.skipWarned[chat] = true
		level = slog.LevelWarn
	}
	a.pollMu.Unlock()
	a.log.LogAttrs(ctx, level, "graph chat not readable: skipped", slog.String("platform", "graph"),
		slog.String("bot", a.opts.Bot), slog.String("chat", chat), slog.String("error", err.Error()))
}

// chatReadable forgets that chat was warned about as unreadable.
func (a *Adapter) chatReadable(chat string) {
	a.pollMu.Lock()
	delete(a.poll.skipWarned, chat)
	a.pollMu.Unlock()
}

// resyncChats lists the watched chats for messages after the cursors. The cursors move only
// once every chat was read: on an error no events are returned (the notification is
// redelivered), so a cursor moved early would lose that chat's messages for good.
func (a *Adapter) resyncChats(ctx context.Context) ([]adapter.Event, error) {
	chats, discovered, err := a.chatsToWatch(ctx)
	if err != nil {
		return nil, err
	}
	var evs []adapter.Event
	moved := map[string]string{}
	for _, chat := range chats {
		a.pollMu.Lock()
		last := a.poll.chatLast[chat]
		if last == "" && discovered {
			last = a.poll.chatSince // a chat no notification named: everything since Start
		}
		a.pollMu.Unlock()
		if last == "" {
			continue
		}
		msgs, newest, err := a.newChatMessages(ctx, chat, last)
		if discovered && skippable(err) {
			a.logSkipped(ctx, chat, err)
			continue
		}
		if err != nil {
			return nil, err
		}
		a.chatReadable(chat)
		ce, err := a.chatEvents(ctx, chat, msgs)
		if err != nil {
			return nil, err
		}
		evs = append(evs, ce...)
		moved[chat] = newest
	}
	a.pollMu.Lock()
	for chat, newest := range moved {
		// A notification may have moved the cursor further meanwhile.
		if cur := a.poll.chatLast[chat]; cur == "" || idAfter(newest, cur) {
			a.poll.setChat(chat, newest, a.opts.Chats)
		}
	}
	a.pollMu.Unlock()
	return evs, nil
}

// Poll receives without a public notification URL: mail through a delta query, chats
// (Options.Chats, else every chat GET /me/chats lists) through a newest-first listing. The first call sets the cursors
// to "now" and returns nothing; later calls return what arrived since. A batch's cursors are
// committed when Poll is called again. When nothing is new, Poll waits PollInterval (or until
// ctx is done) and returns no events and a nil error.
func (a *Adapter) Poll(ctx context.Context) ([]adapter.Event, error) {
	if a.isClosed() {
		return nil, adapter.Errorf(adapter.KindUnavailable, "graph: adapter closed")
	}
	start := time.Now()
	a.pollMu.Lock()
	a.poll.commit(a.opts.Chats)
	st := a.poll
	st.chatLast = cloneMap(a.poll.chatLast)
	a.pollMu.Unlock()

	var evs []adapter.Event
	pendingChat := map[string]string{}
	pendingDelta := ""
	if a.subscribed(SubscribeMail) {
		a.markMailSince(start)
		msgs, link, err := a.deltaMail(ctx, st.mailDelta)
		if err != nil {
			return nil, errorf(err, "graph: poll mail")
		}
		if st.baselined && st.mailDelta != "" {
			me, err := a.mailEvents(ctx, msgs)
			if err != nil {
				return nil, errorf(err, "graph: poll mail")
			}
			evs = append(evs, me...)
		}
		pendingDelta = link
	}
	if a.subscribed(SubscribeChats) {
		chats, discovered, err := a.chatsToWatch(ctx)
		if err != nil {
			return nil, errorf(err, "graph: poll: listing chats")
		}
		for _, chat := range chats {
			last, known := st.chatLast[chat]
			if !known && discovered && st.baselined {
				// A chat that appeared after the baseline, or was unreadable at it: what
				// came after the baseline is new, its history is not.
				last = cmp.Or(st.chatSince, "0")
			}
			msgs, newest, err := a.newChatMessages(ctx, chat, last)
			if discovered && skippable(err) {
				a.logSkipped(ctx, chat, err)
				continue
			}
			if err != nil {
				return nil, errorf(err, "graph: poll chat %s", chat)
			}
			a.chatReadable(chat)
			if last == "" && newest == "" {
				newest = "0" // an empty chat: everything after it is new
			}
			ce, err := a.chatEvents(ctx, chat, msgs)
			if err != nil {
				return nil, errorf(err, "graph: poll chat %s", chat)
			}
			evs = append(evs, ce...)
			pendingChat[chat] = newest
		}
	}
	a.pollMu.Lock()
	a.poll.baselined = true
	if !st.baselined {
		// The first sweep is a baseline: commit at once, emit nothing. Chats without a
		// cursor later start from the baseline (Teams message ids are epoch milliseconds).
		if a.poll.chatSince == "" {
			a.poll.chatSince = strconv.FormatInt(start.UnixMilli()-1, 10)
		}
		if pendingDelta != "" {
			a.poll.mailDelta = pendingDelta
		}
		for k, v := range pendingChat {
			a.poll.setChat(k, v, a.opts.Chats)
		}
		evs = nil
	} else {
		a.poll.pendingDelta = pendingDelta
		a.poll.pendingChat = pendingChat
	}
	a.pollMu.Unlock()
	if len(evs) > 0 {
		return evs, nil
	}
	t := time.NewTimer(a.opts.PollInterval)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	case <-a.closed:
	}
	return nil, nil
}

func cloneMap(m map[string]string) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}
