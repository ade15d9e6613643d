package demo

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"time"

	"github.com/seed-a64d9e1f/chatwire/adapter"
	"github.com/seed-a64d9e1f/chatwire/adapter/wecom/aibot/aibottest"
	"github.com/seed-a64d9e1f/chatwire/internal/check"
	"github.com/seed-a64d9e1f/chatwire/internal/platforms"
)

// demoAIBot is the demo's emulated WeCom AI Bot (智能机器人, long connection) with one user
// who writes to it in a single chat.
type demoAIBot struct {
	emu *aibottest.Server
	srv *httptest.Server
	cfg *platforms.WeComAIBot

	mu   sync.Mutex
	said []string // what Frank wrote, in order
}

// demoAIUser is the WeCom user who talks to the AI bot.
const demoAIUser = "Frank"

func newDemoAIBot() *demoAIBot {
	d := &demoAIBot{emu: &aibottest.Server{BotID: "aibdemo" + randomText(10), Secret: randomText(32)}}
	d.srv = httptest.NewServer(d.emu)
	d.cfg = &platforms.WeComAIBot{BotID: d.emu.BotID, Secret: d.emu.Secret, WSURL: aibottest.WSURL(d.srv.URL)}
	return d
}

// connected waits until the plugin holds the bot's long connection.
func (d *demoAIBot) connected(ctx context.Context, limit time.Duration) error {
	for deadline := time.Now().Add(limit); d.emu.Connections() == 0; {
		if time.Now().After(deadline) {
			return fmt.Errorf("the AI bot did not connect to WeCom within %v", limit)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	return nil
}

// say pushes a message from Frank to the bot over its long connection.
func (d *demoAIBot) say(text string) error {
	if _, err := d.emu.PushText(aibottest.Conv{User: demoAIUser}, text); err != nil {
		return err
	}
	d.mu.Lock()
	d.said = append(d.said, text)
	d.mu.Unlock()
	return nil
}

// answered counts the bot's finished answers to Frank: finished bubbles and messages.
func (d *demoAIBot) answered() int {
	n := 0
	for _, s := range d.emu.Sent() {
		if s.Chat == demoAIUser {
			n++
		}
	}
	for _, b := range d.emu.Bubbles() {
		if b.Chat == demoAIUser && b.Finished {
			n++
		}
	}
	return n
}

// check compares what Frank sees with the echoes of what he wrote: it returns how many of
// his messages were answered with exactly their echo, shown as a finished bubble or a
// message, how many of those were streamed, and the stream frames used.
func (d *demoAIBot) check() (sent, whole, streamed, frames int) {
	d.mu.Lock()
	said := append([]string(nil), d.said...)
	d.mu.Unlock()
	shown := map[string]int{}
	for _, s := range d.emu.Sent() {
		if s.Chat == demoAIUser {
			shown[s.Content]++
		}
	}
	bubbles := map[string]int{}
	for _, b := range d.emu.Bubbles() {
		if b.Chat == demoAIUser && b.Finished {
			shown[b.Content]++
			bubbles[b.Content]++
			frames += len(b.Frames)
		}
	}
	for _, text := range said {
		echo := "echo: " + text
		if shown[echo] == 1 {
			whole++
			if bubbles[echo] == 1 {
				streamed++
			}
		}
	}
	return len(said), whole, streamed, frames
}

// demoAIPrinter prints the AI bot's finished bubbles and messages once each.
type demoAIPrinter struct {
	bubbles, sent int
}

func (p *demoAIPrinter) print(out io.Writer, d *demoAIBot) {
	bs := d.emu.Bubbles()
	for ; p.bubbles < len(bs) && bs[p.bubbles].Finished; p.bubbles++ {
		b := bs[p.bubbles]
		fmt.Fprintf(out, "  [ai]    ai    → %-5s: %s (streamed in %d frames)\n", b.Chat, b.Content, len(b.Frames))
	}
	ss := d.emu.Sent()
	for ; p.sent < len(ss); p.sent++ {
		fmt.Fprintf(out, "  [ai]    ai    → %-5s: %s\n", ss[p.sent].Chat, ss[p.sent].Content)
	}
}

// streamEcho answers an AI bot message as an LLM framework would: one streamed send
// (NDJSON) replying to the event, the echo written word by word.
func streamEcho(ctx context.Context, base, key, bot string, ev adapter.Event) error {
	words := strings.SplitAfter("echo: "+ev.Text, " ")
	pr, pw := io.Pipe()
	go func() {
		enc := json.NewEncoder(pw)
		enc.Encode(map[string]string{"reply_to": ev.ID})
		for _, w := range words {
			if err := enc.Encode(map[string]string{"delta": w}); err != nil {
				return
			}
			select { // as a model produces its tokens
			case <-time.After(120 * time.Millisecond):
			case <-ctx.Done():
				pw.CloseWithError(ctx.Err())
				return
			}
		}
		pw.Close()
	}()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/v1/bots/"+bot+"/messages", pr)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Content-Type", "application/x-ndjson")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return check.APIError(resp)
	}
	io.Copy(io.Discard, resp.Body)
	return nil
}
