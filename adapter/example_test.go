package adapter_test

import (
	"errors"
	"fmt"
	"time"

	"github.com/seed-a64d9e1f/chatwire/adapter"
)

// A host turns any adapter error into its HTTP answer with one table.
func ExampleKindOf() {
	var err error = &adapter.Error{Kind: adapter.KindRateLimited, Platform: "wecom", Code: "45009",
		Message: "message/send: api freq out of limit", RetryAfter: time.Minute}
	err = fmt.Errorf("bot hr: %w", err)

	k := adapter.KindOf(err)
	fmt.Println(errors.Is(err, adapter.ErrRateLimited), k, k.HTTPStatus(), adapter.Code(err), adapter.RetryAfter(err))
	// Output: true rate_limited 429 45009 1m0s
}
