package main

import (
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// stuckQueue is an event queue whose Len waits until release is closed (Redis unreachable).
type stuckQueue struct {
	eventQueue
	release chan struct{}
}

func (q stuckQueue) Len() (int, int) { <-q.release; return 0, 0 }

// A scrape does not wait on an event queue that does not answer: it ends after scrapeBudget
// with the gauges it has.
func TestScrapeDoesNotWaitForAStuckQueue(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		release := make(chan struct{})
		s := &server{names: []string{"hr"}, bots: map[string]*bot{"hr": newBot("hr", "wecom", nil, stuckQueue{release: release})}}
		reg := prometheus.NewRegistry()
		reg.MustRegister(prometheus.CollectorFunc(s.collectServer))
		start := time.Now()
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		if took := time.Since(start); took > scrapeBudget {
			t.Errorf("scrape took %v; want at most %v", took, scrapeBudget)
		}
		names := map[string]bool{}
		for _, mf := range mfs {
			names[mf.GetName()] = true
		}
		if !names["chatwire_sse_consumers"] || names["chatwire_events_unconsumed"] {
			t.Errorf("families %v; want the SSE gauge and no unconsumed count", names)
		}
		close(release)
		synctest.Wait()
	})
}
