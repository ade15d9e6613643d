// Package check tries a config's credentials against the platforms (adapter-host check),
// signs a delegated Graph bot in (graph login), and words platform and API errors for a
// person.
package check

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"regexp"
	"strings"
	"time"

	"github.com/seed-a64d9e1f/chatwire/adapter"
	"github.com/seed-a64d9e1f/chatwire/adapter/graph"
	"github.com/seed-a64d9e1f/chatwire/adapter/teams"
	"github.com/seed-a64d9e1f/chatwire/adapter/wecom"
	"github.com/seed-a64d9e1f/chatwire/internal/config"
	"github.com/seed-a64d9e1f/chatwire/internal/filestore"
	"github.com/seed-a64d9e1f/chatwire/internal/platforms"
	"github.com/seed-a64d9e1f/chatwire/plugin"
	"github.com/seed-a64d9e1f/chatwire/tokenmgr"
)

// explanations says in plain words what platform codes mean and what to do.
var explanations = map[string]string{
	// WeCom errcodes
	"-1":     "WeCom is busy; try again in a moment",
	"40001":  "the corp_secret is wrong: copy the app's Secret again from the WeCom admin console (App Management → your app)",
	"40013":  "the corp_id is wrong: it is on My Company → Company Information, and starts with ww",
	"40014":  "the access token is invalid; chatwire fetches a new one by itself",
	"40056":  "the agent_id is wrong: use the AgentId shown on the app's page",
	"40058":  "a required field is missing or malformed in the request",
	"41001":  "the access token is missing; chatwire fetches one by itself",
	"41004":  "corp_secret is empty",
	"42001":  "the access token expired; chatwire fetches a new one by itself",
	"45009":  "the API call limit was reached: WeCom blocks the app for a while (60 s or more)",
	"45033":  "too many concurrent calls; slow down",
	"48002":  "this API is not allowed for the app: check its permissions in the admin console",
	"60011":  "the app may not see this member, department or tag: widen its visible range",
	"60020":  "this host's IP address is not on the app's trusted IP list (App → Enterprise trusted IP)",
	"81013":  "none of the recipients exists or may receive messages from this app",
	"82001":  "all recipients are invalid or outside the app's visible range",
	"301002": "the agent_id is not the app of this corp_secret: use the AgentId shown on the same app's page as the Secret (App Management → your app)",
	// WeCom AI bot (智能机器人) and group robot codes
	"853000": "the AI bot's bot_id or secret is wrong: copy the BotID and the long-connection secret (长连接专用密钥) from the bot's API mode page (API 模式 → 长连接) in the WeCom admin console; resetting the secret there invalidates the old one",
	"93000":  "the group robot's webhook_key is wrong, or the robot was removed from its group: copy the key= of its webhook URL again",
	// Microsoft identity platform (AADSTS) and Graph codes
	"AADSTS7000215":              "the client_secret is wrong: use the secret's Value (not its ID) from App registrations → Certificates & secrets",
	"AADSTS7000222":              "the client_secret expired: create a new one in App registrations → Certificates & secrets",
	"AADSTS700016":               "the client_id is not an app in this tenant: check client_id and tenant_id",
	"AADSTS90002":                "the tenant_id does not exist: use the Directory (tenant) ID from the app's Overview",
	"AADSTS50034":                "the user account does not exist in this tenant",
	"AADSTS50076":                "multi-factor authentication is required: run adapter-host graph login again",
	"AADSTS50079":                "the user must enrol in multi-factor authentication",
	"AADSTS65001":                "the app lacks consent for the permissions it asks for: grant admin consent in API permissions",
	"AADSTS70008":                "the refresh token or code expired: run adapter-host graph login again",
	"AADSTS700082":               "the refresh token expired after long inactivity: run adapter-host graph login again",
	"AADSTS50173":                "the refresh token was revoked (password change?): run adapter-host graph login again",
	"AADSTS53003":                "a Conditional Access policy blocked the sign-in",
	"invalid_client":             "the client_id or client_secret is wrong",
	"invalid_grant":              "the stored sign-in is no longer valid: run adapter-host graph login again",
	"InvalidAuthenticationToken": "Graph rejected the access token; chatwire fetches a new one by itself",
	"Forbidden":                  "the app lacks a Graph permission for this call: check API permissions and admin consent",
	"TooManyRequests":            "Graph is throttling this app; chatwire waits when it can",
}

// Explain returns the plain-words meaning of a platform code, or "".
func Explain(code string) string {
	if ex, ok := explanations[code]; ok {
		return ex
	}
	if strings.HasPrefix(code, "AADSTS") {
		return "see https://login.microsoftonline.com/error?code=" + strings.TrimPrefix(code, "AADSTS")
	}
	return ""
}

// Codes named in an error's text, most specific first: an AADSTS number says more than the
// OAuth error (invalid_client) it comes with, whichever is written first.
var codesInText = []*regexp.Regexp{
	regexp.MustCompile(`AADSTS\d+`),
	regexp.MustCompile(`errcode (-?\d+)`),
	regexp.MustCompile(`\b(invalid_client|invalid_grant)\b`),
}

// platformCode finds the platform's code in err: an adapter.Error's, a
// tokenmgr.PlatformError's, or one named in the message ("errcode 40001", "AADSTS7000215").
func platformCode(err error) string {
	var pc interface{ PlatformCode() string } // graph.AuthError: "AADSTS7000215", not "invalid_client"
	if errors.As(err, &pc) && pc.PlatformCode() != "" {
		return pc.PlatformCode()
	}
	if c := adapter.Code(err); c != "" {
		return c
	}
	var pe *tokenmgr.PlatformError
	if errors.As(err, &pe) && pe.Code != "" {
		return pe.Code
	}
	for _, re := range codesInText {
		if m := re.FindStringSubmatch(err.Error()); m != nil {
			return m[len(m)-1]
		}
	}
	return ""
}

// describeFailure splits a failed probe into what happened and the one fix to show: the most
// specific there is (Teams' own, else the explanation of the exact code, else the
// platform's hint). The platform's "(fix: …)" is cut from the message when another fix is
// shown, so the user reads one fix, once.
func describeFailure(err error) (msg, fix string) {
	msg = err.Error()
	var hint string
	var ph interface{ PlatformHint() string }
	if errors.As(err, &ph) {
		hint = ph.PlatformHint()
	}
	var pe *tokenmgr.PlatformError
	if hint == "" && errors.As(err, &pe) {
		hint = pe.Hint
	}
	fix = cmp.Or(teamsExplain(err), Explain(platformCode(err)), hint)
	if hint != "" && fix != "" {
		msg = strings.Replace(msg, " (fix: "+hint+")", "", 1)
	}
	return msg, fix
}

// reportFailure prints a bot's failed check: the error, then the fix once.
func reportFailure(w io.Writer, b config.BotConfig, err error) {
	msg, fix := describeFailure(err)
	fmt.Fprintf(w, "bot %s (%s): FAILED: %s\n", b.Name, b.Platform, msg)
	if fix != "" {
		fmt.Fprintf(w, "    what it means: %s\n", fix)
	}
}

type checkFailed struct{ n, of int }

func (e checkFailed) Error() string { return fmt.Sprintf("%d of %d bots failed the check", e.n, e.of) }
func (e checkFailed) ExitCode() int { return 2 }

// Bots tries the credentials of every bot of cfg (read from configPath), each probe bounded
// by timeout, and prints one verdict per bot to stdout. A failed check returns an error whose
// ExitCode is 2.
func Bots(ctx context.Context, cfg *config.Config, configPath string, timeout time.Duration, stdout io.Writer) error {
	opener := platforms.New(slog.New(slog.DiscardHandler), nil)
	opener.NoStart = true // a probe creates no Graph subscriptions
	failed := 0
	for _, b := range cfg.Bots {
		if b.Graph != nil && b.Graph.Auth == graph.AuthDelegated {
			// Redeeming the stored refresh token would rotate it under a running host.
			note, err := probeDelegated(ctx, cfg.Store, configPath, b, timeout)
			if err != nil {
				failed++
				reportFailure(stdout, b, err)
				continue
			}
			fmt.Fprintf(stdout, "bot %s (%s): ok, %s\n", b.Name, b.Platform, note)
			continue
		}
		if err := probe(ctx, opener, b, timeout); err != nil {
			failed++
			reportFailure(stdout, b, err)
			continue
		}
		switch {
		case b.WeComRobot != nil:
			fmt.Fprintf(stdout, "bot %s (%s): not probed: a group robot's key can be tried only by sending a message\n", b.Name, b.Platform)
			continue
		case b.WeComAIBot != nil && b.WeComAIBot.Secret == "":
			fmt.Fprintf(stdout, "bot %s (%s): webhook mode, nothing to contact; callback URL to set in the WeCom console: <your public URL>/webhook/%s\n", b.Name, b.Platform, b.Name)
			continue
		}
		fmt.Fprintf(stdout, "bot %s (%s): ok, credentials accepted\n", b.Name, b.Platform)
		if b.WeCom != nil && b.WeCom.Token != "" {
			fmt.Fprintf(stdout, "    callback URL to set in the WeCom console: <your public URL>/webhook/%s\n", b.Name)
		}
		if b.Teams != nil {
			fmt.Fprintf(stdout, "    messaging endpoint to set on the Azure Bot: <your public URL>/webhook/%s\n", b.Name)
		}
	}
	if failed > 0 {
		return checkFailed{failed, len(cfg.Bots)}
	}
	return nil
}

// probeDelegated checks a delegated Graph bot without redeeming its stored refresh token
// (which would rotate it under a running host): the app's client secret with a client
// credentials token request, and that a sign-in is stored. note says what was checked.
// For the multi-tenant endpoints (common, consumers, organizations) the secret is not
// tried: the identity platform takes no client credentials request there.
func probeDelegated(ctx context.Context, sc config.StoreConfig, configPath string, b config.BotConfig, timeout time.Duration) (note string, err error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	// The client secret first: a wrong tenant_id or secret (AADSTS90002, AADSTS7000215) is
	// the more basic mistake, and the stored sign-in's key holds the tenant.
	secretNote := "public client (no client_secret to try); "
	if b.Graph.ClientSecret != "" {
		if t := strings.ToLower(b.Graph.TenantID); t == "" || t == "common" || t == "consumers" || t == "organizations" {
			// The only request that tries a secret without the user is client credentials, and the
			// identity platform refuses it for these multi-tenant endpoints (AADSTS9001023), so a
			// working bot would fail here.
			secretNote = fmt.Sprintf("client secret not tried (tenant %q allows no client credentials request; it is tried at the host's next refresh); ", b.Graph.TenantID)
		} else if _, err := platforms.GraphConfig(*b.Graph, nil).ClientCredentials().Token(ctx); err != nil {
			return "", err
		} else {
			secretNote = "client secret accepted; "
		}
	}
	key := platforms.GraphKey(*b.Graph)
	store, _, closeStore, err := OpenStore(sc)
	if err != nil {
		return "", err
	}
	defer closeStore()
	e, err := store.Load(ctx, key)
	if err != nil {
		return "", fmt.Errorf("reading the stored sign-in: %w", err)
	}
	if len(e.State) == 0 {
		return "", fmt.Errorf("no sign-in stored under %s: run adapter-host graph login --config %s --bot %s", key, shellQuote(configPath), b.Name)
	}
	return secretNote + "a sign-in is stored (check does not redeem it, so a running host keeps its refresh token; the sign-in itself is tried at the host's next refresh)", nil
}

// probe opens the bot in process and fetches a token, and for a WeCom app reads its agent
// with agent/get (gettoken never sees agent_id). The bot is opened on a store of its own in
// memory, never the config's: the token check fetches stays in this process, so a shared
// Redis (which running hosts read) is left as it was.
func probe(ctx context.Context, opener *platforms.Opener, b config.BotConfig, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	section := b.PluginSection()
	data, err := json.Marshal(section)
	if err != nil {
		return err
	}
	// A check opens the bot with no store: no fleet lease (an AI bot subscribes once and
	// closes) and no token written to the shared Redis.
	a, err := opener.Open(ctx, plugin.StoreConfig{}, plugin.BotConfig{Name: b.Name, Platform: b.Platform, Config: data})
	if err != nil {
		return err
	}
	defer a.Close()
	if c, ok := a.(interface{ Check(context.Context) error }); ok {
		return c.Check(ctx) // the AI bot: subscribe and close
	}
	tp, ok := a.(interface{ Tokens() *tokenmgr.Manager })
	if !ok {
		_, err := a.Status(ctx)
		return err
	}
	if _, err := tp.Tokens().Token(ctx); err != nil {
		return err
	}
	if ag, ok := a.(interface {
		Agent(context.Context) (wecom.Agent, error)
	}); ok {
		if _, err := ag.Agent(ctx); err != nil {
			return fmt.Errorf("the credentials are accepted, but agent/get refused agent_id: %w", err)
		}
	}
	return nil
}

// shellQuote quotes s for a POSIX shell when it needs it, so a printed command can be
// pasted as is.
func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789@%+=:,./-_") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// GraphLogin signs the delegated Graph bot botName of cfg (read from configPath) in, in a
// browser with the loopback redirect URI, or with the device code flow, and stores its
// refresh token in cfg's store.
func GraphLogin(ctx context.Context, cfg *config.Config, configPath, botName, redirect string, device bool, stdout io.Writer) error {
	var g *platforms.Graph
	for _, b := range cfg.Bots {
		if b.Name == botName && b.Graph != nil {
			g = b.Graph
		}
	}
	if g == nil {
		return fmt.Errorf("graph login: no graph bot named %q in %s", botName, configPath)
	}
	if g.Auth != "delegated" {
		return fmt.Errorf("graph login: bot %s uses %s auth; only delegated bots sign in", botName, g.Auth)
	}
	gc := platforms.GraphConfig(*g, nil)
	var res *graph.LoginResult
	var err error
	if device {
		res, err = gc.DeviceLogin(ctx, func(dc graph.DeviceCode) error {
			fmt.Fprintf(stdout, "To sign in, open %s and enter the code %s (valid until %s)\n", dc.VerificationURI, dc.UserCode, dc.ExpiresAt.Format(time.Kitchen))
			return nil
		})
	} else {
		res, err = gc.Login(ctx, graph.LoginOptions{RedirectURL: redirect, LoginHint: g.User, Open: func(u string) error {
			fmt.Fprintf(stdout, "Open this URL in a browser and sign in as %s:\n\n  %s\n\nWaiting for the redirect to %s ...\n", cmp.Or(g.User, "the bot's account"), u, redirect)
			return nil
		}})
	}
	if err != nil {
		if ex := Explain(platformCode(err)); ex != "" {
			return fmt.Errorf("%w (%s)", err, ex)
		}
		return err
	}
	store, where, closeStore, err := OpenStore(cfg.Store)
	if err != nil {
		return err
	}
	defer closeStore()
	key := platforms.GraphKey(*g)
	if err := Seed(ctx, store, key, res); err != nil {
		return fmt.Errorf("graph login: storing the sign-in: %w", err)
	}
	fmt.Fprintf(stdout, "signed in; the refresh token is stored in %s under %s\n", where, key)
	if cfg.Store.Dir != "" {
		fmt.Fprintln(stdout, "a running adapter-host redeems the new sign-in at its next token refresh; no restart needed")
	}
	return nil
}

// OpenStore opens the token store a config names, for commands that write to it. where
// names it for messages; closeStore releases it (for Redis, the store and its client).
func OpenStore(sc config.StoreConfig) (store tokenmgr.Store, where string, closeStore func() error, err error) {
	switch {
	case sc.UsesRedis():
		ps, err := sc.Plugin()
		if err != nil {
			return nil, "", nil, err
		}
		s, closeClient, err := platforms.OpenRedisStore(ps, nil)
		if err != nil {
			return nil, "", nil, err
		}
		return s, "Redis", func() error { return errors.Join(s.Close(), closeClient()) }, nil
	case sc.Dir != "":
		s, err := filestore.Open(sc.Dir)
		if err != nil {
			return nil, "", nil, err
		}
		return s, s.Path(), func() error { return nil }, nil
	}
	return nil, "", nil, errors.New("no store configured: set store.dir or store.redis_url (or store.redis) so the sign-in survives")
}

// Seed writes a login's tokens as the newest entry of key.
func Seed(ctx context.Context, store tokenmgr.Store, key string, res *graph.LoginResult) error {
	cur, err := store.Load(ctx, key)
	if err != nil {
		return err
	}
	_, _, err = store.Refresh(ctx, key, cur.Gen, func(ctx context.Context, prev tokenmgr.Entry) (tokenmgr.Entry, error) {
		return tokenmgr.Entry{Token: tokenmgr.Token{Value: res.AccessToken, ExpiresAt: res.ExpiresAt}, State: res.State(), Issued: time.Now()}, nil
	})
	return err
}

// teamsExplain says what a Teams bot's token error means (the Entra errors of a Bot
// Framework app, spec §6), or "".
func teamsExplain(err error) string {
	var ae *teams.AuthError
	if errors.As(err, &ae) {
		return ae.TeamsHint()
	}
	return ""
}
