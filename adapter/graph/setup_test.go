package graph

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"

	"golang.org/x/oauth2"

	"github.com/seed-a64d9e1f/chatwire/adapter/graph/graphtest"
	"github.com/seed-a64d9e1f/chatwire/tokenmgr"
)

// Secrets used by tests; TestNoSecretsInLogs checks none of them leaks.
const (
	testTenant = "contoso.onmicrosoft.com"
	testClient = "11111111-2222-3333-4444-555555555555"
	testSecret = "s3cr3t~Value.NeverLogged"
	base       = "http://graph.test"
	botUser    = "bot-user"
)

// env is an emulator with clients wired to it in process (usable inside synctest bubbles).
type env struct {
	srv *graphtest.Server
	hc  *http.Client
	cfg Config
	log *logBuffer
}

func newEnv(t testing.TB) *env {
	t.Helper()
	s := &graphtest.Server{LoginUser: botUser, StrictUpload: true}
	s.AddClient(testClient, testSecret, "http://localhost:8400/callback")
	hc := &http.Client{Transport: graphtest.HandlerTransport(s)}
	return &env{srv: s, hc: hc, log: &logBuffer{},
		cfg: Config{Tenant: testTenant, ClientID: testClient, ClientSecret: testSecret, LoginBase: base, HTTPClient: hc}}
}

func (e *env) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(e.log, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// delegated returns a Manager over a RefreshSource seeded with a fresh refresh token, and a
// Client using it.
func (e *env) delegated(t *testing.T, store *tokenmgr.MemoryStore) (*tokenmgr.Manager, *Client) {
	t.Helper()
	if store == nil {
		store = new(tokenmgr.MemoryStore)
	}
	key := e.cfg.Key(botUser)
	if en, _ := store.Load(context.Background(), key); en.Gen == 0 {
		e.seed(store)
	}
	src := e.cfg.RefreshSource()
	m := tokenmgr.New(key, src, tokenmgr.Options{Store: store, Logger: e.logger()})
	t.Cleanup(func() { m.Close() })
	return m, NewClient(m, src, ClientOptions{GraphBase: base, HTTPClient: e.hc, Logger: e.logger()})
}

func (e *env) seed(store *tokenmgr.MemoryStore) {
	rt := e.srv.IssueRefreshToken(testClient, botUser, "https://graph.microsoft.com/.default offline_access")
	store.Put(e.cfg.Key(botUser), tokenmgr.Entry{State: []byte(rt)})
}

type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func countGrant(reqs []graphtest.TokenRequest, grant string) int {
	n := 0
	for _, r := range reqs {
		if r.GrantType == grant && r.Error == "" {
			n++
		}
	}
	return n
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }

func s256(v string) string { return oauth2.S256ChallengeFromVerifier(v) }

func readAll(resp *http.Response) []byte {
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return b
}
