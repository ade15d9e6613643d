package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/seed-a64d9e1f/chatwire/adapter"
	"github.com/seed-a64d9e1f/chatwire/internal/pacing"
)

// fakeTarget acknowledges every callback and publishes it on its SSE stream, except that it
// never publishes callback drop and publishes callback twice twice: the tool must see both.
type fakeTarget struct {
	drop, twice int
	mu          sync.Mutex
	subs        []chan string
}

func (f *fakeTarget) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch {
	case r.Method == "POST" && r.URL.Path == "/webhook/hr":
		i, err := strconv.Atoi(strings.TrimPrefix(r.URL.Query().Get("nonce"), "n")) // runEvents' nonce is "n<i>"
		if err != nil {
			http.Error(w, "bad nonce", 400)
			return
		}
		n := 1
		switch i {
		case f.drop:
			n = 0
		case f.twice:
			n = 2
		}
		f.mu.Lock()
		for range n {
			for _, c := range f.subs {
				c <- fmt.Sprintf(`{"id":"wecom:%d","text":"bench %d"}`, i, i)
			}
		}
		f.mu.Unlock()
		w.Write([]byte("success"))
	case r.Method == "GET" && r.URL.Path == "/v1/bots/hr/events":
		c := make(chan string, 100000)
		f.mu.Lock()
		f.subs = append(f.subs, c)
		f.mu.Unlock()
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(200)
		w.(http.Flusher).Flush()
		for {
			select {
			case d := <-c:
				fmt.Fprintf(w, "id: 1\nevent: message\ndata: %s\n\n", d)
				w.(http.Flusher).Flush()
			case <-r.Context().Done():
				return
			}
		}
	default:
		http.NotFound(w, r)
	}
}

// TestLostAndDuplicatedCounted: runEvents counts an acknowledged event that never reaches
// the stream as lost and one that reaches it twice as duplicated, and measures the rest.
func TestLostAndDuplicatedCounted(t *testing.T) {
	fake := &fakeTarget{drop: 30, twice: 70}
	srv := httptest.NewServer(fake)
	defer srv.Close()
	r := &running{name: "fake", addr: strings.TrimPrefix(srv.URL, "http://"), apiKey: "k",
		procs: []namedPID{{"server", os.Getpid()}}}
	res, err := runEvents(context.Background(), r, newSecrets(), stepOptions{rate: 200, warmup: 100 * time.Millisecond,
		duration: 500 * time.Millisecond, conns: 4, drain: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if res.Lost != 1 || res.Dup != 1 {
		t.Errorf("lost %d, duplicated %d; want 1 and 1", res.Lost, res.Dup)
	}
	if res.Offered != 100 || res.Acked != 100 || res.Events != 99 || res.Errors != 0 {
		t.Errorf("offered %d, acked %d, measured %d, errors %d; want 100, 100, 99, 0", res.Offered, res.Acked, res.Events, res.Errors)
	}
	if res.P50 <= 0 || res.P50 > res.P99 || res.P99 > res.Max {
		t.Errorf("latencies p50 %v p99 %v max %v are not ordered", res.P50, res.P99, res.Max)
	}
	if res.Achieved <= 0 {
		t.Errorf("achieved rate %v", res.Achieved)
	}
}

// TestFlags: every flag is explained, bad values are refused with the flag's name.
func TestFlags(t *testing.T) {
	var help bytes.Buffer
	if _, err := parseFlags([]string{"--help"}, &help); err == nil {
		t.Fatal("--help: no ErrHelp")
	}
	for _, f := range []string{"rates", "targets", "warmup", "duration", "conns", "drain", "send-duration", "send-callers",
		"memory-bots", "settle", "cpuprofile", "redis-server", "dir", "quiet"} {
		if !strings.Contains(help.String(), "-"+f) {
			t.Errorf("--help does not explain -%s:\n%s", f, help.String())
		}
	}
	for _, bad := range [][]string{{"--rates", "500,x"}, {"--targets", "chatwire,nginx"}, {"--conns", "0"}, {"--memory-bots", "1"}, {"extra"}} {
		if _, err := parseFlags(bad, &bytes.Buffer{}); err == nil {
			t.Errorf("%v accepted", bad)
		}
	}
	o, err := parseFlags([]string{"--rates", "5, 10", "--targets", "baseline"}, &bytes.Buffer{})
	if err != nil || len(o.rates) != 2 || o.rates[1] != 10 || len(o.targets) != 1 {
		t.Errorf("parse: %+v, %v", o, err)
	}
}

func TestPercentile(t *testing.T) {
	d := make([]time.Duration, 100)
	for i := range d {
		d[i] = time.Duration(i + 1)
	}
	if pct(d, 0.5) != 50 || pct(d, 0.99) != 99 || pct(d, 1) != 100 || pct(nil, 0.5) != 0 || pct(d[:1], 0.99) != 1 {
		t.Errorf("pct: %v %v %v", pct(d, 0.5), pct(d, 0.99), pct(d, 1))
	}
}

// paceTarget is a host stand-in with chatwire's default WeCom pacing (package pacing; a
// synchronous send that would have to wait more than the host's default 30 s is answered
// 429) in front of the emulator, whose
// per-member limit drops silently as WeCom does.
type paceTarget struct {
	sc      *pacing.Scheduler
	emu     *emulator
	tok     string
	refused atomic.Int64
}

func (p *paceTarget) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var req struct {
		To   struct{ User string } `json:"to"`
		Text string                `json:"text"`
	}
	if r.URL.Path != "/v1/bots/hr/messages" || json.NewDecoder(r.Body).Decode(&req) != nil || req.To.User == "" {
		http.Error(w, "bad request", 400)
		return
	}
	msg := adapter.Message{To: adapter.Target{User: req.To.User}, Text: req.Text}
	res, err := p.sc.Reserve(r.Context(), msg, 30*time.Second) // the host's default max_wait
	if err != nil {
		p.refused.Add(1)
		http.Error(w, err.Error(), http.StatusTooManyRequests)
		return
	}
	if err := res.Sleep(r.Context()); err != nil {
		http.Error(w, err.Error(), 503)
		return
	}
	body, _ := json.Marshal(map[string]any{"touser": req.To.User, "msgtype": "text", "agentid": 1000002, "text": map[string]string{"content": req.Text}})
	resp, err := http.Post(p.emu.url+"/cgi-bin/message/send?access_token="+p.tok, "application/json", bytes.NewReader(body))
	if err != nil {
		http.Error(w, err.Error(), 502)
		return
	}
	defer resp.Body.Close()
	var out struct {
		ErrCode int    `json:"errcode"`
		MsgID   string `json:"msgid"`
	}
	if json.NewDecoder(resp.Body).Decode(&out) != nil || out.ErrCode != 0 {
		http.Error(w, fmt.Sprintf("errcode %d", out.ErrCode), 502)
		return
	}
	fmt.Fprintf(w, `{"id":%q}`, out.MsgID)
}

// TestSendsWithinWeComLimits: the sends step offers what a real deployment sending this
// volume must: no member gets more than WeCom's documented 30 a minute and 1,000 an hour,
// so a host with its default pacing answers every send 200 and the emulator (which drops
// what exceeds a member's limit, as WeCom does) shows every one. 2,000 sends are more than
// 50 members × 30 (what the step once spread its sends over: 429 from the 1,501st).
func TestSendsWithinWeComLimits(t *testing.T) {
	emu, err := startEmulator()
	if err != nil {
		t.Fatal(err)
	}
	defer emu.srv.Close()
	sec := newSecrets()
	emu.AddApp(sec.corpID, sec.corpSecret, sec.agentID)
	resp, err := http.Get(emu.url + "/cgi-bin/gettoken?corpid=" + sec.corpID + "&corpsecret=" + sec.corpSecret)
	if err != nil {
		t.Fatal(err)
	}
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	json.NewDecoder(resp.Body).Decode(&tok)
	resp.Body.Close()
	sc, err := pacing.New(pacing.NewMemory(), "hr", adapter.PlatformWeCom, pacing.Options{})
	if err != nil {
		t.Fatal(err)
	}
	fake := &paceTarget{sc: sc, emu: emu, tok: tok.AccessToken}
	srv := httptest.NewServer(fake)
	defer srv.Close()
	r := &running{name: "fake", addr: strings.TrimPrefix(srv.URL, "http://"), apiKey: "k", procs: []namedPID{{"server", os.Getpid()}}}
	const want = 2000
	for _, callers := range []int{1, 4} {
		res, err := runSends(context.Background(), r, emu, callers, 10*time.Millisecond, want, fmt.Sprintf("t-%d", callers))
		if err != nil {
			t.Fatalf("%d callers: %v", callers, err)
		}
		if res.OK < want || res.Errors != 0 || res.Mismatch != 0 {
			t.Errorf("%d callers: %d answered 200, %d not, %d not shown once by the emulator; want ≥ %d, 0, 0", callers, res.OK, res.Errors, res.Mismatch, want)
		}
	}
	if n := fake.refused.Load(); n != 0 {
		t.Errorf("pacing refused %d sends", n)
	}
	var dropped int
	for _, s := range emu.Sent() {
		dropped += len(s.Dropped)
	}
	if dropped != 0 {
		t.Errorf("the emulator dropped %d sends over a member's limit", dropped)
	}
}

// TestRedisCommandsPerEvent: INFO commandstats before and after a step become calls and
// microseconds per event, costliest first, without INFO itself; the report prints them.
func TestRedisCommandsPerEvent(t *testing.T) {
	before := parseCommandStats("# Commandstats\r\ncmdstat_evalsha:calls=100,usec=3000,usec_per_call=30.00,rejected_calls=0,failed_calls=0\r\n" +
		"cmdstat_xread:calls=50,usec=500,usec_per_call=10.00,rejected_calls=0,failed_calls=0\r\ncmdstat_info:calls=1,usec=20,usec_per_call=20.00\r\n")
	after := parseCommandStats("# Commandstats\r\ncmdstat_evalsha:calls=1100,usec=35000,usec_per_call=31.82,rejected_calls=0,failed_calls=0\r\n" +
		"cmdstat_xread:calls=850,usec=8500,usec_per_call=10.00,rejected_calls=0,failed_calls=0\r\ncmdstat_info:calls=2,usec=40,usec_per_call=20.00\r\n" +
		"cmdstat_xgroup|setid:calls=10,usec=20,usec_per_call=2.00,rejected_calls=0,failed_calls=0\r\n")
	got := perEvent(before, after, 1000)
	want := []redisCmd{{"evalsha", 1, 32}, {"xread", 0.8, 8}, {"xgroup|setid", 0.01, 0.02}}
	if len(got) != len(want) {
		t.Fatalf("perEvent = %+v; want %+v", got, want)
	}
	for i := range want {
		if got[i].Name != want[i].Name || math.Abs(got[i].Calls-want[i].Calls) > 1e-9 || math.Abs(got[i].Usec-want[i].Usec) > 1e-9 {
			t.Errorf("perEvent[%d] = %+v; want %+v", i, got[i], want[i])
		}
	}
	if perEvent(nil, after, 1000) != nil || perEvent(before, after, 0) != nil {
		t.Error("perEvent without a snapshot or events is not empty")
	}
	var out bytes.Buffer
	printRedisCommands(&out, []*eventResult{{Rate: 2000, Target: "chatwire", Redis: got}})
	if !strings.Contains(out.String(), "| 2000 | chatwire | evalsha 1.00 × 32.0 µs; xread 0.80 × 10.0 µs; xgroup\\|setid 0.01 × 2.0 µs |") {
		t.Errorf("report:\n%s", out.String())
	}
}
