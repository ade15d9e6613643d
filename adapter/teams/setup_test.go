package teams_test

import (
	"bytes"
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/seed-a64d9e1f/chatwire/adapter"
	"github.com/seed-a64d9e1f/chatwire/adapter/teams"
	"github.com/seed-a64d9e1f/chatwire/adapter/teams/teamstest"
)

// The app of spec §7 A1, so the real activity is addressed to it.
const (
	appID    = "c9e8c047-2a74-40a2-b28a-b162d5f5327c"
	password = "app-password-value"
	tenant   = "72f988bf-86f1-41af-91ab-2d7cd011db47"
)

// syncBuffer is a log sink safe for concurrent writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type env struct {
	srv      *teamstest.Server
	a        *teams.Adapter
	endpoint string
	logs     *syncBuffer

	mu     sync.Mutex
	events []adapter.Event
	// emitHook, if set, runs before an emit is recorded; an error fails the emit.
	emitHook func(ctx context.Context, events []adapter.Event) error
}

func (e *env) Events() []adapter.Event {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]adapter.Event(nil), e.events...)
}

// eventsOf returns the events whose Text is text.
func (e *env) eventsOf(text string) []adapter.Event {
	var out []adapter.Event
	for _, ev := range e.Events() {
		if ev.Text == text {
			out = append(out, ev)
		}
	}
	return out
}

func setup(t *testing.T, mod func(*teams.Options)) *env {
	t.Helper()
	e := &env{srv: &teamstest.Server{}, logs: &syncBuffer{}}
	ts := httptest.NewServer(e.srv)
	t.Cleanup(ts.Close)
	e.srv.URL = ts.URL
	u, _ := url.Parse(ts.URL)
	opts := teams.Options{Bot: "tbot", AppID: appID, AppPassword: password, TenantID: tenant, LoginBase: ts.URL,
		OpenIDMetadataURL: e.srv.MetadataURL(), ServiceHosts: []string{u.Host},
		Logger:      slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelInfo})),
		BackoffBase: 50 * time.Millisecond}
	if mod != nil {
		mod(&opts)
	}
	a, err := teams.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	e.a = a
	bot := httptest.NewServer(a.Handler(func(ctx context.Context, events []adapter.Event) error {
		e.mu.Lock()
		hook := e.emitHook
		e.mu.Unlock()
		if hook != nil {
			if err := hook(ctx, events); err != nil {
				return err
			}
		}
		e.mu.Lock()
		e.events = append(e.events, events...)
		e.mu.Unlock()
		return nil
	}, 0))
	t.Cleanup(bot.Close)
	e.endpoint = bot.URL + "/webhook/tbot"
	e.srv.AddBot(teamstest.Bot{AppID: appID, Password: password, TenantID: tenant, Name: "Teams TestBot", Endpoint: e.endpoint})
	return e
}

// install makes a user and installs the bot for them.
func (e *env) install(t *testing.T, name string) (teamstest.User, teamstest.Conversation) {
	t.Helper()
	u := e.srv.NewUser(name, tenant)
	c, err := e.srv.InstallPersonal(t.Context(), appID, u)
	if err != nil {
		t.Fatal(err)
	}
	return u, c
}

func (e *env) say(t *testing.T, c teamstest.Conversation, u teamstest.User, text string) adapter.Event {
	t.Helper()
	d, err := e.srv.Say(t.Context(), c, u, text)
	if err != nil {
		t.Fatal(err)
	}
	if st := d.Final().Status; st != http.StatusOK {
		t.Fatalf("delivery of %q answered %d %s; want 200", text, st, d.Final().Body)
	}
	for _, ev := range e.Events() {
		if _, id, _ := teams.ParseID(ev.ID); id == d.Activity.ID {
			return ev
		}
	}
	t.Fatalf("no event for activity %s", d.Activity.ID)
	return adapter.Event{}
}

func kindCode(err error) (adapter.Kind, string) { return adapter.KindOf(err), adapter.Code(err) }

func countRequests(s *teamstest.Server, method, contains string) int {
	n := 0
	for _, r := range s.Requests() {
		if r.Method == method && strings.Contains(r.Path, contains) {
			n++
		}
	}
	return n
}
