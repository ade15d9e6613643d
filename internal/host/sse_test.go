package host

import (
	"testing"

	"github.com/seed-a64d9e1f/chatwire/internal/eventlog"
)

// TestAppendSSE: an event as the SSE stream writes it, byte for byte.
func TestAppendSSE(t *testing.T) {
	buf := appendSSE([]byte(": x\n\n"), eventlog.Entry{ID: eventlog.ID{Ms: 1700000000123, Seq: 7}, Kind: "message", Data: []byte(`{"id":"a"}`)})
	buf = appendSSE(buf, eventlog.Entry{ID: eventlog.ID{Ms: 5}, Kind: "k", Data: []byte(`{}`)})
	want := ": x\n\nid: 1700000000123-7\nevent: message\ndata: {\"id\":\"a\"}\n\nid: 5-0\nevent: k\ndata: {}\n\n"
	if string(buf) != want {
		t.Errorf("appendSSE = %q, want %q", buf, want)
	}
}
