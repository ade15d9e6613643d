package graphtest_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/seed-a64d9e1f/chatwire/adapter/graph/graphtest"
)

// receiver is a notification endpoint: it answers validation requests and hands every
// notification POST (numbered from 1) to answer.
type receiver struct {
	answer func(n int, w http.ResponseWriter, r *http.Request)
	mu     sync.Mutex
	bodies [][]byte
}

func (rc *receiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if tok := r.URL.Query().Get("validationToken"); tok != "" {
		w.Header().Set("Content-Type", "text/plain")
		io.WriteString(w, tok)
		return
	}
	b, _ := io.ReadAll(r.Body)
	rc.mu.Lock()
	rc.bodies = append(rc.bodies, b)
	n := len(rc.bodies)
	rc.mu.Unlock()
	rc.answer(n, w, r)
}

func (rc *receiver) got() [][]byte {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([][]byte(nil), rc.bodies...)
}

// subscribe creates a mail subscription of user u posting to hook.
func subscribe(t *testing.T, s *graphtest.Server, hook string) {
	t.Helper()
	auth := map[string]string{"Authorization": "Bearer " + appToken(t, s)}
	body, _ := json.Marshal(map[string]any{"changeType": "created", "notificationUrl": hook, "resource": "users/u/messages",
		"expirationDateTime": time.Now().Add(time.Hour), "clientState": "cs"})
	if resp, b := do(t, s, "POST", "http://graph.test/v1.0/subscriptions", auth, body); resp.StatusCode != 201 {
		t.Fatalf("create subscription = %d %s", resp.StatusCode, b)
	}
}

// failFirst answers the first n notification POSTs with the statuses given, then 202.
func failFirst(statuses ...int) func(int, http.ResponseWriter, *http.Request) {
	return func(n int, w http.ResponseWriter, _ *http.Request) {
		if n <= len(statuses) {
			w.WriteHeader(statuses[n-1])
			return
		}
		w.WriteHeader(http.StatusAccepted)
	}
}

// startReceiver serves rc on loopback and makes s deliver there; Close of both at cleanup.
func startReceiver(t *testing.T, s *graphtest.Server, rc *receiver) string {
	t.Helper()
	ts := httptest.NewServer(rc)
	t.Cleanup(ts.Close)
	t.Cleanup(s.Close) // runs first: no retry reaches a closed receiver
	s.Client = ts.Client()
	return ts.URL + "/hook?bot=1"
}

// checkSameBytes: every attempt of one delivery posted the same bytes, which the receiver got.
func checkSameBytes(t *testing.T, as []graphtest.DeliveryAttempt, got [][]byte) {
	t.Helper()
	if len(got) != len(as) {
		t.Fatalf("receiver got %d POSTs; the server recorded %d attempts", len(got), len(as))
	}
	for i, a := range as {
		if a.Delivery != as[0].Delivery || a.Attempt != i+1 {
			t.Errorf("attempt %d is delivery %d attempt %d; want delivery %d attempt %d", i, a.Delivery, a.Attempt, as[0].Delivery, i+1)
		}
		if !bytes.Equal(a.Body, as[0].Body) || !bytes.Equal(got[i], as[0].Body) {
			t.Errorf("attempt %d posted %q, receiver got %q; want the first attempt's bytes %q", i+1, a.Body, got[i], as[0].Body)
		}
	}
}

// summary lists attempts as delivery/attempt:status(retry), without the bodies.
func summary(as []graphtest.DeliveryAttempt) string {
	var b strings.Builder
	for _, a := range as {
		fmt.Fprintf(&b, "[%d/%d:%d(%v)%s]", a.Delivery, a.Attempt, a.Status, a.Retry, map[bool]string{true: " gave up"}[a.GaveUp])
	}
	return b.String()
}

// TestAutoRedeliveryBackoff: with RedeliverBase set, a notification answered 503 and then 500
// is posted again after base and then 2·base, byte for byte, and the third attempt's 202 ends it.
// Under synctest, in process: the waits are exact and no real time passes.
func TestAutoRedeliveryBackoff(t *testing.T) {
	synctest.Test(t, testAutoRedeliveryBackoff)
}

func testAutoRedeliveryBackoff(t *testing.T) {
	const base = 30 * time.Millisecond
	rc := &receiver{answer: failFirst(503, 500)}
	s := &graphtest.Server{RedeliverBase: base, RedeliverMax: 5, Client: &http.Client{Transport: graphtest.HandlerTransport(rc)}}
	t.Cleanup(s.Close)
	subscribe(t, s, "https://bot.test/hook?bot=1")
	s.DeliverMail("u", "a@example.com", "s", "t")
	s.Flush() // waits for the scheduled retries
	as := s.DeliveryAttempts()
	if len(as) != 3 {
		t.Fatalf("attempts %s; want 3", summary(as))
	}
	checkSameBytes(t, as, rc.got())
	for i, want := range []struct {
		status int
		retry  time.Duration
	}{{503, base}, {500, 2 * base}, {202, 0}} {
		if a := as[i]; a.Status != want.status || a.Retry != want.retry || a.GaveUp || a.Err != "" {
			t.Errorf("attempt %d = status %d retry %v gave up %v err %q; want %d retry %v", i+1, a.Status, a.Retry, a.GaveUp, a.Err, want.status, want.retry)
		}
		if i > 0 {
			prev := as[i-1]
			if gap := as[i].Start.Sub(prev.Start.Add(prev.Elapsed)); gap < prev.Retry {
				t.Errorf("attempt %d started %v after attempt %d ended; want at least %v", i+1, gap, i, prev.Retry)
			}
		}
	}
	if !strings.Contains(as[0].URL, "/hook?bot=1") {
		t.Errorf("delivered to %q; want the notification URL with its query", as[0].URL)
	}
	if n := s.Deliveries(); n != 3 {
		t.Errorf("Deliveries() = %d; want 3", n)
	}
	if n := s.Redeliver(); n != 0 || len(s.DeliveryAttempts()) != 3 {
		t.Errorf("Redeliver() = %d and posted again; want nothing left to redeliver", n)
	}
}

// TestAutoRedeliveryTimeout: an endpoint that does not answer within DeliveryTimeout counts
// as unacknowledged and gets the notification again. Under synctest, in process: the 300 ms
// pass in fake time, so a loaded machine cannot stretch them.
func TestAutoRedeliveryTimeout(t *testing.T) {
	synctest.Test(t, testAutoRedeliveryTimeout)
}

func testAutoRedeliveryTimeout(t *testing.T) {
	const timeout = 300 * time.Millisecond
	rc := &receiver{answer: func(n int, w http.ResponseWriter, r *http.Request) {
		if n == 1 {
			<-r.Context().Done() // hang until the server gives up on this POST
			return
		}
		w.WriteHeader(http.StatusOK)
	}}
	s := &graphtest.Server{RedeliverBase: 10 * time.Millisecond, RedeliverMax: 3, DeliveryTimeout: timeout,
		Client: &http.Client{Transport: graphtest.HandlerTransport(rc)}}
	t.Cleanup(s.Close)
	subscribe(t, s, "https://bot.test/hook")
	s.DeliverMail("u", "a@example.com", "s", "t")
	s.Flush()
	as := s.DeliveryAttempts()
	if len(as) != 2 {
		t.Fatalf("attempts %s; want 2", summary(as))
	}
	checkSameBytes(t, as, rc.got())
	if a := as[0]; a.Status != 0 || a.Err == "" || a.Elapsed < timeout || a.Retry != 10*time.Millisecond {
		t.Errorf("hung attempt = status %d err %q after %v retry %v; want no status, an error, ≥ %v, a retry", a.Status, a.Err, a.Elapsed, a.Retry, timeout)
	}
	if a := as[1]; a.Status != 200 || a.Err != "" || a.Retry != 0 {
		t.Errorf("second attempt %s; want 200 and no retry", summary(as[1:]))
	}
}

// TestAutoRedeliveryGivesUp: RedeliverMax retries, then the notification is dropped (not
// kept for Redeliver), the last attempt marked GaveUp. Under synctest, in process.
func TestAutoRedeliveryGivesUp(t *testing.T) {
	synctest.Test(t, testAutoRedeliveryGivesUp)
}

func testAutoRedeliveryGivesUp(t *testing.T) {
	rc := &receiver{answer: func(int, http.ResponseWriter, *http.Request) { panic(http.ErrAbortHandler) }} // connection reset
	s := &graphtest.Server{RedeliverBase: 5 * time.Millisecond, RedeliverMax: 3, Client: &http.Client{Transport: graphtest.HandlerTransport(rc)}}
	t.Cleanup(s.Close)
	subscribe(t, s, "https://bot.test/hook")
	s.DeliverMail("u", "a@example.com", "s", "t")
	s.Flush()
	as := s.DeliveryAttempts()
	if len(as) != 4 {
		t.Fatalf("%d attempts; want 1 + RedeliverMax 3", len(as))
	}
	checkSameBytes(t, as, rc.got())
	for i, a := range as {
		last := i == len(as)-1
		if a.Status != 0 || a.Err == "" || a.GaveUp != last || (a.Retry == 0) != last {
			t.Errorf("attempt %d = status %d err %q retry %v gave up %v", i+1, a.Status, a.Err, a.Retry, a.GaveUp)
		}
	}
	if n := s.Redeliver(); n != 0 || len(s.DeliveryAttempts()) != 4 {
		t.Errorf("Redeliver() = %d and posted again; a given-up notification is dropped", n)
	}
}

// TestRedeliveryOffByDefault: the zero value retries nothing by itself; Redeliver posts the
// failed notification again as the same delivery, same bytes.
func TestRedeliveryOffByDefault(t *testing.T) {
	s := &graphtest.Server{}
	rc := &receiver{answer: failFirst(503)}
	subscribe(t, s, startReceiver(t, s, rc))
	s.DeliverMail("u", "a@example.com", "s", "t")
	s.Flush()
	if as := s.DeliveryAttempts(); len(as) != 1 || as[0].Status != 503 || as[0].Retry != 0 || as[0].GaveUp {
		t.Fatalf("attempts %s; want one 503, no retry scheduled", summary(as))
	}
	if n := s.Redeliver(); n != 1 {
		t.Fatalf("Redeliver() = %d; want 1", n)
	}
	as := s.DeliveryAttempts()
	checkSameBytes(t, as, rc.got())
	if len(as) != 2 || as[1].Status != 202 {
		t.Errorf("attempts %s; want the Redeliver one answered 202", summary(as))
	}
	if !s.DeliverAgain() {
		t.Fatal("DeliverAgain not acknowledged")
	}
	if as := s.DeliveryAttempts(); len(as) != 3 || as[2].Delivery == as[0].Delivery || as[2].Attempt != 1 || !bytes.Equal(as[2].Body, as[0].Body) {
		t.Errorf("attempts %s; want DeliverAgain as a new delivery number with the same bytes", summary(as))
	}
}

// TestAutoRedeliveryFourHours: with no attempt cap, retries back off from RedeliverBase
// (1, 2, 4 … 64 min) and stop inside Graph's 4-hour window; the default timeout is 3 s.
// Under synctest the hours pass in fake time.
func TestAutoRedeliveryFourHours(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var mu sync.Mutex
		var hung int
		rc := &receiver{answer: func(n int, w http.ResponseWriter, r *http.Request) {
			if n == 1 { // the first POST is never answered
				<-r.Context().Done()
				mu.Lock()
				hung++
				mu.Unlock()
				w.WriteHeader(http.StatusOK) // too late: HandlerTransport ignores the deadline
				return
			}
			w.WriteHeader(http.StatusServiceUnavailable)
		}}
		s := &graphtest.Server{RedeliverBase: time.Minute, Client: &http.Client{Transport: graphtest.HandlerTransport(rc)}}
		subscribe(t, s, "https://bot.test/hook")
		start := time.Now()
		s.DeliverMail("u", "a@example.com", "s", "t")
		s.Flush()
		as := s.DeliveryAttempts()
		checkSameBytes(t, as, rc.got())
		if len(as) != 8 {
			t.Fatalf("%d attempts; want 8 (first + retries after 1, 2, 4, 8, 16, 32, 64 min)", len(as))
		}
		if a := as[0]; a.Status != 0 || a.Elapsed != 3*time.Second || hung != 1 {
			t.Errorf("first attempt = status %d after %v (%d hung); want no status after the 3 s timeout", a.Status, a.Elapsed, hung)
		}
		last := as[len(as)-1]
		if got, want := last.Start.Sub(start), 3*time.Second+127*time.Minute; got != want || !last.GaveUp || last.Status != 503 {
			t.Errorf("last attempt at +%v (gave up %v, status %d); want at +%v and given up (the next, 128 min later, is past 4 h)", got, last.GaveUp, last.Status, want)
		}
		if took := time.Since(start); took > 4*time.Hour {
			t.Errorf("redelivery ran %v; want within 4 hours", took)
		}
	})
}

// TestCloseStopsRedelivery: Close drops a scheduled retry at once.
func TestCloseStopsRedelivery(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rc := &receiver{answer: failFirst(500, 500)}
		s := &graphtest.Server{RedeliverBase: time.Hour, Client: &http.Client{Transport: graphtest.HandlerTransport(rc)}}
		subscribe(t, s, "https://bot.test/hook")
		s.DeliverMail("u", "a@example.com", "s", "t")
		start := time.Now()
		s.Close()
		if took := time.Since(start); took != 0 {
			t.Errorf("Close took %v; want no wait for the retry due in an hour", took)
		}
		time.Sleep(2 * time.Hour) // fake time: a retry not stopped would run now
		synctest.Wait()
		if as := s.DeliveryAttempts(); len(as) != 1 || as[0].Retry != time.Hour {
			t.Errorf("attempts %s; want only the first, which had scheduled a retry in an hour", summary(as))
		}
	})
}

// slowBodyTransport answers validation requests and acknowledges every notification POST at
// once with 202, but its response body takes 5 s to read.
type slowBodyTransport struct{}

type slowBody struct{ read bool }

func (b *slowBody) Read([]byte) (int, error) {
	if !b.read {
		b.read = true
		time.Sleep(5 * time.Second)
	}
	return 0, io.EOF
}

func (b *slowBody) Close() error { return nil }

func (slowBodyTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Body != nil {
		io.Copy(io.Discard, r.Body)
		r.Body.Close()
	}
	if tok := r.URL.Query().Get("validationToken"); tok != "" {
		return &http.Response{StatusCode: http.StatusOK, Header: http.Header{"Content-Type": {"text/plain"}},
			Body: io.NopCloser(strings.NewReader(tok)), Request: r}, nil
	}
	return &http.Response{StatusCode: http.StatusAccepted, Header: http.Header{}, Body: &slowBody{}, Request: r}, nil
}

// TestAnswerInTimeWithSlowBodyIsAcknowledged: a 202 that arrives within the timeout counts,
// even if reading its body (which Graph ignores) runs past the timeout.
func TestAnswerInTimeWithSlowBodyIsAcknowledged(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := &graphtest.Server{RedeliverBase: time.Minute, RedeliverMax: 1, Client: &http.Client{Transport: slowBodyTransport{}}}
		subscribe(t, s, "https://bot.test/hook")
		s.DeliverMail("u", "a@example.com", "s", "t")
		s.Flush()
		as := s.DeliveryAttempts()
		if len(as) != 1 || as[0].Status != http.StatusAccepted || as[0].Err != "" || as[0].Retry != 0 {
			t.Errorf("attempts %s (err %q); want one, acknowledged with 202", summary(as), as[0].Err)
		}
	})
}

// TestFlushWhileRetriesAreScheduled: Flush running while DeliverAgain schedules retries from
// another goroutine neither races (WaitGroup misuse) nor returns with a retry scheduled.
func TestFlushWhileRetriesAreScheduled(t *testing.T) {
	rc := &receiver{answer: func(int, http.ResponseWriter, *http.Request) { panic(http.ErrAbortHandler) }}
	s := &graphtest.Server{RedeliverBase: time.Millisecond, RedeliverMax: 1, Client: &http.Client{Transport: graphtest.HandlerTransport(rc)}}
	t.Cleanup(s.Close)
	subscribe(t, s, "https://bot.test/hook")
	s.DeliverMail("u", "a@example.com", "s", "t")
	s.Flush()
	var wg sync.WaitGroup
	wg.Go(func() {
		for range 200 {
			s.DeliverAgain()
		}
	})
	wg.Go(func() {
		for range 200 {
			s.Flush()
		}
	})
	wg.Wait()
	s.Flush()
	as := s.DeliveryAttempts()
	if len(as) != 2*201 {
		t.Fatalf("%d attempts; want 402 (201 deliveries, each retried once)", len(as))
	}
	for i, a := range as {
		if a.Err == "" || (a.Attempt == 2) != a.GaveUp {
			t.Errorf("attempt %d = %+v; want failed, the retry given up", i, a)
		}
	}
}
