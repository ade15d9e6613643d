package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"mime"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/seed-a64d9e1f/chatwire/adapter"
	"github.com/seed-a64d9e1f/chatwire/internal/idempotency"
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
		cfg, err := LoadConfig(a.config)
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

// apiError turns an error response of the host into an error with its kind and message.
func apiError(resp *http.Response) error {
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	var eb errorBody
	if json.Unmarshal(data, &eb) == nil && eb.Error.Kind != "" {
		msg := fmt.Sprintf("%s (%s)", eb.Error.Message, eb.Error.Kind)
		if eb.Error.PlatformCode != "" {
			msg += ", platform code " + eb.Error.PlatformCode
			if ex := explain(eb.Error.PlatformCode); ex != "" {
				msg += ": " + ex
			}
		}
		if ra := resp.Header.Get("Retry-After"); ra != "" {
			msg += ", retry after " + ra + "s"
		}
		return errors.New(msg)
	}
	return fmt.Errorf("host answered %s: %s", resp.Status, strings.TrimSpace(string(data)))
}

func cmdTokenStatus(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("token status", "token status [--config FILE | --url URL --api-key KEY] [--json]", stderr)
	var af apiFlags
	af.register(fs)
	asJSON := fs.Bool("json", false, "print the host's JSON as is")
	if err := fs.Parse(args); err != nil {
		return err
	}
	base, key, err := af.resolve()
	if err != nil {
		return err
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/v1/tokens", nil)
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("is the host running? %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return apiError(resp)
	}
	if *asJSON {
		_, err := io.Copy(stdout, resp.Body)
		return err
	}
	var body struct {
		Bots []botStatus `json:"bots"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return err
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "BOT\tPLATFORM\tKEY\tSTATE\tEXPIRES IN\tREFRESHES\tFAILURES\tFP\tLAST ERROR")
	for _, b := range body.Bots {
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
	fs := newFlagSet("send", "send --bot NAME --to KIND:ID (--text T | --markdown M | --html H | --file PATH)", stderr)
	var af apiFlags
	af.register(fs)
	botName := fs.String("bot", "", "bot name (required)")
	to := fs.String("to", "", "recipient: user:ID, users:A,B, party:ID, tag:ID, all, chat:ID, channel:TEAM/CHANNEL, email:ADDRESS")
	text := fs.String("text", "", "text to send")
	markdown := fs.String("markdown", "", "markdown to send")
	html := fs.String("html", "", "HTML to send (Graph)")
	subject := fs.String("subject", "", "mail subject")
	file := fs.String("file", "", "file to attach (uploaded with a progress bar)")
	contentType := fs.String("content-type", "", "the file's content type (default from its extension)")
	quiet := fs.Bool("quiet", false, "no progress bar")
	idemKey := fs.String("idempotency-key", "", "Idempotency-Key of this send (default: a new random key): a retry with the same key within 24 h is answered without sending again")
	verbose := fs.Bool("verbose", false, "print the Idempotency-Key sent")
	if err := fs.Parse(args); err != nil {
		return err
	}
	key := *idemKey
	if key == "" {
		key = "cli-" + rand.Text()
	} else if err := idempotency.CheckKey(key); err != nil {
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
	base, apiKey, err := af.resolve()
	if err != nil {
		return err
	}
	msg := adapter.Message{To: target, Text: *text, Markdown: *markdown, HTML: *html, Subject: *subject}
	head, err := json.Marshal(msg)
	if err != nil {
		return err
	}
	var body io.Reader = strings.NewReader(string(head))
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
		// {...message, "attachments":[{"name":..,"content_type":..,"data":"<base64 streamed>"}]}
		meta, _ := json.Marshal(map[string]string{"name": filepath.Base(*file), "content_type": ct})
		prefix := string(head[:len(head)-1]) + `,"attachments":[` + string(meta[:len(meta)-1]) + `,"data":"`
		pr, pw := io.Pipe()
		go func() {
			io.WriteString(pw, prefix)
			enc := base64.NewEncoder(base64.StdEncoding, pw)
			_, err := io.Copy(enc, io.TeeReader(f, countWriter{&sent}))
			if err == nil {
				err = enc.Close()
			}
			if err == nil {
				_, err = io.WriteString(pw, `"}]}`)
			}
			pw.CloseWithError(err)
		}()
		body = pr
	}
	newReq := func() *http.Request {
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, base+"/v1/bots/"+*botName+"/messages", body)
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Idempotency-Key", key)
		if apiKey != "" {
			req.Header.Set("Authorization", "Bearer "+apiKey)
		}
		return req
	}
	done, stopped := make(chan struct{}), make(chan struct{})
	if size > 0 && !*quiet {
		go func() { defer close(stopped); progress(stderr, filepath.Base(*file), size, &sent, done) }()
	} else {
		close(stopped)
	}
	resp, err := http.DefaultClient.Do(newReq())
	// A message without a file can be sent again: when the connection failed, try twice
	// more with the same key, which the host answers at most once.
	for wait := 500 * time.Millisecond; err != nil && *file == "" && wait <= time.Second && ctx.Err() == nil; wait *= 2 {
		if *verbose {
			fmt.Fprintf(stderr, "send failed (%v); retrying in %v with the same Idempotency-Key\n", err, wait)
		}
		select {
		case <-time.After(wait):
		case <-ctx.Done():
		}
		body = strings.NewReader(string(head))
		resp, err = http.DefaultClient.Do(newReq())
	}
	close(done)
	<-stopped
	if err != nil {
		return fmt.Errorf("is the host running? %w (to retry without sending twice: --idempotency-key %s)", err, key)
	}
	defer resp.Body.Close()
	if size > 0 && !*quiet {
		drawBar(stderr, filepath.Base(*file), size, sent.Load())
		fmt.Fprintln(stderr)
	}
	if resp.StatusCode != http.StatusOK {
		err := apiError(resp)
		if resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500 {
			err = fmt.Errorf("%w (to retry without sending twice: --idempotency-key %s)", err, key)
		}
		return err
	}
	if resp.Header.Get("Idempotent-Replayed") == "true" {
		fmt.Fprintf(stdout, "already sent under Idempotency-Key %s; not sent again\n", key)
	}
	var r sendResponse
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "sent: bot %s (%s), message id %q\n", r.Bot, r.Platform, r.ID)
	if len(r.Invalid) > 0 {
		fmt.Fprintf(stdout, "not delivered to: %s\n", strings.Join(r.Invalid, ", "))
	}
	return nil
}

type countWriter struct{ n *atomic.Int64 }

func (c countWriter) Write(p []byte) (int, error) { c.n.Add(int64(len(p))); return len(p), nil }

func progress(w io.Writer, name string, size int64, sent *atomic.Int64, done <-chan struct{}) {
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-done:
			return
		case <-t.C:
			drawBar(w, name, size, sent.Load())
		}
	}
}

func drawBar(w io.Writer, name string, size, n int64) {
	const width = 30
	frac := float64(n) / float64(size)
	if frac > 1 {
		frac = 1
	}
	filled := int(frac * width)
	fmt.Fprintf(w, "\r%s [%s%s] %3.0f%% %s/%s", name, strings.Repeat("=", filled), strings.Repeat(" ", width-filled),
		frac*100, byteSize(n), byteSize(size))
}

func byteSize(n int64) string {
	switch {
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}
