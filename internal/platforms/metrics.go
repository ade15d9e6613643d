package platforms

import (
	"errors"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/seed-a64d9e1f/chatwire/tokenmgr"
)

// Metrics are the plugin-side metrics: token refreshes and upstream calls. The host merges
// them into its /metrics.
type Metrics struct {
	refreshes *prometheus.CounterVec
	upstream  *prometheus.CounterVec

	mu       sync.Mutex // guards managers
	managers []*tokenmgr.Manager
}

// NewMetrics registers the metrics with reg (nil: kept unregistered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		refreshes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "chatwire_token_refreshes_total",
			Help: "Token refreshes by platform, reason (initial, ahead, expired, invalidated, shared) and result (ok, error, invalidation).",
		}, []string{"platform", "key", "reason", "result"}),
		upstream: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "chatwire_upstream_requests_total",
			Help: "HTTP requests to platform APIs by platform and HTTP status code (\"error\" when no response came).",
		}, []string{"platform", "code"}),
	}
	if reg != nil {
		reg.MustRegister(m.refreshes, m.upstream, prometheus.CollectorFunc(m.collectExpiry))
	}
	return m
}

var expiryDesc = prometheus.NewDesc("chatwire_token_expiry_seconds",
	"Seconds until the current token of a key expires (negative: expired).", []string{"platform", "key", "state"}, nil)

// collectExpiry reports time-to-expiry for every watched manager at scrape time.
func (m *Metrics) collectExpiry(ch chan<- prometheus.Metric) {
	m.mu.Lock()
	ms := append([]*tokenmgr.Manager(nil), m.managers...)
	m.mu.Unlock()
	for _, mg := range ms {
		st := mg.Status()
		if st.State == "closed" || st.ExpiresAt.IsZero() {
			continue
		}
		ch <- prometheus.MustNewConstMetric(expiryDesc, prometheus.GaugeValue, time.Until(st.ExpiresAt).Seconds(), st.Platform, st.Key, st.State)
	}
}

func (m *Metrics) watch(mg *tokenmgr.Manager) {
	if mg == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	kept := m.managers[:0]
	for _, x := range m.managers {
		if x.Status().State != "closed" {
			kept = append(kept, x)
		}
	}
	m.managers = append(kept, mg)
}

func (m *Metrics) tokenEvent(ev tokenmgr.Event) {
	result := "ok"
	switch ev.Kind {
	case tokenmgr.EventFailure:
		result = "error"
	case tokenmgr.EventInvalidate:
		result = "invalidation"
	}
	m.refreshes.WithLabelValues(ev.Platform, ev.Key, ev.Reason, result).Inc()
}

type countingTransport struct {
	base     http.RoundTripper
	platform string
	m        *Metrics
}

func (m *Metrics) transport(platform string, base http.RoundTripper) http.RoundTripper {
	return &countingTransport{base: base, platform: platform, m: m}
}

func (t *countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := t.base.RoundTrip(r)
	code := "error"
	if err == nil {
		code = strconv.Itoa(resp.StatusCode)
	} else if errors.Is(err, r.Context().Err()) && r.Context().Err() != nil {
		code = "canceled"
	}
	t.m.upstream.WithLabelValues(t.platform, code).Inc()
	return resp, err
}
