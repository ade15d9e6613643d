package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/seed-a64d9e1f/chatwire/adapter/wecom/wecomtest"
)

// memSample is a host with some number of WeCom bots, settled after start.
type memSample struct {
	Bots          int
	Ready         time.Duration // from exec to /readyz 200
	HostKB        int           // VmRSS
	PluginKB      int
	HostPeakKB    int // VmHWM
	PluginPeakKB  int
	TokenRequests int // gettoken calls the emulator saw while the host started
	// After every bot has sent one message (so each holds a token and a connection pool).
	HostActiveKB, PluginActiveKB int
	Warnings                     int // WARN and ERROR lines in the host's log (its plugin's included), shutdown included
	TopWarning                   string
	Stop                         time.Duration // SIGTERM to exit
	Killed                       bool          // it did not exit within stopGrace and was killed
	// One send from and one callback to every bot, 8 at a time.
	Sends, Callbacks tally
}

// maxFailures is how many callbacks may fail in the memory step before the rest are skipped
// (a host that refuses them may take seconds for each).
const maxFailures = 32

// tally counts requests: answered 200, or not (with the first failure), and the slowest.
type tally struct {
	OK, Failed int
	Skipped    int // not sent: too many had failed
	First      string
	Max        time.Duration
}

func (t *tally) add(d time.Duration, status int, err error) {
	t.Max = max(t.Max, d)
	if err == nil && status == 200 {
		t.OK++
		return
	}
	t.Failed++
	if t.First == "" {
		if err != nil {
			t.First = err.Error()
		} else {
			t.First = fmt.Sprintf("status %d", status)
		}
	}
}

func (t tally) String() string {
	s := fmt.Sprintf("%d/%d answered 200, slowest %.0f ms", t.OK, t.OK+t.Failed, float64(t.Max)/float64(time.Millisecond))
	if t.Failed > 0 {
		s += ", first failure: " + t.First
	}
	if t.Skipped > 0 {
		s += fmt.Sprintf(", %d not tried after %d failures", t.Skipped, t.Failed)
	}
	return s
}

// do sends req and returns the status, the body read and closed.
func do(c *http.Client, req *http.Request) (int, error) {
	resp, err := c.Do(req)
	if err != nil {
		return 0, err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, nil
}

// memResult compares a host with one bot and one with many.
type memResult struct {
	One, Many memSample
}

// perBotKB is the RSS a bot adds, host and plugin: (many - one) / (bots - 1), right after
// start, or once every bot has sent a message.
func (m *memResult) perBotKB() (host, plugin float64) {
	n := float64(m.Many.Bots - m.One.Bots)
	return float64(m.Many.HostKB-m.One.HostKB) / n, float64(m.Many.PluginKB-m.One.PluginKB) / n
}

func (m *memResult) perActiveBotKB() (host, plugin float64) {
	n := float64(m.Many.Bots - m.One.Bots)
	return float64(m.Many.HostActiveKB-m.One.HostActiveKB) / n, float64(m.Many.PluginActiveKB-m.One.PluginActiveKB) / n
}

// runMemory starts a host with 1 bot, then one with bots bots (each its own corp on the
// emulator), lets each settle for settle, and reads their RSS.
func runMemory(ctx context.Context, e *env, bots int, settle time.Duration) (*memResult, error) {
	var res memResult
	for i, n := range []int{1, bots} {
		s, err := memoryHost(ctx, e, n, settle)
		if err != nil {
			return nil, err
		}
		if i == 0 {
			res.One = *s
		} else {
			res.Many = *s
		}
	}
	return &res, nil
}

func memoryHost(ctx context.Context, e *env, n int, settle time.Duration) (*memSample, error) {
	rds, raddr, err := startRedis(e.redisBin, e.dir)
	if err != nil {
		return nil, err
	}
	defer rds.stop()
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	var b strings.Builder
	fmt.Fprintf(&b, "server:\n  listen: %q\n  api_keys: [\"${CHATWIRE_API_KEY}\"]\nstore:\n  redis_url: \"redis://%s/0\"\n  key_prefix: mem\nbots:\n", addr, raddr)
	for i := range n {
		corp := fmt.Sprintf("wwmem%d%06d", n, i)
		e.emu.AddApp(corp, e.sec.corpSecret, e.sec.agentID)
		b.WriteString(wecomBot(fmt.Sprintf("bot%d", i), corp, e.sec.agentID, e.emu.url))
	}
	label := fmt.Sprintf("memory-%d", n)
	cfg := filepath.Join(e.dir, label+".yaml")
	if err := os.WriteFile(cfg, []byte(b.String()), 0o600); err != nil {
		return nil, err
	}
	tokens0 := e.emu.TokenRequests()
	t0 := time.Now()
	p, err := startProc("adapter-host", filepath.Join(e.dir, label+".log"), e.hostEnv(), e.hostBin, "run", "--config", cfg, "--log-format", "json")
	if err != nil {
		return nil, err
	}
	defer p.stop()
	if err := waitHTTP(p, "http://"+addr+"/readyz", 5*time.Minute); err != nil {
		return nil, err
	}
	s := &memSample{Bots: n, Ready: time.Since(t0)}
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-time.After(settle):
	}
	kids := children(p.pid())
	if len(kids) != 1 {
		return nil, fmt.Errorf("adapter-host with %d bots has %d child processes, want its one plugin", n, len(kids))
	}
	s.HostKB, s.HostPeakKB = statusKiB(p.pid(), "VmRSS"), statusKiB(p.pid(), "VmHWM")
	s.PluginKB, s.PluginPeakKB = statusKiB(kids[0], "VmRSS"), statusKiB(kids[0], "VmHWM")
	s.TokenRequests = e.emu.TokenRequests() - tokens0
	if s.HostKB == 0 || s.PluginKB == 0 {
		return nil, fmt.Errorf("no RSS read for the host (%d KiB) or its plugin (%d KiB)", s.HostKB, s.PluginKB)
	}
	// Every bot sends one message and takes one callback, 8 at a time: each then holds a
	// token and its HTTP state, and every bot's path through the host has been used.
	client := &http.Client{Timeout: 30 * time.Second}
	defer client.CloseIdleConnections()
	var mu sync.Mutex
	var wg sync.WaitGroup
	next := make(chan int)
	for range 8 {
		wg.Go(func() {
			for i := range next {
				req, _ := http.NewRequestWithContext(ctx, "POST", fmt.Sprintf("http://%s/v1/bots/bot%d/messages", addr, i),
					strings.NewReader(`{"to":{"user":"user1"},"text":"memory"}`))
				req.Header.Set("Authorization", "Bearer "+e.sec.apiKey)
				req.Header.Set("Content-Type", "application/json")
				t0 := time.Now()
				status, err := do(client, req)
				mu.Lock()
				s.Sends.add(time.Since(t0), status, err)
				mu.Unlock()

				mu.Lock()
				giveUp := s.Callbacks.Failed >= maxFailures
				if giveUp {
					s.Callbacks.Skipped++
				}
				mu.Unlock()
				if giveUp {
					continue
				}
				cb := e.sec.callback()
				cb.CorpID = fmt.Sprintf("wwmem%d%06d", n, i)
				msg := wecomtest.TextMessage(cb.CorpID, cb.AgentID, "user1", "memory", 8_000_000_000_000_000+int64(i), time.Now())
				body, q, err := wecomtest.Encrypt(cb, msg, time.Now().Unix(), "m"+strconv.Itoa(i))
				if err != nil {
					panic(err) // only a broken random source fails here
				}
				req, _ = http.NewRequestWithContext(ctx, "POST", fmt.Sprintf("http://%s/webhook/bot%d?%s", addr, i, q.Encode()), bytes.NewReader(body))
				t0 = time.Now()
				status, err = do(client, req)
				mu.Lock()
				s.Callbacks.add(time.Since(t0), status, err)
				mu.Unlock()
			}
		})
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-time.After(settle):
	}
	s.HostActiveKB, s.PluginActiveKB = statusKiB(p.pid(), "VmRSS"), statusKiB(kids[0], "VmRSS")
	s.HostPeakKB, s.PluginPeakKB = statusKiB(p.pid(), "VmHWM"), statusKiB(kids[0], "VmHWM")
	t1 := time.Now()
	s.Killed = p.stop()
	s.Stop = time.Since(t1)
	s.Warnings, s.TopWarning = logProblems(p.log)
	return s, nil
}
