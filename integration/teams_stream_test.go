package integration

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/seed-a64d9e1f/chatwire/adapter/teams/teamstest"
)

// streamSend POSTs a streamed send (NDJSON: the header, then one {"delta"} line per delta)
// to h for bot, writing a delta every gap (as fast as the connection takes them when gap is
// 0), and returns the answer.
func streamSend(t *testing.T, h *host, bot string, header map[string]any, deltas []string, gap time.Duration) (int, []byte) {
	t.Helper()
	pr, pw := io.Pipe()
	go func() {
		enc := json.NewEncoder(pw)
		enc.Encode(header)
		for _, d := range deltas {
			if err := enc.Encode(map[string]string{"delta": d}); err != nil {
				return
			}
			if gap > 0 {
				time.Sleep(gap)
			}
		}
		pw.Close()
	}()
	req, _ := http.NewRequestWithContext(t.Context(), "POST", "http://"+h.addr+"/v1/bots/"+bot+"/messages", pr)
	req.Header.Set("Authorization", "Bearer "+h.apiKey)
	req.Header.Set("Content-Type", "application/x-ndjson")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("streamed send: %v", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, body
}

// cutDeltas cuts text into n deltas at character boundaries, as an LLM client streams.
func cutDeltas(text string, n int) []string {
	size := (len(text) + n - 1) / n
	var out []string
	for i := 0; i < len(text); {
		end := min(i+size, len(text))
		for end < len(text) && !utf8.RuneStart(text[end]) {
			end++
		}
		out = append(out, text[i:end])
		i = end
	}
	return out
}

// teamsAnswer is an LLM-like answer of about n bytes (with non-ASCII text).
func teamsAnswer(n int) string {
	var b strings.Builder
	for i := 0; b.Len() < n; i++ {
		fmt.Fprintf(&b, "word%d ünïcode ", i)
	}
	return b.String()[:n]
}

// TestTeamsStreamThroughHost is issue 16's streaming proof, black-box through adapter-host
// and its plugin: a 30 KB answer streamed over HTTP as 1,500 NDJSON deltas in reply to a 1:1
// message reaches the emulated Teams as one streamed message (typing chunks, then the final
// message) whose final text is exactly the answer, with the connector's requests for it at
// least 1 s apart (Teams allows 1 per second; the emulator answers faster ones 429, and none
// may be refused); the same answer in a group chat, where Teams does not stream, arrives as
// one ordinary message with the whole text.
func TestTeamsStreamThroughHost(t *testing.T) {
	emu, _ := newTeamsEmulator(t, 0)
	emu.AddBot(teamstest.Bot{AppID: teamsApp, Password: teamsPassword, TenantID: teamsTenant, Name: "Helper"})
	h := startHost(t, "teams", teamsHostConfig(emu.URL, emu.MetadataURL(), "  dir: "+t.TempDir()), teamsEnv()...)
	h.apiKey = apiKey
	emu.SetEndpoint(teamsApp, "http://"+h.addr+"/webhook/tbot")
	sse := streamTeams(t, h)
	ctx := t.Context()

	answer := teamsAnswer(30 * 1024)
	deltas := cutDeltas(answer, 1500)
	if len(deltas) < 1400 {
		t.Fatalf("%d deltas; want about 1,500", len(deltas))
	}

	// 1:1: streamed.
	megan := emu.NewUser("Megan Bowen", teamsTenant)
	conv, err := emu.InstallPersonal(ctx, teamsApp, megan)
	if err != nil {
		t.Fatal(err)
	}
	act, err := emu.Message(conv, megan, "explain streaming")
	if err != nil {
		t.Fatal(err)
	}
	if d, err := emu.Deliver(ctx, teamsApp, act, teamstest.DeliverOptions{}); err != nil || d.Final().Status != 200 {
		t.Fatalf("deliver: %+v %v", d, err)
	}
	ev := sse.wait(t, "explain streaming")
	start := time.Now()
	// The deltas come over about 6 s, as an LLM produces them: the adapter coalesces them
	// into a few updates at its pace.
	status, body := streamSend(t, h, "tbot", map[string]any{"reply_to": ev.ID}, deltas, 4*time.Millisecond)
	took := time.Since(start)
	if status != 200 {
		t.Fatalf("streamed send in a 1:1 chat: %d %s", status, body)
	}
	var sr struct {
		ID  string   `json:"id"`
		IDs []string `json:"ids"`
	}
	json.Unmarshal(body, &sr)
	streams := emu.Streams()
	if len(streams) != 1 {
		t.Fatalf("%d streams opened; want 1: %+v", len(streams), streams)
	}
	st := streams[0]
	if st.ConversationID != conv.ID || st.ReplyToID != act.ID || !st.Final || st.Ended != "final" {
		t.Errorf("stream %s: conversation %s reply to %s final %v ended %q; want %s, %s, a final message", st.ID, st.ConversationID, st.ReplyToID, st.Final, st.Ended, conv.ID, act.ID)
	}
	if st.Text != answer {
		t.Errorf("the user sees %d bytes; want the whole %d-byte answer (prefix match %v)", len(st.Text), len(answer), strings.HasPrefix(answer, st.Text))
	}
	if !strings.HasSuffix(sr.ID, "|"+st.ID) {
		t.Errorf("the send answered id %q; want the streamed message's (…|%s)", sr.ID, st.ID)
	}
	var chunks int
	for i, u := range st.Updates {
		if !u.Accepted() {
			t.Errorf("update %d (%s, seq %d) refused: %d %s %s", i, u.Type, u.Sequence, u.Status, u.Code, u.Message)
		}
		if u.Type == "streaming" {
			chunks++
		}
		if i > 0 {
			if gap := u.At.Sub(st.Updates[i-1].At); gap < time.Second {
				t.Errorf("updates %d and %d of the stream %v apart; Teams allows 1 per second", i-1, i, gap)
			}
		}
	}
	if chunks < 2 || st.Updates[len(st.Updates)-1].Type != "final" {
		t.Errorf("%d streaming chunks, last update %+v; want several chunks over the ~6 s of deltas, then the final message", chunks, st.Updates[len(st.Updates)-1])
	}
	// Nothing else was sent to the chat: the answer is the one streamed message.
	for _, s := range emu.Sent() {
		if s.ConversationID == conv.ID && s.ActivityID != st.ID && s.Activity.Type == "message" {
			t.Errorf("another message in the 1:1 chat: %+v", s.Activity.Text[:min(80, len(s.Activity.Text))])
		}
	}
	t.Logf("1:1: %d deltas in %v → %d streaming requests and the final message", len(deltas), took.Round(time.Millisecond), chunks)

	// A group chat: no stream, one message with the whole text at the end.
	adele := emu.NewUser("Adele Vance", teamsTenant)
	group, err := emu.NewGroupChat(ctx, teamsApp, "Project", megan, adele)
	if err != nil {
		t.Fatal(err)
	}
	gact, err := emu.Message(group, adele, "and in the group?")
	if err != nil {
		t.Fatal(err)
	}
	if d, err := emu.Deliver(ctx, teamsApp, gact, teamstest.DeliverOptions{}); err != nil || d.Final().Status != 200 {
		t.Fatalf("deliver to the group: %+v %v", d, err)
	}
	var gev teamsEvent
	if !waitFor(20*time.Second, func() bool {
		for _, e := range sse.all() {
			if e.Chat.ID == group.ID && strings.HasSuffix(e.Text, "and in the group?") {
				gev = e
				return true
			}
		}
		return false
	}) {
		t.Fatalf("no event for the group message; got %+v", sse.all())
	}
	status, body = streamSend(t, h, "tbot", map[string]any{"reply_to": gev.ID}, deltas, 0)
	if status != 200 {
		t.Fatalf("streamed send in a group chat: %d %s", status, body)
	}
	var msgs []teamstest.Sent
	for _, s := range emu.Sent() {
		if s.ConversationID == group.ID && s.Activity.Type == "message" {
			msgs = append(msgs, s)
		}
	}
	if len(msgs) != 1 || msgs[0].Activity.Text != answer {
		var lens []int
		for _, m := range msgs {
			lens = append(lens, len(m.Activity.Text))
		}
		t.Errorf("group chat got %d messages of %v bytes; want one with the whole %d-byte answer", len(msgs), lens, len(answer))
	}
	for _, u := range emu.StreamRequests() {
		if u.ConversationID == group.ID {
			t.Errorf("a streaming request in the group chat: %+v", u)
		}
	}
	if n := len(emu.Streams()); n != 1 {
		t.Errorf("%d streams in all; want only the 1:1 chat's", n)
	}
}
