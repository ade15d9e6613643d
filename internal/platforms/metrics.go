package platforms

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/seed-a64d9e1f/chatwire/tokenmgr"
)

// Metrics are the plugin-side metrics: token refreshes and upstream calls. The host merges
// them into its /metrics.
type Metrics struct {
	refreshes *prometheus.CounterVec
	fetchTime *prometheus.HistogramVec
	upstream  *prometheus.CounterVec
	upErrors  *prometheus.CounterVec

	mu       sync.Mutex // guards managers
	managers []*tokenmgr.Manager
}

// NewMetrics registers the metrics with reg (nil: kept unregistered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		refreshes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "chatwire_token_refreshes_total",
			Help: "Token refreshes by platform, reason (initial, ahead, expired, invalidated, shared), result (ok, error, invalidation), source (upstream: fetched from the platform; store: taken from the fleet's shared store) and the platform's error code of a failure.",
		}, []string{"platform", "key", "reason", "result", "source", "code"}),
		fetchTime: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "chatwire_token_fetch_duration_seconds",
			Help:    "How long token refreshes took, by platform, source (upstream or store) and result (ok, error).",
			Buckets: []float64{.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{"platform", "source", "result"}),
		upstream: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "chatwire_upstream_requests_total",
			Help: "HTTP requests to platform APIs by platform and HTTP status code (\"error\" when no response came).",
		}, []string{"platform", "code"}),
		upErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "chatwire_upstream_errors_total",
			Help: "Platform API calls answered with an error, by platform and the platform's own error code (WeCom errcode, which comes with HTTP 200; Graph error code or AADSTS number), not the HTTP status.",
		}, []string{"platform", "code"}),
	}
	if reg != nil {
		reg.MustRegister(m.refreshes, m.fetchTime, m.upstream, m.upErrors, prometheus.CollectorFunc(m.collectExpiry))
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
	source := ev.Source
	if source == "" {
		source = tokenmgr.SourceUpstream
	}
	m.refreshes.WithLabelValues(ev.Platform, ev.Key, ev.Reason, result, source, ErrorCode(ev.Err)).Inc()
	if ev.Kind != tokenmgr.EventInvalidate {
		m.fetchTime.WithLabelValues(ev.Platform, source, result).Observe(ev.Took.Seconds())
	}
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
	if err == nil {
		if pc := platformCode(t.platform, resp); pc != "" {
			t.m.upErrors.WithLabelValues(t.platform, pc).Inc()
		}
	}
	return resp, err
}

// maxPeek bounds the JSON body platformCode reads for an error code.
const maxPeek = 64 << 10

// isWeComOK reports whether a body is WeCom's answer of success, which starts
// {"errcode":0, (or is {"errcode":0}): the JSON decode of platformCode was 2.6% of the
// plugin's CPU in the sends under bench/load, on a body the adapter decodes anyway.
func isWeComOK(data []byte) bool {
	rest, ok := bytes.CutPrefix(data, []byte(`{"errcode":0`))
	return ok && len(rest) > 0 && (rest[0] == ',' || rest[0] == '}')
}

// platformCode returns the platform's error code in resp ("40001", "InvalidAuthenticationToken",
// "AADSTS7000215"), or "" for a success or a body it cannot read. It reads only small JSON
// bodies (WeCom answers every API call with JSON, errors with HTTP 200; Graph only error
// responses) and puts the bytes back for the caller.
func platformCode(platform string, resp *http.Response) string {
	if platform == "graph" && resp.StatusCode < 400 {
		return ""
	}
	if !strings.Contains(resp.Header.Get("Content-Type"), "json") || resp.ContentLength > maxPeek || resp.Body == nil {
		return ""
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxPeek+1))
	rest := resp.Body
	resp.Body = struct {
		io.Reader
		io.Closer
	}{io.MultiReader(bytes.NewReader(data), rest), rest}
	if err != nil || len(data) > maxPeek {
		return ""
	}
	if isWeComOK(data) {
		return "" // every successful WeCom call: no need to decode the body twice
	}
	var body struct {
		ErrCode    *int            `json:"errcode"`     // WeCom
		ErrorCodes []int           `json:"error_codes"` // Entra ID token endpoint: AADSTS numbers
		Error      json.RawMessage `json:"error"`       // Graph {"error":{"code"}} or OAuth "invalid_client"
	}
	if json.Unmarshal(data, &body) != nil {
		return ""
	}
	switch {
	case body.ErrCode != nil:
		if *body.ErrCode == 0 {
			return ""
		}
		return strconv.Itoa(*body.ErrCode)
	case len(body.ErrorCodes) > 0:
		return "AADSTS" + strconv.Itoa(body.ErrorCodes[0])
	case len(body.Error) > 0:
		var graphErr struct {
			Code string `json:"code"`
		}
		if json.Unmarshal(body.Error, &graphErr) == nil && graphErr.Code != "" {
			return graphErr.Code
		}
		var oauth string
		if json.Unmarshal(body.Error, &oauth) == nil {
			return oauth
		}
	}
	if resp.StatusCode >= 400 {
		return strconv.Itoa(resp.StatusCode)
	}
	return ""
}
