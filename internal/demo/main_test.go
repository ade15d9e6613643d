package demo

import (
	"bytes"
	"log/slog"
	"os"
	"sync"
	"testing"

	"github.com/seed-a64d9e1f/chatwire/internal/platforms"
)

// TestMain lets the test binary serve as the plugin, as adapter-host does ("plugin").
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == "plugin" {
		platforms.Serve("test", slog.LevelDebug)
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// syncBuffer is a goroutine-safe log sink.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
