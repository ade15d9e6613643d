// Package outbox delivers a bot's asynchronous sends: Accept stores a message in the bot's
// outbox (an [eventlog.Log]: a Redis stream in a fleet, a journal file on one host with a
// store directory, memory otherwise) and returns its id;
// Run, in the one host that holds the bot's outbox lease, sends what is stored, in order per
// recipient and within the platform's limits ([pacing]), retries what the platform refused
// for now, and reports each outcome (message.sent, message.failed) and its status.
//
// Once. Run marks a message "sending" (owned by this host) before sending it and records the
// outcome after; the log's consumed mark moves past a message only once its outcome is
// recorded. A host that takes over after another stopped finds the messages after the mark:
// those recorded are skipped; one left "sending" may or may not have reached the platform.
// With [Options.RepeatUnknown] (WeCom with enable_duplicate_check, which does not show a
// repeat) it is sent again; otherwise it fails with "outcome unknown" and is not repeated:
// at most once.
package outbox

import (
	"context"
	"encoding/json"
	"errors"

	"fmt"
	"hash/fnv"
	"log/slog"
	"sync"
	"time"

	"github.com/seed-a64d9e1f/chatwire/adapter"
	"github.com/seed-a64d9e1f/chatwire/internal/eventlog"
	"github.com/seed-a64d9e1f/chatwire/internal/pacing"
)

// Event kinds Run emits.
const (
	EventSent   = "message.sent"
	EventFailed = "message.failed"
)

// Options tune an [Outbox]. The zero value is ready to use.
type Options struct {
	// Lanes is how many recipients are sent to at once; one recipient's messages always go
	// one after the other, in order. Zero means 4.
	Lanes int
	// RepeatUnknown sends again a message a stopped host left "sending" (the platform drops
	// a repeat). False: it fails as "outcome unknown".
	RepeatUnknown bool
	// MaxAttempts bounds sends of one message refused for now (rate limited, unavailable).
	// Zero means 8.
	MaxAttempts int
	// Backoff is the first wait between such attempts, doubling up to a minute. Zero
	// means 1 s. (Pacing adds the platform's pauses: 45009 holds the bot ≥ 60 s.)
	Backoff time.Duration
	// SendTimeout bounds one platform send; a send under way when Run stops is let finish
	// within it. A message another sender marked "sending" less than this plus 5 s ago is
	// waited for (that sender may have lost its lease but still be sending), not judged
	// abandoned: after a takeover, each lane holding such a message waits that long. Zero
	// means 30 s.
	SendTimeout time.Duration
	// Owner names this host in "sending" marks. Empty: a random name.
	Owner string
	// Logger receives outcomes and failures. nil: no logging.
	Logger *slog.Logger
	// OnOutcome, if set, is called with each final status (metrics).
	OnOutcome func(Status)
}

// SendFunc sends one message (the plugin's Send).
type SendFunc func(ctx context.Context, msg adapter.Message) (adapter.Receipt, error)

// EmitFunc puts a status event on the bot's event stream.
type EmitFunc func(ctx context.Context, ev adapter.Event) error

// Outbox is one bot's outbox. Its methods are safe for concurrent use; Run runs in one host
// at a time (the caller holds the bot's lease).
type Outbox struct {
	bot, platform string
	log           eventlog.Log
	status        StatusStore
	pace          *pacing.Scheduler
	send          SendFunc
	emit          EmitFunc
	opts          Options
	logger        *slog.Logger
}

// New returns the outbox of bot on platform over log and status; pace paces its sends
// (nil: not paced).
func New(bot, platform string, log eventlog.Log, status StatusStore, pace *pacing.Scheduler, send SendFunc, emit EmitFunc, opts Options) *Outbox {
	if opts.Lanes <= 0 {
		opts.Lanes = 4
	}
	if opts.MaxAttempts <= 0 {
		opts.MaxAttempts = 8
	}
	if opts.Backoff <= 0 {
		opts.Backoff = time.Second
	}
	if opts.SendTimeout <= 0 {
		opts.SendTimeout = 30 * time.Second
	}
	if opts.Owner == "" {
		opts.Owner = fmt.Sprintf("host-%d", time.Now().UnixNano())
	}
	l := opts.Logger
	if l == nil {
		l = slog.New(slog.DiscardHandler)
	}
	return &Outbox{bot: bot, platform: platform, log: log, status: status, pace: pace, send: send, emit: emit, opts: opts, logger: l}
}

// recipientKey is what one lane sends in order: the message's target.
func recipientKey(msg adapter.Message) string { return msg.To.String() }

// Accept stores msg and returns its id. The message is delivered by Run, once accepted: an
// error means it was not stored (eventlog.ErrFull: the outbox holds its maximum).
func (o *Outbox) Accept(ctx context.Context, msg adapter.Message) (string, error) {
	data, err := json.Marshal(msg)
	if err != nil {
		return "", err
	}
	res, err := o.log.Append(ctx, eventlog.Record{Kind: "send", Key: recipientKey(msg), Data: data})
	if err != nil {
		return "", err
	}
	id := res[0].ID.String()
	if err := o.status.Init(ctx, Status{ID: id, Bot: o.bot, State: StateQueued, Updated: time.Now()}); err != nil {
		o.logger.Warn("outbox: queued status not stored", "bot", o.bot, "id", id, "error", err)
	}
	return id, nil
}

// Status returns the status of message id; false if the outbox does not know it (never
// accepted, or more than a day old).
func (o *Outbox) Status(ctx context.Context, id string) (Status, bool, error) {
	st, ok, err := o.status.Get(ctx, o.bot, id)
	st.Owner = ""
	return st, ok, err
}

// Run sends the outbox's messages until ctx ends, starting after the consumed mark.
func (o *Outbox) Run(ctx context.Context) error {
	pos, err := o.log.ConsumedID(ctx)
	if err != nil {
		return err
	}
	var (
		mu    sync.Mutex
		order []eventlog.ID        // dispatched, oldest first, not yet below the mark
		done  map[eventlog.ID]bool // finished, not yet below the mark; made on first use
		lanes = make([]lane, o.opts.Lanes)
		wg    sync.WaitGroup
		// freed gets a token each time a lane takes an entry off its queue: the reader
		// waits on it while the lane it must queue to is full.
		freed   = make(chan struct{}, 1)
		marking = make(chan struct{}, 1)
	)
	finish := func(id eventlog.ID) {
		mu.Lock()
		if done == nil {
			done = make(map[eventlog.ID]bool)
		}
		done[id] = true
		var mark eventlog.ID
		for len(order) > 0 && done[order[0]] {
			mark = order[0]
			delete(done, order[0])
			order = order[1:]
		}
		if len(order) == 0 {
			order = nil // an idle outbox holds no backing array
		}
		mu.Unlock()
		if !mark.IsZero() {
			marking <- struct{}{} // one Consumed call at a time, marks in order
			if err := o.log.Consumed(context.WithoutCancel(ctx), mark); err != nil {
				o.logger.Warn("outbox: consumed mark not stored; a new sender rechecks these messages", "bot", o.bot, "error", err)
			}
			<-marking
		}
	}
	// A lane's goroutine runs only while its queue holds entries: an idle outbox (most
	// configured bots, most of the time) holds no goroutine and no buffer per lane.
	work := func(l *lane) {
		defer wg.Done()
		for {
			mu.Lock()
			if len(l.q) == 0 {
				l.q, l.busy = nil, false
				mu.Unlock()
				return
			}
			e := l.q[0]
			l.q[0] = eventlog.Entry{}
			l.q = l.q[1:]
			mu.Unlock()
			select {
			case freed <- struct{}{}:
			default:
			}
			if o.deliver(ctx, e) {
				finish(e.ID)
			} // else not finished: the next sender rechecks it
		}
	}
	// queue gives e to its lane, waiting while that lane holds laneDepth entries; false if
	// ctx ended first.
	queue := func(l *lane, e eventlog.Entry) bool {
		for {
			mu.Lock()
			if len(l.q) < laneDepth {
				order = append(order, e.ID)
				l.q = append(l.q, e)
				if !l.busy {
					l.busy = true
					wg.Add(1)
					go work(l)
				}
				mu.Unlock()
				return true
			}
			mu.Unlock()
			select {
			case <-freed:
			case <-ctx.Done():
				return false
			}
		}
	}
	defer wg.Wait() // lanes finish what they hold (deliver returns at once once ctx ended)
	for {
		entries, err := o.log.Read(ctx, pos, 100)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			o.logger.Warn("outbox: read failed", "bot", o.bot, "error", err)
			if sleep(ctx, time.Second) != nil {
				return nil
			}
			continue
		}
		for _, e := range entries {
			h := fnv.New32a()
			h.Write([]byte(e.Key))
			if !queue(&lanes[h.Sum32()%uint32(len(lanes))], e) {
				return nil
			}
			pos = e.ID
		}
	}
}

// laneDepth is how many entries one lane holds before the reader waits for it.
const laneDepth = 64

// lane is one of Run's lanes: the entries it has yet to send, in order, and whether a
// goroutine is sending them. Guarded by Run's mutex.
type lane struct {
	q    []eventlog.Entry
	busy bool
}

// deliver sends one stored message and records its outcome; false if Run stopped first.
func (o *Outbox) deliver(ctx context.Context, e eventlog.Entry) bool {
	id := e.ID.String()
	var msg adapter.Message
	if err := json.Unmarshal(e.Data, &msg); err != nil {
		return o.fail(ctx, msg, Status{ID: id, Bot: o.bot}, &adapter.Error{Kind: adapter.KindInternal, Message: "stored message unreadable: " + err.Error()})
	}
	st, known, err := o.status.Get(ctx, o.bot, id)
	for err != nil {
		o.logger.Warn("outbox: status store failed; waiting", "bot", o.bot, "error", err)
		if sleep(ctx, time.Second) != nil {
			return false
		}
		st, known, err = o.status.Get(ctx, o.bot, id)
	}
	if !known {
		st = Status{ID: id, Bot: o.bot, State: StateQueued}
	}
	switch st.State {
	case StateSent, StateFailed:
		return true // recorded by an earlier sender
	case StateSending:
		// Another sender was sending it. If it may still be at it (a sender that lost its
		// lease lets a send under way finish and records it), wait for its record.
		grace := o.opts.SendTimeout + 5*time.Second
		for st.State == StateSending && time.Since(st.Updated) < grace {
			if sleep(ctx, time.Until(st.Updated.Add(grace))) != nil {
				return false
			}
			if cur, ok, err := o.status.Get(ctx, o.bot, id); err == nil && ok {
				st = cur
			}
		}
		if st.State == StateSent || st.State == StateFailed {
			return true
		}
		// Its sender stopped mid-send.
		if !o.opts.RepeatUnknown {
			return o.fail(ctx, msg, st, &adapter.Error{Kind: adapter.KindUnavailable,
				Message: "outcome unknown: the host sending this message stopped mid-send; it may or may not have been delivered, and it is not sent again"})
		}
		o.logger.Info("outbox: sending again a message a stopped host was sending (the platform drops a repeat)", "bot", o.bot, "id", id)
		st.State = StateQueued
		o.status.Set(ctx, st)
	}
	wait := o.opts.Backoff
	for {
		var rc adapter.Receipt
		started := false
		send := func(ctx context.Context) error {
			// Marked sending only now, after the pacing wait: a host stopped while a message
			// waits for its turn leaves it queued, to be sent by the next sender.
			cur, mine, err := o.status.Begin(ctx, o.bot, id, o.opts.Owner, time.Now())
			if err != nil {
				return &adapter.Error{Kind: adapter.KindUnavailable, Message: "outbox: status store: " + err.Error(), Err: err}
			}
			if !mine {
				st = cur
				return errTaken
			}
			started = true
			st.Attempts++
			sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), o.opts.SendTimeout) // let it finish if Run stops
			defer cancel()
			rc, err = o.send(sctx, msg)
			return err
		}
		if o.pace != nil {
			err = o.pace.Do(ctx, msg, -1, send)
		} else {
			err = send(ctx)
		}
		switch {
		case errors.Is(err, errTaken):
			return true // another sender has it
		case started && err == nil:
			st.State, st.PlatformID, st.Invalid, st.Updated = StateSent, rc.ID, rc.Invalid, time.Now()
			return o.record(ctx, msg, st)
		case ctx.Err() != nil:
			if started && adapter.KindOf(err) == adapter.KindRateLimited { // nothing was shown
				st.State, st.Updated = StateQueued, time.Now()
				o.status.Set(context.WithoutCancel(ctx), st)
			}
			return false // queued, or "sending" if the send began: the next sender decides
		}
		kind := adapter.KindOf(err)
		// Rate limited: nothing was shown, send again. Unavailable may have reached the
		// platform: again only where a repeat is dropped.
		again := kind == adapter.KindRateLimited || !started ||
			o.opts.RepeatUnknown && (kind == adapter.KindUnavailable || kind == adapter.KindTokenExpired)
		if !again || st.Attempts >= o.opts.MaxAttempts {
			return o.fail(ctx, msg, st, err)
		}
		o.logger.Info("outbox: send refused for now; retrying", "bot", o.bot, "id", id, "attempt", st.Attempts, "in", wait, "error", err)
		st.State, st.Updated = StateQueued, time.Now()
		if started {
			o.status.Set(ctx, st)
		}
		if sleep(ctx, wait) != nil {
			return false
		}
		wait = min(2*wait, time.Minute)
	}
}

// errTaken means another sender marked the message first.
var errTaken = errors.New("outbox: another sender has the message")

func (o *Outbox) fail(ctx context.Context, msg adapter.Message, st Status, err error) bool {
	st.State, st.Updated = StateFailed, time.Now()
	st.Error = &Failure{Kind: string(adapter.KindOf(err).Public()), Message: err.Error(), PlatformCode: adapter.Code(err)}
	return o.record(ctx, msg, st)
}

// record stores the final status and emits its event, retrying each for up to a minute
// even if Run stops meanwhile. false if the status could not be stored (the next sender
// finds the message still "sending").
func (o *Outbox) record(ctx context.Context, msg adapter.Message, st Status) bool {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
	defer cancel()
	st.Owner = ""
	for err := o.status.Set(ctx, st); err != nil; err = o.status.Set(ctx, st) {
		o.logger.Warn("outbox: status not stored; retrying", "bot", o.bot, "id", st.ID, "error", err)
		if sleep(ctx, time.Second) != nil {
			return false
		}
	}
	kind := EventSent
	if st.State == StateFailed {
		kind = EventFailed
	}
	raw, _ := json.Marshal(st)
	ev := adapter.Event{ID: "outbox:" + st.ID + ":" + st.State, Bot: o.bot, Platform: o.platform, Kind: kind,
		Chat: adapter.Chat{ID: msg.To.String(), Type: chatType(msg.To)}, Text: st.State, Time: st.Updated, Raw: raw}
	if o.emit != nil {
		for err := o.emit(ctx, ev); err != nil; err = o.emit(ctx, ev) {
			o.logger.Warn("outbox: status event not queued; retrying", "bot", o.bot, "id", st.ID, "error", err)
			if sleep(ctx, time.Second) != nil {
				break // the status is stored; the event is lost
			}
		}
	}
	if o.opts.OnOutcome != nil {
		o.opts.OnOutcome(st)
	}
	if st.State == StateFailed {
		o.logger.Warn("outbox: message failed", "bot", o.bot, "id", st.ID, "to", msg.To.String(), "error", st.Error.Message)
	} else {
		o.logger.Info("outbox: message sent", "bot", o.bot, "id", st.ID, "to", msg.To.String(), "platform_id", st.PlatformID)
	}
	return true
}

func chatType(t adapter.Target) string {
	k, _ := t.Kind()
	switch k {
	case adapter.TargetChat, adapter.TargetParty, adapter.TargetTag, adapter.TargetAll, adapter.TargetUsers:
		return adapter.ChatGroup
	case adapter.TargetChannel:
		return adapter.ChatChannel
	case adapter.TargetEmail, adapter.TargetEmails:
		return adapter.ChatMail
	}
	return adapter.ChatDirect
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
