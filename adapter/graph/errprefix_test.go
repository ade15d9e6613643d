package graph

import (
	"context"
	"errors"
	"testing"
)

// Errors say "graph: " once: adapter.Error adds the platform, messages must not repeat it.
func TestErrorPrefixOnce(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want string
	}{
		{"plain", errorf(errors.New("boom"), "graph: start"), "graph: start: boom"},
		{"canceled", errorf(context.Canceled, "graph: start"), "graph: start: context canceled"},
		{"api error", errorf(&APIError{StatusCode: 404, Code: "NotFound", Message: "no chat"}, "graph: send to %s", "c1"), "graph: send to c1: "},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := tc.err.Error()
			if len(got) < len(tc.want) || got[:len(tc.want)] != tc.want {
				t.Errorf("error = %q; want it to start with %q", got, tc.want)
			}
			if n := countPrefix(got); n != 1 {
				t.Errorf("error = %q says \"graph: \" %d times; want once at the start", got, n)
			}
		})
	}
}

func countPrefix(s string) int {
	n := 0
	for i := 0; i+7 <= len(s); i++ {
		if s[i:i+7] == "graph: " {
			n++
		}
	}
	return n
}
