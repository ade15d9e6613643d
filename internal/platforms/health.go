package platforms

import (
	"context"
	"errors"
	"log/slog"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/seed-a64d9e1f/chatwire/adapter"
	"github.com/seed-a64d9e1f/chatwire/adapter/wecom"
	"github.com/seed-a64d9e1f/chatwire/tokenmgr"
)

// BotHealthMetric is the gauge the plugin exports per bot: 1 while the bot can send, 0 with
// a reason ("credentials rejected (40001)") when it cannot. The host reads it for /readyz.
const BotHealthMetric = "chatwire_bot_healthy"

var botHealthDesc = prometheus.NewDesc(BotHealthMetric,
	"1 while a bot holds a valid token or has not needed one yet, 0 when its last token fetch failed and it has none; reason says why in a few words (\"credentials rejected (40001)\").",
	[]string{"bot", "platform", "reason"}, nil)

// health follows the primary token of every open bot and the last failure of each of its
// keys, with the platform's error code.
type health struct {
	mu   sync.Mutex
	bots map[string]*botHealth // by bot name
}

type botHealth struct {
	platform string
	mg       *tokenmgr.Manager
	failed   map[string]string // token key → reason of its last failure; deleted on success
}

func newHealth() *health { return &health{bots: make(map[string]*botHealth)} }

// open starts following bot's primary token manager (a plugin restart or a reconfiguration
// opens a bot again: the new manager replaces the old one).
func (h *health) open(bot, platform string, mg *tokenmgr.Manager) {
	h.mu.Lock()
	defer h.mu.Unlock()
	b := h.bots[bot]
	if b == nil {
		b = &botHealth{failed: make(map[string]string)}
		h.bots[bot] = b
	}
	b.platform, b.mg = platform, mg
}

// event records the outcome of a token fetch of bot.
func (h *health) event(bot string, ev tokenmgr.Event) {
	if ev.Kind != tokenmgr.EventFailure && ev.Kind != tokenmgr.EventRefresh {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	b := h.bots[bot]
	if b == nil {
		b = &botHealth{platform: ev.Platform, failed: make(map[string]string)}
		h.bots[bot] = b
	}
	if ev.Kind == tokenmgr.EventRefresh {
		delete(b.failed, ev.Key)
		return
	}
	b.failed[ev.Key] = FailureReason(ev.Err)
}

// FailureReason says in a few words why a token fetch failed, with the platform's code:
// "credentials rejected (40001)", "platform unavailable (-1)", "token fetch failed (AADSTS50076)".
func FailureReason(err error) string {
	code := ErrorCode(err)
	var what string
	switch {
	case errors.Is(err, tokenmgr.ErrCredentials):
		what = "credentials rejected"
	case errors.Is(err, tokenmgr.ErrTemporary):
		what = "platform unavailable"
	case errors.Is(err, context.DeadlineExceeded):
		what = "token fetch timed out"
	default:
		what = "token fetch failed"
	}
	if code != "" {
		return what + " (" + code + ")"
	}
	return what
}

// ErrorCode returns the platform's own error code in err ("40001", "AADSTS7000215",
// "invalid_client"), not the HTTP status; empty when err carries none.
func ErrorCode(err error) string {
	if err == nil {
		return ""
	}
	var we *wecom.APIError
	if errors.As(err, &we) {
		return strconv.Itoa(we.Code)
	}
	var pc interface{ PlatformCode() string }
	if errors.As(err, &pc) {
		return pc.PlatformCode()
	}
	var pe *tokenmgr.PlatformError
	if errors.As(err, &pe) {
		return pe.Code
	}
	return adapter.Code(err)
}

// state is bot's health: healthy, or not with the reason.
func (b *botHealth) state() (healthy bool, reason string) {
	if b.mg == nil {
		return true, ""
	}
	st := b.mg.Status()
	switch {
	case st.State == "closed":
		return false, "closed"
	case st.State == "fresh" || st.State == "refreshing" || st.State == "failing":
		return true, ""
	case st.State == "empty" && st.LastError == "":
		return true, "" // nothing fetched yet
	}
	if r := b.failed[st.Key]; r != "" {
		return false, r
	}
	if st.State == "invalid" || st.State == "expired" {
		return false, "token " + st.State
	}
	return false, "no valid token"
}

func (h *health) collect(ch chan<- prometheus.Metric) {
	h.mu.Lock()
	defer h.mu.Unlock()
	names := make([]string, 0, len(h.bots))
	for n := range h.bots {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		b := h.bots[n]
		if b.mg == nil {
			continue
		}
		ok, reason := b.state()
		v := 0.0
		if ok {
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(botHealthDesc, prometheus.GaugeValue, v, n, b.platform, reason)
	}
}

// warm fetches mg's first token in the background, so a wrong credential shows in the
// status, the log and the metrics within seconds of the start instead of at the first send.
func warm(mg *tokenmgr.Manager, log *slog.Logger) {
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if _, err := mg.Token(ctx); err != nil && !errors.Is(err, tokenmgr.ErrClosed) {
			// tokenmgr logged the failure itself, with its kind; say what it means here.
			log.Warn("first token fetch failed; sends will fail until it is fixed", "reason", FailureReason(err))
			return
		}
	}()
}
