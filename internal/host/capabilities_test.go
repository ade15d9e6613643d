package host

import (
	"testing"

	"github.com/seed-a64d9e1f/chatwire/adapter"
	"github.com/seed-a64d9e1f/chatwire/adapter/wecom"
)

// TestPluginBotCapabilities: a bot served by a real plugin subprocess has an optional
// capability exactly when its adapter has it in process, and recall works through the plugin.
func TestPluginBotCapabilities(t *testing.T) {
	e := setup(t, setupOpts{})
	var inProcess adapter.Adapter = (*wecom.Client)(nil)
	remote := e.h.plugin.Bot("hr")
	caps := []struct {
		name string
		has  func(adapter.Adapter) bool
	}{
		{"Uploader", func(a adapter.Adapter) bool { _, ok := a.(adapter.Uploader); return ok }},
		{"Poller", func(a adapter.Adapter) bool { _, ok := a.(adapter.Poller); return ok }},
		{"Recaller", func(a adapter.Adapter) bool { _, ok := a.(adapter.Recaller); return ok }},
	}
	for _, c := range caps {
		if got, want := c.has(remote), c.has(inProcess); got != want {
			t.Errorf("plugin bot is %s = %v; in process a wecom.Client is %s = %v", c.name, got, c.name, want)
		}
	}

	r, err := remote.Send(t.Context(), adapter.Message{To: adapter.Target{User: "alice"}, Text: "oops"})
	if err != nil {
		t.Fatal(err)
	}
	rc, ok := remote.(adapter.Recaller)
	if !ok {
		t.Fatal("plugin bot is no adapter.Recaller")
	}
	if err := rc.Recall(t.Context(), r.ID); err != nil {
		t.Fatalf("Recall(%q) through the plugin: %v", r.ID, err)
	}
	if sent := e.emu.Sent(); len(sent) != 1 || !sent[0].Recalled {
		t.Errorf("WeCom's sent messages after Recall = %+v; want the one message recalled", sent)
	}
	// A recall WeCom refuses comes back as a typed error (the platform code survives).
	if err := rc.Recall(t.Context(), "no-such-msgid"); err == nil || adapter.Code(err) == "" {
		t.Errorf("Recall(unknown id) = %v; want WeCom's error with its code", err)
	}
}
