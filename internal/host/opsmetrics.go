package host

import (
	"cmp"
	"context"
	"runtime"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// buildInfo is chatwire_build_info{version,revision,goversion} 1: the version and revision
// the binary reports (Options.Version, Options.Revision).
func buildInfo(v, rev string) prometheus.Collector {
	v, rev = cmp.Or(v, "(devel)"), cmp.Or(rev, "unknown")
	return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "chatwire_build_info",
		Help:        "Always 1; the labels say which build runs: module version, VCS revision, Go version.",
		ConstLabels: prometheus.Labels{"version": v, "revision": rev, "goversion": runtime.Version()}},
		func() float64 { return 1 })
}

// goMaxProcs is chatwire_gomaxprocs: how many CPUs run the host's Go code now (server.max_procs:
// with auto it moves between 1 and every CPU with the load).
func goMaxProcs() prometheus.Collector {
	return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "chatwire_gomaxprocs",
		Help: "How many CPUs run the host's Go code now (GOMAXPROCS; server.max_procs auto moves it between 1 and every CPU with the load)."},
		func() float64 { return float64(runtime.GOMAXPROCS(0)) })
}

var (
	unconsumedDesc = prometheus.NewDesc("chatwire_events_unconsumed",
		"Events received and not yet consumed (SSE, webhook delivery or a group ack), by bot.", []string{"bot"}, nil)
	sseDesc = prometheus.NewDesc("chatwire_sse_consumers",
		"Server-Sent Events streams open on this host.", nil, nil)
)

// scrapeBudget bounds how long a scrape waits for the event queues' counts.
const scrapeBudget = 2 * time.Second

// collectServer reports the gauges read from the server's live state at scrape time.
func (s *server) collectServer(ch chan<- prometheus.Metric) {
	s.sseMu.Lock()
	sse := s.sseClients
	s.sseMu.Unlock()
	ch <- prometheus.MustNewConstMetric(sseDesc, prometheus.GaugeValue, float64(sse))
	// Redis queues ask Redis: concurrently, and a bot whose count does not come within
	// scrapeBudget is left out of this scrape rather than holding it up.
	counts := make([]chan int, len(s.names))
	for i, name := range s.names {
		counts[i] = make(chan int, 1)
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), scrapeBudget)
			defer cancel()
			n, err := s.bots[name].events.Len(ctx)
			if err != nil {
				counts[i] <- -1 // left out of this scrape
				return
			}
			counts[i] <- int(n.Unconsumed)
		}()
	}
	budget := time.NewTimer(scrapeBudget)
	defer budget.Stop()
	for i, name := range s.names {
		select {
		case n := <-counts[i]:
			if n < 0 {
				continue
			}
			ch <- prometheus.MustNewConstMetric(unconsumedDesc, prometheus.GaugeValue, float64(n), name)
		case <-budget.C:
			return // Redis is slow or away: /readyz and chatwire_store_available say so
		}
	}
}

// observeSince observes the seconds since start in h; for defer.
func observeSince(h prometheus.Observer, start time.Time) { h.Observe(time.Since(start).Seconds()) }

// observeSend records a send's duration by bot and result.
func (m *metrics) observeSend(bot string, err error, start time.Time) {
	result := "ok"
	if err != nil {
		result = "error"
	}
	m.sendTime.WithLabelValues(bot, result).Observe(time.Since(start).Seconds())
}
