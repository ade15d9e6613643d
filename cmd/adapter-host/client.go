package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/seed-a64d9e1f/chatwire/adapter"
	"github.com/seed-a64d9e1f/chatwire/client"
	"github.com/seed-a64d9e1f/chatwire/internal/check"
	"github.com/seed-a64d9e1f/chatwire/internal/config"
)

// apiFlags say how to reach a running host.
type apiFlags struct {
	config string
	url    string
	key    string
}

func (a *apiFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&a.config, "config", os.Getenv("CHATWIRE_CONFIG"), "config file of the running host: its listen address and first API key are used")
	fs.StringVar(&a.url, "url", os.Getenv("CHATWIRE_URL"), "base URL of the running host (default from --config, else http://127.0.0.1:8080)")
	fs.StringVar(&a.key, "api-key", os.Getenv("CHATWIRE_API_KEY"), "API key (default $CHATWIRE_API_KEY, else the first key in --config)")
}

func (a *apiFlags) resolve() (base, key string, err error) {
	base, key = a.url, a.key
	if a.config != "" && (base == "" || key == "") {
		cfg, err := config.Load(a.config)
		if err != nil {
			return "", "", err
		}
		if base == "" {
			base = "http://" + cfg.Server.Listen
		}
		if key == "" && len(cfg.Server.APIKeys) > 0 {
			key = cfg.Server.APIKeys[0]
		}
	}
	if base == "" {
		base = "http://127.0.0.1:8080"
	}
	return strings.TrimRight(base, "/"), key, nil
}

// newClient returns a client of the host the flags name.
func (a *apiFlags) newClient(log *slog.Logger) (*client.Client, error) {
	base, key, err := a.resolve()
	if err != nil {
		return nil, err
	}
	return client.New(base, client.Options{APIKey: key, Logger: log})
}

func cmdTokenStatus(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("token status", "token status [--config FILE | --url URL --api-key KEY] [--json]", stdout, stderr)
	var af apiFlags
	af.register(fs.FlagSet)
	asJSON := fs.Bool("json", false, "print the host's JSON as is")
	if err := fs.Parse(args); err != nil {
		return err
	}
	c, err := af.newClient(nil)
	if err != nil {
		return err
	}
	if *asJSON {
		req, err := c.NewRequest(ctx, http.MethodGet, "/v1/tokens", nil)
		if err != nil {
			return err
		}
		resp, err := c.Do(req)
		if err != nil {
			return check.ClientError(err)
		}
		defer resp.Body.Close()
		_, err = io.Copy(stdout, resp.Body)
		return err
	}
	bots, err := c.Tokens(ctx)
	if err != nil {
		return check.ClientError(err)
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "BOT\tPLATFORM\tKEY\tSTATE\tEXPIRES IN\tREFRESHES\tFAILURES\tFP\tLAST ERROR")
	for _, b := range bots {
		if len(b.Tokens) == 0 {
			fmt.Fprintf(tw, "%s\t%s\t-\t%s\t-\t-\t-\t-\t%s\n", b.Bot, b.Platform, healthWord(b.Healthy), b.Detail)
		}
		for _, t := range b.Tokens {
			exp := "-"
			if !t.ExpiresAt.IsZero() {
				exp = time.Until(t.ExpiresAt).Round(time.Second).String()
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%d\t%s\t%s\n", b.Bot, b.Platform, t.Key, t.State, exp, t.Refreshes, t.Failures, t.Fingerprint, t.LastError)
		}
	}
	return tw.Flush()
}

func healthWord(ok bool) string {
	if ok {
		return "healthy"
	}
	return "unhealthy"
}

// parseTarget reads "kind:id" as given to send --to.
func parseTarget(s string) (adapter.Target, error) {
	kind, id, _ := strings.Cut(s, ":")
	var t adapter.Target
	switch kind {
	case "user":
		t.User = id
	case "users":
		t.Users = strings.Split(id, ",")
	case "party":
		t.Party = id
	case "tag":
		t.Tag = id
	case "all":
		t.All = true
	case "chat":
		t.Chat = id
	case "channel":
		team, ch, ok := strings.Cut(id, "/")
		if !ok {
			return t, errors.New("--to channel:TEAM/CHANNEL")
		}
		t.Channel = &adapter.Channel{Team: team, Channel: ch}
	case "email":
		t.Email = id
	default:
		return t, fmt.Errorf("--to %q: want user:ID, users:A,B, party:ID, tag:ID, all, chat:ID, channel:TEAM/CHANNEL or email:ADDRESS", s)
	}
	if kind != "all" && id == "" {
		return t, fmt.Errorf("--to %q: missing the id after %q", s, kind+":")
	}
	return t, nil
}

func cmdSend(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("send", "send --bot NAME --to KIND:ID (--text T | --markdown M | --html H | --file PATH)", stdout, stderr)
	var af apiFlags
	af.register(fs.FlagSet)
	botName := fs.String("bot", "", "bot name (required)")
	to := fs.String("to", "", "recipient: user:ID, users:A,B, party:ID, tag:ID, all, chat:ID, channel:TEAM/CHANNEL, email:ADDRESS")
	text := fs.String("text", "", "text to send")
	markdown := fs.String("markdown", "", "markdown to send")
	html := fs.String("html", "", "HTML to send (Graph, Teams; WeCom refuses it: use --markdown)")
	subject := fs.String("subject", "", "mail subject")
	file := fs.String("file", "", "file to attach (uploaded with a progress bar)")
	contentType := fs.String("content-type", "", "the file's content type (default from its extension)")
	quiet := fs.Bool("quiet", false, "no progress bar")
	idemKey := fs.String("idempotency-key", "", "Idempotency-Key of this send (default: a new random key): a retry with the same key within 24 h is answered without sending again")
	verbose := fs.Bool("verbose", false, "print the Idempotency-Key sent")
	var lf logFlags
	lf.register(fs.FlagSet)
	if err := fs.Parse(args); err != nil {
		return err
	}
	key := *idemKey
	if key == "" {
		key = "cli-" + client.NewIdempotencyKey()
	} else if err := client.CheckIdempotencyKey(key); err != nil {
		return fmt.Errorf("send: --idempotency-key: %w", err)
	}
	if *verbose {
		fmt.Fprintf(stderr, "Idempotency-Key: %s\n", key)
	}
	if *botName == "" || *to == "" {
		fs.Usage()
		return errors.New("send: --bot and --to are required")
	}
	target, err := parseTarget(*to)
	if err != nil {
		return err
	}
	if *text == "" && *markdown == "" && *html == "" && *file == "" {
		return errors.New("send: nothing to send: give --text, --markdown, --html or --file")
	}
	log, _, err := lf.logger(stderr)
	if err != nil {
		return err
	}
	c, err := af.newClient(log)
	if err != nil {
		return err
	}
	msg := client.Message{To: target, Text: *text, Markdown: *markdown, HTML: *html, Subject: *subject}
	var size int64
	var sent atomic.Int64
	if *file != "" {
		f, err := os.Open(*file)
		if err != nil {
			return err
		}
		defer f.Close()
		fi, err := f.Stat()
		if err != nil {
			return err
		}
		size = fi.Size()
		ct := *contentType
		if ct == "" {
			ct = mime.TypeByExtension(filepath.Ext(*file))
		}
		if ct == "" {
			ct = "application/octet-stream"
		}
		// Streamed from the file (base64 inside the JSON), counted for the progress bar.
		msg.Attachments = []client.Attachment{{Name: filepath.Base(*file), ContentType: ct,
			Body: io.TeeReader(f, countWriter{&sent}), Size: size}}
	}
	done, stopped := make(chan struct{}), make(chan struct{})
	pv := newProgress(stderr, filepath.Base(*file), size, *botName)
	if size > 0 && !*quiet {
		go func() { defer close(stopped); pv.run(&sent, done) }()
	} else {
		close(stopped)
	}
	var ae *client.Error
	r, err := c.Send(ctx, *botName, msg, client.WithIdempotencyKey(key))
	// A message without a file can be sent again: when no answer came, try twice more with
	// the same key, which the host answers at most once.
	for wait := 500 * time.Millisecond; err != nil && !errors.As(err, &ae) && !errors.Is(err, adapter.ErrInvalidRequest) &&
		*file == "" && wait <= time.Second && ctx.Err() == nil; wait *= 2 {
		if *verbose {
			fmt.Fprintf(stderr, "send failed (%v); retrying in %v with the same Idempotency-Key\n", err, wait)
		}
		select {
		case <-time.After(wait):
		case <-ctx.Done():
		}
		r, err = c.Send(ctx, *botName, msg, client.WithIdempotencyKey(key))
	}
	close(done)
	<-stopped
	if size > 0 && !*quiet && (err == nil || errors.As(err, &ae)) {
		pv.finish(sent.Load())
	}
	switch {
	case err != nil && (!errors.As(err, &ae) || ae.StatusCode == http.StatusTooManyRequests || ae.StatusCode >= 500):
		return fmt.Errorf("%w (to retry without sending twice: --idempotency-key %s)", check.ClientError(err), key)
	case err != nil:
		return check.ClientError(err)
	}
	if r.Replayed {
		fmt.Fprintf(stdout, "already sent under Idempotency-Key %s; not sent again\n", key)
	}
	fmt.Fprintf(stdout, "sent: bot %s (%s), message id %q\n", r.Bot, r.Platform, r.ID)
	if len(r.Invalid) > 0 {
		fmt.Fprintf(stdout, "not delivered to: %s\n", strings.Join(r.Invalid, ", "))
	}
	return nil
}

type countWriter struct{ n *atomic.Int64 }

func (c countWriter) Write(p []byte) (int, error) { c.n.Add(int64(len(p))); return len(p), nil }

func byteSize(n int64) string {
	switch {
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}
