package integration

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/seed-a64d9e1f/chatwire/adapter/wecom/wecomtest"
	"github.com/seed-a64d9e1f/chatwire/internal/redistest"
)

// sseEvent is one event read from a host's SSE stream.
type sseEvent struct {
	ID   string
	Text string
}

// sseClient reads one SSE connection into a channel; it never reconnects, so a stalled or
// ended stream shows as missing events. ended is closed when the connection ends.
type sseClient struct {
	events chan sseEvent
	ended  chan struct{}
	cancel context.CancelFunc
}

func connectSSE(t *testing.T, h *host, query, lastID string) *sseClient {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+h.addr+"/v1/bots/hr/events"+query, nil)
	req.Header.Set("Authorization", "Bearer "+apiKey)
	if lastID != "" {
		req.Header.Set("Last-Event-ID", lastID)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != 200 {
		cancel()
		t.Fatalf("SSE connect to %s%s: %v %v", h.name, query, resp, err)
	}
	c := &sseClient{events: make(chan sseEvent, 10000), ended: make(chan struct{}), cancel: cancel}
	t.Cleanup(c.close)
	go func() {
		defer close(c.ended)
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 64<<10), 4<<20)
		var id string
		for sc.Scan() {
			line := sc.Text()
			switch {
			case strings.HasPrefix(line, "id: "):
				id = line[4:]
			case strings.HasPrefix(line, "data: "):
				var ev struct{ Text string }
				json.Unmarshal([]byte(line[6:]), &ev)
				c.events <- sseEvent{ID: id, Text: ev.Text}
			}
		}
	}()
	return c
}

func (c *sseClient) close() {
	c.cancel()
	<-c.ended
}

// next returns the client's next event, failing t after limit.
func (c *sseClient) next(t *testing.T, limit time.Duration) sseEvent {
	t.Helper()
	select {
	case ev := <-c.events:
		return ev
	case <-c.ended:
		t.Fatal("the SSE stream ended")
	case <-time.After(limit):
		t.Fatalf("no SSE event within %v", limit)
	}
	return sseEvent{}
}

// pushText sends a WeCom text callback to h until h acknowledges it (a restarting Redis may
// answer 503 for a moment, and WeCom would redeliver). Safe to call from any goroutine.
func pushText(h *host, text string, msgID int) error {
	cb := wecomtest.Callback{Token: cbToken, EncodingAESKey: aesKey, CorpID: corpID, AgentID: agentID}
	msg := fmt.Appendf(nil, `<xml><ToUserName><![CDATA[%s]]></ToUserName><FromUserName><![CDATA[user%d]]></FromUserName>`+
		`<CreateTime>%d</CreateTime><MsgType><![CDATA[text]]></MsgType><Content><![CDATA[%s]]></Content>`+
		`<MsgId>%d</MsgId><AgentID>%d</AgentID></xml>`, corpID, msgID%7, time.Now().Unix(), text, 8000000000000000+msgID, agentID)
	deadline := time.Now().Add(20 * time.Second)
	for {
		body, query, err := wecomtest.Encrypt(cb, msg, time.Now().Unix(), fmt.Sprintf("n%d", msgID))
		if err != nil {
			return err
		}
		resp, err := http.Post("http://"+h.addr+"/webhook/hr?"+query.Encode(), "text/xml", bytes.NewReader(body))
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("callback %q to %s not acknowledged: %v %v", text, h.name, resp, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func eventLogConfig(apiBase, redisAddr string) string {
	return fmt.Sprintf(`server:
  listen: "{{ADDR}}"
  api_keys: ["${CHATWIRE_API_KEY}"]
store:
  redis_url: "redis://%s/0"
  key_prefix: itest
bots:
  - name: hr
    platform: wecom
    wecom:
      corp_id: %s
      corp_secret: "${WECOM_SECRET}"
      agent_id: %d
      token: "${WECOM_TOKEN}"
      encoding_aes_key: "${WECOM_AES_KEY}"
      api_base: %q
    deliver:
      ack_timeout: 2s
`, redisAddr, corpID, agentID, apiBase)
}

// TestEventLog drives two host processes on one redis-server: (a) a connected SSE client
// keeps receiving every acknowledged event while Redis restarts empty and is flushed;
// (c) three consumers of one group on two hosts share 3,000 events, each to exactly one, and
// the events of a consumer that dies without acknowledging reach another within
// ack_timeout + 5 s; (d) a client resumes with Last-Event-ID on a restarted host.
func TestEventLog(t *testing.T) {
	rds := redistest.Start(t)
	admin := redis.NewClient(&redis.Options{Addr: rds.Addr()})
	defer admin.Close()
	emu := &wecomtest.Server{LenientAgentID: true, MemberLimit: -1}
	emu.AddApp(corpID, corpSecret, agentID)
	api := httptest.NewServer(emu)
	defer api.Close()
	cfg := eventLogConfig(api.URL, rds.Addr())
	h0 := startHost(t, "host0", cfg, secretEnv()...)
	h1 := startHost(t, "host1", cfg, secretEnv()...)
	h0.apiKey, h1.apiKey = apiKey, apiKey
	msgID := 0
	push := func(h *host, text string) {
		t.Helper()
		msgID++
		if err := pushText(h, text, msgID); err != nil {
			t.Fatal(err)
		}
	}

	t.Run("ResetWhileConnected", func(t *testing.T) {
		c := connectSSE(t, h0, "", "")
		defer c.close()
		last := ""
		for round, lose := range []func(){rds.Restart, func() { admin.FlushAll(context.Background()) }} {
			for i := range 3 {
				push([]*host{h0, h1}[i%2], fmt.Sprintf("before %d.%d", round, i))
			}
			for i := range 3 {
				if ev := c.next(t, 10*time.Second); ev.Text != fmt.Sprintf("before %d.%d", round, i) {
					t.Fatalf("got %+v", ev)
				}
			}
			lose()
			for i := range 5 {
				push([]*host{h0, h1}[i%2], fmt.Sprintf("after %d.%d", round, i))
			}
			for i := range 5 {
				ev := c.next(t, 15*time.Second)
				if ev.Text != fmt.Sprintf("after %d.%d", round, i) {
					t.Fatalf("after the reset (round %d) got %+v", round, ev)
				}
				if last != "" && !idBefore(last, ev.ID) {
					t.Fatalf("id %s after the reset not after %s", ev.ID, last)
				}
				last = ev.ID
			}
		}
		deadline := time.Now().Add(10 * time.Second)
		for h0.log.count("was reset") == 0 && h1.log.count("was reset") == 0 && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
		if h0.log.count("was reset") == 0 && h1.log.count("was reset") == 0 {
			t.Error("no host logged the reset")
		}
	})

	t.Run("GroupAcrossHosts", func(t *testing.T) {
		consumers := []*sseClient{
			connectSSE(t, h0, "?group=workers&consumer=w0", ""),
			connectSSE(t, h0, "?group=workers&consumer=w1", ""),
			connectSSE(t, h1, "?group=workers&consumer=w2", ""),
		}
		const n = 3000
		var wg sync.WaitGroup
		for w := range 4 { // four pushers, alternating hosts
			wg.Go(func() {
				for i := w; i < n; i += 4 {
					if err := pushText([]*host{h0, h1}[i%2], fmt.Sprintf("job %d", i), 100000+i); err != nil {
						t.Error(err)
						return
					}
				}
			})
		}
		got := map[string]int{}
		var mu sync.Mutex
		var cw sync.WaitGroup
		done := make(chan struct{})
		for ci, c := range consumers {
			cw.Go(func() {
				var ids []string
				flush := func() {
					if len(ids) == 0 {
						return
					}
					if status, body, _ := ackVia([]*host{h0, h0, h1}[ci], ids); status != 200 {
						t.Errorf("ack: %d %s", status, body)
					}
					ids = ids[:0]
				}
				for {
					select {
					case ev := <-c.events:
						mu.Lock()
						got[ev.Text]++
						mu.Unlock()
						ids = append(ids, ev.ID)
						if len(ids) >= 50 {
							flush()
						}
					case <-time.After(200 * time.Millisecond):
						flush()
					case <-done:
						flush()
						return
					}
				}
			})
		}
		wg.Wait()
		deadline := time.Now().Add(60 * time.Second)
		for {
			mu.Lock()
			k := len(got)
			mu.Unlock()
			if k == n || time.Now().After(deadline) {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		time.Sleep(500 * time.Millisecond) // a second delivery would arrive now
		close(done)
		cw.Wait()
		mu.Lock()
		defer mu.Unlock()
		if len(got) != n {
			t.Fatalf("the group delivered %d distinct events of %d", len(got), n)
		}
		for text, k := range got {
			if k != 1 {
				t.Errorf("%s reached %d consumers", text, k)
			}
		}
	})

	t.Run("ConsumerDiesWithoutAck", func(t *testing.T) {
		dying := connectSSE(t, h1, "?group=jobs&consumer=dying", "")
		for i := range 10 {
			push(h0, fmt.Sprintf("task %d", i))
		}
		held := map[string]bool{}
		for range 10 {
			held[dying.next(t, 10*time.Second).Text] = true
		}
		dying.close() // no ack
		died := time.Now()
		alive := connectSSE(t, h0, "?group=jobs&consumer=alive", "")
		for len(held) > 0 {
			ev := alive.next(t, 2*time.Second+5*time.Second-time.Since(died))
			delete(held, ev.Text)
		}
		if d := time.Since(died); d > 7*time.Second {
			t.Errorf("the dead consumer's events took %v to reach another; want ack_timeout (2s) + 5s at most", d)
		}
	})

	t.Run("ResumeAcrossHostRestart", func(t *testing.T) {
		c := connectSSE(t, h0, "", "")
		push(h0, "r1")
		push(h0, "r2")
		for c.next(t, 10*time.Second).Text != "r2" {
		}
		last := ""
		push(h0, "r3")
		for {
			ev := c.next(t, 10*time.Second)
			if ev.Text == "r3" {
				last = ev.ID
				break
			}
		}
		c.close()
		h0.stop()
		push(h1, "r4") // arrives while host0 is down
		h0.start(secretEnv()...)
		resumed := connectSSE(t, h0, "", last)
		if ev := resumed.next(t, 10*time.Second); ev.Text != "r4" || !idBefore(last, ev.ID) {
			t.Fatalf("resumed after %s on the restarted host: %+v, want r4", last, ev)
		}
	})
}

func ackVia(h *host, ids []string) (int, []byte, http.Header) {
	return h.do("POST", "/v1/bots/hr/events/ack", map[string]any{"group": "workers", "ids": ids})
}

// idBefore reports whether event log id a ("<ms>-<n>") is before b.
func idBefore(a, b string) bool {
	var am, an, bm, bn uint64
	fmt.Sscanf(a, "%d-%d", &am, &an)
	fmt.Sscanf(b, "%d-%d", &bm, &bn)
	return am < bm || am == bm && an < bn
}
