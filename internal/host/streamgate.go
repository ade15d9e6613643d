package host

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/seed-a64d9e1f/chatwire/adapter"
	"github.com/seed-a64d9e1f/chatwire/adapter/teams"
	"github.com/seed-a64d9e1f/chatwire/internal/idempotency"
)

// What a streamed send (stream.go) honours of the send gate:
//
//   - Idempotency-Key: honoured. The key is taken before the stream opens, with a fingerprint
//     of the bot and the header line (the deltas are not known yet); a request with the key
//     while the first runs waits for it, and every later one gets the first answer, replayed,
//     without its body being read: the same key never opens a second stream or sends a second
//     final message. The key for another header, or for an ordinary send, is a conflict
//     (409). An answer is kept unless nothing reached the platform (refused by pacing before
//     sending, or a reply that collects its text failed before its end), as for sends.
//   - Pacing: the reply counts against the bot's limits as an ordinary send of its whole
//     text to the same target (WeCom: one per 2,048 bytes), reserved when the body has ended,
//     just before the final message; over the max wait (pacing.max_wait, Prefer: wait=N) it
//     is answered 429 with Retry-After and nothing is sent. A bot whose platform streams with
//     limits (Teams, in 1:1 chats) also reserves the stream's opening request before it
//     opens; its in-between updates (at most one per 1.5 s per stream) are paced by the
//     adapter and not counted. A Teams reply in a group chat or a channel, where Teams does
//     not stream and the text goes whole at the end, counts once, as the one message it is.
//   - The outbox: not used. A stream's text arrives on its request, so it cannot wait in the
//     outbox: Prefer: respond-async is not applied, and the answer is always the synchronous
//     one (200 when the platform has the whole reply).

// streamPacing paces one streamed send.
type streamPacing struct {
	g       *sendGate
	b       *bot
	maxWait time.Duration
	native  bool // the platform shows the text while it streams
	opened  bool
}

func newStreamPacing(g *sendGate, r *http.Request, b *bot) *streamPacing {
	return &streamPacing{g: g, b: b, maxWait: requestMaxWait(r, g.maxWait[b.name]),
		native: b.platform == adapter.PlatformTeams || b.platform == adapter.PlatformWeComAIBot}
}

// open opens the stream with open: for a Teams stream that streams (a 1:1 chat) in its turn
// under the limits, as the stream's first request.
func (p *streamPacing) open(ctx context.Context, header adapter.Message, open func(ctx context.Context) error) error {
	var err error
	if p.b.platform == adapter.PlatformTeams && !teamsGroupConversation(header) {
		err = p.g.pace[p.b.name].DoSync(ctx, header, p.maxWait, open)
	} else {
		if p.b.platform == adapter.PlatformTeams {
			p.native = false // collected and sent whole at the end: nothing shows before
		}
		err = open(ctx)
	}
	p.opened = err == nil
	return err
}

// teamsGroupConversation reports whether a Teams message goes to a group chat or a channel,
// where Teams does not stream (specs/botconnector.md §4): a channel target, or a conversation
// id of the group chat and channel form "19:…@thread.…". The conversation's type is kept by
// the plugin, not the host; an id of another form (a 1:1 chat's "a:…", a user target) is
// taken as a stream's, whose opening request counts: pacing errs on the side of later.
func teamsGroupConversation(msg adapter.Message) bool {
	conv := msg.To.Chat
	switch {
	case msg.To.Channel != nil:
		return true
	case msg.To.User != "" || len(msg.To.Users) > 0:
		return false
	case conv == "":
		conv, _, _ = teams.ParseID(msg.ReplyTo)
	}
	return strings.HasPrefix(conv, "19:") && strings.Contains(conv, "@thread.")
}

// finish finishes the stream with finish in the turn of an ordinary send of whole. A reply
// already showing (native) waits for its turn however long it is; one that collects its
// text is refused past the max wait.
func (p *streamPacing) finish(ctx context.Context, whole adapter.Message, finish func(ctx context.Context) error) error {
	maxWait := p.maxWait
	if p.native {
		maxWait = -1
	}
	return p.g.pace[p.b.name].DoSync(ctx, whole, maxWait, finish)
}

// shown reports whether some of the reply may have reached the platform.
func (p *streamPacing) shown() bool { return p.native && p.opened }

// gateStream runs a streamed send's work and writes its outcome, once per Idempotency-Key.
func (s *server) gateStream(w http.ResponseWriter, r *http.Request, b *bot, h streamHeader, work func(ctx context.Context) outcome) {
	key := r.Header.Get("Idempotency-Key")
	if key == "" {
		writeOutcome(w, work(r.Context()), false)
		return
	}
	if err := idempotency.CheckKey(key); err != nil {
		writeError(w, &adapter.Error{Kind: adapter.KindInvalidRequest, Message: strings.TrimPrefix(err.Error(), "idempotency: ")})
		return
	}
	canon, err := json.Marshal(h)
	if err != nil {
		writeError(w, &adapter.Error{Kind: adapter.KindInvalidRequest, Message: "stream header: " + err.Error()})
		return
	}
	req := idempotency.Request{Key: b.name + "/" + key, Fingerprint: sha256.Sum256(append([]byte("stream\x00"+b.name+"\x00"), canon...))}
	ans, replayed, err := s.sends.idem.Do(r.Context(), req, func(ctx context.Context) (idempotency.Answer, bool) {
		o := work(ctx)
		return idempotency.Answer{Status: o.status, Header: o.header, Body: o.body}, o.keep
	})
	switch {
	case errors.Is(err, idempotency.ErrConflict):
		s.log.Warn("streamed send refused: Idempotency-Key reused", "bot", b.name, "error", err)
		writeConflict(w, err)
		return
	case err != nil:
		s.log.Warn("streamed send refused: Idempotency-Key not checked", "bot", b.name, "error", err)
		writeError(w, &adapter.Error{Kind: adapter.KindUnavailable, Message: "Idempotency-Key could not be checked (store unavailable); nothing was sent: " + err.Error()})
		return
	}
	if replayed {
		s.log.Info("streamed send answered from its Idempotency-Key", "bot", b.name, "status", ans.Status)
	}
	writeOutcome(w, outcome{status: ans.Status, header: ans.Header, body: ans.Body}, replayed)
}
