// Package teams_test drives Microsoft's own Bot Framework clients (npm botbuilder and
// botframework-connector, pinned in conformance/node/package-lock.json) against teamstest, so
// the emulator is proven by the vendor's code and not only by chatwire's adapter.
package teams_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"net/http/httptest"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/seed-a64d9e1f/chatwire/adapter/teams/teamstest"
)

const (
	appID    = "c9e8c047-2a74-40a2-b28a-b162d5f5327c"
	password = "app-password-value"
	tenant   = "72f988bf-86f1-41af-91ab-2d7cd011db47"
)

// installHint is what a test failing for a missing oracle tells the reader to run.
const installHint = "run `make deps` (Debian: apt-get install nodejs npm; then cd conformance/node && npm ci)"

type config struct {
	AppID    string `json:"appId"`
	Password string `json:"password"`
	Tenant   string `json:"tenant"`
	Base     string `json:"base"`
}

func script(t *testing.T) (node, path string) {
	t.Helper()
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatalf("node is not installed: %s", installHint)
	}
	path, err = filepath.Abs(filepath.Join("..", "node", "teams-botbuilder.js"))
	if err != nil {
		t.Fatal(err)
	}
	return node, path
}

func emulator(t *testing.T) (*teamstest.Server, config) {
	t.Helper()
	s := &teamstest.Server{}
	ts := httptest.NewServer(s)
	t.Cleanup(ts.Close)
	s.URL = ts.URL
	return s, config{AppID: appID, Password: password, Tenant: tenant, Base: ts.URL}
}

// botbuilderBot starts a CloudAdapter bot in node and returns its messaging endpoint and its
// per-request log lines.
func botbuilderBot(t *testing.T, cfg config) (string, func() []map[string]any) {
	t.Helper()
	node, path := script(t)
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, node, path, "serve")
	in, _ := json.Marshal(cfg)
	cmd.Stdin = bytes.NewReader(in)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var lines []map[string]any
	var stderr bytes.Buffer
	pr, pw := ioPipe()
	cmd.Stderr = pw
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatalf("node: %v: %s", err, installHint)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			var m map[string]any
			if json.Unmarshal(sc.Bytes(), &m) == nil {
				mu.Lock()
				lines = append(lines, m)
				mu.Unlock()
			} else {
				mu.Lock()
				stderr.Write(sc.Bytes())
				stderr.WriteByte('\n')
				mu.Unlock()
			}
		}
	}()
	t.Cleanup(func() {
		cancel()
		cmd.Wait()
		pw.Close()
		<-done
	})
	var hello struct{ Port int }
	ready := make(chan error, 1)
	go func() { ready <- json.NewDecoder(stdout).Decode(&hello) }()
	select {
	case err := <-ready:
		if err != nil || hello.Port == 0 {
			mu.Lock()
			defer mu.Unlock()
			t.Fatalf("botbuilder bot did not start (%v): %s\n%s", err, stderr.String(), installHint)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("botbuilder bot did not start within 60 s")
	}
	return "http://127.0.0.1:" + itoa(hello.Port) + "/api/messages", func() []map[string]any {
		mu.Lock()
		defer mu.Unlock()
		return append([]map[string]any(nil), lines...)
	}
}

// botbuilder's CloudAdapter accepts activities and tokens the emulator issues, replies
// through the emulator's connector, and refuses every tampered variant (spec §1.2, R1).
func TestCloudAdapterAgainstEmulator(t *testing.T) {
	s, cfg := emulator(t)
	s.Redeliveries = -1 // botbuilder answers 500 to some refusals; do not redeliver those
	endpoint, logs := botbuilderBot(t, cfg)
	s.AddBot(teamstest.Bot{AppID: appID, Password: password, TenantID: tenant, Name: "Teams TestBot", Endpoint: endpoint})
	u := s.NewUser("Megan Bowen", tenant)
	c, err := s.InstallPersonal(t.Context(), appID, u)
	if err != nil {
		t.Fatal(err)
	}
	for _, at := range s.Attempts() {
		if at.Status != 200 {
			t.Fatalf("botbuilder refused the install activity %s: %d %s (log %v)", at.Type, at.Status, at.Body, logs())
		}
	}
	d, err := s.Say(t.Context(), c, u, "hello")
	if err != nil {
		t.Fatal(err)
	}
	if d.Final().Status != 200 {
		t.Fatalf("botbuilder answered %d %s to a valid message (log %v)", d.Final().Status, d.Final().Body, logs())
	}
	sent := s.Sent()
	if len(sent) != 1 || sent[0].Kind != "reply" || sent[0].ReplyToID != d.Activity.ID || sent[0].Activity.Text != "echo: hello" ||
		sent[0].ConversationID != c.ID {
		t.Fatalf("connector got %+v; want botbuilder's reply \"echo: hello\" to %s", sent, d.Activity.ID)
	}
	// botbuilder percent-encodes the conversation id (spec §3.2); the emulator took it.
	reqs := s.Requests()
	if p := reqs[len(reqs)-1].Path; !strings.Contains(p, "/v3/conversations/a%3A") {
		t.Errorf("botbuilder's reply path %q; want a percent-encoded id", p)
	}

	for _, tc := range []struct {
		name  string
		fault teamstest.TokenFault
	}{
		{"wrong audience", teamstest.WrongAudience},
		{"wrong issuer", teamstest.WrongIssuer},
		{"wrong serviceurl claim", teamstest.WrongServiceURL},
		{"expired", teamstest.Expired},
		{"key without msteams endorsement", teamstest.UnendorsedKey},
		{"unknown key", teamstest.UnknownKey},
		{"tampered token", teamstest.TamperedToken},
		{"tampered body", teamstest.TamperedBody},
		{"no token", teamstest.NoToken},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, err := s.Message(c, u, tc.name)
			if err != nil {
				t.Fatal(err)
			}
			before := len(s.Sent())
			d, err := s.Deliver(t.Context(), appID, a, teamstest.DeliverOptions{Fault: tc.fault})
			if err != nil {
				t.Fatal(err)
			}
			// botbuilder answers 401 for AuthenticationErrors and 500 for the others (bad
			// signature, spec §1.2 step 3); never 200.
			if st := d.Final().Status; st != 401 && st != 500 {
				t.Errorf("botbuilder answered %d %s; want a refusal", st, d.Final().Body)
			}
			if n := len(s.Sent()); n != before {
				t.Errorf("botbuilder replied to a refused activity")
			}
		})
	}
	// An Action.Execute click as the emulator sends it is what botbuilder parses: its invoke
	// response comes back as the HTTP answer (spec §2.4).
	inv, err := s.ExecuteAction(t.Context(), c, u, sent[0].ActivityID, "approve", map[string]int{"req": 42})
	if err != nil {
		t.Fatal(err)
	}
	var ir struct {
		StatusCode int    `json:"statusCode"`
		Type       string `json:"type"`
		Value      string `json:"value"`
	}
	if inv.Final().Status != 200 || json.Unmarshal(inv.Final().Body, &ir) != nil || ir.StatusCode != 200 ||
		ir.Type != "application/vnd.microsoft.activity.message" || ir.Value != `approve {"req":42}` {
		t.Errorf("botbuilder answered the invoke %d %s; want 200 with verb approve and data {\"req\":42}", inv.Final().Status, inv.Final().Body)
	}

	// The spec's note: botbuilder accepts a token without exp (chatwire does not).
	a, _ := s.Message(c, u, "no exp")
	if d, err := s.Deliver(t.Context(), appID, a, teamstest.DeliverOptions{Fault: teamstest.NoExpiry}); err != nil || d.Final().Status != 200 {
		t.Errorf("botbuilder on a token without exp: %v %+v; the spec says it accepts it", err, d)
	}
}

type connectorResult struct {
	ID     string `json:"id"`
	Status int    `json:"status"`
	Error  string `json:"error"`
	Code   string `json:"code"`
}

func runConnector(t *testing.T, cfg config, ops []map[string]string) []connectorResult {
	t.Helper()
	node, path := script(t)
	in, _ := json.Marshal(map[string]any{"config": cfg, "ops": ops})
	cmd := exec.CommandContext(t.Context(), node, path, "connector")
	cmd.Stdin = bytes.NewReader(in)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("node %s connector: %v: %s\n%s", filepath.Base(path), err, stderr.Bytes(), installHint)
	}
	var out []connectorResult
	if err := json.Unmarshal(stdout.Bytes(), &out); err != nil || len(out) != len(ops) {
		t.Fatalf("node output: %v: %.300s", err, stdout.Bytes())
	}
	return out
}

// botframework-connector's ConnectorClient talks to the emulator's connector and sees Teams'
// answers: ids, error codes, Retry-After honoured on 429, 412 not retried (spec §3, R2).
func TestConnectorClientAgainstEmulator(t *testing.T) {
	s, cfg := emulator(t)
	s.AddBot(teamstest.Bot{AppID: appID, Password: password, TenantID: tenant, Endpoint: "http://127.0.0.1:9/unused"})
	u := s.NewUser("Megan", tenant)
	c, err := s.InstallPersonalSilently(appID, u)
	if err != nil {
		t.Fatal(err)
	}
	stranger := s.NewUser("Stranger", tenant)
	su := s.ServiceURL(tenant)
	res := runConnector(t, cfg, []map[string]string{
		{"op": "send", "serviceUrl": su, "conv": c.ID, "text": "one"},
		{"op": "create", "serviceUrl": su, "member": u.ID},
		{"op": "create", "serviceUrl": su, "member": stranger.ID},
		{"op": "send", "serviceUrl": su, "conv": "a:unknown", "text": "x"},
	})
	if res[0].ID == "" || res[0].Error != "" {
		t.Errorf("send = %+v; want an id", res[0])
	}
	if res[1].ID != c.ID {
		t.Errorf("create for an installed user = %+v; want %s", res[1], c.ID)
	}
	if res[2].Status != 403 || res[2].Code != "ForbiddenOperationException" {
		t.Errorf("create for a stranger = %+v; want 403 ForbiddenOperationException", res[2])
	}
	if res[3].Status != 404 || res[3].Code != "ConversationNotFound" {
		t.Errorf("send to an unknown conversation = %+v; want 404 ConversationNotFound", res[3])
	}
	id := res[0].ID
	res = runConnector(t, cfg, []map[string]string{
		{"op": "reply", "serviceUrl": su, "conv": c.ID, "id": id, "text": "two"},
		{"op": "update", "serviceUrl": su, "conv": c.ID, "id": id, "text": "one (edited)"},
		{"op": "delete", "serviceUrl": su, "conv": c.ID, "id": id},
	})
	for i, r := range res {
		if r.Error != "" {
			t.Errorf("op %d = %+v", i, r)
		}
	}
	kinds := []string{}
	for _, x := range s.Sent() {
		kinds = append(kinds, x.Kind)
	}
	if got := strings.Join(kinds, ","); got != "send,create,reply,update,delete" {
		t.Errorf("connector saw %s", got)
	}

	// 429 with Retry-After: retried; 412: not retried.
	n := len(s.Requests())
	s.Inject(teamstest.Fault{Status: 429, RetryAfter: time.Second})
	res = runConnector(t, cfg, []map[string]string{{"op": "send", "serviceUrl": su, "conv": c.ID, "text": "after 429"}})
	if res[0].Error != "" || len(s.Requests())-n != 2 {
		t.Errorf("after one 429: %+v with %d requests; want success after 2", res[0], len(s.Requests())-n)
	}
	n = len(s.Requests())
	s.Inject(teamstest.Fault{Status: 412})
	res = runConnector(t, cfg, []map[string]string{{"op": "send", "serviceUrl": su, "conv": c.ID, "text": "412"}})
	if res[0].Status != 412 || res[0].Code != "PreconditionFailed" || len(s.Requests())-n != 1 {
		t.Errorf("412: %+v with %d requests; want PreconditionFailed, not retried", res[0], len(s.Requests())-n)
	}
	// A user who blocked the bot: the 209 body reaches the client as a 403.
	s.Block(appID, u)
	res = runConnector(t, cfg, []map[string]string{{"op": "send", "serviceUrl": su, "conv": c.ID, "text": "blocked"}})
	if res[0].Status != 403 {
		t.Errorf("blocked: %+v; want 403", res[0])
	}
}
