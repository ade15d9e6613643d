package main

import (
	"log/slog"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/seed-a64d9e1f/chatwire/internal/config"
)

// TestRunProcs: server.max_procs as `run` applies it. Unset (auto): the host starts on one
// CPU (internal/procs moves it with the load) and gets the runtime's default back when it
// stops; a number is that many CPUs; 0 leaves Go's default; GOMAXPROCS in the environment
// wins over all of it, with a warning when max_procs was set too.
func TestRunProcs(t *testing.T) {
	t.Setenv("GOMAXPROCS", "")
	os.Unsetenv("GOMAXPROCS") // t.Setenv restores what was there
	runtime.SetDefaultGOMAXPROCS()
	def := runtime.GOMAXPROCS(0)
	t.Cleanup(runtime.SetDefaultGOMAXPROCS)
	var logs syncBuffer
	log := slog.New(slog.NewTextHandler(&logs, nil))

	waitProcs := func(want int) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for runtime.GOMAXPROCS(0) != want {
			if time.Now().After(deadline) {
				t.Fatalf("GOMAXPROCS = %d; want %d", runtime.GOMAXPROCS(0), want)
			}
			time.Sleep(time.Millisecond)
		}
	}

	stop := runProcs(t.Context(), config.ServerConfig{}, log)
	waitProcs(1)
	stop()
	if got := runtime.GOMAXPROCS(0); got != def {
		t.Errorf("after the host stopped GOMAXPROCS = %d; want the default %d", got, def)
	}

	stop = runProcs(t.Context(), config.ServerConfig{MaxProcs: "3"}, log)
	if got := runtime.GOMAXPROCS(0); got != 3 {
		t.Errorf("max_procs 3: GOMAXPROCS = %d", got)
	}
	stop()
	if got := runtime.GOMAXPROCS(0); got != def {
		t.Errorf("after max_procs 3 GOMAXPROCS = %d; want the default %d", got, def)
	}

	stop = runProcs(t.Context(), config.ServerConfig{MaxProcs: "0"}, log)
	time.Sleep(50 * time.Millisecond)
	if got := runtime.GOMAXPROCS(0); got != def {
		t.Errorf("max_procs 0: GOMAXPROCS = %d; want the default %d", got, def)
	}
	stop()

	t.Setenv("GOMAXPROCS", "5")
	runtime.GOMAXPROCS(5) // as the runtime would have at start
	stop = runProcs(t.Context(), config.ServerConfig{MaxProcs: "auto"}, log)
	time.Sleep(50 * time.Millisecond)
	if got := runtime.GOMAXPROCS(0); got != 5 {
		t.Errorf("GOMAXPROCS=5 in the environment and max_procs auto: GOMAXPROCS = %d; want 5", got)
	}
	stop()
	if !strings.Contains(logs.String(), "server.max_procs is ignored") {
		t.Errorf("no warning that max_procs is ignored:\n%s", logs.String())
	}
}
