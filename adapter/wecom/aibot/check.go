package aibot

import (
	"context"
	"errors"

	"github.com/coder/websocket"

	"github.com/seed-a64d9e1f/chatwire/adapter"
)

// Check verifies the bot's credentials without serving it: in long-connection mode it dials,
// subscribes and closes (853000 is an error of KindUnauthorized that says what to fix). A
// subscribe kicks a connection that is live elsewhere: do not Check a bot a host is
// running. In webhook mode there is nothing to contact; Check returns nil.
func (b *Bot) Check(ctx context.Context) error {
	if b.webhook {
		return nil
	}
	ws, err := b.dialSubscribe(ctx)
	if err == nil {
		ws.Close(websocket.StatusNormalClosure, "credentials checked")
		return nil
	}
	var ae *APIError
	if errors.As(err, &ae) {
		return asAdapterError(err, "wecom_aibot: subscribe as bot "+b.opts.BotID)
	}
	return &adapter.Error{Kind: adapter.KindUnavailable, Platform: adapter.PlatformWeComAIBot, Message: "long connection", Err: err}
}
