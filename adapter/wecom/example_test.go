package wecom_test

import (
	"context"
	"fmt"
	"time"

	"github.com/seed-a64d9e1f/chatwire/adapter"
	"github.com/seed-a64d9e1f/chatwire/adapter/wecom"
	"github.com/seed-a64d9e1f/chatwire/adapter/wecom/wecomtest"
)

// Send a message and handle a callback, against the emulator.
func Example() {
	ctx := context.Background()
	emu := &wecomtest.Server{}
	emu.AddApp("ww1", "app-secret", 1000002)

	cfg := wecom.Config{Bot: "hr", CorpID: "ww1", CorpSecret: "app-secret", AgentID: 1000002,
		Token: "callback-token", EncodingAESKey: "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C",
		APIBase: "https://qyapi.weixin.qq.com"}
	c, err := wecom.New(cfg, wecom.Options{HTTPClient: emu.Client()})
	if err != nil {
		panic(err)
	}
	defer c.Close()

	if _, err := c.Send(ctx, adapter.Message{To: adapter.Target{User: "zhangsan"}, Text: "hello"}); err != nil {
		panic(err)
	}
	fmt.Println("sent:", emu.Sent()[0].Content)

	// WeCom pushes an encrypted, signed message to the bot's callback URL.
	cb := wecomtest.Callback{Token: cfg.Token, EncodingAESKey: cfg.EncodingAESKey, CorpID: cfg.CorpID, AgentID: cfg.AgentID}
	body, query, _ := wecomtest.Encrypt(cb, wecomtest.TextMessage("ww1", 1000002, "zhangsan", "hi bot", 1234, time.Now()), time.Now().Unix(), "42")
	resp, events, err := c.HandleWebhook(ctx, &adapter.WebhookRequest{Method: "POST", Query: query, Body: body})
	fmt.Println(resp.Status, err, events[0].ID, events[0].Sender.ID, events[0].Text)
	// Output:
	// sent: hello
	// 200 <nil> wecom:1234 zhangsan hi bot
}
