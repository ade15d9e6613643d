package host

import (
	"context"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/seed-a64d9e1f/chatwire/internal/eventlog"
)

// stuckLog is an event log whose Len waits until release is closed, whatever its ctx says
// (Redis unreachable, the worst case).
type stuckLog struct {
	eventlog.Log
	release chan struct{}
}

func (q stuckLog) Len(context.Context) (eventlog.Length, error) {
	<-q.release
	return eventlog.Length{}, nil
}

// A scrape does not wait on an event queue that does not answer: it ends after scrapeBudget
// with the gauges it has.
func TestScrapeDoesNotWaitForAStuckQueue(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		release := make(chan struct{})
		s := &server{names: []string{"hr"}, bots: map[string]*bot{"hr": newBot("hr", "wecom", nil, stuckLog{release: release})}}
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
