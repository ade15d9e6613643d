package integration

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/seed-a64d9e1f/chatwire/adapter/wecom/wecomtest"
	"github.com/seed-a64d9e1f/chatwire/internal/redistest"
)

// rssKiB returns the resident set size of pid in KiB, or 0.
func rssKiB(pid int) int {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			n, _ := strconv.Atoi(f[1])
			return n
		}
	}
	return 0
}

func percentile(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	return d[min(len(d)-1, int(float64(len(d))*p))]
}

// TestLoad runs a sustained mix of sends and callbacks through one host (and its plugin)
// with Redis, for 20 s by default or CHATWIRE_LOAD_DURATION (e.g. 5m) for a soak, and
// reports throughput, p50/p99 latency and the host's and plugin's peak RSS. Zero errors.
func TestLoad(t *testing.T) {
	duration := 20 * time.Second
	if v, err := time.ParseDuration(os.Getenv("CHATWIRE_LOAD_DURATION")); err == nil && v > 0 {
		duration = v
	}
	rds := redistest.Start(t)
	emu := &wecomtest.Server{TokenLifetime: 10 * time.Second, ReportRemaining: true, LenientAgentID: true, MemberLimit: -1}
	emu.AddApp(corpID, corpSecret, agentID)
	tap := &tokenTap{next: emu}
	api := httptest.NewServer(tap)
	defer api.Close()
	bot := &botReceiver{t: t}
	hook := httptest.NewServer(bot)
	defer hook.Close()
	h := startHost(t, "host", wecomConfig(api.URL, rds.Addr(), hook.URL), secretEnv()...)
	h.apiKey = apiKey
	cb := wecomtest.Callback{Token: cbToken, EncodingAESKey: aesKey, CorpID: corpID, AgentID: agentID}
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}

	var mu sync.Mutex
	var sendLat, hookLat []time.Duration
	var responses []string // every API and webhook response body, for the secret scan
	var errs []string
	fail := func(format string, args ...any) {
		mu.Lock()
		if len(errs) < 20 {
			errs = append(errs, fmt.Sprintf(format, args...))
		}
		mu.Unlock()
	}
	peakHost, peakPlugin := 0, 0
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() { // sample RSS every 250 ms
		tick := time.NewTicker(250 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			peakHost = max(peakHost, rssKiB(h.cmd.Process.Pid))
			for _, p := range children(h.cmd.Process.Pid) {
				peakPlugin = max(peakPlugin, rssKiB(p))
			}
		}
	})
	start := time.Now()
	deadline := start.Add(duration)
	var callbacks int64
	var cbMu sync.Mutex
	for w := range 8 { // 4 senders, 4 callback pushers, as fast as the host answers
		wg.Go(func() {
			for i := 0; time.Now().Before(deadline); i++ {
				t0 := time.Now()
				if w%2 == 0 {
					body := fmt.Sprintf(`{"to":{"user":"user%d"},"text":"load %d-%d"}`, i%50, w, i)
					req, _ := http.NewRequest("POST", "http://"+h.addr+"/v1/bots/hr/messages", strings.NewReader(body))
					req.Header.Set("Authorization", "Bearer "+apiKey)
					req.Header.Set("Content-Type", "application/json")
					resp, err := client.Do(req)
					if err != nil {
						fail("send: %v", err)
						continue
					}
					out, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					mu.Lock()
					responses = append(responses, string(out))
					mu.Unlock()
					if resp.StatusCode != 200 {
						fail("send: %d %s", resp.StatusCode, out)
						continue
					}
					mu.Lock()
					sendLat = append(sendLat, time.Since(t0))
					mu.Unlock()
					continue
				}
				cbMu.Lock()
				callbacks++
				n := callbacks
				cbMu.Unlock()
				body, query, err := wecomtest.Encrypt(cb, textMessage(int(100000+n)), time.Now().Unix(), "n"+strconv.FormatInt(n, 10))
				if err != nil {
					fail("encrypt: %v", err)
					continue
				}
				t0 = time.Now()
				resp, err := client.Post("http://"+h.addr+"/webhook/hr?"+query.Encode(), "text/xml", bytes.NewReader(body))
				if err != nil {
					fail("callback: %v", err)
					continue
				}
				out, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				mu.Lock()
				responses = append(responses, string(out))
				mu.Unlock()
				if resp.StatusCode != 200 {
					fail("callback: %d %s", resp.StatusCode, bytes.TrimSpace(out))
					continue
				}
				mu.Lock()
				hookLat = append(hookLat, time.Since(t0))
				mu.Unlock()
			}
		})
	}
	time.Sleep(time.Until(deadline))
	elapsed := time.Since(start)
	close(stop)
	wg.Wait()

	for _, e := range errs {
		t.Error(e)
	}
	stopped := time.Now()
	waitFor := stopped.Add(30 * time.Second)
	for len(bot.byID()) < len(hookLat) && time.Now().Before(waitFor) {
		time.Sleep(20 * time.Millisecond)
	}
	drained := time.Since(stopped)
	ids := bot.byID()
	if got := len(ids); got != len(hookLat) {
		t.Errorf("bot received %d distinct events for %d acknowledged callbacks", got, len(hookLat))
	}
	dups := 0
	for _, n := range ids {
		if n != 1 {
			dups++
		}
	}
	if dups > 0 {
		t.Errorf("%d events delivered more than once", dups)
	}
	// Every send answered 200 reached WeCom exactly once (each text is unique).
	delivered := map[string]int{}
	for _, s := range emu.Sent() {
		delivered[s.Content]++
	}
	if len(delivered) != len(sendLat) {
		t.Errorf("WeCom received %d distinct messages for %d sends answered 200", len(delivered), len(sendLat))
	}
	for text, n := range delivered {
		if n != 1 {
			t.Errorf("message %q reached WeCom %d times", text, n)
		}
	}
	secretScan(t, "host log, responses and deliveries", []string{h.log.String(), strings.Join(responses, "\n"), strings.Join(bot.bodies, "\n")},
		append([]string{corpSecret, cbToken, aesKey, hookSecret, apiKey}, tap.issued()...))
	slices.Sort(sendLat)
	slices.Sort(hookLat)
	t.Logf("load for %v through one host + plugin (2 cores, shared with the load generator and the emulator):", elapsed.Round(time.Second))
	t.Logf("  sends:     %5d  %6.0f/s  p50 %v  p99 %v", len(sendLat), float64(len(sendLat))/elapsed.Seconds(),
		percentile(sendLat, 0.50).Round(10*time.Microsecond), percentile(sendLat, 0.99).Round(10*time.Microsecond))
	t.Logf("  callbacks: %5d  %6.0f/s  p50 %v  p99 %v", len(hookLat), float64(len(hookLat))/elapsed.Seconds(),
		percentile(hookLat, 0.50).Round(10*time.Microsecond), percentile(hookLat, 0.99).Round(10*time.Microsecond))
	t.Logf("  delivery:  every event at the bot %v after the load stopped", drained.Round(10*time.Millisecond))
	t.Logf("  peak RSS:  host %d MiB, plugin %d MiB; errors: %d; gettoken calls: %d", peakHost/1024, peakPlugin/1024, len(errs), emu.TokenRequests())
	if len(sendLat) < 100 || len(hookLat) < 100 {
		t.Errorf("only %d sends and %d callbacks completed", len(sendLat), len(hookLat))
	}
}
