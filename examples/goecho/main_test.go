package main

import (
	"bytes"
	"log/slog"
	"os"
	"strings"
	"testing"

	"github.com/seed-a64d9e1f/chatwire/internal/platforms"
)

// TestMain lets the test binary serve as the plugin.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == "plugin" {
		platforms.Serve("test", slog.LevelInfo)
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func TestEcho(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("WECOM_CORP_ID", "")
	var out, errb bytes.Buffer
	if err := run(t.Context(), []string{"--plugin", exe, "--plugin-arg", "plugin"}, &out, &errb); err != nil {
		t.Fatalf("run = %v\n%s\n%s", err, out.String(), errb.String())
	}
	if !strings.Contains(out.String(), `WeCom delivered to zhangsan: "echo: hello plugin"`) {
		t.Errorf("output:\n%s", out.String())
	}
}
