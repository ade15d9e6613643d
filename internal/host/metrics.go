package host

import (
	"bytes"
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// metrics are the host's own metrics; the plugin's (token refreshes, expiry, upstream calls)
// are merged in at scrape time by pluginGatherer.
type metrics struct {
	reg        *prometheus.Registry
	sends      *prometheus.CounterVec
	webhooks   *prometheus.CounterVec
	events     *prometheus.CounterVec
	deliveries *prometheus.CounterVec
	refused    *prometheus.CounterVec
	bodyBytes  prometheus.Gauge
	restarts   prometheus.Counter
	ready      prometheus.Gauge
	sendTime   *prometheus.HistogramVec
	hookTime   *prometheus.HistogramVec
}

func newMetrics() *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		sends: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "chatwire_sends_total",
			Help: "Messages sent through the API by bot, result (ok or an error kind) and platform code."}, []string{"bot", "result", "code"}),
		webhooks: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "chatwire_webhooks_total",
			Help: "Platform webhook requests by bot and result (ok, an error kind, unavailable while the plugin restarts)."}, []string{"bot", "result"}),
		events: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "chatwire_events_total",
			Help: "Events received by bot and outcome (queued, duplicate)."}, []string{"bot", "outcome"}),
		deliveries: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "chatwire_deliveries_total",
			Help: "Event webhook delivery attempts by bot and result (ok, error)."}, []string{"bot", "result"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "chatwire_api_refused_total",
			Help: "API requests refused before any work by error kind (unauthorized, invalid_request, not_found, ...)."}, []string{"kind"}),
		bodyBytes: prometheus.NewGauge(prometheus.GaugeOpts{Name: "chatwire_request_body_bytes_held",
			Help: "Bytes of request bodies reserved against server.body_memory_mib right now."}),
		restarts: prometheus.NewCounter(prometheus.CounterOpts{Name: "chatwire_plugin_restarts_total",
			Help: "Crashed or hung plugin processes replaced."}),
		ready: prometheus.NewGauge(prometheus.GaugeOpts{Name: "chatwire_plugin_ready",
			Help: "1 while the plugin runs with its bots configured."}),
	}
	m.sendTime = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "chatwire_send_duration_seconds",
		Help:    "How long sends through the API took, upload included, by bot and result (ok or error).",
		Buckets: []float64{.025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 120}}, []string{"bot", "result"})
	m.hookTime = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "chatwire_webhook_duration_seconds",
		Help:    "How long platform webhook requests took to answer (checked, parsed, events queued), by bot.",
		Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 5}}, []string{"bot"})
	m.reg.MustRegister(m.sends, m.webhooks, m.events, m.deliveries, m.refused, m.bodyBytes, m.restarts, m.ready, m.sendTime, m.hookTime)
	return m
}

// hotMetrics are a bot's metric children on the webhook path, looked up once rather than
// per request: WithLabelValues hashes the labels and takes a lock every time.
type hotMetrics struct {
	m          *metrics // whose children these are
	hookTime   prometheus.Observer
	webhooksOK prometheus.Counter
	queued     prometheus.Counter
	duplicate  prometheus.Counter
}

// hot returns b's webhook path metrics, looking them up on first use.
func (m *metrics) hot(b *bot) *hotMetrics {
	if h := b.hot.Load(); h != nil && h.m == m {
		return h
	}
	h := &hotMetrics{m: m,
		hookTime:   m.hookTime.WithLabelValues(b.name),
		webhooksOK: m.webhooks.WithLabelValues(b.name, "ok"),
		queued:     m.events.WithLabelValues(b.name, "queued"),
		duplicate:  m.events.WithLabelValues(b.name, "duplicate"),
	}
	b.hot.Store(h) // a racing lookup stores the same children
	return h
}

// pluginGatherer gathers the plugin's metrics over RPC; while the plugin is down it
// contributes nothing rather than failing the scrape.
type pluginGatherer struct {
	fetch func(ctx context.Context) ([]byte, error)
}

func (g pluginGatherer) Gather() ([]*dto.MetricFamily, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	text, err := g.fetch(ctx)
	if err != nil || len(text) == 0 {
		return nil, nil
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := parser.TextToMetricFamilies(bytes.NewReader(text))
	if err != nil {
		return nil, err
	}
	out := make([]*dto.MetricFamily, 0, len(mfs))
	for _, mf := range mfs {
		out = append(out, mf)
	}
	return out, nil
}
