package teams_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/seed-a64d9e1f/chatwire/adapter/teams/teamstest"
)

// The Teams SDK's streamer (@microsoft/teams.apps HttpStream) against teamstest's streaming
// rules (spec §4): what it sends in a 1:1 chat is accepted, and what Teams refuses (streaming
// outside 1:1 chats, text that drops what was streamed, a stream past its time, requests
// faster than 1 per second) the emulator refuses with the answers the SDK acts on.

type streamInput struct {
	Config           config   `json:"config"`
	ServiceURL       string   `json:"serviceUrl"`
	ConversationID   string   `json:"conversationId"`
	ConversationType string   `json:"conversationType"`
	ActivityID       string   `json:"activityId,omitempty"`
	Scenario         string   `json:"scenario"`
	Chunks           []string `json:"chunks"`
	WaitMs           int      `json:"waitMs,omitempty"`
}

type streamResult struct {
	OK     bool `json:"ok"`
	Result *struct {
		ID   string `json:"id"`
		Text string `json:"text"`
	} `json:"result"`
	Error   string `json:"error"`
	Message string `json:"message"`
}

// runSDKStream runs conformance/node/teams-stream.js with in.
func runSDKStream(t *testing.T, in streamInput) streamResult {
	t.Helper()
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatalf("node is not installed: %s", installHint)
	}
	path, err := filepath.Abs(filepath.Join("..", "node", "teams-stream.js"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, path)
	b, _ := json.Marshal(in)
	cmd.Stdin = bytes.NewReader(b)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		if strings.Contains(stderr.String(), "Cannot find module") {
			t.Fatalf("@microsoft/teams.apps is not installed: %s\n%s", installHint, stderr.String())
		}
		t.Fatalf("teams-stream.js: %v\n%s", err, stderr.String())
	}
	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	var r streamResult
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &r); err != nil {
		t.Fatalf("teams-stream.js printed %q: %v\n%s", stdout.String(), err, stderr.String())
	}
	t.Logf("SDK log:\n%s", stderr.String())
	return r
}

// streamEmulator is an emulator with the bot registered (its endpoint answers 200) and a
// user who installed it.
func streamEmulator(t *testing.T) (*teamstest.Server, config, teamstest.User, teamstest.Conversation) {
	t.Helper()
	s, cfg := emulator(t)
	bot := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusOK) }))
	t.Cleanup(bot.Close)
	s.AddBot(teamstest.Bot{AppID: appID, Password: password, TenantID: tenant, Endpoint: bot.URL + "/api/messages"})
	u := s.NewUser("Megan", tenant)
	c, err := s.InstallPersonal(t.Context(), appID, u)
	if err != nil {
		t.Fatal(err)
	}
	return s, cfg, u, c
}

func TestTeamsSDKStreamsInPersonalChat(t *testing.T) {
	s, cfg, u, c := streamEmulator(t)
	d, err := s.Say(t.Context(), c, u, "explain streaming")
	if err != nil {
		t.Fatal(err)
	}
	var chunks []string
	for i := range 40 {
		chunks = append(chunks, "word"+itoa(i)+" ")
	}
	want := strings.Join(chunks, "")
	r := runSDKStream(t, streamInput{Config: cfg, ServiceURL: s.ServiceURL(tenant), ConversationID: c.ID,
		ConversationType: "personal", ActivityID: d.Activity.ID, Scenario: "stream", Chunks: chunks})
	if !r.OK || r.Result == nil || r.Result.Text != want {
		t.Fatalf("SDK stream: %+v; want the whole text %q", r, want)
	}
	streams := s.Streams()
	if len(streams) != 1 {
		t.Fatalf("%d streams; want 1", len(streams))
	}
	st := streams[0]
	if !st.Final || st.Ended != "final" || st.Text != want || st.ID != r.Result.ID || st.ReplyToID != d.Activity.ID {
		t.Errorf("stream %+v; want final with the whole text, id %s, answering %s", st, r.Result.ID, d.Activity.ID)
	}
	var accepted []teamstest.StreamUpdate
	for _, up := range st.Updates {
		if up.Accepted() {
			accepted = append(accepted, up)
		} else if up.Status != http.StatusTooManyRequests {
			t.Errorf("refused %+v; only the 1-per-second pace may refuse the SDK", up)
		}
	}
	if len(accepted) < 3 || accepted[0].Type != "informative" || accepted[0].Text != "Thinking…" ||
		accepted[len(accepted)-1].Type != "final" || accepted[len(accepted)-2].Type != "streaming" {
		t.Errorf("accepted updates %+v; want informative, streaming…, final", accepted)
	}
	for i := 1; i < len(accepted); i++ {
		if gap := accepted[i].At.Sub(accepted[i-1].At); gap < time.Second {
			t.Errorf("accepted updates %d and %d are %v apart", i-1, i, gap)
		}
	}
}

func TestTeamsSDKStreamRefusedInGroupChat(t *testing.T) {
	s, cfg, u, _ := streamEmulator(t)
	g, err := s.NewGroupChat(t.Context(), appID, "project", u, s.NewUser("Adele", tenant))
	if err != nil {
		t.Fatal(err)
	}
	r := runSDKStream(t, streamInput{Config: cfg, ServiceURL: s.ServiceURL(tenant), ConversationID: g.ID,
		ConversationType: "groupChat", Scenario: "refused", Chunks: []string{"hello all"}})
	if r.OK || r.Error != "StreamNotAllowedError" {
		t.Fatalf("SDK in a group chat: %+v; want StreamNotAllowedError (Teams' 403 %q)", r, teamstest.StreamNotAllowed)
	}
	reqs := s.StreamRequests()
	if len(reqs) != 1 || reqs[0].Status != http.StatusForbidden || reqs[0].Code != "ContentStreamNotAllowed" {
		t.Errorf("requests %+v; want one 403 ContentStreamNotAllowed", reqs)
	}
}

func TestTeamsSDKClearedTextRefused(t *testing.T) {
	s, cfg, _, c := streamEmulator(t)
	r := runSDKStream(t, streamInput{Config: cfg, ServiceURL: s.ServiceURL(tenant), ConversationID: c.ID,
		ConversationType: "personal", Scenario: "cleared", Chunks: []string{"first draft", "second"}})
	if r.OK || r.Error != "TerminalStreamError" || !strings.Contains(r.Message, teamstest.StreamNotPrevious) {
		t.Fatalf("SDK after clearText: %+v; want TerminalStreamError %q", r, teamstest.StreamNotPrevious)
	}
	var refused int
	for _, up := range s.StreamRequests() {
		if up.Status == http.StatusForbidden && up.Message == teamstest.StreamNotPrevious {
			refused++
		}
	}
	if refused == 0 {
		t.Errorf("no request refused as not cumulative: %+v", s.StreamRequests())
	}
	if st := s.Streams(); len(st) != 1 || st[0].Text != "first draft" || st[0].Final {
		t.Errorf("streams %+v; want the first draft shown, not finished", st)
	}
}

func TestTeamsSDKStreamTimeout(t *testing.T) {
	s, cfg, _, c := streamEmulator(t)
	s.StreamTimeout = 2 * time.Second // instead of 2 minutes
	r := runSDKStream(t, streamInput{Config: cfg, ServiceURL: s.ServiceURL(tenant), ConversationID: c.ID,
		ConversationType: "personal", Scenario: "timeout", Chunks: []string{"before the limit, ", "after it"}, WaitMs: 2500})
	if !r.OK {
		t.Fatalf("SDK stream past its time: %+v", r)
	}
	var timedOut bool
	for _, up := range s.StreamRequests() {
		timedOut = timedOut || (up.Status == http.StatusForbidden && up.Message == teamstest.StreamTimedOut)
	}
	st := s.Streams()
	if !timedOut || len(st) != 1 || st[0].Ended != "timeout" || !st[0].Final || st[0].Text != "before the limit, after it" {
		t.Errorf("timed out %v, streams %+v; want a 403 %q, then the message updated (PUT) with the whole text", timedOut, st, teamstest.StreamTimedOut)
	}
}
