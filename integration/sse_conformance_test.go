package integration

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/seed-a64d9e1f/chatwire/adapter/wecom/wecomtest"
	"github.com/seed-a64d9e1f/chatwire/internal/eventlog"
)

// nodeSSEDir holds the third-party SSE client (npm eventsource) and its lock file.
const nodeSSEDir = "../conformance/node-sse"

const nodeSSEInstall = "run `make deps` (as root it installs Debian's nodejs and npm if missing, then " +
	"`npm ci --prefix conformance/node-sse`), or by hand: apt-get install nodejs npm && npm ci --prefix conformance/node-sse"

// requireNodeSSE fails the test (never skips) when node or the eventsource package is missing.
func requireNodeSSE(t *testing.T) (node, dir string) {
	t.Helper()
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatalf("node is missing (the SSE conformance test drives adapter-host with the npm eventsource package): %s", nodeSSEInstall)
	}
	dir, err = filepath.Abs(nodeSSEDir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "eventsource", "package.json")); err != nil {
		t.Fatalf("the npm eventsource package is not installed in %s: %s", dir, nodeSSEInstall)
	}
	return node, dir
}

// sseProxy sits between the SSE client and the host. It forwards each request (through the
// suite's validating transport, so the client's exchanges are checked against
// api/openapi.yaml too) and the stream block by block, and lets the test hold new connections
// (a gate), cut a stream while events are in flight, and see what the client sent and the
// server streamed.
type sseProxy struct {
	t    *testing.T
	host string
	srv  *httptest.Server

	mu        sync.Mutex
	gate      chan struct{} // nil: open; otherwise closed when the gate opens
	lastIDs   []string      // Last-Event-ID of each request ("" for none)
	arrived   []time.Time   // when each request reached the proxy
	retry     time.Duration // the last retry: field the server sent, if any
	pings     int           // keep-alive comment lines forwarded
	forward   int           // with cut: event blocks still to forward before dropping
	drop      int           // with cut: event blocks to drop, then the connection is aborted
	cut       bool
	cutDone   chan struct{} // closed when a cut happened
	pingCh    chan struct{} // closed (and replaced) on every ping forwarded
	cutAt     time.Time
	streamErr []string
}

func newSSEProxy(t *testing.T, hostAddr string) *sseProxy {
	p := &sseProxy{t: t, host: hostAddr, cutDone: make(chan struct{}), pingCh: make(chan struct{})}
	p.srv = httptest.NewServer(http.HandlerFunc(p.serve))
	t.Cleanup(p.srv.Close)
	return p
}

func (p *sseProxy) serve(w http.ResponseWriter, r *http.Request) {
	p.mu.Lock()
	p.lastIDs = append(p.lastIDs, r.Header.Get("Last-Event-ID"))
	p.arrived = append(p.arrived, time.Now())
	gate := p.gate
	p.mu.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-r.Context().Done():
			return
		}
	}
	req, _ := http.NewRequestWithContext(r.Context(), r.Method, "http://"+p.host+r.URL.RequestURI(), nil)
	req.Header = r.Header.Clone()
	resp, err := http.DefaultClient.Do(req) // validated against api/openapi.yaml
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	for k, v := range resp.Header {
		w.Header()[k] = v
	}
	w.WriteHeader(resp.StatusCode)
	rc := http.NewResponseController(w)
	rd := bufio.NewReader(resp.Body)
	var block strings.Builder
	for {
		line, err := rd.ReadString('\n')
		if err != nil {
			if r.Context().Err() == nil {
				p.mu.Lock()
				p.streamErr = append(p.streamErr, fmt.Sprintf("stream from the host ended: %v", err))
				p.mu.Unlock()
			}
			return
		}
		block.WriteString(line)
		if line != "\n" {
			continue
		}
		text := block.String()
		block.Reset()
		isEvent := false
		for l := range strings.SplitSeq(text, "\n") {
			switch {
			case strings.HasPrefix(l, "retry:"):
				if ms, err := strconv.Atoi(strings.TrimSpace(strings.TrimPrefix(l, "retry:"))); err == nil {
					p.mu.Lock()
					p.retry = time.Duration(ms) * time.Millisecond
					p.mu.Unlock()
				}
			case strings.HasPrefix(l, "data:"):
				isEvent = true
			}
		}
		p.mu.Lock()
		if isEvent && p.cut {
			if p.forward > 0 {
				p.forward--
			} else {
				p.drop--
				if p.drop == 0 { // every event meant to be in flight was read: cut now
					p.cut = false
					p.cutAt = time.Now()
					close(p.cutDone)
					p.mu.Unlock()
					panic(http.ErrAbortHandler) // the connection breaks, mid-stream
				}
				p.mu.Unlock()
				continue // read by the host's client side, never reaches the SSE client
			}
		}
		ping := text == ": ping\n\n"
		p.mu.Unlock()
		if _, err := io.WriteString(w, text); err != nil {
			return
		}
		if err := rc.Flush(); err != nil {
			return
		}
		if ping {
			p.mu.Lock()
			p.pings++
			close(p.pingCh)
			p.pingCh = make(chan struct{})
			p.mu.Unlock()
		}
	}
}

// cutAfter makes the stream forward n more events, then read and drop m more (the host has
// sent them; the client never gets them), then break the connection.
func (p *sseProxy) cutAfter(n, m int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut, p.forward, p.drop = true, n, m
}

func (p *sseProxy) closeGate() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.gate = make(chan struct{})
}

func (p *sseProxy) openGate() {
	p.mu.Lock()
	defer p.mu.Unlock()
	close(p.gate)
	p.gate = nil
}

// nodeMsg is one line of the node client's output.
type nodeMsg struct {
	Type       string `json:"type"`
	Event      string `json:"event"`
	ID         string `json:"id"`
	Data       string `json:"data"`
	ReadyState int    `json:"readyState"`
	Message    string `json:"message"`
}

// TestSSEConformanceEventSource drives a real adapter-host's event stream with a plain
// third-party client, the npm eventsource package, through a proxy that breaks the
// connection: events arrive in order; keep-alive comments do not disturb it; after a
// disconnect with events in flight (sent by the host, never received) and more events queued
// while it was away, the client's own reconnection with Last-Event-ID gets exactly the rest,
// nothing lost, nothing twice; the reconnection waits at least the retry: the server sent, if
// it sent one. Every event matches api/openapi.yaml's Event schema.
func TestSSEConformanceEventSource(t *testing.T) {
	node, dir := requireNodeSSE(t)
	emu := &wecomtest.Server{LenientAgentID: true}
	emu.AddApp(corpID, corpSecret, agentID)
	api := httptest.NewServer(emu)
	defer api.Close()
	h := startHost(t, "host", singleHostConfig(api.URL, t.TempDir()), secretEnv()...)
	h.apiKey = apiKey
	px := newSSEProxy(t, h.addr)

	cmd := exec.Command(node, "sse-client.mjs")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "SSE_URL="+px.srv.URL+"/v1/bots/hr/events", "SSE_API_KEY="+apiKey)
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	stderr := &logSink{name: "node"}
	errPipe, _ := cmd.StderrPipe()
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting node: %v", err)
	}
	go stderr.consume(errPipe)
	msgs := make(chan nodeMsg, 100)
	go func() {
		defer close(msgs)
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			var m nodeMsg
			if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
				m = nodeMsg{Type: "garbage", Data: sc.Text()}
			}
			msgs <- m
		}
	}()
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		stdin.Close()
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
	})

	next := func(what string) nodeMsg {
		t.Helper()
		select {
		case m, ok := <-msgs:
			if !ok {
				t.Fatalf("waiting for %s: the node client exited:\n%s", what, stderr)
			}
			return m
		case <-time.After(60 * time.Second):
			t.Fatalf("waiting for %s: nothing from the node client in 60s:\n%s\nhost log:\n%s", what, stderr, h.log)
		}
		return nodeMsg{}
	}
	cb := wecomtest.Callback{Token: cbToken, EncodingAESKey: aesKey, CorpID: corpID, AgentID: agentID}
	post := func(i int) {
		t.Helper()
		body, query, err := wecomtest.Encrypt(cb, textMessage(i), time.Now().Unix(), fmt.Sprintf("sse%d", i))
		if err != nil {
			t.Fatal(err)
		}
		resp, err := http.Post("http://"+h.addr+"/webhook/hr?"+query.Encode(), "text/xml", strings.NewReader(string(body)))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("callback %d: status %d", i, resp.StatusCode)
		}
	}
	var ids []eventlog.ID
	lastID := map[int]string{} // callback number → its SSE id
	expect := func(from, to int) {
		t.Helper()
		for i := from; i <= to; i++ {
			m := next(fmt.Sprintf("event %d", i))
			if m.Type != "event" {
				t.Fatalf("want event %d; the client reported %+v:\n%s", i, m, stderr)
			}
			var ev struct{ Text, Kind string }
			if err := json.Unmarshal([]byte(m.Data), &ev); err != nil {
				t.Fatalf("event %d: data %q: %v", i, m.Data, err)
			}
			if want := fmt.Sprintf("hello %d", i); ev.Text != want || m.Event != "message" || ev.Kind != "message" {
				t.Fatalf("got event %q (%s/%s, id %s); want %q, an event: message (lost, doubled or out of order)", ev.Text, m.Event, ev.Kind, m.ID, want)
			}
			if err := contract.v.CheckEvent([]byte(m.Data)); err != nil {
				t.Error(err)
			}
			n, err := eventlog.ParseID(m.ID)
			if err != nil || (len(ids) > 0 && !ids[len(ids)-1].Less(n)) {
				t.Fatalf("event %d has id %q after %v: ids must increase", i, m.ID, ids)
			}
			ids = append(ids, n)
			lastID[i] = m.ID
		}
	}

	if m := next("open"); m.Type != "open" {
		t.Fatalf("first report %+v; want open:\n%s", m, stderr)
	}
	// 1. Events arrive, in order; the stream's opening comment is ignored.
	for i := 1; i <= 3; i++ {
		post(i)
	}
	expect(1, 3)

	// 2. A keep-alive comment (the host's ": ping", every 15 s) does not disturb the client.
	px.mu.Lock()
	pinged := px.pingCh
	px.mu.Unlock()
	select {
	case <-pinged:
	case <-time.After(45 * time.Second):
		t.Fatalf("no keep-alive comment from the host in 45s")
	}
	post(4)
	post(5)
	expect(4, 5)

	// 3. The connection breaks with events in flight: the host sends 6-10, the client gets
	// 6 and 7 only. 11 and 12 are queued while it cannot reconnect. Its reconnection must
	// carry Last-Event-ID = 7's id and get 8-12, once each.
	px.cutAfter(2, 3)
	px.closeGate()
	for i := 6; i <= 10; i++ {
		post(i)
	}
	expect(6, 7)
	select {
	case <-px.cutDone:
	case <-time.After(60 * time.Second):
		t.Fatal("the proxy never saw events 8-10 from the host")
	}
	if m := next("the disconnect"); m.Type != "error" || m.ReadyState != 0 {
		t.Fatalf("after the disconnect the client reported %+v; want an error with readyState 0 (CONNECTING: it reconnects)", m)
	}
	post(11)
	post(12)
	px.openGate()
	if m := next("reopen"); m.Type != "open" {
		t.Fatalf("after the reconnection the client reported %+v; want open", m)
	}
	expect(8, 12)
	// Nothing twice: a later event is the very next thing the client sees.
	post(13)
	expect(13, 13)

	px.mu.Lock()
	defer px.mu.Unlock()
	if len(px.lastIDs) != 2 || px.lastIDs[0] != "" || px.lastIDs[1] != lastID[7] {
		t.Errorf("Last-Event-ID of the client's requests: %q; want [\"\" %q] (none, then event 7's id)", px.lastIDs, lastID[7])
	}
	if px.retry > 0 {
		if waited := px.arrived[1].Sub(px.cutAt); waited < px.retry {
			t.Errorf("the client reconnected %v after the disconnect; the server's retry: asked for at least %v", waited, px.retry)
		}
	} else {
		t.Logf("the host sends no retry: field; the client reconnected after %v (its default)", px.arrived[1].Sub(px.cutAt).Round(time.Millisecond))
	}
	if px.pings == 0 {
		t.Error("no keep-alive comment was forwarded")
	}
	for _, e := range px.streamErr {
		t.Error(e)
	}
	secretScan(t, "node client output", []string{stderr.String()}, []string{apiKey, corpSecret, cbToken, aesKey})
}
