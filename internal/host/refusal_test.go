package host

import (
	"encoding/json"
	"strings"
	"testing"
)

// refusalLines returns the log lines about refused API requests.
func refusalLines(logs string) []map[string]any {
	var out []map[string]any
	for _, line := range strings.Split(logs, "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) == nil && m["msg"] == "API request refused" {
			out = append(out, m)
		}
	}
	return out
}

// TestRefusedRequestsLogged: a refused API request (no key, a wrong key, a body that cannot
// be decoded) leaves one log line without the key; a flood of 1000 leaves a bounded number,
// and one line says how many were not logged (issue 11 item 7).
func TestRefusedRequestsLogged(t *testing.T) {
	e := setup(t, setupOpts{})
	const wrongKey = "wrong-key-that-must-not-be-logged-42"
	body := `{"to":{"user":"alice"},"text":"x"}`
	e.do("POST", "/v1/bots/hr/messages", "", body)
	e.do("POST", "/v1/bots/hr/messages", wrongKey, body)
	e.do("POST", "/v1/bots/hr/messages", testAPIKey, `{"to":`)
	lines := refusalLines(e.logs.String())
	if len(lines) != 3 {
		t.Fatalf("3 refused requests left %d log lines; want 3:\n%s", len(lines), e.logs.String())
	}
	for i, want := range []struct{ kind, why string }{{"unauthorized", "no Bearer API key"}, {"unauthorized", "wrong API key"}, {"invalid_request", ""}} {
		l := lines[i]
		if l["kind"] != want.kind || (want.why != "" && l["why"] != want.why) || l["path"] != "/v1/bots/hr/messages" || l["remote"] == nil {
			t.Errorf("line %d = %v; want kind %s why %q, the path and the remote address", i, l, want.kind, want.why)
		}
	}
	if fp := lines[1]["key_fingerprint"]; fp != fingerprint(wrongKey) {
		t.Errorf("wrong-key line's fingerprint = %v; want %s", fp, fingerprint(wrongKey))
	}
	const flood = 1000
	for i := range flood {
		switch i % 3 {
		case 0:
			e.do("GET", "/v1/tokens", wrongKey, nil)
		case 1:
			e.do("POST", "/v1/bots/hr/messages", "", body)
		default:
			e.do("POST", "/v1/bots/hr/messages", testAPIKey, `{"to":{"user":"alice"},"text":"x"}{}`)
		}
	}
	lines = refusalLines(e.logs.String())
	if len(lines) != refusalBurst {
		t.Errorf("%d refused requests left %d log lines; want %d (the burst)", flood+3, len(lines), refusalBurst)
	}
	e.h.srv.refusals.endWindow() // the window ends: one line counts the rest
	var summary map[string]any
	for _, line := range strings.Split(e.logs.String(), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) == nil && m["msg"] == "more API requests refused than logged" {
			summary = m
		}
	}
	if want := float64(flood + 3 - refusalBurst); summary == nil || summary["suppressed"] != want {
		t.Errorf("summary line = %v; want suppressed %v", summary, want)
	}
	if logs := e.logs.String(); strings.Contains(logs, wrongKey) || strings.Contains(logs, testAPIKey) {
		t.Error("the log holds an API key")
	}
	_, _, metrics := e.do("GET", "/metrics", "", nil)
	if !strings.Contains(string(metrics), `chatwire_api_refused_total{kind="unauthorized"} 669`) {
		t.Errorf("/metrics lacks the refused count: %s", metrics)
	}
}
