package host

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/seed-a64d9e1f/chatwire/adapter"
	"github.com/seed-a64d9e1f/chatwire/internal/config"
	"github.com/seed-a64d9e1f/chatwire/internal/eventlog"
	"github.com/seed-a64d9e1f/chatwire/internal/idempotency"
	"github.com/seed-a64d9e1f/chatwire/internal/outbox"
	"github.com/seed-a64d9e1f/chatwire/internal/pacing"
)

// sendTimeout bounds one synchronous send, pacing wait included.
const sendTimeout = config.SendTimeout

// sendGate is what a send passes through before the plugin: the Idempotency-Key and the
// bot's pacing.
type sendGate struct {
	idem    *idempotency.Keeper
	istore  idempotency.Store
	pace    map[string]*pacing.Scheduler // by bot
	maxWait map[string]time.Duration     // by bot
	retake  map[string]time.Duration     // by bot: WeCom duplicate_check interval; 0: never retake
	waits   *prometheus.HistogramVec
	log     *slog.Logger
	// outcomes counts finished asynchronous sends of every bot: one vector labelled by bot,
	// not one per bot (with the bot a constant label), which cost ~1.4 KiB per configured bot
	// with the depth and oldest gauges (now collectOutboxes).
	outcomes *prometheus.CounterVec

	outboxes map[string]*outbox.Outbox // by bot: asynchronous sends
	oblogs   map[string]eventlog.Log
	repeat   map[string]bool // by bot: the platform drops a repeated send (WeCom duplicate_check)
	closers  []io.Closer     // status journals under store.dir
}

// newSendGate builds the gate of cfg's bots: keys and limits on rdb when the host has a
// Redis (fleet-wide), else in memory. clock nil is the real clock.
func newSendGate(cfg *config.Config, s *server, rdb redis.UniversalClient, reg prometheus.Registerer, log *slog.Logger, clock pacing.Clock) (*sendGate, error) {
	g := &sendGate{pace: map[string]*pacing.Scheduler{}, maxWait: map[string]time.Duration{}, retake: map[string]time.Duration{}, log: log,
		outboxes: map[string]*outbox.Outbox{}, oblogs: map[string]eventlog.Log{}, repeat: map[string]bool{},
		waits: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "chatwire_send_paced_wait_seconds",
			Help:    "How long synchronous sends waited for their turn under the platform's limits, by bot and outcome (sent, refused: answered 429).",
			Buckets: []float64{0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300}}, []string{"bot", "outcome"})}
	g.outcomes = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "chatwire_outbox_outcomes_total",
		Help: "Asynchronous sends finished, by outcome (sent, failed) and error kind."}, []string{"bot", "outcome", "kind"})
	if reg != nil {
		reg.MustRegister(g.waits, g.outcomes, prometheus.CollectorFunc(g.collectOutboxes))
	}
	var (
		istore   idempotency.Store
		pstore   pacing.Store
		fallback pacing.Store // while Redis fails, sends are paced in this host
	)
	if rdb != nil {
		istore, pstore, fallback = idempotency.NewRedis(rdb, cfg.Store.KeyPrefix), pacing.NewRedis(rdb, cfg.Store.KeyPrefix), pacing.NewMemory()
	} else if cfg.Store.Dir != "" { // keys survive a restart: "<dir>/idempotency.keys"
		fs, err := idempotency.OpenFile(filepath.Join(cfg.Store.Dir, "idempotency.keys"), 0)
		if err != nil {
			return nil, fmt.Errorf("store.dir: %w", err)
		}
		istore, pstore, g.closers = fs, pacing.NewMemory(), append(g.closers, fs)
	} else {
		istore, pstore = idempotency.NewMemory(0), pacing.NewMemory()
	}
	g.idem, g.istore = idempotency.New(istore, idempotency.Options{Logger: log}), istore
	for _, b := range cfg.Bots {
		opts, mw := b.Pacing.Options()
		opts.Clock, opts.Logger, opts.Fallback = clock, log, fallback
		sc, err := pacing.New(pstore, b.Name, b.Platform, opts)
		if err != nil {
			return nil, fmt.Errorf("bots %s: %w", b.Name, err)
		}
		g.pace[b.Name], g.maxWait[b.Name] = sc, mw
		if b.WeCom != nil && b.WeCom.DuplicateCheck != "" {
			g.retake[b.Name], _ = time.ParseDuration(b.WeCom.DuplicateCheck)
			g.repeat[b.Name] = true
		}
		if err := g.newOutbox(cfg, s, rdb, b, sc); err != nil {
			g.close()
			return nil, fmt.Errorf("bots %s: outbox: %w", b.Name, err)
		}
	}
	return g, nil
}

// newOutbox makes bot b's outbox: a Redis stream "<prefix>:outbox:{bot}" with statuses
// beside it when the host has Redis; with store.dir, journal files
// "<dir>/outbox/<bot>.log" and "<dir>/outbox/<bot>.status"; memory otherwise (lost with the
// process).
func (g *sendGate) newOutbox(cfg *config.Config, s *server, rdb redis.UniversalClient, b config.BotConfig, sc *pacing.Scheduler) error {
	name := b.Name
	var (
		l  eventlog.Log
		st outbox.StatusStore
	)
	if rdb != nil {
		base := cfg.Store.KeyPrefix + ":outbox:{" + name + "}"
		l, st = eventlog.NewRedis(rdb, base, base+":dedup:", eventlog.Options{Logger: g.log}), outbox.NewRedisStatus(rdb, cfg.Store.KeyPrefix)
	} else if cfg.Store.Dir != "" {
		fl, err := eventlog.OpenFile(filepath.Join(cfg.Store.Dir, "outbox", name+".log"), eventlog.Options{Logger: g.log})
		if err != nil {
			return err
		}
		fs, err := outbox.OpenFileStatus(filepath.Join(cfg.Store.Dir, "outbox", name+".status"))
		if err != nil {
			fl.Close()
			return err
		}
		l, st = fl, fs
		g.closers = append(g.closers, fs)
	} else {
		l, st = eventlog.NewMemory(eventlog.Options{Logger: g.log}), outbox.NewMemoryStatus()
	}
	send := func(ctx context.Context, msg adapter.Message) (adapter.Receipt, error) {
		for !s.ready() { // the plugin restarts: wait rather than fail a message never sent
			select {
			case <-time.After(200 * time.Millisecond):
			case <-ctx.Done():
				return adapter.Receipt{}, &adapter.Error{Kind: adapter.KindRateLimited, Message: "plugin not ready; nothing sent", Err: ctx.Err()}
			}
		}
		start := time.Now()
		rc, err := s.bots[name].adapter.Send(ctx, msg)
		s.m.observeSend(name, err, start)
		s.m.sends.WithLabelValues(name, cmpKind(err), adapter.Code(err)).Inc()
		return rc, err
	}
	emit := func(ctx context.Context, ev adapter.Event) error {
		return s.enqueue(ctx, s.bots[name], []adapter.Event{ev})
	}
	g.outboxes[name] = outbox.New(name, b.Platform, l, st, sc, send, emit, outbox.Options{
		RepeatUnknown: g.repeat[name], Logger: g.log, Owner: rand.Text(),
		OnOutcome: func(st outbox.Status) {
			kind := ""
			if st.Error != nil {
				kind = st.Error.Kind
			}
			g.outcomes.WithLabelValues(name, st.State, kind).Inc()
		}})
	g.oblogs[name] = l
	return nil
}

var (
	outboxDepthDesc = prometheus.NewDesc("chatwire_outbox_depth",
		"Asynchronous sends accepted and not yet finished.", []string{"bot"}, nil)
	outboxOldestDesc = prometheus.NewDesc("chatwire_outbox_oldest_seconds",
		"Age of the oldest asynchronous send not yet finished (0 when none waits).", []string{"bot"}, nil)
)

// collectOutboxes reports every bot's outbox depth and the age of its oldest message at
// scrape time. As for chatwire_events_unconsumed, the bots are looked up side by side under
// one budget, and a bot whose figures do not come within it (Redis slow or away) is left
// out of this scrape: one deadline for all, not a wait per bot that made a scrape of many
// bots outlast the scraper's timeout, and no 0 that looks like an empty outbox.
func (g *sendGate) collectOutboxes(ch chan<- prometheus.Metric) {
	type gauges struct {
		name              string
		depth, oldest     float64
		depthOK, oldestOK bool
	}
	ctx, cancel := context.WithTimeout(context.Background(), scrapeBudget)
	defer cancel()
	type outboxLog struct {
		name string
		l    eventlog.Log
	}
	logs := make([]outboxLog, 0, len(g.oblogs))
	for name, l := range g.oblogs {
		logs = append(logs, outboxLog{name, l})
	}
	res := make(chan gauges, len(logs))
	sem := make(chan struct{}, scrapeParallel)
	go func() {
		for _, ol := range logs {
			name, l := ol.name, ol.l
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				return
			}
			go func() {
				defer func() { <-sem }()
				r := gauges{name: name}
				r.depth, r.oldest, r.depthOK, r.oldestOK = outboxGauges(ctx, l)
				res <- r
			}()
		}
	}()
	for range logs {
		select {
		case r := <-res:
			if r.depthOK {
				ch <- prometheus.MustNewConstMetric(outboxDepthDesc, prometheus.GaugeValue, r.depth, r.name)
			}
			if r.oldestOK {
				ch <- prometheus.MustNewConstMetric(outboxOldestDesc, prometheus.GaugeValue, r.oldest, r.name)
			}
		case <-ctx.Done():
			return
		}
	}
}

// scrapeParallel is how many bots a scrape looks up at once.
const scrapeParallel = 16

// outboxGauges returns an outbox's depth and the age of its oldest message, each with
// whether it could be read: one Redis call for an empty outbox, three otherwise.
func outboxGauges(ctx context.Context, l eventlog.Log) (depth, oldest float64, depthOK, oldestOK bool) {
	n, err := l.Len(ctx)
	if err != nil {
		return 0, 0, false, false
	}
	if n.Unconsumed == 0 {
		return 0, 0, true, true
	}
	mark, err := l.ConsumedID(ctx)
	if err != nil {
		return float64(n.Unconsumed), 0, true, false
	}
	es, err := l.Read(ctx, mark, 1)
	if err != nil {
		return float64(n.Unconsumed), 0, true, false
	}
	if len(es) > 0 {
		oldest = max(0, time.Since(time.UnixMilli(int64(es[0].ID.Ms))).Seconds())
	}
	return float64(n.Unconsumed), oldest, true, true
}

func cmpKind(err error) string {
	if err == nil {
		return "ok"
	}
	return string(adapter.KindOf(err))
}

// start runs each bot's outbox until ctx ends: with Redis in the one host holding the bot's
// outbox lease, else here.
func (g *sendGate) start(ctx context.Context, wg *sync.WaitGroup, leases *leaseSet, prefix string) {
	for name, ob := range g.outboxes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			run := func(ctx context.Context) {
				if err := ob.Run(ctx); err != nil && ctx.Err() == nil {
					g.log.Error("outbox stopped", "bot", name, "error", err)
				}
			}
			if leases == nil {
				run(ctx)
				return
			}
			leases.asLeader(ctx, prefix+":outbox-lease:{"+name+"}", run)
		}()
	}
}

// close releases the outbox logs (after start's goroutines ended).
func (g *sendGate) close() {
	for _, l := range g.oblogs {
		l.Close()
	}
	for _, c := range g.closers {
		c.Close()
	}
}

// preferAsync reports whether the request asks for Prefer: respond-async.
func preferAsync(r *http.Request) bool {
	for _, v := range r.Header.Values("Prefer") {
		for _, p := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(p), "respond-async") {
				return true
			}
		}
	}
	return false
}

// acceptResponse is the answer to an asynchronous send.
type acceptResponse struct {
	ID       string `json:"id"`
	Bot      string `json:"bot"`
	Platform string `json:"platform"`
	State    string `json:"state"`
}

// accept stores msg in b's outbox.
func (s *server) accept(ctx context.Context, b *bot, msg adapter.Message) outcome {
	id, err := s.sends.outboxes[b.name].Accept(ctx, msg)
	if err != nil {
		kind := adapter.KindUnavailable
		m := "the outbox could not store the message; nothing was accepted: " + err.Error()
		if errors.Is(err, eventlog.ErrFull) {
			m = "the outbox is full (10,000 messages not yet sent); nothing was accepted: retry later"
		}
		s.log.Warn("async send not accepted", "bot", b.name, "error", err)
		return errorOutcome(&adapter.Error{Kind: kind, Message: m, Err: err}, false)
	}
	o := jsonOutcome(http.StatusAccepted, map[string]string{"Preference-Applied": "respond-async", "Location": "/v1/bots/" + b.name + "/messages/" + id},
		acceptResponse{ID: id, Bot: b.name, Platform: b.platform, State: outbox.StateQueued}, true)
	s.log.Debug("message accepted into the outbox", "bot", b.name, "id", id, "to", msg.To.String())
	return o
}

// messageStatus answers GET /v1/bots/{bot}/messages/{id}: an asynchronous send's status.
func (s *server) messageStatus(w http.ResponseWriter, r *http.Request) {
	b := s.bot(w, r)
	if b == nil {
		return
	}
	id := r.PathValue("id")
	if _, err := eventlog.ParseID(id); err != nil {
		writeError(w, &adapter.Error{Kind: adapter.KindNotFound, Message: fmt.Sprintf("no message %q: ids are those a 202 answered", clip(id, 64))})
		return
	}
	st, ok, err := s.sends.outboxes[b.name].Status(r.Context(), id)
	switch {
	case err != nil:
		writeError(w, &adapter.Error{Kind: adapter.KindUnavailable, Message: "status store: " + err.Error()})
	case !ok:
		writeError(w, &adapter.Error{Kind: adapter.KindNotFound, Message: fmt.Sprintf("no message %s (statuses are kept a day)", id)})
	default:
		writeJSON(w, http.StatusOK, st)
	}
}

// outcome is one send's answer.
type outcome struct {
	status int
	header map[string]string
	body   []byte
	keep   bool // false: nothing reached the platform; a retry with the same key sends
}

// deliver sends msg for b and writes the answer, through the Idempotency-Key (if the
// request has one) and the bot's pacing; async (Prefer: respond-async or "async": true)
// stores it in the bot's outbox and answers 202.
func (s *server) deliver(w http.ResponseWriter, r *http.Request, b *bot, msg adapter.Message, async bool) {
	g := s.sends
	key := r.Header.Get("Idempotency-Key")
	maxWait := requestMaxWait(r, g.maxWait[b.name])
	work := func(ctx context.Context) outcome { return s.sendPaced(ctx, b, msg, maxWait) }
	if async {
		work = func(ctx context.Context) outcome { return s.accept(ctx, b, msg) }
	}
	if key == "" {
		ctx, cancel := context.WithTimeout(r.Context(), sendTimeout)
		defer cancel()
		writeOutcome(w, work(ctx), false)
		return
	}
	if err := idempotency.CheckKey(key); err != nil {
		writeError(w, &adapter.Error{Kind: adapter.KindInvalidRequest, Message: strings.TrimPrefix(err.Error(), "idempotency: ")})
		return
	}
	req, err := g.request(b.name, key, msg)
	if err != nil {
		writeError(w, &adapter.Error{Kind: adapter.KindInvalidRequest, Message: "message: " + err.Error()})
		return
	}
	var fresh outcome
	ans, replayed, err := g.idem.Do(r.Context(), req, func(ctx context.Context) (idempotency.Answer, bool) {
		// The send finishes and its answer is kept even if this client goes away: a retry
		// with the key gets it.
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), sendTimeout)
		defer cancel()
		fresh = work(ctx)
		return idempotency.Answer{Status: fresh.status, Header: fresh.header, Body: fresh.body}, fresh.keep
	})
	switch {
	case errors.Is(err, idempotency.ErrConflict):
		s.log.Warn("send refused: Idempotency-Key reused", "bot", b.name, "error", err)
		writeConflict(w, err)
		return
	case err != nil:
		s.log.Warn("send refused: Idempotency-Key not checked", "bot", b.name, "error", err)
		writeError(w, &adapter.Error{Kind: adapter.KindUnavailable, Message: "Idempotency-Key could not be checked (store unavailable); nothing was sent: " + err.Error()})
		return
	}
	if replayed {
		s.log.Info("send answered from its Idempotency-Key", "bot", b.name, "status", ans.Status)
	}
	writeOutcome(w, outcome{status: ans.Status, header: ans.Header, body: ans.Body}, replayed)
}

// request is the idempotent request of bot's message msg under key: the key is scoped by
// the bot, and the fingerprint is the SHA-256 of the bot and msg's canonical JSON (as the
// host decoded it, so the same message encoded differently is the same request).
func (g *sendGate) request(bot, key string, msg adapter.Message) (idempotency.Request, error) {
	canon, err := json.Marshal(msg)
	if err != nil {
		return idempotency.Request{}, err
	}
	req := idempotency.Request{Key: bot + "/" + key, Fingerprint: sha256.Sum256(append([]byte(bot+"\x00"), canon...))}
	if d := g.retake[bot]; d > 0 {
		// WeCom shows a message/send identical to one it accepted within the interval only
		// once, so an attempt abandoned by a stopped host may be repeated within it (less the
		// send timeout: the first attempt may have reached WeCom that much after it began).
		req.Retake = func(started time.Time) bool { return time.Since(started) < d-sendTimeout }
	}
	return req, nil
}

// requestMaxWait is the bot's max wait, lowered by "Prefer: wait=N" (RFC 7240).
func requestMaxWait(r *http.Request, d time.Duration) time.Duration {
	for _, v := range r.Header.Values("Prefer") {
		for _, pref := range strings.Split(v, ",") {
			name, val, ok := strings.Cut(strings.TrimSpace(pref), "=")
			if !ok || !strings.EqualFold(strings.TrimSpace(name), "wait") {
				continue
			}
			if n, err := strconv.Atoi(strings.Trim(strings.TrimSpace(val), `"`)); err == nil && n >= 0 {
				d = min(d, time.Duration(n)*time.Second)
			}
		}
	}
	return d
}

// sendPaced waits for msg's turn under the bot's pacing (at most maxWait), sends it, and
// returns the answer to give.
func (s *server) sendPaced(ctx context.Context, b *bot, msg adapter.Message, maxWait time.Duration) outcome {
	g := s.sends
	sc := g.pace[b.name]
	var rc adapter.Receipt
	start := time.Now()
	waited := false
	err := sc.DoSync(ctx, msg, maxWait, func(ctx context.Context) error {
		if w := time.Since(start); w >= time.Millisecond {
			waited = true
			g.waits.WithLabelValues(b.name, "sent").Observe(w.Seconds())
		}
		sent := time.Now()
		var err error
		rc, err = b.adapter.Send(ctx, msg)
		s.m.observeSend(b.name, err, sent)
		return err
	})
	if err != nil {
		kind := adapter.KindOf(err)
		keep := kind != adapter.KindRateLimited // throttled (by pacing or the platform): nothing was shown
		if !waited && kind == adapter.KindRateLimited && adapter.Code(err) == "" {
			g.waits.WithLabelValues(b.name, "refused").Observe(adapter.RetryAfter(err).Seconds())
		}
		s.m.sends.WithLabelValues(b.name, string(kind), adapter.Code(err)).Inc()
		s.log.Warn("send failed", "bot", b.name, "to", msg.To.String(), "error", err)
		return errorOutcome(err, keep)
	}
	s.m.sends.WithLabelValues(b.name, "ok", "").Inc()
	// Debug, not Info: a line per successful send was 23% of the send handler's CPU under
	// bench/load (an unbuffered write to stderr each); sends are counted in
	// chatwire_sends_total and timed in chatwire_send_duration_seconds, and failures are
	// logged at Warn above.
	if s.log.Enabled(ctx, slog.LevelDebug) {
		s.log.Debug("message sent", "bot", b.name, "to", msg.To.String(), "id", rc.ID, "invalid", len(rc.Invalid))
	}
	invalid := rc.Invalid
	if invalid == nil {
		invalid = []string{}
	}
	return jsonOutcome(http.StatusOK, nil, sendResponse{ID: rc.ID, Bot: b.name, Platform: b.platform, Invalid: invalid}, true)
}

// errorOutcome is writeError's answer as an outcome.
func errorOutcome(err error, keep bool) outcome {
	kind := adapter.KindOf(err)
	var body errorBody
	body.Error.Kind = kind.Public()
	body.Error.Message = err.Error()
	body.Error.PlatformCode = adapter.Code(err)
	var h map[string]string
	if d := adapter.RetryAfter(err); d > 0 || kind == adapter.KindRateLimited || kind == adapter.KindUnavailable {
		h = map[string]string{"Retry-After": strconv.Itoa(max(1, int(math.Ceil(d.Seconds()))))}
	}
	return jsonOutcome(kind.HTTPStatus(), h, body, keep)
}

func jsonOutcome(status int, h map[string]string, v any, keep bool) outcome {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.Encode(v)
	return outcome{status: status, header: h, body: buf.Bytes(), keep: keep}
}

// writeOutcome writes o with this second's Date (setDate); a replayed answer carries
// Idempotent-Replayed: true.
func writeOutcome(w http.ResponseWriter, o outcome, replayed bool) {
	for k, v := range o.header {
		w.Header().Set(k, v)
	}
	setDate(w.Header())
	if replayed {
		w.Header().Set("Idempotent-Replayed", "true")
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(o.status)
	w.Write(o.body)
}

// writeConflict answers 409 for a reused or abandoned Idempotency-Key, with kind "conflict".
func writeConflict(w http.ResponseWriter, err error) {
	var body errorBody
	body.Error.Kind = "conflict"
	body.Error.Message = err.Error()
	if !errors.As(err, new(*idempotency.AbandonedError)) {
		body.Error.Message = "this Idempotency-Key was used for a different message (another body or bot) within 24 hours; nothing was sent: use a new key for a new message"
	}
	writeJSON(w, http.StatusConflict, body)
}

// PacingClockFromEnv reads CHATWIRE_TEST_TIME_SCALE="<origin, Unix ms>:<factor>", which
// makes pacing run on [pacing.Scaled] time, factor times faster from origin, so black-box
// tests can spread sends over minutes of emulated time in seconds. For tests only; unset:
// real time.
func PacingClockFromEnv(log *slog.Logger) (pacing.Clock, error) {
	v := os.Getenv("CHATWIRE_TEST_TIME_SCALE")
	if v == "" {
		return nil, nil
	}
	o, f, ok := strings.Cut(v, ":")
	ms, err1 := strconv.ParseInt(o, 10, 64)
	factor, err2 := strconv.ParseFloat(f, 64)
	if !ok || err1 != nil || err2 != nil || factor <= 0 {
		return nil, fmt.Errorf("CHATWIRE_TEST_TIME_SCALE=%q: want <origin Unix ms>:<factor>", v)
	}
	log.Warn("pacing runs on a shortened clock (CHATWIRE_TEST_TIME_SCALE): for tests only", "factor", factor)
	return pacing.Scaled(time.UnixMilli(ms), factor), nil
}
