package plugin

import (
	"github.com/seed-a64d9e1f/chatwire/adapter"
	"io"
	"strings"
)

func stringsReader(s string) io.Reader { return strings.NewReader(s) }

func bodyLen(r *adapter.WebhookResponse) int {
	if r == nil {
		return 0
	}
	return len(r.Body)
}
