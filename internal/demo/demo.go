// Package demo runs adapter-host's demo (emulated platforms, a real plugin process, an echo
// bot) and its emulate command (emulators on fixed loopback ports for a host run by hand).
package demo

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/seed-a64d9e1f/chatwire/adapter"
	"github.com/seed-a64d9e1f/chatwire/adapter/graph"
	"github.com/seed-a64d9e1f/chatwire/adapter/graph/graphtest"
	"github.com/seed-a64d9e1f/chatwire/adapter/wecom/wecomtest"
	"github.com/seed-a64d9e1f/chatwire/internal/check"
	"github.com/seed-a64d9e1f/chatwire/internal/config"
	"github.com/seed-a64d9e1f/chatwire/internal/host"
	"github.com/seed-a64d9e1f/chatwire/internal/platforms"
	"github.com/seed-a64d9e1f/chatwire/internal/sse"
)

// demoSummary is what a demo run counted.
type demoSummary struct {
	UsersSent     int
	EchoesSeen    int
	TokenFetches  int
	Refreshes     uint64
	Revocations   int // platforms told to revoke their tokens early
	Invalidations int // tokens dropped after the platform rejected them
	// InvalidationsBy counts Invalidations by platform ("wecom", "graph"), from the metrics.
	InvalidationsBy map[string]int
	Duplicates      int
	Restarts        int
	PluginPid       int
	EventsHandled   int64
	// The AI bot: messages Frank wrote, answers shown to him exactly as their echo, how many
	// of those were streamed into a bubble, and the stream frames used.
	AISent, AIWhole, AIStreamed, AIFrames int
}

// Run runs the demo (see runDemo) and prints its summary on o.Out: an error if a message got
// no echo.
func Run(ctx context.Context, o Options) error {
	stdout := o.Out
	s, err := runDemo(ctx, o)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "\ndemo summary: %d user messages, %d echoes; %d token fetches (%d refreshes); %d early revocations injected, %d rejected tokens replaced by a transparent retry (wecom %d, graph %d, teams %d); %d duplicate dropped; %d plugin restarts\n",
		s.UsersSent, s.EchoesSeen, s.TokenFetches, s.Refreshes, s.Revocations, s.Invalidations,
		s.InvalidationsBy[adapter.PlatformWeCom], s.InvalidationsBy[adapter.PlatformGraph], s.InvalidationsBy[adapter.PlatformTeams], s.Duplicates, s.Restarts)
	fmt.Fprintf(stdout, "AI bot: %d of %d answers shown to the user exactly as the echo, %d streamed word by word in %d frames\n",
		s.AIWhole, s.AISent, s.AIStreamed, s.AIFrames)
	if s.EchoesSeen != s.UsersSent {
		return fmt.Errorf("demo: %d of %d messages got no echo", s.UsersSent-s.EchoesSeen, s.UsersSent)
	}
	if s.AIWhole != s.AISent {
		return fmt.Errorf("demo: %d of %d AI bot answers are not shown as their echo", s.AISent-s.AIWhole, s.AISent)
	}
	fmt.Fprintln(stdout, "demo ok: every message was echoed; nothing lost, nothing doubled")
	return nil
}

// Options tune a demo run.
type Options struct {
	Duration, TokenLifetime, Every time.Duration
	Log                            *slog.Logger
	PluginDebug                    bool
	Out                            io.Writer
	PluginArgs                     []string // tests: how the test binary serves as the plugin
	NoEcho                         bool     // an external bot answers; wait up to a minute for it
}

// runDemo runs emulated WeCom and Microsoft Graph, a host with a real plugin subprocess, an
// echo bot on the HTTP API (SSE in, POST out) and simulated users, then reports what happened.
func runDemo(ctx context.Context, o Options) (demoSummary, error) {
	var sum demoSummary
	out := &lockedWriter{w: o.Out}

	// Emulated WeCom: one app, two members.
	const corpID, agentID = "wwdemo00000000001", int64(1000002)
	secret := rand.Text()
	wemu := &wecomtest.Server{TokenLifetime: o.TokenLifetime, PushRetryDelay: 200 * time.Millisecond}
	wemu.AddApp(corpID, secret, agentID)
	wemu.AddUsers("alice", "bob")
	wecomSrv := httptest.NewServer(wemu)
	defer wecomSrv.Close()

	// Emulated identity platform + Graph: a delegated bot already signed in (as after
	// "adapter-host graph login"), a Teams group chat with two people.
	const clientID, chatID, botUser = "demo-client", "19:demo-chat@thread.v2", "chatwire-bot"
	gsecret := rand.Text()
	gemu := &graphtest.Server{TokenLifetime: o.TokenLifetime, LoginUser: botUser}
	gemu.AddClient(clientID, gsecret)
	graphSrv := httptest.NewServer(gemu)
	defer graphSrv.Close()
	defer gemu.Flush()

	// Emulated Teams (Bot Connector): a bot installed by one user.
	// Its tokens live twice as long, so the early revocation below hits a token still in use.
	temu := newDemoTeams(2 * o.TokenLifetime)
	defer temu.srv.Close()

	// Emulated WeCom AI Bot (long connection): the plugin dials it; answers stream.
	ai := newDemoAIBot()
	defer ai.srv.Close()

	dir, err := os.MkdirTemp("", "chatwire-demo-")
	if err != nil {
		return sum, err
	}
	defer os.RemoveAll(dir)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return sum, err
	}
	hostURL := "http://" + ln.Addr().String()

	apiKey := rand.Text()
	wc := &platforms.WeCom{CorpID: corpID, CorpSecret: secret, AgentID: agentID,
		Token: rand.Text(), EncodingAESKey: (rand.Text() + rand.Text())[:43], APIBase: wecomSrv.URL}
	gc := &platforms.Graph{TenantID: "demo-tenant", ClientID: clientID, ClientSecret: gsecret, Auth: "delegated",
		NotificationURL: hostURL + "/webhook/teams", ClientState: rand.Text(), Subscribe: []string{"chats"},
		LoginBase: graphSrv.URL, GraphBase: graphSrv.URL}
	cfg := &config.Config{
		Server: config.ServerConfig{Listen: ln.Addr().String(), APIKeys: []string{apiKey}},
		Store:  config.StoreConfig{Dir: dir},
		Bots: []config.BotConfig{
			{Name: "echo", Platform: adapter.PlatformWeCom, WeCom: wc},
			{Name: "teams", Platform: adapter.PlatformGraph, Graph: gc},
			{Name: "tbot", Platform: adapter.PlatformTeams, Teams: temu.cfg},
			{Name: "ai", Platform: adapter.PlatformWeComAIBot, WeComAIBot: ai.cfg},
		},
	}
	cfg.Defaults()
	store, _, closeStore, err := check.OpenStore(cfg.Store)
	if err != nil {
		return sum, err
	}
	defer closeStore()
	rt := gemu.IssueRefreshToken(clientID, botUser, strings.Join(graph.DefaultDelegatedScopes, " "))
	if err := check.Seed(ctx, store, platforms.GraphKey(*gc), &graph.LoginResult{RefreshToken: rt}); err != nil {
		return sum, err
	}

	fmt.Fprintf(out, "chatwire demo: emulated WeCom at %s and Microsoft Graph at %s; tokens live %s\n", wecomSrv.URL, graphSrv.URL, o.TokenLifetime)
	h, err := host.Start(ctx, cfg, host.Options{Logger: o.Log, PluginDebug: o.PluginDebug, PluginArgs: o.PluginArgs, Listener: ln})
	if err != nil {
		ln.Close()
		return sum, err
	}
	defer h.Shutdown()
	sum.PluginPid = h.PluginPid()
	fmt.Fprintf(out, "host listening on %s; bots echo (wecom), teams (graph), tbot (teams bot) and ai (wecom AI bot) run in plugin process %d\n\n", h.URL(), sum.PluginPid)

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var echoes atomic.Int64
	echoErr := make(chan error, 4)
	if o.NoEcho {
		// One bot process per bot: each answers the events of the bot it is named after.
		fmt.Fprintln(out, "connect your bots now (events wait for them), one process per bot, for example:")
		for _, b := range h.Bots() {
			fmt.Fprintf(out, "  CHATWIRE_URL=%s CHATWIRE_API_KEY=%s python3 examples/python-bot/echo_bot.py %s\n", h.URL(), apiKey, b)
		}
		fmt.Fprintln(out)
	} else {
		for _, b := range []string{"echo", "teams", "tbot", "ai"} {
			go func() { echoErr <- echoBot(ctx, h.URL(), apiKey, b, &echoes, o.Log) }()
		}
	}
	replies := func() int { return len(wemu.Sent()) + len(gemu.Sent()) + len(temu.replies()) + ai.answered() }

	cb := wecomtest.Callback{URL: h.URL() + "/webhook/echo", Token: wc.Token, EncodingAESKey: wc.EncodingAESKey, CorpID: corpID, AgentID: agentID}
	if err := wemu.VerifyURL(ctx, cb); err != nil {
		return sum, fmt.Errorf("demo: callback URL verification: %w", err)
	}
	fmt.Fprintln(out, "WeCom verified the callback URL /webhook/echo")
	// Graph validates /webhook/teams when the plugin subscribes to the bot's chats.
	for deadline := time.Now().Add(15 * time.Second); len(gemu.Subscriptions()) == 0; {
		if time.Now().After(deadline) {
			return sum, errors.New("demo: the teams bot did not subscribe to chat notifications")
		}
		time.Sleep(50 * time.Millisecond)
	}
	fmt.Fprintln(out, "Graph validated the notification URL /webhook/teams; the teams bot is subscribed to its chats")
	if err := temu.install(ctx, h.URL()+"/webhook/tbot"); err != nil {
		return sum, fmt.Errorf("demo: installing the Teams bot: %w", err)
	}
	fmt.Fprintln(out, "Erin installed the Teams bot tbot; Teams posts signed activities to /webhook/tbot")
	if err := ai.connected(ctx, 20*time.Second); err != nil {
		return sum, fmt.Errorf("demo: %w", err)
	}
	fmt.Fprintln(out, "the AI bot ai holds its long connection to WeCom; answers to it stream into one bubble")

	// Print the bots' replies as the platforms receive them.
	var wPrinted, gPrinted, tPrinted int
	var aiPrinted demoAIPrinter
	printSent := func() {
		sent := wemu.Sent()
		for ; wPrinted < len(sent); wPrinted++ {
			fmt.Fprintf(out, "  [wecom] echo  → %-5s: %s\n", sent[wPrinted].ToUser, sent[wPrinted].Content)
		}
		gsent := gemu.Sent()
		for ; gPrinted < len(gsent); gPrinted++ {
			fmt.Fprintf(out, "  [teams] teams → chat : %s\n", gsent[gPrinted].Content)
		}
		tsent := temu.replies()
		for ; tPrinted < len(tsent); tPrinted++ {
			fmt.Fprintf(out, "  [tbot]  tbot  → Erin : %s (in reply to %s)\n", tsent[tPrinted].Activity.Text, tsent[tPrinted].ReplyToID)
		}
		aiPrinted.print(out, ai)
	}

	type user struct{ name, platform string }
	users := []user{{"alice", "wecom"}, {demoAIUser, "ai"}, {"Carol", "teams"}, {"Erin", "tbot"}, {"bob", "wecom"}, {"Dave", "teams"}}
	lines := []string{"hello!", "what's the weather?", "tell me a joke", "are you a bot?", "ping", "thanks"}
	start := time.Now()
	revoked, duplicated := false, false
	var last []byte
	tick := time.NewTicker(o.Every)
	defer tick.Stop()
	for i := 0; time.Since(start) < o.Duration; i++ {
		if !revoked && time.Since(start) >= o.Duration/2 {
			wemu.RevokeTokens(42001)
			sum.Revocations++
			gemu.RevokeTokens()
			sum.Revocations++
			temu.emu.RevokeTokens()
			sum.Revocations++
			revoked = true
			fmt.Fprintln(out, "*** the platforms revoke their access tokens early (WeCom 42001, Graph and the Bot Connector 401);\n    the next call refreshes and retries once, transparently")
			// Erin writes at once: the bot's answer meets the revoked Bot Connector token.
			fmt.Fprintf(out, "  [tbot]  %-5s → tbot : %s\n", "Erin", "still there?")
			if err := temu.say(ctx, "still there?"); err != nil {
				return sum, fmt.Errorf("demo: Teams message: %w", err)
			}
			sum.UsersSent++
		}
		u := users[i%len(users)]
		text := fmt.Sprintf("%s (#%d)", lines[i%len(lines)], i+1)
		if u.platform == "ai" {
			fmt.Fprintf(out, "  [ai]    %-5s → ai   : %s\n", u.name, text)
			if err := ai.say(text); err != nil {
				return sum, fmt.Errorf("demo: AI bot message: %w", err)
			}
		} else if u.platform == "tbot" {
			fmt.Fprintf(out, "  [tbot]  %-5s → tbot : %s\n", u.name, text)
			if err := temu.say(ctx, text); err != nil {
				return sum, fmt.Errorf("demo: Teams message: %w", err)
			}
		} else if u.platform == "teams" {
			fmt.Fprintf(out, "  [teams] %-5s → chat : %s\n", u.name, text)
			gemu.AddChatMessage(chatID, "user-"+strings.ToLower(u.name), u.name, text)
		} else {
			msg := wecomtest.TextMessage(corpID, agentID, u.name, text, int64(7000000+i), time.Now())
			fmt.Fprintf(out, "  [wecom] %-5s → echo : %s\n", u.name, text)
			if _, err := wemu.Push(ctx, cb, msg); err != nil {
				return sum, fmt.Errorf("demo: push: %w", err)
			}
			if !duplicated && last != nil {
				// WeCom redelivers byte for byte when it misses an answer: the host drops it by id.
				if _, err := wemu.Push(ctx, cb, last); err != nil {
					return sum, fmt.Errorf("demo: push: %w", err)
				}
				duplicated = true
				fmt.Fprintln(out, "*** WeCom redelivers an earlier message; the host drops the duplicate by event id")
			}
			last = msg
		}
		sum.UsersSent++
		select {
		case <-tick.C:
		case <-ctx.Done():
			return sum, ctx.Err()
		case err := <-echoErr:
			return sum, fmt.Errorf("demo: echo bot: %w", err)
		}
		printSent()
	}
	// Let the last echoes arrive.
	wait := 10 * time.Second
	if o.NoEcho {
		wait = time.Minute
	}
	deadline := time.Now().Add(wait)
	for replies() < sum.UsersSent && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
		printSent()
	}
	printSent()

	sum.EchoesSeen = replies() // as the platforms received them
	sum.AISent, sum.AIWhole, sum.AIStreamed, sum.AIFrames = ai.check()
	sum.TokenFetches = wemu.TokensIssued()
	sum.TokenFetches += len(gemu.TokenRequests())
	sum.TokenFetches += temu.tokenFetches()
	sum.Restarts = h.PluginRestarts()
	for _, st := range h.Statuses(ctx) {
		for _, t := range st.Tokens {
			if !strings.Contains(t.Key, "/subscription/") {
				sum.Refreshes += t.Refreshes
			}
		}
	}
	mfs, _ := h.Gather() // host and plugin metrics
	sum.Duplicates = int(counterSum(mfs, "chatwire_events_total", "outcome", "duplicate"))
	sum.Invalidations = int(counterSum(mfs, "chatwire_token_refreshes_total", "result", "invalidation"))
	sum.InvalidationsBy = map[string]int{}
	for _, p := range platforms.Supported() {
		sum.InvalidationsBy[p] = int(counterSum(mfs, "chatwire_token_refreshes_total", "result", "invalidation", "platform", p))
	}
	return sum, nil
}

// counterSum adds the counters of family name whose labels have the values given as
// label, value pairs.
func counterSum(mfs []*dto.MetricFamily, name string, labelValues ...string) float64 {
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metric:
		for _, m := range mf.GetMetric() {
			for i := 0; i+1 < len(labelValues); i += 2 {
				found := false
				for _, l := range m.GetLabel() {
					if l.GetName() == labelValues[i] && l.GetValue() == labelValues[i+1] {
						found = true
					}
				}
				if !found {
					continue metric
				}
			}
			sum += m.GetCounter().GetValue()
		}
	}
	return sum
}

// echoBot is a bot written against the HTTP API only: it reads events over SSE and answers
// each message with a POST.
func echoBot(ctx context.Context, base, key, bot string, echoes *atomic.Int64, log *slog.Logger) error {
	return sse.Read(ctx, base+"/v1/bots/"+bot+"/events", key, "", func(id, kind string, data []byte) error {
		var ev adapter.Event
		if err := json.Unmarshal(data, &ev); err != nil {
			return err
		}
		if ev.Kind != adapter.EventMessage {
			return nil
		}
		if strings.HasPrefix(ev.Text, "echo: ") {
			return nil // never answer an echo
		}
		if ev.Platform == adapter.PlatformWeComAIBot {
			// An LLM's answer: streamed, word by word, into one growing bubble.
			if err := streamEcho(ctx, base, key, bot, ev); err != nil {
				return err
			}
			echoes.Add(1)
			return nil
		}
		msg := map[string]any{"to": map[string]string{"user": ev.Sender.ID}, "text": "echo: " + ev.Text}
		switch ev.Platform {
		case adapter.PlatformGraph:
			msg["to"] = map[string]string{"chat": ev.Chat.ID}
		case adapter.PlatformTeams:
			msg["to"], msg["reply_to"] = map[string]string{"chat": ev.Chat.ID}, ev.ID // in the message's thread
		}
		body, _ := json.Marshal(msg)
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, base+"/v1/bots/"+bot+"/messages", bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+key)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return check.APIError(resp)
		}
		echoes.Add(1)
		return nil
	})
}

// lockedWriter serializes writes to the demo's stdout.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// randomText returns n random characters of crypto/rand.Text's alphabet (A-Z, 2-7: also
// valid base64, so it serves for a WeCom EncodingAESKey too).
func randomText(n int) string {
	var b strings.Builder
	for b.Len() < n {
		b.WriteString(rand.Text())
	}
	return b.String()[:n]
}
