package main

import (
	"bytes"
	"os"
	"os/exec"
	"strings"
	"testing"
)

func TestRunFlags(t *testing.T) {
	tests := []struct {
		args    []string
		want    string
		wantErr bool
	}{
		{[]string{"--version"}, "adapter-plugin dev", false},
		{[]string{"--help"}, "started by a host", false},
		{[]string{"--frobnicate"}, "", true},
	}
	for _, tc := range tests {
		var out bytes.Buffer
		err := run(t.Context(), tc.args, &out, &out)
		if (err != nil) != tc.wantErr || !strings.Contains(out.String(), tc.want) {
			t.Errorf("run(%v) = %v, %q; want error %v and %q", tc.args, err, out.String(), tc.wantErr, tc.want)
		}
	}
}

// TestRunByHand: started without a host, the plugin explains itself and exits 1.
func TestRunByHand(t *testing.T) {
	if os.Getenv("CHATWIRE_PLUGIN_BY_HAND") == "1" {
		os.Args = os.Args[:1]
		main()
		return
	}
	exe, _ := os.Executable()
	cmd := exec.Command(exe, "-test.run=^TestRunByHand$")
	cmd.Env = append(os.Environ(), "CHATWIRE_PLUGIN_BY_HAND=1")
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "This binary is a plugin") {
		t.Errorf("plugin run by hand = %v, %q", err, out)
	}
}
