package main

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestStartCPUProfile: run --cpuprofile writes a pprof CPU profile (gzipped protobuf) when
// the host stops, and a path that cannot be created is refused, naming the flag.
func TestStartCPUProfile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "host.pprof")
	stop, err := startCPUProfile(path)
	if err != nil {
		t.Fatal(err)
	}
	x := 0
	for i := range 20_000_000 {
		x += i % 7
	}
	_ = x
	stop()
	data, err := os.ReadFile(path)
	if err != nil || len(data) < 20 || data[0] != 0x1f || data[1] != 0x8b {
		t.Fatalf("profile: %d bytes, %v; want a gzipped profile", len(data), err)
	}
	if _, err := startCPUProfile(filepath.Join(t.TempDir(), "missing", "host.pprof")); err == nil || !strings.Contains(err.Error(), "--cpuprofile") {
		t.Errorf("uncreatable path: %v", err)
	}
	// The plugin takes the flag from the host (run --plugin-cpuprofile): a bad path fails it
	// before it serves anything.
	err = run(context.Background(), []string{"plugin", "--cpuprofile", filepath.Join(t.TempDir(), "missing", "plugin.pprof")}, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "--cpuprofile") {
		t.Errorf("plugin --cpuprofile with an uncreatable path: %v", err)
	}
}
