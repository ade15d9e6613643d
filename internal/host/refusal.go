package host

import (
	"crypto/sha256"
	"encoding/hex"
	"log/slog"
	"sync"
	"time"
)

// refusalLog logs refused API requests (a wrong key, a body that cannot be decoded), at most
// burst lines per window: a flood of bad requests cannot fill the disk. What it does not log
// it counts, and says how many in one line when the window ends. The zero value is not
// usable; use newRefusalLog.
type refusalLog struct {
	log    *slog.Logger
	burst  int
	window time.Duration

	mu         sync.Mutex  // guards the fields below
	logged     int         // lines logged in this window
	suppressed int         // refusals not logged in this window
	timer      *time.Timer // ends the window; nil between windows
	closed     bool
}

// Defaults of refusalLog: 20 lines a minute.
const (
	refusalBurst  = 20
	refusalWindow = time.Minute
)

func newRefusalLog(log *slog.Logger, burst int, window time.Duration) *refusalLog {
	return &refusalLog{log: log, burst: burst, window: window}
}

// refused logs one refused request, unless this window's lines are used up.
func (l *refusalLog) refused(msg string, args ...any) {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return
	}
	if l.timer == nil {
		l.timer = time.AfterFunc(l.window, l.endWindow)
	}
	if l.logged >= l.burst {
		l.suppressed++
		l.mu.Unlock()
		return
	}
	l.logged++
	l.mu.Unlock()
	l.log.Warn(msg, args...)
}

// endWindow logs how many refusals went unlogged in the window that ends, and starts anew.
func (l *refusalLog) endWindow() {
	l.mu.Lock()
	n := l.suppressed
	l.logged, l.suppressed, l.timer = 0, 0, nil
	l.mu.Unlock()
	if n > 0 {
		l.log.Warn("more API requests refused than logged", "suppressed", n, "window", l.window)
	}
}

// close stops the window timer and logs what was suppressed so far.
func (l *refusalLog) close() {
	l.mu.Lock()
	if l.timer != nil {
		l.timer.Stop()
	}
	l.closed = true
	l.mu.Unlock()
	l.endWindow()
}

// fingerprint identifies a presented credential in logs without revealing it: the first 8
// hex digits of its SHA-256.
func fingerprint(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:4])
}
