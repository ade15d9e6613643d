package teams_test

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/seed-a64d9e1f/chatwire/adapter"
	"github.com/seed-a64d9e1f/chatwire/adapter/teams"
	"github.com/seed-a64d9e1f/chatwire/adapter/teams/teamstest"
)

// vclock is a virtual clock shared by the adapter's streams and the emulator's streaming
// rules: a stream's wait moves it forward at once, so paced tests take no real time and the
// emulator's timestamps are exact.
type vclock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *vclock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *vclock) Sleep(ctx context.Context, d time.Duration) error {
	c.mu.Lock()
	if d > 0 {
		c.t = c.t.Add(d)
	}
	c.mu.Unlock()
	return ctx.Err()
}

// streamEnv is a setup whose adapter and emulator share a virtual clock; updates receives a
// value after each streaming request the emulator answered.
func streamEnv(t *testing.T) (*env, *vclock, chan teamstest.StreamUpdate) {
	t.Helper()
	e := setup(t, nil)
	clk := &vclock{t: time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)}
	e.srv.Now = clk.Now
	teams.SetStreamClock(e.a, clk.Now, clk.Sleep)
	updates := make(chan teamstest.StreamUpdate, 1<<14)
	e.srv.OnStream = func(u teamstest.StreamUpdate) {
		select {
		case updates <- u:
		default:
		}
	}
	return e, clk, updates
}

// visible is the text of conversation conv as users read it: every message the bot sent
// there, streamed or not, in order, with updates applied.
func visible(s *teamstest.Server, conv string) (text string, messages int) {
	byID := map[string]string{}
	for _, st := range s.Streams() {
		if st.ConversationID == conv {
			byID[st.ID] = st.Text
		}
	}
	for _, m := range s.Sent() {
		if strings.SplitN(m.ConversationID, ";", 2)[0] == conv && m.Activity.Type == "message" && m.Kind != "delete" {
			byID[m.ActivityID] = m.Activity.Text
		}
	}
	var ids []int64
	for id := range byID {
		n, _ := strconv.ParseInt(id, 10, 64)
		ids = append(ids, n)
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	var b strings.Builder
	for _, id := range ids {
		b.WriteString(byID[strconv.FormatInt(id, 10)])
	}
	return b.String(), len(ids)
}

func wait(t *testing.T, updates chan teamstest.StreamUpdate) teamstest.StreamUpdate {
	t.Helper()
	select {
	case u := <-updates:
		return u
	case <-time.After(30 * time.Second):
		t.Fatal("no streaming request within 30 s")
		return teamstest.StreamUpdate{}
	}
}

// idle waits until stream s's sender has waited for text n times.
func idle(t *testing.T, s adapter.Stream, n int64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for teams.StreamWaits(s) < n {
		if time.Now().After(deadline) {
			t.Fatalf("the stream's sender did not become idle (%d waits, want %d)", teams.StreamWaits(s), n)
		}
		time.Sleep(time.Millisecond)
	}
}

// deltas returns n deltas of 20 bytes (ASCII and one 2-byte letter each).
func deltas(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("token %04d lorem é\n", i)
	}
	return out
}

// TestStream30KBIn1500Deltas is the proof: a 30 KB answer streamed as 1,500 deltas in
// a 1:1 chat arrives whole, at most one update per second by the emulator's clock. The deltas
// come in 100 batches of 15, each appended while the emulator answers a request (so the
// adapter is waiting for that answer and its next update carries the whole batch): the answer
// takes about 150 s of (virtual) time, longer than Teams' 2-minute stream, so it also
// continues in a second streamed message.
func TestStream30KBIn1500Deltas(t *testing.T) {
	e, _, _ := streamEnv(t)
	u, c := e.install(t, "Megan")
	ev := e.say(t, c, u, "tell me everything")
	s, err := e.a.OpenStream(t.Context(), adapter.Message{ReplyTo: ev.ID})
	if err != nil {
		t.Fatal(err)
	}
	ds := deltas(1500)
	want := strings.Join(ds, "")
	if len(want) != 30000 {
		t.Fatalf("answer is %d bytes", len(want))
	}
	appendBatch := func(i int) {
		for _, d := range ds[i : i+15] {
			if err := s.Append(context.Background(), d); err != nil {
				t.Error(err)
			}
		}
	}
	var mu sync.Mutex
	nextBatch := 15
	allIn := make(chan struct{})
	e.srv.OnStream = func(teamstest.StreamUpdate) {
		mu.Lock()
		defer mu.Unlock()
		switch {
		case nextBatch < len(ds):
			appendBatch(nextBatch)
			nextBatch += 15
		case nextBatch == len(ds):
			nextBatch++
			close(allIn)
		}
	}
	appendBatch(0)
	select {
	case <-allIn:
	case <-time.After(60 * time.Second):
		t.Fatal("the deltas were not all sent within 60 s")
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	rc, err := s.Finish(ctx)
	if err != nil {
		t.Fatal(err)
	}

	got, n := visible(e.srv, c.ID)
	if got != want {
		t.Fatalf("the chat shows %d bytes; want the whole %d-byte answer", len(got), len(want))
	}
	streams := e.srv.Streams()
	if len(streams) < 2 || n != len(streams) {
		t.Fatalf("%d streams, %d messages; want ≥ 2 streamed messages (the answer outlives one 2-minute stream) and nothing else", len(streams), n)
	}
	if len(rc.IDs) != len(streams) {
		t.Errorf("receipt %+v; want the %d messages", rc, len(streams))
	}
	_, root, _ := teams.ParseID(ev.ID)
	reqs := e.srv.StreamRequests()
	for i, r := range reqs {
		if !r.Accepted() {
			t.Errorf("request %d refused: %+v", i, r)
		}
		if i > 0 {
			if gap := r.At.Sub(reqs[i-1].At); gap < time.Second {
				t.Errorf("requests %d and %d are %v apart; Teams takes at most 1 per second", i-1, i, gap)
			}
		}
	}
	if len(reqs) > 110 {
		t.Errorf("%d requests for 100 batches of deltas: not coalesced", len(reqs))
	}
	for _, st := range streams {
		if !st.Final || st.Ended != "final" || st.ReplyToID != root {
			t.Errorf("stream %s: final %v ended %q replyTo %q; want final, answering %s", st.ID, st.Final, st.Ended, st.ReplyToID, root)
		}
		first, last := st.Updates[0].At, st.Updates[len(st.Updates)-1].At
		if last.Sub(first) >= 2*time.Minute {
			t.Errorf("stream %s lasted %v", st.ID, last.Sub(first))
		}
		for i, up := range st.Updates {
			if up.Type != "final" && up.Sequence != i+1 {
				t.Errorf("stream %s update %d has sequence %d", st.ID, i, up.Sequence)
			}
			if i > 0 && !strings.HasPrefix(up.Text, st.Updates[i-1].Text) {
				t.Errorf("stream %s update %d is not cumulative", st.ID, i)
			}
		}
	}
	t.Logf("%d requests, %d streamed messages, %v of stream time", len(reqs), len(streams), reqs[len(reqs)-1].At.Sub(reqs[0].At))
}

// TestStreamGroupChatSendsOneMessage: Teams streams only in 1:1 chats; elsewhere the whole text
// is one ordinary reply at Finish, and nothing is sent before.
func TestStreamGroupChatSendsOneMessage(t *testing.T) {
	for _, kind := range []string{"groupChat", "channel"} {
		t.Run(kind, func(t *testing.T) {
			e, _, _ := streamEnv(t)
			u := e.srv.NewUser("Megan", tenant)
			var c teamstest.Conversation
			var err error
			if kind == "channel" {
				c, err = e.srv.NewChannel(t.Context(), appID, "General", u)
			} else {
				c, err = e.srv.NewGroupChat(t.Context(), appID, "project", u, e.srv.NewUser("Adele", tenant))
			}
			if err != nil {
				t.Fatal(err)
			}
			ev := e.say(t, c, u, "<at>Teams TestBot</at> summarise")
			s, err := e.a.OpenStream(t.Context(), adapter.Message{ReplyTo: ev.ID})
			if err != nil {
				t.Fatal(err)
			}
			ds := deltas(1500)
			for i, d := range ds {
				if err := s.Append(t.Context(), d); err != nil {
					t.Fatal(err)
				}
				if i == 0 {
					idle(t, s, 2) // the sender has seen the first delta and sent nothing
				}
			}
			if n := len(e.srv.Sent()); n != 0 {
				t.Errorf("%d messages sent before Finish", n)
			}
			rc, err := s.Finish(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			sent := e.srv.Sent()
			if len(sent) != 1 || sent[0].Kind != "reply" || sent[0].Activity.Text != strings.Join(ds, "") {
				t.Fatalf("sent %d messages (%+v); want one reply with the whole text", len(sent), sent)
			}
			if len(e.srv.StreamRequests()) != 0 {
				t.Errorf("streaming requests in a %s: %+v", kind, e.srv.StreamRequests())
			}
			if _, id, _ := teams.ParseID(rc.ID); id != sent[0].ActivityID {
				t.Errorf("receipt %q; want message %s", rc.ID, sent[0].ActivityID)
			}
		})
	}
}

// TestStreamLongAnswerContinues: an answer over the message size goes on in new messages,
// streamed in a 1:1 chat and ordinary in a group chat, and arrives whole either way.
func TestStreamLongAnswerContinues(t *testing.T) {
	e, _, _ := streamEnv(t)
	u, c := e.install(t, "Megan")
	g, err := e.srv.NewGroupChat(t.Context(), appID, "project", u, e.srv.NewUser("Adele", tenant))
	if err != nil {
		t.Fatal(err)
	}
	want := strings.Repeat(strings.Join(deltas(100), ""), 50) // 100,000 bytes: 200,000 as UTF-16
	for _, conv := range []teamstest.Conversation{c, g} {
		s, err := e.a.OpenStream(t.Context(), adapter.Message{To: adapter.Target{Chat: conv.ID}})
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < len(want); i += 1000 {
			if err := s.Append(t.Context(), want[i:i+1000]); err != nil {
				t.Fatal(err)
			}
		}
		rc, err := s.Finish(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		got, n := visible(e.srv, conv.ID)
		if got != want || n < 3 || len(rc.IDs) != n {
			t.Errorf("%s: %d bytes in %d messages (receipt %d); want all %d bytes in ≥ 3 messages of ≤ 80 KB", conv.ConversationType, len(got), n, len(rc.IDs), len(want))
		}
	}
	for _, r := range e.srv.StreamRequests() {
		if !r.Accepted() {
			t.Errorf("refused: %+v", r)
		}
	}
}

// TestStreamAbort: Abort closes the streamed message with what it shows and sends nothing more.
func TestStreamAbort(t *testing.T) {
	e, _, updates := streamEnv(t)
	_, c := e.install(t, "Megan")
	s, err := e.a.OpenStream(t.Context(), adapter.Message{To: adapter.Target{Chat: c.ID}})
	if err != nil {
		t.Fatal(err)
	}
	s.Append(t.Context(), "The answer is")
	first := wait(t, updates)
	if err := s.Abort(t.Context(), "model failed"); err != nil {
		t.Fatal(err)
	}
	if err := s.Append(t.Context(), " 42"); adapter.KindOf(err) != adapter.KindInvalidRequest {
		t.Errorf("Append after Abort = %v; want invalid_request", err)
	}
	if _, err := s.Finish(t.Context()); err == nil {
		t.Error("Finish after Abort succeeded")
	}
	st := e.srv.Streams()
	if len(st) != 1 || st[0].ID != first.StreamID || st[0].Ended != "final" || st[0].Text != "The answer is" {
		t.Fatalf("streams %+v; want one, closed with the text shown", st)
	}

	// Aborted before anything was sent: nothing is.
	s, _ = e.a.OpenStream(t.Context(), adapter.Message{To: adapter.Target{Chat: c.ID}})
	before := len(e.srv.StreamRequests())
	if err := s.Abort(t.Context(), "no answer"); err != nil {
		t.Fatal(err)
	}
	if n := len(e.srv.StreamRequests()); n != before {
		t.Errorf("%d requests after an abort without text", n-before)
	}
}

// TestStreamErrors: bad use, the user's Stop button, a refused stream and a stream Teams ends
// for its age.
func TestStreamErrors(t *testing.T) {
	e, _, updates := streamEnv(t)
	_, c := e.install(t, "Megan")
	to := adapter.Message{To: adapter.Target{Chat: c.ID}}

	if _, err := e.a.OpenStream(t.Context(), adapter.Message{To: to.To, Text: "x"}); adapter.KindOf(err) != adapter.KindInvalidRequest {
		t.Errorf("header with text: %v", err)
	}
	if _, err := e.a.OpenStream(t.Context(), adapter.Message{To: adapter.Target{Chat: "a:unknown"}}); adapter.KindOf(err) != adapter.KindNotFound {
		t.Errorf("unknown chat: %v", err)
	}
	s, _ := e.a.OpenStream(t.Context(), to)
	if _, err := s.Finish(t.Context()); adapter.KindOf(err) != adapter.KindInvalidRequest {
		t.Errorf("Finish without text: %v", err)
	}
	if n := len(e.srv.Sent()) + len(e.srv.StreamRequests()); n != 0 {
		t.Errorf("%d requests for an empty stream", n)
	}

	t.Run("stop button", func(t *testing.T) {
		s, _ := e.a.OpenStream(t.Context(), to)
		s.Append(t.Context(), "Once upon a time")
		first := wait(t, updates)
		e.srv.StopStream(first.StreamID)
		s.Append(t.Context(), " there was")
		if u := wait(t, updates); u.Status != 403 || !strings.Contains(u.Message, "canceled by user") {
			t.Fatalf("after Stop: %+v", u)
		}
		_, err := s.Finish(t.Context())
		if err == nil || !strings.Contains(err.Error(), "stopped") {
			t.Errorf("Finish after Stop = %v; want the user stopped it", err)
		}
		if text, _ := visible(e.srv, c.ID); text != "Once upon a time" {
			t.Errorf("chat shows %q", text)
		}
	})

	t.Run("streaming refused", func(t *testing.T) {
		e, _, updates := streamEnv(t)
		_, c := e.install(t, "Megan")
		e.srv.RefuseStreams = true
		s, _ := e.a.OpenStream(t.Context(), adapter.Message{To: adapter.Target{Chat: c.ID}})
		ds := deltas(50)
		s.Append(t.Context(), ds[0])
		if u := wait(t, updates); u.Status != 403 {
			t.Fatalf("first request: %+v; want 403", u)
		}
		for _, d := range ds[1:] {
			s.Append(t.Context(), d)
		}
		if _, err := s.Finish(t.Context()); err != nil {
			t.Fatal(err)
		}
		sent := e.srv.Sent()
		if len(sent) != 1 || sent[0].Activity.Text != strings.Join(ds, "") || sent[0].Activity.Type != "message" {
			t.Fatalf("sent %+v; want the whole text in one message", sent)
		}
	})

	t.Run("transient connector errors", func(t *testing.T) {
		// A 502 before the connector took the chunk, then one after it took it ("accepted then
		// 5xx"): the chunk is sent again with its sequence number, and a sequence the
		// connector already has (202 out of order) moves the stream on.
		e, _, updates := streamEnv(t)
		_, c := e.install(t, "Megan")
		s, _ := e.a.OpenStream(t.Context(), adapter.Message{To: adapter.Target{Chat: c.ID}})
		s.Append(t.Context(), "one")
		wait(t, updates)
		e.srv.Inject(teamstest.Fault{Status: 502}, teamstest.Fault{Status: 502, Deliver: true})
		s.Append(t.Context(), " two")
		for u := wait(t, updates); u.Code != teamstest.StreamOutOfOrder; u = wait(t, updates) {
		}
		s.Append(t.Context(), " three")
		for i := 0; ; i++ {
			u := wait(t, updates)
			if u.Accepted() && u.Type == "streaming" && u.Text == "one two three" {
				break
			}
			if i == 10 {
				t.Fatalf("no update accepted after the out-of-order answer; last %+v", u)
			}
		}
		if _, err := s.Finish(t.Context()); err != nil {
			t.Fatal(err)
		}
		if text, n := visible(e.srv, c.ID); text != "one two three" || n != 1 {
			t.Errorf("chat shows %q in %d messages; want one message with the whole text", text, n)
		}
		if st := e.srv.Streams(); len(st) != 1 || !st[0].Final {
			t.Errorf("streams %+v", st)
		}
	})

	t.Run("stream time exceeded", func(t *testing.T) {
		e, _, updates := streamEnv(t)
		e.srv.StreamTimeout = 4 * time.Second // shorter than the adapter renews: Teams ends it
		_, c := e.install(t, "Megan")
		s, _ := e.a.OpenStream(t.Context(), adapter.Message{To: adapter.Target{Chat: c.ID}})
		ds := deltas(12)
		var timedOut bool
		for _, d := range ds {
			s.Append(t.Context(), d)
			if u := wait(t, updates); strings.Contains(u.Message, "exceeded streaming time") {
				timedOut = true
			}
		}
		if _, err := s.Finish(t.Context()); err != nil {
			t.Fatal(err)
		}
		if !timedOut {
			t.Fatal("the emulator never ended the stream for its age")
		}
		if text, n := visible(e.srv, c.ID); text != strings.Join(ds, "") || n < 2 {
			t.Errorf("chat shows %d bytes in %d messages; want the whole %d", len(text), n, len(strings.Join(ds, "")))
		}
	})
}
