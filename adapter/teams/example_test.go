package teams_test

import (
	"context"
	"fmt"
	"net/http/httptest"
	"net/url"

	"github.com/seed-a64d9e1f/chatwire/adapter"
	"github.com/seed-a64d9e1f/chatwire/adapter/teams"
	"github.com/seed-a64d9e1f/chatwire/adapter/teams/teamstest"
)

// A Teams bot on its messaging endpoint, against the emulator: a user installs it, says
// hello, and the bot answers in the same conversation.
func ExampleAdapter_Handler() {
	ctx := context.Background()
	emu := &teamstest.Server{}
	es := httptest.NewServer(emu)
	defer es.Close()
	emu.URL = es.URL
	host, _ := url.Parse(es.URL)

	a, err := teams.New(teams.Options{Bot: "tbot", AppID: "app-id", AppPassword: "secret", TenantID: "tenant-id",
		LoginBase: es.URL, OpenIDMetadataURL: emu.MetadataURL(), ServiceHosts: []string{host.Host}})
	if err != nil {
		panic(err)
	}
	defer a.Close()
	events := make(chan adapter.Event, 10)
	bot := httptest.NewServer(a.Handler(func(ctx context.Context, evs []adapter.Event) error {
		for _, ev := range evs {
			events <- ev
		}
		return nil
	}, 0))
	defer bot.Close()
	emu.AddBot(teamstest.Bot{AppID: "app-id", Password: "secret", TenantID: "tenant-id", Endpoint: bot.URL + "/webhook/tbot"})

	u := emu.NewUser("Megan", "tenant-id")
	conv, _ := emu.InstallPersonal(ctx, "app-id", u)
	emu.Say(ctx, conv, u, "hello")
	for ev := range events {
		if ev.Kind != adapter.EventMessage {
			fmt.Println("event:", ev.Text)
			continue
		}
		fmt.Println("message:", ev.Text)
		a.Send(ctx, adapter.Message{To: adapter.Target{Chat: ev.Chat.ID}, ReplyTo: ev.ID, Text: "hi " + ev.Sender.Name})
		break
	}
	sent := emu.Sent()
	fmt.Println("teams got:", sent[0].Kind, sent[0].Activity.Text)
	// Output:
	// event: conversationUpdate
	// event: installationUpdate
	// message: hello
	// teams got: reply hi Megan
}
