package plugin

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log"
	"log/slog"
	"strings"

	"github.com/hashicorp/go-hclog"
)

// NewPluginLogHandler returns a slog JSON handler for plugin processes that writes lines in
// hclog's shape (@level, @message, @timestamp with six fractional digits), so go-plugin on
// the host parses them and each line keeps its level in the host's log. Build it before
// [Serve] so it writes to the real stderr.
func NewPluginLogHandler(w io.Writer, level slog.Leveler) slog.Handler {
	return slog.NewJSONHandler(w, &slog.HandlerOptions{Level: level, ReplaceAttr: hclogAttr})
}

func hclogAttr(groups []string, a slog.Attr) slog.Attr {
	if a.Value.Kind() == slog.KindDuration {
		// JSON would carry nanoseconds, which the host logs as 2.3e+06: took_ms=2.3.
		return DurationsAsMillis(groups, a)
	}
	if len(groups) > 0 {
		return a
	}
	switch a.Key {
	case slog.TimeKey:
		return slog.String("@timestamp", a.Value.Time().Format("2006-01-02T15:04:05.000000Z07:00"))
	case slog.LevelKey:
		lvl, _ := a.Value.Any().(slog.Level)
		return slog.String("@level", hclogLevelName(lvl))
	case slog.MessageKey:
		return slog.String("@message", a.Value.String())
	}
	return a
}

func hclogLevelName(l slog.Level) string {
	switch {
	case l < slog.LevelDebug:
		return "trace"
	case l < slog.LevelInfo:
		return "debug"
	case l < slog.LevelWarn:
		return "info"
	case l < slog.LevelError:
		return "warn"
	}
	return "error"
}

// hclogAdapter is an hclog.Logger that writes to a slog.Logger: go-plugin logs the plugin's
// stderr lines through it with the level each line carried. It reports NoLevel so go-plugin
// filters nothing itself; the slog handler decides.
type hclogAdapter struct {
	log  *slog.Logger
	name string
	args []any
}

var _ hclog.Logger = (*hclogAdapter)(nil)

func newHCLogAdapter(l *slog.Logger, name string) *hclogAdapter {
	return &hclogAdapter{log: l, name: name}
}

func slogLevel(l hclog.Level) slog.Level {
	switch l {
	case hclog.Trace:
		return slog.LevelDebug - 4
	case hclog.Debug:
		return slog.LevelDebug
	case hclog.Warn:
		return slog.LevelWarn
	case hclog.Error:
		return slog.LevelError
	}
	return slog.LevelInfo
}

func (h *hclogAdapter) Log(level hclog.Level, msg string, args ...any) {
	lvl := slogLevel(level)
	ctx := context.Background()
	if !h.log.Enabled(ctx, lvl) {
		return
	}
	all := make([]any, 0, len(h.args)+len(args)+2)
	if h.name != "" {
		all = append(all, "logger", h.name)
	}
	all = append(all, h.args...)
	// go-plugin passes the plugin's own @timestamp as "timestamp"; the host has its own time.
	// It builds args from a JSON object, in random order: sort them for a stable field order.
	args = sortedPairs(args)
	for i := 0; i+1 < len(args); i += 2 {
		if k, ok := args[i].(string); ok && k == "timestamp" {
			continue
		}
		all = append(all, args[i], args[i+1])
	}
	h.log.Log(ctx, lvl, msg, all...)
}

func (h *hclogAdapter) Trace(msg string, args ...any) { h.Log(hclog.Trace, msg, args...) }
func (h *hclogAdapter) Debug(msg string, args ...any) { h.Log(hclog.Debug, msg, args...) }
func (h *hclogAdapter) Info(msg string, args ...any)  { h.Log(hclog.Info, msg, args...) }
func (h *hclogAdapter) Warn(msg string, args ...any)  { h.Log(hclog.Warn, msg, args...) }
func (h *hclogAdapter) Error(msg string, args ...any) { h.Log(hclog.Error, msg, args...) }

func (h *hclogAdapter) enabled(l hclog.Level) bool {
	return h.log.Enabled(context.Background(), slogLevel(l))
}
func (h *hclogAdapter) IsTrace() bool         { return h.enabled(hclog.Trace) }
func (h *hclogAdapter) IsDebug() bool         { return h.enabled(hclog.Debug) }
func (h *hclogAdapter) IsInfo() bool          { return h.enabled(hclog.Info) }
func (h *hclogAdapter) IsWarn() bool          { return h.enabled(hclog.Warn) }
func (h *hclogAdapter) IsError() bool         { return h.enabled(hclog.Error) }
func (h *hclogAdapter) ImpliedArgs() []any    { return h.args }
func (h *hclogAdapter) Name() string          { return h.name }
func (h *hclogAdapter) SetLevel(hclog.Level)  {}
func (h *hclogAdapter) GetLevel() hclog.Level { return hclog.NoLevel }

func (h *hclogAdapter) With(args ...any) hclog.Logger {
	c := *h
	c.args = append(append([]any(nil), h.args...), args...)
	return &c
}

func (h *hclogAdapter) Named(name string) hclog.Logger {
	c := *h
	if c.name != "" {
		c.name += "." + name
	} else {
		c.name = name
	}
	return &c
}

func (h *hclogAdapter) ResetNamed(name string) hclog.Logger {
	c := *h
	c.name = name
	return &c
}

func (h *hclogAdapter) StandardLogger(opts *hclog.StandardLoggerOptions) *log.Logger {
	return log.New(h.StandardWriter(opts), "", 0)
}

func (h *hclogAdapter) StandardWriter(*hclog.StandardLoggerOptions) io.Writer {
	return writerFunc(func(p []byte) (int, error) {
		h.Info(strings.TrimRight(string(p), "\n"))
		return len(p), nil
	})
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// lineLogger is an io.Writer that logs each complete line at a fixed level: the plugin's
// stray stdout and stderr (after Serve) arrive through it instead of being discarded.
type lineLogger struct {
	log   *slog.Logger
	level slog.Level
	what  string
	buf   bytes.Buffer
}

func (w *lineLogger) Write(p []byte) (int, error) {
	w.buf.Write(p)
	for {
		line, err := w.buf.ReadString('\n')
		if err != nil {
			w.buf.Reset()
			w.buf.WriteString(line)
			break
		}
		w.log.Log(context.Background(), w.level, fmt.Sprintf("plugin %s: %s", w.what, strings.TrimRight(line, "\n")))
	}
	return len(p), nil
}
