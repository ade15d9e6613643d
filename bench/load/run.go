package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/seed-a64d9e1f/chatwire/adapter"
	"github.com/seed-a64d9e1f/chatwire/adapter/wecom/wecomtest"
	"github.com/seed-a64d9e1f/chatwire/internal/pacing"
)

// eventResult is one target at one offered rate.
type eventResult struct {
	Target   string
	Rate     int     // offered, events/s
	Offered  int     // callbacks offered in the measured window
	Acked    int     // of those, answered 200
	Achieved float64 // events/s that reached the SSE consumer in the measured window
	Errors   int     // callbacks not answered 200 (warm-up included)
	Lost     int     // acknowledged (warm-up included) but never on the SSE stream
	Dup      int     // events seen more than once on the SSE stream
	// Latency from the callback's scheduled send time (so a queue in front of the target
	// counts) to the event on the SSE stream; Ack to the 200.
	P50, P99, Max, AckP99 time.Duration
	CPU                   []procCPU  // per measured process, over the measured window
	Redis                 []redisCmd // Redis's commands per event over the measured window
	Events                int        // events the CPU is divided by (measured, delivered)
	Load1                 float64    // the machine's 1-minute load average at the end
	Warnings              int        // WARN and ERROR lines in the target's log
	TopWarning            string
}

type procCPU struct {
	Name   string
	CPU    time.Duration
	PeakKB int // VmHWM at the end of the step
}

// cpuPerEvent returns the total CPU per event and the per-process parts.
func (r *eventResult) cpuPerEvent() time.Duration {
	var t time.Duration
	for _, p := range r.CPU {
		t += p.CPU
	}
	if r.Events == 0 {
		return 0
	}
	return t / time.Duration(r.Events)
}

type stepOptions struct {
	rate     int
	warmup   time.Duration
	duration time.Duration
	conns    int
	drain    time.Duration
}

// sseConsumer reads a bot's SSE stream and records when each bench event arrives.
type sseConsumer struct {
	recv     []int64 // unix nanos of the first arrival, by event number
	count    []int32 // arrivals, by event number
	distinct atomic.Int64
	foreign  atomic.Int64 // events that are not the bench's
	done     chan struct{}
	err      error
}

// connect opens the SSE stream and returns once the target has answered with its headers.
func connectSSE(ctx context.Context, client *http.Client, r *running, n int) (*sseConsumer, error) {
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+r.addr+"/v1/bots/hr/events", nil)
	req.Header.Set("Authorization", "Bearer "+r.apiKey)
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != 200 {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 1000))
		resp.Body.Close()
		return nil, fmt.Errorf("SSE: %d %s", resp.StatusCode, body)
	}
	c := &sseConsumer{recv: make([]int64, n), count: make([]int32, n), done: make(chan struct{})}
	go func() {
		defer close(c.done)
		defer resp.Body.Close()
		br := bufio.NewReaderSize(resp.Body, 64<<10)
		var ev struct {
			Text string `json:"text"`
		}
		for {
			line, err := br.ReadSlice('\n')
			if err != nil {
				if ctx.Err() == nil {
					c.err = fmt.Errorf("SSE stream ended: %v", err)
				}
				return
			}
			data, ok := bytes.CutPrefix(line, []byte("data: "))
			if !ok {
				continue
			}
			now := time.Now().UnixNano()
			ev.Text = ""
			i := -1
			if json.Unmarshal(data, &ev) == nil {
				if s, ok := strings.CutPrefix(ev.Text, "bench "); ok {
					if v, err := strconv.Atoi(s); err == nil && v >= 0 && v < n {
						i = v
					}
				}
			}
			if i < 0 {
				c.foreign.Add(1)
				continue
			}
			if c.count[i]++; c.count[i] == 1 {
				c.recv[i] = now
				c.distinct.Add(1)
			}
		}
	}()
	return c, nil
}

// runEvents offers o.rate callbacks/s to r for o.warmup+o.duration, open loop: callback i
// is due at start + i/rate whatever happened to the ones before it, and its latency counts
// from then, so a target that falls behind shows it instead of slowing the offer down.
func runEvents(ctx context.Context, r *running, sec secrets, o stepOptions) (*eventResult, error) {
	total := int(float64(o.rate) * (o.warmup + o.duration).Seconds())
	warm := int(float64(o.rate) * o.warmup.Seconds())
	cb := sec.callback()
	// Encrypt everything first so the generator's own work stays out of the window.
	type job struct {
		body  []byte
		query string
	}
	jobs := make([]job, total)
	base := int64(7_000_000_000_000_000) + rand.Int64N(1_000_000_000)*1_000_000
	now := time.Now()
	for i := range jobs {
		msg := wecomtest.TextMessage(sec.corpID, sec.agentID, "user"+strconv.Itoa(i%7), "bench "+strconv.Itoa(i), base+int64(i), now)
		body, q, err := wecomtest.Encrypt(cb, msg, now.Unix(), "n"+strconv.Itoa(i))
		if err != nil {
			return nil, err
		}
		jobs[i] = job{body, q.Encode()}
	}
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: o.conns, MaxConnsPerHost: o.conns}}
	defer client.CloseIdleConnections()
	sseCtx, stopSSE := context.WithCancel(ctx)
	defer stopSSE()
	sse, err := connectSSE(sseCtx, &http.Client{}, r, total)
	if err != nil {
		return nil, err
	}

	due := make([]int64, total)   // scheduled time, unix nanos
	acked := make([]int64, total) // 200 time, or 0
	var errs atomic.Int64
	var firstErr atomic.Value
	queue := make(chan int, total)
	var wg sync.WaitGroup
	url := "http://" + r.addr + "/webhook/hr?"
	for range o.conns {
		wg.Go(func() {
			for i := range queue {
				resp, err := client.Post(url+jobs[i].query, "text/xml", bytes.NewReader(jobs[i].body))
				if err != nil {
					errs.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
					continue
				}
				out, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					errs.Add(1)
					firstErr.CompareAndSwap(nil, fmt.Sprintf("%d %s", resp.StatusCode, bytes.TrimSpace(out)))
					continue
				}
				acked[i] = time.Now().UnixNano()
			}
		})
	}
	var cpu0 []time.Duration
	var stats0 map[string]cmdStat
	pids := r.pids()
	start := time.Now()
	period := float64(time.Second) / float64(o.rate)
	tick := time.NewTicker(time.Millisecond)
	next := 0
	var measureStart time.Time
	for next < total {
		if ctx.Err() != nil {
			break
		}
		elapsed := time.Since(start)
		for next < total && time.Duration(float64(next)*period) <= elapsed {
			if next == warm {
				measureStart = start.Add(time.Duration(float64(next) * period))
				cpu0 = snapshot(pids)
				stats0 = commandStats(r.raddr)
			}
			due[next] = start.UnixNano() + int64(float64(next)*period)
			queue <- next
			next++
		}
		<-tick.C
	}
	tick.Stop()
	close(queue)
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if cpu0 == nil { // no warm-up
		cpu0 = snapshot(pids)
		stats0 = commandStats(r.raddr)
	}
	nAcked := 0
	for _, t := range acked {
		if t != 0 {
			nAcked++
		}
	}
	// Drain: wait until every acknowledged event is on the stream, or no progress for o.drain.
	last, lastChange := sse.distinct.Load(), time.Now()
	for sse.distinct.Load() < int64(nAcked) && time.Since(lastChange) < o.drain {
		select {
		case <-sse.done:
			return nil, sse.err
		case <-time.After(10 * time.Millisecond):
		}
		if d := sse.distinct.Load(); d != last {
			last, lastChange = d, time.Now()
		}
	}
	cpu1 := snapshot(pids)
	stats1 := commandStats(r.raddr)
	res := &eventResult{Target: r.name, Rate: o.rate, Offered: total - warm, Errors: int(errs.Load()), Load1: loadAvg()}
	for i, p := range pids {
		res.CPU = append(res.CPU, procCPU{Name: p.name, CPU: cpu1[i] - cpu0[i], PeakKB: statusKiB(p.pid, "VmHWM")})
	}
	stopSSE()
	<-sse.done
	var lat, ack []time.Duration
	var lastRecv int64
	for i := range total {
		if sse.count[i] > 1 {
			res.Dup++
		}
		if acked[i] != 0 && sse.count[i] == 0 {
			res.Lost++
		}
		if i < warm {
			continue
		}
		if acked[i] != 0 {
			res.Acked++
			ack = append(ack, time.Duration(acked[i]-due[i]))
		}
		if sse.count[i] > 0 {
			lat = append(lat, time.Duration(sse.recv[i]-due[i]))
			lastRecv = max(lastRecv, sse.recv[i])
		}
	}
	res.Events = len(lat)
	res.Redis = perEvent(stats0, stats1, res.Events)
	if len(lat) > 0 {
		res.Achieved = float64(len(lat)) / time.Duration(lastRecv-measureStart.UnixNano()).Seconds()
	}
	slices.Sort(lat)
	slices.Sort(ack)
	res.P50, res.P99, res.Max = pct(lat, 0.50), pct(lat, 0.99), pct(lat, 1)
	res.AckP99 = pct(ack, 0.99)
	if n := sse.foreign.Load(); n > 0 {
		return res, fmt.Errorf("%d events on the stream were not the bench's", n)
	}
	if e, ok := firstErr.Load().(string); ok {
		return res, fmt.Errorf("%d callbacks not answered 200; first: %s", res.Errors, e)
	}
	return res, nil
}

func snapshot(pids []namedPID) []time.Duration {
	out := make([]time.Duration, len(pids))
	for i, p := range pids {
		out[i], _ = cpuTime(p.pid)
	}
	return out
}

// pct returns the p-quantile of sorted d (nearest rank).
func pct(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	i := int(float64(len(d))*p+0.999999) - 1
	return d[max(0, min(len(d)-1, i))]
}

// sendResult is one target's sends with a number of concurrent callers, closed loop.
type sendResult struct {
	Target        string
	Callers       int
	OK, Errors    int
	PerSec        float64
	P50, P99, Max time.Duration
	CPUPerSend    time.Duration // host+plugin+Redis (or server+Redis) CPU per answered send
	CPU           []procCPU     // per measured process, over the step
	Load1         float64       // the machine's 1-minute load average at the end
	Mismatch      int           // answered sends the emulator did not get exactly once
	Warnings      int           // WARN and ERROR lines in the target's log so far
	TopWarning    string
}

// runSends has callers send text messages to r for d (and until at least minSends were
// sent), each as soon as its previous one is answered, and checks that every answered send
// reached the emulator exactly once.
func runSends(ctx context.Context, r *running, emu *emulator, callers int, d time.Duration, minSends int, tag string) (*sendResult, error) {
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: callers}}
	defer client.CloseIdleConnections()
	url := "http://" + r.addr + "/v1/bots/hr/messages"
	var mu sync.Mutex
	var lat []time.Duration
	var texts []string
	var errs int
	var firstErr string
	pids := r.pids()
	cpu0 := snapshot(pids)
	start := time.Now()
	deadline := start.Add(d)
	var wg sync.WaitGroup
	var started atomic.Int64 // sends begun
	for c := range callers {
		wg.Go(func() {
			var mine []time.Duration
			var sent []string
			for i := 0; (time.Now().Before(deadline) || started.Load() < int64(minSends)) && ctx.Err() == nil; i++ {
				n := started.Add(1) - 1
				text := fmt.Sprintf("%s %d-%d", tag, c, i)
				body := fmt.Sprintf(`{"to":{"user":%q},"text":%q}`, member(tag, n), text)
				req, _ := http.NewRequestWithContext(ctx, "POST", url, strings.NewReader(body))
				req.Header.Set("Authorization", "Bearer "+r.apiKey)
				req.Header.Set("Content-Type", "application/json")
				t0 := time.Now()
				resp, err := client.Do(req)
				if err != nil {
					mu.Lock()
					errs++
					firstErr = cmp(firstErr, err.Error())
					mu.Unlock()
					continue
				}
				out, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					mu.Lock()
					errs++
					firstErr = cmp(firstErr, fmt.Sprintf("%d %s", resp.StatusCode, bytes.TrimSpace(out)))
					mu.Unlock()
					continue
				}
				mine = append(mine, time.Since(t0))
				sent = append(sent, text)
			}
			mu.Lock()
			lat = append(lat, mine...)
			texts = append(texts, sent...)
			mu.Unlock()
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	cpu1 := snapshot(pids)
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	res := &sendResult{Target: r.name, Callers: callers, OK: len(lat), Errors: errs, PerSec: float64(len(lat)) / elapsed.Seconds(), Load1: loadAvg()}
	var cpu time.Duration
	for i, p := range pids {
		cpu += cpu1[i] - cpu0[i]
		res.CPU = append(res.CPU, procCPU{Name: p.name, CPU: cpu1[i] - cpu0[i], PeakKB: statusKiB(p.pid, "VmHWM")})
	}
	if len(lat) > 0 {
		res.CPUPerSend = cpu / time.Duration(len(lat))
	}
	slices.Sort(lat)
	res.P50, res.P99, res.Max = pct(lat, 0.5), pct(lat, 0.99), pct(lat, 1)
	got := map[string]int{}
	for _, s := range emu.Sent() {
		if strings.HasPrefix(s.Content, tag+" ") && len(s.Delivered) > 0 { // not dropped over a member's limit
			got[s.Content]++
		}
	}
	for _, t := range texts {
		if got[t] != 1 {
			res.Mismatch++
		}
	}
	if firstErr != "" {
		return res, fmt.Errorf("%d sends not answered 200; first: %s", errs, firstErr)
	}
	return res, nil
}

// perMember is how many sends the sends step gives one member: the tightest of WeCom's
// documented per-member limits, 30 a minute and 1,000 an hour from one app (specs/wecom.md
// §3, chatwire's default pacing). WeCom drops what exceeds them without an error, so a
// deployment sending thousands a second sends them to thousands of members, and so does the
// bench: send n of a step goes to member n/perMember of that step, each member getting its
// 30 in one burst and never again. Sending more to fewer members would measure pacing's 429
// (chatwire) against messages WeCom would drop (the baseline), not the send path.
var perMember = func() int {
	n := math.MaxInt
	for _, l := range pacing.Defaults(adapter.PlatformWeCom)[pacing.ScopeMember] {
		n = min(n, l.N)
	}
	return n
}()

// member is the recipient of a step's send n: "<tag>-u<n/perMember>" (a valid WeCom userid:
// letters, digits, "-", at most 64 bytes for the bench's tags).
func member(tag string, n int64) string {
	return tag + "-u" + strconv.FormatInt(n/int64(perMember), 10)
}

// cmp keeps the first non-empty string.
func cmp(old, s string) string {
	if old != "" {
		return old
	}
	return s
}
