package integration

import (
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/seed-a64d9e1f/chatwire/adapter/teams/teamstest"
)

// slowFirstAnswer is the emulator's HTTP client transport: it delivers every activity to the
// host, but holds the host's answer to the first delivery of an activity whose text contains
// slow until the attempt's deadline, so Teams sees a bot that answered too late.
type slowFirstAnswer struct {
	next http.RoundTripper
	slow string

	mu      sync.Mutex
	held    map[string]bool // activity ids whose first answer was held
	answers []int           // statuses of the held answers, as the host gave them
}

func (s *slowFirstAnswer) RoundTrip(r *http.Request) (*http.Response, error) {
	var body []byte
	if r.GetBody != nil {
		if rc, err := r.GetBody(); err == nil {
			body, _ = io.ReadAll(rc)
			rc.Close()
		}
	}
	resp, err := s.next.RoundTrip(r)
	if err != nil || !strings.Contains(string(body), s.slow) {
		return resp, err
	}
	id := r.Header.Get("x-ms-conversation-id") + "|" + activityID(body)
	s.mu.Lock()
	first := !s.held[id]
	if first {
		s.held[id] = true
		s.answers = append(s.answers, resp.StatusCode)
	}
	s.mu.Unlock()
	if !first {
		return resp, nil
	}
	// The host has answered; Teams only gets the answer after its deadline.
	resp.Body.Close()
	<-r.Context().Done()
	return nil, r.Context().Err()
}

// activityID is the "id" of an activity's JSON, found without decoding the rest.
func activityID(body []byte) string {
	s := string(body)
	i := strings.Index(s, `"id":"`)
	if i < 0 {
		return ""
	}
	s = s[i+len(`"id":"`):]
	if j := strings.IndexByte(s, '"'); j >= 0 {
		return s[:j]
	}
	return ""
}

// TestTeamsRedeliveryAfterSlowAnswer is issue 16's "redelivered after 15 s → one event",
// black-box through adapter-host: the host takes and answers an activity, but its answer
// reaches Teams only after the delivery deadline (shortened from 15 s to 2 s with the
// emulator's DeliveryTimeout), so Teams redelivers the same activity; the bot sees exactly
// one event on SSE, and the redelivery is answered 200.
func TestTeamsRedeliveryAfterSlowAnswer(t *testing.T) {
	emu, _ := newTeamsEmulator(t, 0)
	slow := &slowFirstAnswer{next: http.DefaultTransport, slow: "slow question", held: map[string]bool{}}
	emu.Client = &http.Client{Transport: slow}
	emu.DeliveryTimeout = 2 * time.Second
	emu.AddBot(teamstest.Bot{AppID: teamsApp, Password: teamsPassword, TenantID: teamsTenant, Name: "Helper"})
	h := startHost(t, "teams", teamsHostConfig(emu.URL, emu.MetadataURL(), "  dir: "+t.TempDir()), teamsEnv()...)
	h.apiKey = apiKey
	emu.SetEndpoint(teamsApp, "http://"+h.addr+"/webhook/tbot")
	sse := streamTeams(t, h)
	ctx := t.Context()

	megan := emu.NewUser("Megan Bowen", teamsTenant)
	conv, err := emu.InstallPersonal(ctx, teamsApp, megan)
	if err != nil {
		t.Fatal(err)
	}
	d, err := emu.Say(ctx, conv, megan, "a slow question")
	if err != nil {
		t.Fatal(err)
	}
	if len(d.Attempts) != 2 || !d.Attempts[0].TimedOut || d.Attempts[1].Status != 200 || d.Attempts[0].ActivityID != d.Attempts[1].ActivityID {
		t.Fatalf("attempts = %+v; want the first timed out and the same activity redelivered and answered 200", d.Attempts)
	}
	slow.mu.Lock()
	answers := append([]int(nil), slow.answers...)
	slow.mu.Unlock()
	if len(answers) != 1 || answers[0] != 200 {
		t.Fatalf("the host answered the first delivery %v; want 200 (it took the activity before Teams gave up)", answers)
	}
	// A later message marks the point by which both deliveries' events would be on SSE.
	if _, err := emu.Say(ctx, conv, megan, "after"); err != nil {
		t.Fatal(err)
	}
	sse.wait(t, "after")
	if n := len(sse.with("a slow question")); n != 1 {
		t.Errorf("%d events for one activity delivered twice (the first answer too slow); want 1", n)
	}
}
