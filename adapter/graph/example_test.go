package graph_test

import (
	"context"
	"fmt"
	"net/http"

	"github.com/seed-a64d9e1f/chatwire/adapter"
	"github.com/seed-a64d9e1f/chatwire/adapter/graph"
	"github.com/seed-a64d9e1f/chatwire/adapter/graph/graphtest"
	"github.com/seed-a64d9e1f/chatwire/tokenmgr"
)

// A delegated Teams bot against the emulator: the refresh token a `graph login` stored is
// seeded into the Store, and the adapter redeems (and rotates) it on the first send.
func Example() {
	emu := &graphtest.Server{LoginUser: "bot-user"}
	hc := &http.Client{Transport: graphtest.HandlerTransport(emu)}
	store := new(tokenmgr.MemoryStore)
	cfg := graph.Config{Tenant: "contoso.onmicrosoft.com", ClientID: "app-id", ClientSecret: "secret-value",
		LoginBase: "http://emu", HTTPClient: hc}
	a, err := graph.New(graph.Options{Bot: "teams", Config: cfg, GraphBase: "http://emu", HTTPClient: hc, Store: store})
	if err != nil {
		panic(err)
	}
	defer a.Close()
	rt := emu.IssueRefreshToken("app-id", "bot-user", "offline_access")
	store.Put(a.Tokens().Key(), tokenmgr.Entry{State: []byte(rt)})

	r, err := a.Send(context.Background(), adapter.Message{To: adapter.Target{Chat: "19:abc@thread.v2"}, Text: "hello"})
	fmt.Println(err, r.ID != "", emu.Sent()[0].Content)

	_, err = a.Send(context.Background(), adapter.Message{To: adapter.Target{Party: "2"}, Text: "x"})
	fmt.Println(adapter.KindOf(err))
	// Output:
	// <nil> true hello
	// invalid_recipient
}

// Token endpoint errors explain themselves.
func ExampleParseAuthError() {
	body := []byte(`{"error":"invalid_client","error_description":"AADSTS7000215: Invalid client secret provided.\r\nTrace ID: x","error_codes":[7000215]}`)
	e := graph.ParseAuthError(401, http.Header{}, body)
	fmt.Println(e.PlatformCode())
	fmt.Println(e.Hint)
	// Output:
	// AADSTS7000215
	// the client secret is wrong: use the secret's Value (shown once when it was created), not its Secret ID; create a new secret if the value was lost
}
