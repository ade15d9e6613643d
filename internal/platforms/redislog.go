package platforms

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// RedisQuiet is how long go-redis must stay silent before RedisLog takes an outage as over.
const RedisQuiet = 30 * time.Second

// RedisLog routes go-redis's own log lines (it prints them unstructured on stderr, 20 and
// more per outage) through slog, once per outage: the first line as a warning, the rest
// counted, and a summary with the count and the last line once go-redis has been quiet for
// RedisQuiet. Install it with [InstallRedisLog].
type RedisLog struct {
	log   *slog.Logger
	quiet time.Duration

	mu         sync.Mutex
	active     bool // an outage is being summarised
	since      time.Time
	lastAt     time.Time
	suppressed int
	last       string
}

// NewRedisLog returns a RedisLog writing to log that ends an outage after quiet.
func NewRedisLog(log *slog.Logger, quiet time.Duration) *RedisLog {
	return &RedisLog{log: log, quiet: quiet}
}

// InstallRedisLog makes go-redis log through log (component=redis) for the whole process.
func InstallRedisLog(log *slog.Logger) {
	redis.SetLogger(NewRedisLog(log.With("component", "redis"), RedisQuiet))
}

// Printf implements go-redis's internal.Logging.
func (l *RedisLog) Printf(ctx context.Context, format string, v ...any) {
	line := strings.TrimSpace(fmt.Sprintf(format, v...))
	l.mu.Lock()
	defer l.mu.Unlock()
	now := time.Now()
	l.lastAt = now
	if l.active {
		l.suppressed++
		l.last = line
		return
	}
	l.active, l.since, l.suppressed, l.last = true, now, 0, ""
	l.log.Warn("redis client: "+line, "repeats", "summarised when Redis is quiet again")
	time.AfterFunc(l.quiet, l.end)
}

// end closes an outage once go-redis has been quiet for l.quiet, else waits on.
func (l *RedisLog) end() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if left := l.quiet - time.Since(l.lastAt); left > 0 {
		time.AfterFunc(left, l.end)
		return
	}
	if l.suppressed > 0 {
		l.log.Info("redis client quiet again", "suppressed_lines", l.suppressed,
			"took_ms", time.Since(l.since).Milliseconds(), "last", l.last)
	}
	l.active = false
}
