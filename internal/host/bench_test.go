package host

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/seed-a64d9e1f/chatwire/adapter"
	"github.com/seed-a64d9e1f/chatwire/adapter/wecom"
	"github.com/seed-a64d9e1f/chatwire/adapter/wecom/wecomtest"
	"github.com/seed-a64d9e1f/chatwire/internal/eventlog"
	"github.com/seed-a64d9e1f/chatwire/internal/redistest"
)

// callbacks returns n encrypted, signed WeCom message callbacks for cb (distinct MsgIds).
func callbacks(b *testing.B, cb wecomtest.Callback, n int) (bodies [][]byte, queries []url.Values) {
	b.Helper()
	now := time.Now()
	for i := range n {
		msg := wecomtest.TextMessage(cb.CorpID, cb.AgentID, "alice", "message "+strconv.Itoa(i), int64(1_000_000+i), now)
		body, q, err := wecomtest.Encrypt(cb, msg, now.Unix(), strconv.Itoa(i))
		if err != nil {
			b.Fatal(err)
		}
		bodies, queries = append(bodies, body), append(queries, q)
	}
	return bodies, queries
}

// BenchmarkWebhookToEvent measures a WeCom callback turned into a queued event: the adapter
// called in process (decrypt, verify, parse) against the whole host path (HTTP, the plugin
// RPC, dedup, queue). Each op is one callback carrying one event.
func BenchmarkWebhookToEvent(b *testing.B) {
	b.Run("in-process-adapter", func(b *testing.B) {
		cl, err := wecom.New(wecom.Config{Bot: "hr", CorpID: testCorp, CorpSecret: testSecret, AgentID: testAgent,
			Token: testToken, EncodingAESKey: testAESKey, APIBase: "http://127.0.0.1:1"}, wecom.Options{})
		if err != nil {
			b.Fatal(err)
		}
		defer cl.Close()
		cb := wecomtest.Callback{URL: "http://x/webhook/hr", Token: testToken, EncodingAESKey: testAESKey, CorpID: testCorp, AgentID: testAgent}
		bodies, queries := callbacks(b, cb, b.N)
		ctx := context.Background()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			_, evs, err := cl.HandleWebhook(ctx, &adapter.WebhookRequest{Method: "POST", Path: "/webhook/hr", Query: queries[i], Body: bodies[i]})
			if err != nil || len(evs) != 1 {
				b.Fatalf("HandleWebhook = %d events, %v", len(evs), err)
			}
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
	})
	for _, par := range []int{1, 8} {
		b.Run(fmt.Sprintf("host-and-plugin-%dconns", par), func(b *testing.B) {
			e := setup(b, setupOpts{quiet: true})
			bodies, queries := callbacks(b, e.cb, b.N)
			q := e.h.srv.bots["hr"].events
			client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: par}}
			sem := make(chan struct{}, par)
			errs := make(chan error, b.N)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				sem <- struct{}{}
				go func() {
					defer func() { <-sem }()
					resp, err := client.Post(e.cb.URL+"?"+queries[i].Encode(), "text/xml", bytes.NewReader(bodies[i]))
					if err != nil {
						errs <- err
						return
					}
					resp.Body.Close()
					if resp.StatusCode != 200 {
						errs <- fmt.Errorf("webhook answered %d", resp.StatusCode)
					}
					q.Consumed(context.Background(), eventlog.ID{Ms: math.MaxUint64}) // a consumer keeps up: the log never fills
				}()
			}
			for range par {
				sem <- struct{}{}
			}
			b.StopTimer()
			close(errs)
			for err := range errs {
				b.Fatal(err)
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
			if n, _ := q.Len(context.Background()); n.Held == 0 {
				b.Fatal("no events queued")
			}
		})
	}
}

// BenchmarkAsyncAccept measures POST /v1/bots/hr/messages with Prefer: respond-async answered
// 202 (the message stored in the outbox), while the outbox sends in the background through
// the plugin to an emulator; memory and Redis stores, 1 and 8 connections. Run with a
// -benchtime of at most 9000x: the outbox holds 10,000 unsent messages.
func BenchmarkAsyncAccept(b *testing.B) {
	for _, store := range []string{"memory", "redis"} {
		for _, par := range []int{1, 8} {
			b.Run(fmt.Sprintf("%s-%dconns", store, par), func(b *testing.B) {
				o := setupOpts{quiet: true}
				if store == "redis" {
					o.redisURL = "redis://" + redistest.Start(b).Addr() + "/0"
				}
				e := setup(b, o)
				e.emu.MemberLimit = -1
				client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: par}}
				sem := make(chan struct{}, par)
				errs := make(chan error, b.N)
				lat := make([]time.Duration, b.N)
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					sem <- struct{}{}
					go func() {
						defer func() { <-sem }()
						req, _ := http.NewRequest("POST", e.h.URL()+"/v1/bots/hr/messages",
							strings.NewReader(fmt.Sprintf(`{"to":{"user":"u%d"},"text":"bench %d"}`, i%1000, i)))
						req.Header.Set("Authorization", "Bearer "+testAPIKey)
						req.Header.Set("Content-Type", "application/json")
						req.Header.Set("Prefer", "respond-async")
						start := time.Now()
						resp, err := client.Do(req)
						if err != nil {
							errs <- err
							return
						}
						io.Copy(io.Discard, resp.Body)
						resp.Body.Close()
						lat[i] = time.Since(start)
						if resp.StatusCode != 202 {
							errs <- fmt.Errorf("accept answered %d", resp.StatusCode)
						}
					}()
				}
				for range par {
					sem <- struct{}{}
				}
				b.StopTimer()
				close(errs)
				for err := range errs {
					b.Fatal(err)
				}
				slices.Sort(lat)
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "accepts/s")
				b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
				b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
			})
		}
	}
}
