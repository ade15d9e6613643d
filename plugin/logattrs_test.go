package plugin

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"reflect"
	"testing"
	"time"
)

func TestDurationsAsMillis(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{ReplaceAttr: DurationsAsMillis}))
	log.Info("token refreshed", "took", 2300*time.Microsecond, "next_refresh_in", 90*time.Minute, "agent_id", 1000002, "key", "wecom/ww/1")
	var m map[string]any
	if err := json.Unmarshal(buf.Bytes(), &m); err != nil {
		t.Fatal(err)
	}
	if m["took_ms"] != 2.3 || m["next_refresh_in_ms"] != 5.4e6 || m["took"] != nil {
		t.Errorf("durations = took_ms %v next_refresh_in_ms %v took %v; want numbers of ms", m["took_ms"], m["next_refresh_in_ms"], m["took"])
	}
	if m["agent_id"] != 1000002.0 || m["key"] != "wecom/ww/1" {
		t.Errorf("other fields changed: %v", m)
	}
}

// The plugin's lines reach the host with their fields in one order (go-plugin hands them
// over from a map, in random order).
func TestPluginLineFieldOrderStable(t *testing.T) {
	var first []string
	for range 20 {
		var buf bytes.Buffer
		a := newHCLogAdapter(slog.New(slog.NewTextHandler(&buf, nil)), "plugin")
		// as go-plugin builds them: from a map, so vary the order
		args := map[string]any{"bot": "hr", "key": "wecom/ww/1", "took_ms": 2.3, "platform": "wecom", "source": "upstream", "timestamp": "x"}
		var flat []any
		for k, v := range args {
			flat = append(flat, k, v)
		}
		a.Info("token refreshed", flat...)
		var keys []string
		for _, f := range bytes.Fields(buf.Bytes()) {
			if k, _, ok := bytes.Cut(f, []byte("=")); ok {
				keys = append(keys, string(k))
			}
		}
		if first == nil {
			first = keys
		} else if !reflect.DeepEqual(keys, first) {
			t.Fatalf("field order changed: %v then %v", first, keys)
		}
	}
}

// Whole numbers from the plugin's JSON lines print as integers on the host, in text too.
func TestPluginLineNumbersKeepTheirType(t *testing.T) {
	var buf bytes.Buffer
	a := newHCLogAdapter(slog.New(slog.NewTextHandler(&buf, nil)), "plugin")
	a.Info("token refreshed", "agent_id", float64(1000002), "next_refresh_in_ms", float64(5400000), "took_ms", 2.3)
	line := buf.String()
	for _, want := range []string{"agent_id=1000002", "next_refresh_in_ms=5400000", "took_ms=2.3"} {
		if !bytes.Contains([]byte(line), []byte(want)) {
			t.Errorf("line %q lacks %s", line, want)
		}
	}
}
