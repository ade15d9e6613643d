// Command goecho is a Go bot that loads the chatwire adapter plugin with package plugin and
// echoes every message it receives. The bot holds an adapter.Adapter; that it runs in another
// process is invisible to it.
//
// With WECOM_CORP_ID, WECOM_SECRET, WECOM_AGENT_ID, WECOM_TOKEN and WECOM_AES_KEY set, it
// serves the WeCom callback on --listen (point the app's callback URL at /webhook) and echoes
// for real. Without them it runs against an in-process WeCom emulator, sends itself one
// message, prints the echo and exits:
//
//	go build -o /tmp/adapter-plugin ./cmd/adapter-plugin
//	go run ./examples/goecho --plugin /tmp/adapter-plugin
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/signal"
	"strconv"
	"time"

	"github.com/seed-a64d9e1f/chatwire/adapter"
	"github.com/seed-a64d9e1f/chatwire/adapter/wecom/wecomtest"
	"github.com/seed-a64d9e1f/chatwire/plugin"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "goecho:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("goecho", flag.ContinueOnError)
	fs.SetOutput(stderr)
	pluginPath := fs.String("plugin", "adapter-plugin", "path of the chatwire adapter plugin executable")
	pluginArg := fs.String("plugin-arg", "", "an argument for the plugin (\"plugin\" when it is adapter-host)")
	listen := fs.String("listen", "127.0.0.1:8090", "address for the WeCom callback (real mode; emulated mode uses a free port)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(stderr, nil))

	// plugin.WeComConfig is the bot's config as the plugin expects it (sent over RPC only).
	cfg := plugin.WeComConfig{CorpID: os.Getenv("WECOM_CORP_ID"), CorpSecret: os.Getenv("WECOM_SECRET"),
		Token: os.Getenv("WECOM_TOKEN"), EncodingAESKey: os.Getenv("WECOM_AES_KEY")}
	cfg.AgentID, _ = strconv.ParseInt(os.Getenv("WECOM_AGENT_ID"), 10, 64)
	emulated := cfg.CorpID == ""
	var emu *wecomtest.Server
	if emulated {
		emu = &wecomtest.Server{}
		srv := httptest.NewServer(emu)
		defer srv.Close()
		cfg = plugin.WeComConfig{CorpID: "wwexample0000001", CorpSecret: "example-secret", AgentID: 1000002,
			Token: "exampletoken", EncodingAESKey: "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG", APIBase: srv.URL}
		fmt.Fprintln(stdout, "no WECOM_CORP_ID: using an in-process WeCom emulator")
	}

	var pargs []string
	if *pluginArg != "" {
		pargs = []string{*pluginArg}
	}
	// Launch starts the plugin, checks its protocol, sends the bot config over RPC and
	// restarts the plugin if it crashes.
	p, err := plugin.Launch(ctx, plugin.LaunchOptions{
		Path:   *pluginPath,
		Args:   pargs,
		Bots:   []plugin.BotConfig{plugin.WeComBot("echo", cfg)},
		Logger: log,
	})
	if err != nil {
		return err
	}
	defer p.Close()
	var bot adapter.Adapter = p.Bot("echo") // used exactly like an in-process adapter

	echoed := make(chan string, 1)
	mux := http.NewServeMux()
	mux.HandleFunc("/webhook", func(w http.ResponseWriter, r *http.Request) {
		req, err := adapter.NewWebhookRequest(r, 0)
		if err != nil {
			http.Error(w, err.Error(), adapter.HTTPStatus(err))
			return
		}
		resp, events, err := bot.HandleWebhook(r.Context(), req)
		if err != nil {
			log.Warn("webhook refused", "error", err)
		}
		resp.Write(w)
		for _, ev := range events {
			if ev.Kind != adapter.EventMessage {
				continue
			}
			go func() {
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				rc, err := bot.Send(ctx, adapter.Message{To: adapter.Target{User: ev.Sender.ID}, Text: "echo: " + ev.Text})
				if err != nil {
					log.Error("echo failed", "error", err, "kind", adapter.KindOf(err), "code", adapter.Code(err))
					return
				}
				fmt.Fprintf(stdout, "%s said %q; echoed as message %s\n", ev.Sender.ID, ev.Text, rc.ID)
				select {
				case echoed <- ev.Text:
				default:
				}
			}()
		}
	})
	addr := *listen
	if emulated {
		addr = "127.0.0.1:0" // the emulator pushes to whatever port is free
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	hs := &http.Server{Handler: mux}
	go hs.Serve(ln)
	defer hs.Close()

	if !emulated {
		fmt.Fprintf(stdout, "serving the WeCom callback on http://%s/webhook; Ctrl-C to stop\n", ln.Addr())
		<-ctx.Done()
		return nil
	}
	cb := wecomtest.Callback{URL: "http://" + ln.Addr().String() + "/webhook", Token: cfg.Token,
		EncodingAESKey: cfg.EncodingAESKey, CorpID: cfg.CorpID, AgentID: cfg.AgentID}
	if _, err := emu.Push(ctx, cb, wecomtest.TextMessage(cfg.CorpID, cfg.AgentID, "zhangsan", "hello plugin", 1, time.Now())); err != nil {
		return err
	}
	select {
	case <-echoed:
	case <-time.After(10 * time.Second):
		return errors.New("no echo within 10s")
	}
	for _, s := range emu.Sent() {
		fmt.Fprintf(stdout, "WeCom delivered to %s: %q\n", s.ToUser, s.Content)
	}
	return nil
}
