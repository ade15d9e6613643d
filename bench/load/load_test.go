package main

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
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
