package host

import (
	"log/slog"
	"sync"
	"time"
)

// retryLog rate-limits the warnings of a loop that retries (a Redis outage made every loop
// warn every second): one warning when failures start, one summary when the loop succeeds
// again, with how many failures there were and how long they lasted (took_ms, a number).
// Its methods are safe for concurrent use.
type retryLog struct {
	log  *slog.Logger
	what string // "event stream watch": logged as "... failed; retrying" and "... recovered"

	mu      sync.Mutex
	failing bool
	since   time.Time
	n       int
	last    string
}

func newRetryLog(log *slog.Logger, what string) *retryLog {
	return &retryLog{log: log, what: what}
}

// failed records a failure; only the first of a run is logged.
func (r *retryLog) failed(err error, attrs ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.n++
	r.last = err.Error()
	if r.failing {
		return
	}
	r.failing, r.since = true, time.Now()
	r.log.Warn(r.what+" failed; retrying", append(attrs, "error", err, "repeats", "summarised when it recovers")...)
}

// ok records a success; after failures it logs the summary.
func (r *retryLog) ok(attrs ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.failing {
		return
	}
	r.log.Info(r.what+" recovered", append(attrs, "failures", r.n, "took_ms", time.Since(r.since).Milliseconds(), "last_error", r.last)...)
	r.failing, r.n, r.last = false, 0, ""
}

// failures returns the failures of the current run (0 when not failing).
func (r *retryLog) failures() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.n
}
