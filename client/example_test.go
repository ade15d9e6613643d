package client_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"

	"github.com/seed-a64d9e1f/chatwire/adapter"
	"github.com/seed-a64d9e1f/chatwire/client"
)

func ExampleClient_Send() {
	ctx := context.Background()
	c, err := client.New("http://127.0.0.1:8080", client.Options{APIKey: os.Getenv("CHATWIRE_API_KEY")})
	if err != nil {
		log.Fatal(err)
	}
	// The same key on a retry makes the host send the message once.
	key := client.NewIdempotencyKey()
	rc, err := c.Send(ctx, "hr", client.Message{To: client.Target{User: "zhangsan"}, Text: "build is green"},
		client.WithIdempotencyKey(key))
	var ae *client.Error
	switch {
	case errors.As(err, &ae) && ae.Temporary():
		log.Printf("try again in %v: %v", ae.RetryAfter, err)
	case err != nil:
		log.Fatal(err)
	default:
		fmt.Println("sent, message id", rc.ID)
	}
}

func ExampleClient_Send_file() {
	ctx := context.Background()
	c, _ := client.New("http://127.0.0.1:8080", client.Options{APIKey: os.Getenv("CHATWIRE_API_KEY")})
	f, err := os.Open("report.pdf")
	if err != nil {
		log.Fatal(err)
	}
	defer f.Close()
	fi, _ := f.Stat()
	// Body and Size stream the file; it is never held in memory whole.
	_, err = c.Send(ctx, "teams", client.Message{To: client.Target{Chat: "19:abc@thread.v2"},
		Attachments: []client.Attachment{{Name: "report.pdf", ContentType: "application/pdf", Body: f, Size: fi.Size()}}})
	if err != nil {
		log.Fatal(err)
	}
}

func ExampleClient_Events() {
	ctx := context.Background()
	c, _ := client.New("http://127.0.0.1:8080", client.Options{APIKey: os.Getenv("CHATWIRE_API_KEY")})
	// Reconnects by itself; each event once, in order. Save ev.LogID to resume after a restart.
	for ev, err := range c.Events(ctx, "hr", client.EventsOptions{}) {
		if err != nil {
			log.Fatal(err)
		}
		if ev.Kind == adapter.EventMessage {
			c.Send(ctx, ev.Bot, client.Message{To: client.Target{User: ev.Sender.ID}, Text: "echo: " + ev.Text, ReplyTo: ev.ID})
		}
	}
}

func ExampleClient_Events_group() {
	ctx := context.Background()
	c, _ := client.New("http://127.0.0.1:8080", client.Options{APIKey: os.Getenv("CHATWIRE_API_KEY")})
	// Run this in several processes: each event goes to one of them.
	for ev, err := range c.Events(ctx, "hr", client.EventsOptions{Group: "echo"}) {
		if err != nil {
			log.Fatal(err)
		}
		fmt.Println(ev.Text)
		if _, err := c.Ack(ctx, "hr", "echo", ev.LogID); err != nil {
			log.Print(err) // not acknowledged: another consumer gets it after deliver.ack_timeout
		}
	}
}

func ExampleVerifySignature() {
	body := []byte(`{"id":"wecom:1","text":"hi"}`)
	header := client.Sign("hook-secret", body) // what the host sends as X-Chatwire-Signature
	fmt.Println(client.VerifySignature("hook-secret", body, header))
	fmt.Println(client.VerifySignature("hook-secret", body, "sha1=00"))
	// Output:
	// <nil>
	// client: bad webhook signature: want sha256=<hex>
}

func ExampleWebhookHandler() {
	h := client.WebhookHandler("hook-secret", func(ctx context.Context, ev client.Event) error {
		fmt.Printf("%s from %s: %s\n", ev.LogID, ev.Sender.ID, ev.Text)
		return nil // an error answers 500: the host delivers the event again
	})
	// http.Handle("/events", h) in a bot; here, one delivery as the host makes it:
	body := `{"id":"wecom:1","bot":"hr","platform":"wecom","kind":"message","chat":{"id":"alice","type":"direct"},"sender":{"id":"alice","name":"Alice"},"text":"hi","time":"2026-01-02T03:04:05Z"}`
	req := httptest.NewRequest(http.MethodPost, "/events", strings.NewReader(body))
	req.Header.Set("X-Chatwire-Signature", client.Sign("hook-secret", []byte(body)))
	req.Header.Set("X-Chatwire-Event-Id", "1767323045000-0")
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	fmt.Println(w.Code)
	// Output:
	// 1767323045000-0 from alice: hi
	// 204
}
