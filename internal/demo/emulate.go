package demo

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"text/template"
	"time"

	"github.com/seed-a64d9e1f/chatwire/adapter/graph"
	"github.com/seed-a64d9e1f/chatwire/adapter/graph/graphtest"
	"github.com/seed-a64d9e1f/chatwire/adapter/teams/teamstest"
	"github.com/seed-a64d9e1f/chatwire/adapter/wecom/wecomtest"
	"github.com/seed-a64d9e1f/chatwire/internal/check"
	"github.com/seed-a64d9e1f/chatwire/internal/config"
	"github.com/seed-a64d9e1f/chatwire/internal/platforms"
)

// Fixed loopback addresses of `adapter-host emulate`, so the commands it prints (and a
// rehearsed bots.yaml) stay valid from one run to the next.
const (
	emulateHostAddr  = "127.0.0.1:8080"
	emulateWeComAddr = "127.0.0.1:8701"
	emulateGraphAddr = "127.0.0.1:8702"
	emulateTeamsAddr = "127.0.0.1:8703"
	emulateLoginURI  = "http://localhost:8400/callback" // graph login's default --redirect
)

// The emulated accounts. Their secrets are made up per run and written to the config only.
const (
	emuCorpID   = "wwemulated0000001"
	emuAgentID  = int64(1000002)
	EmuTenant   = "emulated-tenant"
	emuClientID = "emulated-client"
	emuUser     = "bot@contoso.example"
	EmuChatID   = "19:emulated-chat@thread.v2"
	emuTeamsApp = "00000000-0000-4000-8000-0000000e3a7e" // the Azure Bot's app id
)

var emulateConfig = template.Must(template.New("bots.yaml").Parse(`# Written by "adapter-host emulate": bots on emulated WeCom ({{.WeCom}}) and Microsoft Graph
# ({{.Graph}}) and a Teams bot on emulated Azure Bot Service ({{.Teams}}). Valid while that
# command runs; the secrets are made up for this run.
server: {listen: "{{.Listen}}", api_keys: ["{{.APIKey}}"]}
store: {dir: "{{.State}}"}
bots:
  - name: hr
    platform: wecom
    wecom: {corp_id: {{.CorpID}}, corp_secret: "{{.CorpSecret}}", agent_id: {{.AgentID}},
            token: "{{.Token}}", encoding_aes_key: "{{.AESKey}}", api_base: "http://{{.WeCom}}"}
  - name: teams
    platform: graph
    graph: {tenant_id: {{.Tenant}}, client_id: {{.ClientID}}, client_secret: "{{.ClientSecret}}",
            auth: delegated, user: {{.User}},
            notification_url: "http://{{.Listen}}/webhook/teams", client_state: "{{.ClientState}}",
            subscribe: [chats],
            login_base: "http://{{.Graph}}", graph_base: "http://{{.Graph}}"}
  - name: helpdesk
    platform: teams
    teams: {app_id: {{.TeamsApp}}, app_password: "{{.TeamsPassword}}", tenant_id: {{.Tenant}},
            login_base: "http://{{.Teams}}", openid_metadata_url: "http://{{.Teams}}/v1/.well-known/openidconfiguration",
            service_hosts: ["{{.Teams}}"]}
`))

type emulateVars struct {
	Listen, WeCom, Graph, Teams, APIKey, State                    string
	TeamsApp, TeamsPassword                                       string
	CorpID, CorpSecret, Token, AESKey                             string
	AgentID                                                       int64
	Tenant, ClientID, ClientSecret, User, ClientState, ConfigPath string
}

// EmulateOptions say where `adapter-host emulate` listens and writes.
type EmulateOptions struct {
	// Dir holds the bots.yaml written and the token state.
	Dir string
	// Listen is the server.listen written into bots.yaml (the host the user runs).
	Listen string
	// WeCom, Graph and Teams are the loopback addresses of the emulators.
	WeCom, Graph, Teams string
	// TokenLifetime is the lifetime of the access tokens the emulators issue; 0: theirs.
	TokenLifetime time.Duration
}

// EmulateDefaults are the fixed loopback addresses of `adapter-host emulate`.
var EmulateDefaults = EmulateOptions{Dir: "chatwire-emulate", Listen: emulateHostAddr, WeCom: emulateWeComAddr,
	Graph: emulateGraphAddr, Teams: emulateTeamsAddr}

// Emulate runs emulated WeCom, Graph and Teams on o's loopback addresses, writes
// o.Dir/bots.yaml for them, prints commands to try on stdout and serves until ctx is done.
func Emulate(ctx context.Context, o EmulateOptions, stdout io.Writer) error {
	for _, a := range []struct{ flag, addr string }{{"--listen", o.Listen}, {"--wecom", o.WeCom}, {"--graph", o.Graph}, {"--teams", o.Teams}} {
		host, _, err := net.SplitHostPort(a.addr)
		if ip := net.ParseIP(host); err != nil || ip == nil || !ip.IsLoopback() {
			return fmt.Errorf("%s %q: want a loopback host:port such as 127.0.0.1:8701", a.flag, a.addr)
		}
	}
	state, err := filepath.Abs(filepath.Join(o.Dir, "state"))
	if err != nil {
		return err
	}
	if err := os.MkdirAll(state, 0o700); err != nil {
		return err
	}
	v := emulateVars{Listen: o.Listen, APIKey: randomText(24), State: state,
		CorpID: emuCorpID, CorpSecret: randomText(32), Token: randomText(16), AESKey: randomText(43), AgentID: emuAgentID,
		Tenant: EmuTenant, ClientID: emuClientID, ClientSecret: randomText(32), User: emuUser, ClientState: randomText(20),
		TeamsApp: emuTeamsApp, TeamsPassword: randomText(32)}

	wemu := &wecomtest.Server{TokenLifetime: o.TokenLifetime}
	wemu.AddApp(v.CorpID, v.CorpSecret, v.AgentID)
	wemu.AddUsers("alice", "bob")
	gemu := &graphtest.Server{TokenLifetime: o.TokenLifetime, LoginUser: v.User}
	gemu.AddClient(v.ClientID, v.ClientSecret, emulateLoginURI)
	gemu.AddTenant(v.Tenant) // a wrong tenant_id gets AADSTS90002, as from Entra
	defer gemu.Flush()

	wln, err := net.Listen("tcp", o.WeCom)
	if err != nil {
		return fmt.Errorf("emulated WeCom: %w (another emulate running? pick another --wecom)", err)
	}
	gln, err := net.Listen("tcp", o.Graph)
	if err != nil {
		wln.Close()
		return fmt.Errorf("emulated Graph: %w (another emulate running? pick another --graph)", err)
	}
	tln, err := net.Listen("tcp", o.Teams)
	if err != nil {
		wln.Close()
		gln.Close()
		return fmt.Errorf("emulated Teams: %w (another emulate running? pick another --teams)", err)
	}
	v.WeCom, v.Graph, v.Teams = wln.Addr().String(), gln.Addr().String(), tln.Addr().String()
	temu := &teamstest.Server{URL: "http://" + v.Teams, TokenLifetime: o.TokenLifetime}
	temu.AddBot(teamstest.Bot{AppID: v.TeamsApp, Password: v.TeamsPassword, TenantID: v.Tenant, Name: "chatwire",
		Endpoint: "http://" + v.Listen + "/webhook/helpdesk"})

	var msgID atomic.Int64
	msgID.Store(time.Now().Unix())
	cb := wecomtest.Callback{URL: "http://" + v.Listen + "/webhook/hr", Token: v.Token, EncodingAESKey: v.AESKey, CorpID: v.CorpID, AgentID: v.AgentID}
	wmux := http.NewServeMux()
	wmux.Handle("/", wemu)
	// A user of the emulated WeCom app writes to the hr bot: the emulator pushes the encrypted
	// callback to the host, as WeCom does.
	wmux.HandleFunc("POST /emulate/say", func(w http.ResponseWriter, r *http.Request) {
		user, text := r.FormValue("user"), r.FormValue("text")
		if user == "" || text == "" {
			http.Error(w, "want user=ID&text=TEXT", http.StatusBadRequest)
			return
		}
		p, err := wemu.Push(r.Context(), cb, wecomtest.TextMessage(v.CorpID, v.AgentID, user, text, msgID.Add(1), time.Now()))
		if err != nil {
			http.Error(w, fmt.Sprintf("push to %s: %v (is adapter-host run going?)", cb.URL, err), http.StatusBadGateway)
			return
		}
		fmt.Fprintf(w, "pushed to %s: host answered %d\n", cb.URL, p.Status)
	})
	gmux := http.NewServeMux()
	gmux.Handle("/", gemu)
	// A person writes in the emulated Teams chat; Graph notifies the teams bot's subscription.
	gmux.HandleFunc("POST /emulate/say", func(w http.ResponseWriter, r *http.Request) {
		user, text := r.FormValue("user"), r.FormValue("text")
		if user == "" || text == "" {
			http.Error(w, "want user=NAME&text=TEXT", http.StatusBadRequest)
			return
		}
		m := gemu.AddChatMessage(EmuChatID, "user-"+strings.ToLower(user), user, text)
		fmt.Fprintf(w, "posted message %s in chat %s\n", m.ID, EmuChatID)
	})
	tmux := http.NewServeMux()
	tmux.Handle("/", temu)
	tmux.Handle("POST /emulate/say", teamsSay(temu, v.TeamsApp, v.Tenant))
	servers := []*http.Server{{Handler: wmux, ReadHeaderTimeout: 10 * time.Second}, {Handler: gmux, ReadHeaderTimeout: 10 * time.Second},
		{Handler: tmux, ReadHeaderTimeout: 10 * time.Second}}
	go servers[0].Serve(wln)
	go servers[1].Serve(gln)
	go servers[2].Serve(tln)
	defer func() {
		for _, s := range servers {
			s.Close()
		}
	}()

	// The teams bot starts signed in, as after "graph login" (which can be rehearsed too).
	cfgPath, err := filepath.Abs(filepath.Join(o.Dir, "bots.yaml"))
	if err != nil {
		return err
	}
	v.ConfigPath = cfgPath
	var yaml strings.Builder
	if err := emulateConfig.Execute(&yaml, v); err != nil {
		return err
	}
	if err := os.WriteFile(cfgPath, []byte(yaml.String()), 0o600); err != nil {
		return err
	}
	cfg, err := config.Load(cfgPath)
	if err != nil {
		return fmt.Errorf("the written %s does not load: %w", cfgPath, err)
	}
	store, _, closeStore, err := check.OpenStore(cfg.Store)
	if err != nil {
		return err
	}
	rt := gemu.IssueRefreshToken(v.ClientID, v.User, strings.Join(graph.DefaultDelegatedScopes, " "))
	var gc platforms.Graph
	for _, b := range cfg.Bots {
		if b.Graph != nil {
			gc = *b.Graph
		}
	}
	err = check.Seed(ctx, store, platforms.GraphKey(gc), &graph.LoginResult{RefreshToken: rt})
	closeStore()
	if err != nil {
		return err
	}
	printEmulateHelp(stdout, v)
	<-ctx.Done()
	fmt.Fprintln(stdout, "emulators stopped")
	return nil
}

// teamsSay makes a Teams user write to the helpdesk bot: on a user's first message Teams
// installs the bot in their personal chat (the host learns the conversation), then it
// delivers the signed message. The answer names the user's Entra object id, which a send
// to that user takes.
func teamsSay(emu *teamstest.Server, app, tenant string) http.Handler {
	var mu sync.Mutex
	type chat struct {
		u    teamstest.User
		conv teamstest.Conversation
	}
	chats := map[string]*chat{}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		name, text := r.FormValue("user"), r.FormValue("text")
		if name == "" || text == "" {
			http.Error(w, "want user=NAME&text=TEXT", http.StatusBadRequest)
			return
		}
		mu.Lock()
		defer mu.Unlock()
		c := chats[strings.ToLower(name)]
		if c == nil {
			u := emu.NewUser(name, tenant)
			conv, err := emu.InstallPersonal(r.Context(), app, u)
			if err != nil {
				http.Error(w, fmt.Sprintf("installing the bot for %s: %v (is adapter-host run going?)", name, err), http.StatusBadGateway)
				return
			}
			c = &chat{u, conv}
			chats[strings.ToLower(name)] = c
		}
		d, err := emu.Say(r.Context(), c.conv, c.u, text)
		if err != nil {
			http.Error(w, fmt.Sprintf("delivering to the bot: %v (is adapter-host run going?)", err), http.StatusBadGateway)
			return
		}
		fmt.Fprintf(w, "%s (Entra object id %s) wrote in %s: host answered %d\n", c.u.Name, c.u.AADObjectID, c.conv.ID, d.Final().Status)
	})
}

func printEmulateHelp(w io.Writer, v emulateVars) {
	const self = "adapter-host"
	fmt.Fprintf(w, `Emulated WeCom on http://%[1]s (corp %[3]s, agent %[4]d, users alice and bob)
Emulated identity platform and Microsoft Graph on http://%[2]s (tenant %[5]s, user %[6]s, chat %[7]s)
Emulated Azure Bot Service and Teams on http://%[12]s (bot app %[13]s, tenant %[5]s)
Wrote %[8]s: bots hr (wecom), teams (graph, already signed in) and helpdesk (teams).
Ctrl-C stops the emulators.

In another terminal, try:

  %[9]s check --config %[8]s
  %[9]s run --config %[8]s
  %[9]s token status --config %[8]s
  %[9]s send --config %[8]s --bot hr --to user:alice --text "hello from chatwire"
  %[9]s send --config %[8]s --bot teams --to chat:%[7]s --markdown "**hello** from chatwire"
  %[9]s graph login --config %[8]s --bot teams      (open the printed URL: the emulator signs %[6]s in)

  # read events as a bot does (Server-Sent Events), then make users write:
  curl -N -H "Authorization: Bearer %[10]s" http://%[11]s/v1/bots/hr/events
  curl -d user=alice -d text=hi http://%[1]s/emulate/say
  curl -d user=Carol -d text=hi http://%[2]s/emulate/say
  curl -d user=Erin -d text=hi http://%[12]s/emulate/say     (prints Erin's Entra object id ID)
  %[9]s send --config %[8]s --bot helpdesk --to user:ID --markdown "**hi** Erin"
  curl -s http://%[11]s/readyz; curl -s http://%[11]s/metrics | grep ^chatwire_

  # or let a bot answer: one process per bot
  CHATWIRE_URL=http://%[11]s CHATWIRE_API_KEY=%[10]s python3 examples/python-bot/echo_bot.py hr
  CHATWIRE_URL=http://%[11]s CHATWIRE_API_KEY=%[10]s python3 examples/python-bot/echo_bot.py teams
  CHATWIRE_URL=http://%[11]s CHATWIRE_API_KEY=%[10]s python3 examples/python-bot/echo_bot.py helpdesk

To rehearse mistakes, edit %[8]s and run check again: a wrong corp_secret (WeCom 40001), a
wrong agent_id (301002), a wrong client_secret or app_password (AADSTS7000215), a wrong
tenant_id (AADSTS90002 for the graph bot, AADSTS700016 for the teams bot).
`, v.WeCom, v.Graph, v.CorpID, v.AgentID, v.Tenant, v.User, EmuChatID, v.ConfigPath, self, v.APIKey, v.Listen, v.Teams, v.TeamsApp)
}
