package plugin

import (
	"slices"
	"testing"

	"github.com/seed-a64d9e1f/chatwire/adapter"
)

func TestWithCapabilities(t *testing.T) {
	all := []string{CapUpload, CapPoll, CapRecall}
	for mask := range 8 {
		var caps []string
		for i, c := range all {
			if mask&(1<<i) != 0 {
				caps = append(caps, c)
			}
		}
		a := withCapabilities(&supervisedBot{name: "b"}, caps)
		_, up := a.(adapter.Uploader)
		_, po := a.(adapter.Poller)
		_, re := a.(adapter.Recaller)
		if up != slices.Contains(caps, CapUpload) || po != slices.Contains(caps, CapPoll) || re != slices.Contains(caps, CapRecall) {
			t.Errorf("withCapabilities(%q): Uploader %v, Poller %v, Recaller %v; want exactly %q", caps, up, po, re, caps)
		}
	}
}
