package host

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/seed-a64d9e1f/chatwire/internal/platforms"
)

// readyTimeout bounds one /readyz answer: a check that has not answered by then fails with
// "no answer", so a hung part cannot hang the probe.
const readyTimeout = 3 * time.Second

// A problem is one failing part: Part names it ("store", "plugin", "bot hr"), Reason says
// why in a few words.
type problem struct {
	Part, Reason string
}

func (p problem) String() string {
	if p.Reason == "" {
		return p.Part
	}
	return p.Part + ": " + p.Reason
}

// A readyCheck is one thing "webhooks and sends will work" depends on. Check returns the
// failing parts, none when all is well.
type readyCheck struct {
	Name  string
	Check func(ctx context.Context) []problem
}

// addCheck registers a readiness check; checks run concurrently on every /readyz, and their
// problems are listed in registration order. Register before the server serves.
func (s *server) addCheck(name string, check func(ctx context.Context) []problem) {
	s.checks = append(s.checks, readyCheck{Name: name, Check: check})
}

// partCheck makes a check of one part from a function returning its error.
func partCheck(part string, f func(ctx context.Context) error) func(ctx context.Context) []problem {
	return func(ctx context.Context) []problem {
		if err := f(ctx); err != nil {
			return []problem{{Part: part, Reason: err.Error()}}
		}
		return nil
	}
}

// readyBody is the JSON of /readyz.
type readyBody struct {
	Status  string   `json:"status"` // ready, not ready, shutting down
	Failing []string `json:"failing,omitempty"`
}

// readyz answers 200 {"status":"ready"} when webhooks and sends will work, else 503 with the
// failing parts: {"status":"not ready","failing":["store: ...","bot hr: credentials rejected (40001)"]}.
func (s *server) readyz(w http.ResponseWriter, r *http.Request) {
	select {
	case <-s.closing:
		writeJSON(w, http.StatusServiceUnavailable, readyBody{Status: "shutting down", Failing: []string{"host: shutting down"}})
		return
	default:
	}
	ctx, cancel := context.WithTimeout(r.Context(), readyTimeout)
	defer cancel()
	failing := s.runChecks(ctx)
	if len(failing) > 0 {
		writeJSON(w, http.StatusServiceUnavailable, readyBody{Status: "not ready", Failing: failing})
		return
	}
	writeJSON(w, http.StatusOK, readyBody{Status: "ready"})
}

// runChecks runs every check concurrently and returns their problems in registration order.
func (s *server) runChecks(ctx context.Context) []string {
	results := make([]chan []problem, len(s.checks))
	for i, c := range s.checks {
		results[i] = make(chan []problem, 1)
		go func() { results[i] <- c.Check(ctx) }()
	}
	var failing []string
	for i, c := range s.checks {
		var ps []problem
		select {
		case ps = <-results[i]:
		case <-ctx.Done():
			ps = []problem{{Part: c.Name, Reason: fmt.Sprintf("no answer within %v", readyTimeout)}}
		}
		for _, p := range ps {
			failing = append(failing, p.String())
		}
	}
	return failing
}

// registerChecks registers the host's readiness checks: the plugin runs, the store answers,
// every bot can get a token.
func (h *Host) registerChecks() {
	s := h.srv
	s.addCheck("plugin", func(ctx context.Context) []problem {
		if !s.ready() {
			return []problem{{Part: "plugin", Reason: "not running or not answering (starting, restarting or hung)"}}
		}
		return nil
	})
	if h.redis != nil {
		rc := h.redis
		s.addCheck("store", partCheck("store", func(ctx context.Context) error {
			if err := rc.Ping(ctx).Err(); err != nil {
				return fmt.Errorf("redis not answering (%v)", err)
			}
			return nil
		}))
	}
	s.addCheck("bots", s.checkBots)
}

// checkBots reports every bot that cannot send: its adapter says it is unhealthy. The reason
// comes from the plugin's chatwire_bot_healthy gauge, which carries the platform's code
// ("credentials rejected (40001)"), else from the adapter's own detail. While the plugin is
// down the plugin check speaks for the bots.
func (s *server) checkBots(ctx context.Context) []problem {
	if !s.ready() {
		return nil
	}
	var reasons map[string]string
	var out []problem
	for _, name := range s.names {
		st, err := s.bots[name].adapter.Status(ctx)
		if err != nil {
			out = append(out, problem{Part: "bot " + name, Reason: "no status from the plugin: " + err.Error()})
			continue
		}
		if st.Healthy {
			continue
		}
		if reasons == nil {
			reasons = s.botReasons(ctx)
		}
		reason := reasons[name]
		if reason == "" {
			reason = st.Detail
		}
		out = append(out, problem{Part: "bot " + name, Reason: reason})
	}
	return out
}

// botReasons reads the reasons of unhealthy bots from the plugin's metrics.
func (s *server) botReasons(ctx context.Context) map[string]string {
	out := map[string]string{}
	if s.pluginMetrics == nil {
		return out
	}
	text, err := s.pluginMetrics(ctx)
	if err != nil {
		return out
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := parser.TextToMetricFamilies(bytes.NewReader(text))
	if err != nil {
		return out
	}
	mf := mfs[platforms.BotHealthMetric]
	if mf == nil {
		return out
	}
	for _, m := range mf.GetMetric() {
		if m.GetGauge().GetValue() != 0 {
			continue
		}
		var bot, reason string
		for _, l := range m.GetLabel() {
			switch l.GetName() {
			case "bot":
				bot = l.GetValue()
			case "reason":
				reason = strings.TrimSpace(l.GetValue())
			}
		}
		if bot != "" && reason != "" {
			out[bot] = reason
		}
	}
	return out
}
