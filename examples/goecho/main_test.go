package main

import (
	"bytes"
	"log/slog"
	"net"
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
	// --listen names a port this test owns; emulated mode must not open it (it uses a free one).
	own, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := own.Addr().String()
	own.Close()
	var out, errb bytes.Buffer
	if err := run(t.Context(), []string{"--plugin", exe, "--plugin-arg", "plugin", "--listen", addr}, &out, &errb); err != nil {
		t.Fatalf("run = %v\n%s\n%s", err, out.String(), errb.String())
	}
	if !strings.Contains(out.String(), `WeCom delivered to zhangsan: "echo: hello plugin"`) {
		t.Errorf("output:\n%s", out.String())
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Errorf("--listen %s still taken after run returned (a leaked listener): %v", addr, err)
	} else {
		ln.Close()
	}
}
