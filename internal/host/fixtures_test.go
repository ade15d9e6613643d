package host

// Config fixtures shared with internal/config's tests (copies: a test package cannot import
// another's test files).

const goodConfig = `
server: {listen: "127.0.0.1:8080", api_keys: ["${KEY}"]}
store: {dir: ./state}
bots:
  - name: hr
    platform: wecom
    wecom: {corp_id: ww1, corp_secret: "${WECOM_SECRET}", agent_id: 1000002,
            token: tok, encoding_aes_key: "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"}
    deliver: {webhook_url: "http://127.0.0.1:9000/events", webhook_secret: "${HOOK}"}
  - name: teams
    platform: graph
    graph: {tenant_id: t, client_id: c, client_secret: "${GRAPH_SECRET}", auth: delegated,
            user: bot@contoso.com, notification_url: "https://bot.example.com/webhook/teams",
            client_state: cs}
`

func envOf(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

var goodEnv = map[string]string{"KEY": "0123456789abcdef0123", "WECOM_SECRET": "s3cret: with # chars", "HOOK": "h", "GRAPH_SECRET": "g"}

const teamsConfig = `
server: {listen: "127.0.0.1:8080"}
bots:
  - name: tbot
    platform: teams
    teams: {app_id: "${TEAMS_APP}", app_password: "${TEAMS_PASSWORD}", tenant_id: t1}
`
