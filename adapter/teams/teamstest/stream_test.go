package teamstest_test

import (
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/seed-a64d9e1f/chatwire/adapter/teams/teamstest"
)

// vclock is a virtual clock tests move by hand.
type vclock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *vclock) Now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *vclock) Add(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

func chunk(typ, id, text string, seq int) map[string]any {
	e := map[string]any{"type": "streaminfo", "streamType": typ}
	if seq > 0 {
		e["streamSequence"] = seq
	}
	if id != "" {
		e["streamId"] = id
	}
	kind := "typing"
	if typ == "final" {
		kind = "message"
	}
	return map[string]any{"type": kind, "text": text, "entities": []any{e}, "from": map[string]string{"id": "28:" + appID}}
}

// TestStreamingRules walks the streaming state machine of spec §4 through every answer.
func TestStreamingRules(t *testing.T) {
	s, _, base := setup(t)
	clk := &vclock{t: time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)}
	s.Now = clk.Now
	s.StrictStream = true
	_, m := getToken(t, base, tenant, password, teamstest.ConnectorScope)
	tok := m["access_token"].(string)
	u := s.NewUser("Megan", tenant)
	c, err := s.InstallPersonal(t.Context(), appID, u)
	if err != nil {
		t.Fatal(err)
	}
	acts := s.ServiceURL(tenant) + "v3/conversations/" + url.PathEscape(c.ID) + "/activities"
	post := func(body any) (int, map[string]any) {
		st, _, m := connector(t, "POST", acts, tok, body)
		return st, m
	}
	if st, m := post(chunk("informative", "", "", 1)); st != 400 || !strings.Contains(m["error"].(map[string]any)["message"].(string), teamstest.StreamStartNoText) {
		t.Errorf("start without text = %d %v; want 400 %q", st, m, teamstest.StreamStartNoText)
	}
	if st, m := post(chunk("informative", "", strings.Repeat("x", 1001), 1)); st != 400 {
		t.Errorf("informative of 1001 chars = %d %v; want 400", st, m)
	}
	st, m := post(chunk("informative", "", "Searching…", 1))
	if st != 201 || m["id"] == "" {
		t.Fatalf("start = %d %v; want 201 with the stream id", st, m)
	}
	id := m["id"].(string)
	if st, m := post(chunk("streaming", id, "Hello", 2)); st != 429 || errCode(m) != "Throttled" {
		t.Errorf("second request at once = %d %v; want 429 (1 request per second)", st, m)
	}
	clk.Add(time.Second)
	if st, m := post(chunk("streaming", "", "Other", 1)); st != 403 || errCode(m) != "ContentStreamNotAllowed" {
		t.Errorf("second stream in the chat = %d %v; want 403", st, m)
	}
	clk.Add(time.Second)
	if st, m := post(chunk("streaming", id, "Hello", 3)); st != 202 || errCode(m) != teamstest.StreamOutOfOrder {
		t.Errorf("sequence 3 after 1 = %d %v; want 202 %s", st, m, teamstest.StreamOutOfOrder)
	}
	clk.Add(time.Second)
	if st, m := post(chunk("streaming", id, "Hello", 2)); st != 202 || errCode(m) != "" {
		t.Errorf("chunk 2 = %d %v; want 202 {}", st, m)
	}
	clk.Add(time.Second)
	if st, m := post(chunk("streaming", id, "Goodbye", 3)); st != 403 || !strings.Contains(m["error"].(map[string]any)["message"].(string), teamstest.StreamNotPrevious) {
		t.Errorf("non-cumulative chunk = %d %v; want 403 %q", st, m, teamstest.StreamNotPrevious)
	}
	clk.Add(time.Second)
	if st, m := post(chunk("streaming", id, "Hello"+strings.Repeat("x", 52000), 3)); st != 403 || !strings.Contains(m["error"].(map[string]any)["message"].(string), teamstest.StreamTooLarge) {
		t.Errorf("oversized chunk = %d %v; want 403 %q", st, m, teamstest.StreamTooLarge)
	}
	clk.Add(time.Second)
	if st, m := post(chunk("streaming", id, "Hello, world", 3)); st != 202 {
		t.Errorf("chunk 3 = %d %v; want 202", st, m)
	}
	clk.Add(time.Second)
	if st, m := post(chunk("final", id, "Hello, world!", 4)); st != 400 {
		t.Errorf("strict: final with streamSequence = %d %v; want 400", st, m)
	}
	clk.Add(time.Second)
	if st, m := post(chunk("final", id, "Hello, world!", 0)); st != 201 || m["id"] != id {
		t.Errorf("final = %d %v; want 201 with the stream id", st, m)
	}
	clk.Add(time.Second)
	if st, m := post(chunk("streaming", id, "Hello, world!!", 4)); st != 403 || !strings.Contains(m["error"].(map[string]any)["message"].(string), "already completed") {
		t.Errorf("chunk after final = %d %v; want 403 already completed", st, m)
	}
	streams := s.Streams()
	if len(streams) != 1 || streams[0].Text != "Hello, world!" || !streams[0].Final || streams[0].Ended != "final" {
		t.Fatalf("streams = %+v", streams)
	}
	var accepted []string
	for _, u := range streams[0].Updates {
		if u.Accepted() {
			accepted = append(accepted, u.Type+":"+u.Text)
		}
	}
	if got := strings.Join(accepted, "|"); got != "informative:Searching…|streaming:Hello|streaming:Hello, world|final:Hello, world!" {
		t.Errorf("accepted updates = %s", got)
	}

	// The 2-minute limit ends a stream with what it showed.
	clk.Add(time.Second)
	_, m = post(chunk("streaming", "", "Long", 1))
	id2, _ := m["id"].(string)
	clk.Add(2 * time.Minute)
	if st, m := post(chunk("final", id2, "Long answer", 0)); st != 403 || !strings.Contains(m["error"].(map[string]any)["message"].(string), teamstest.StreamTimedOut) {
		t.Errorf("final after 2 min = %d %v; want 403 %q", st, m, teamstest.StreamTimedOut)
	}
	if st, _, _ := connector(t, "PUT", acts+"/"+id2, tok, map[string]any{"type": "message", "text": "Long answer"}); st != 200 {
		t.Errorf("PUT after timeout = %d; want 200", st)
	}
	if got := s.Streams()[1]; got.Text != "Long answer" || got.Ended != "timeout" {
		t.Errorf("timed-out stream = %+v", got)
	}

	// Stop button.
	clk.Add(time.Second)
	_, m = post(chunk("streaming", "", "Stop me", 1))
	id3, _ := m["id"].(string)
	s.StopStream(id3)
	clk.Add(time.Second)
	if st, m := post(chunk("streaming", id3, "Stop me now", 2)); st != 403 || !strings.Contains(m["error"].(map[string]any)["message"].(string), teamstest.StreamCanceled) {
		t.Errorf("after Stop = %d %v; want 403 %q", st, m, teamstest.StreamCanceled)
	}

	// Group chats and channels do not stream.
	g, err := s.NewGroupChat(t.Context(), appID, "team chat", u, s.NewUser("Adele", tenant))
	if err != nil {
		t.Fatal(err)
	}
	gacts := s.ServiceURL(tenant) + "v3/conversations/" + url.PathEscape(g.ID) + "/activities"
	if st, _, m := connector(t, "POST", gacts, tok, chunk("streaming", "", "Hi all", 1)); st != 403 || errCode(m) != "ContentStreamNotAllowed" ||
		m["error"].(map[string]any)["message"] != teamstest.StreamNotAllowed {
		t.Errorf("stream in a group chat = %d %v; want 403 %q", st, m, teamstest.StreamNotAllowed)
	}
	if n := len(s.StreamRequests()); n < 15 {
		t.Errorf("StreamRequests recorded %d requests", n)
	}
}
