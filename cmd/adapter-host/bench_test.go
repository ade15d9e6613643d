package main

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"testing"
	"time"

	"github.com/seed-a64d9e1f/chatwire/adapter"
	"github.com/seed-a64d9e1f/chatwire/adapter/wecom"
	"github.com/seed-a64d9e1f/chatwire/adapter/wecom/wecomtest"
	"github.com/seed-a64d9e1f/chatwire/internal/eventlog"
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
