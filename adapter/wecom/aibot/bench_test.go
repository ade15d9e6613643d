package aibot_test

import (
	"context"
	"net/http/httptest"
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/seed-a64d9e1f/chatwire/adapter"
	"github.com/seed-a64d9e1f/chatwire/adapter/wecom/aibot"
	"github.com/seed-a64d9e1f/chatwire/adapter/wecom/aibot/aibottest"
)

// benchBot connects a Bot to an emulator (no rate limits) whose OnFrame is onFrame, and
// returns the events the bot emits.
func benchBot(b *testing.B, onFrame func(aibottest.Frame), opts aibot.Options) (*aibottest.Server, *aibot.Bot, chan adapter.Event) {
	b.Helper()
	s := &aibottest.Server{OnFrame: onFrame, PerMinute: -1, PerHour: -1}
	srv := httptest.NewServer(s)
	b.Cleanup(srv.Close)
	opts.BotID, opts.Secret, opts.WSURL = "BOT1", "S1", aibottest.WSURL(srv.URL)
	bot, err := aibot.New(opts)
	if err != nil {
		b.Fatal(err)
	}
	events := make(chan adapter.Event, 100)
	ctx, cancel := context.WithCancel(context.Background())
	b.Cleanup(func() { cancel(); bot.Close() })
	go bot.Receive(ctx, func(_ context.Context, evs []adapter.Event) error {
		for _, ev := range evs {
			events <- ev
		}
		return nil
	})
	for s.Connections() != 1 {
		time.Sleep(time.Millisecond)
	}
	return s, bot, events
}

// message pushes a message and returns its event id once the bot has it.
func message(b *testing.B, s *aibottest.Server, events chan adapter.Event) string {
	b.Helper()
	if _, err := s.PushText(aibottest.Conv{User: "u"}, "q"); err != nil {
		b.Fatal(err)
	}
	return (<-events).ID
}

// BenchmarkStreamDeltaToFrame measures how long a delta takes from Append to the emulator
// reading the frame that carries it (one delta at a time, pace 1 ns): the adapter's overhead
// plus one loopback WebSocket write and read. Reports p50 and p99.
func BenchmarkStreamDeltaToFrame(b *testing.B) {
	got := make(chan struct{}, 1)
	s, bot, events := benchBot(b, func(f aibottest.Frame) {
		if f.Cmd == "aibot_respond_msg" {
			got <- struct{}{}
		}
	}, aibot.Options{StreamPace: time.Nanosecond})
	open := func() adapter.Stream {
		st, err := bot.OpenStream(b.Context(), adapter.Message{ReplyTo: message(b, s, events)})
		if err != nil {
			b.Fatal(err)
		}
		return st
	}
	st := open()
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		t0 := time.Now()
		st.Append(b.Context(), "x")
		<-got
		lat = append(lat, time.Since(t0))
		if (i+1)%10000 == 0 { // stay under 20,480 bytes: no rotation frame in the measurement
			b.StopTimer()
			go st.Finish(b.Context())
			<-got
			st = open()
			b.StartTimer()
		}
	}
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
}

// BenchmarkReplyFramesPerSecond measures sustained reply frames per second on one
// connection: markdown replies on 8 req_ids, one in flight on each (the platform's rule).
func BenchmarkReplyFramesPerSecond(b *testing.B) {
	s, bot, events := benchBot(b, nil, aibot.Options{})
	const inflight = 8
	ids := make([]string, inflight)
	for i := range ids {
		ids[i] = message(b, s, events)
	}
	work := make(chan struct{})
	done := make(chan error, inflight)
	for _, id := range ids {
		go func() {
			for range work {
				if _, err := bot.Send(context.Background(), adapter.Message{ReplyTo: id, Markdown: "m"}); err != nil {
					done <- err
					return
				}
			}
			done <- nil
		}()
	}
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		work <- struct{}{}
	}
	close(work)
	for range ids {
		if err := <-done; err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "frames/s")
}

// BenchmarkIdleConnectionMemory reports the heap held per idle subscribed connection, the
// adapter's and the emulator's side together (both run in this process; one emulator per
// bot, as one bot id allows one connection).
func BenchmarkIdleConnectionMemory(b *testing.B) {
	const n = 50
	for i := 0; i < b.N; i++ {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		ctx, cancel := context.WithCancel(context.Background())
		var bots []*aibot.Bot
		var servers []*httptest.Server
		for j := 0; j < n; j++ {
			es := &aibottest.Server{}
			srv := httptest.NewServer(es)
			servers = append(servers, srv)
			bot, _ := aibot.New(aibot.Options{BotID: "BOT1", Secret: "S1", WSURL: aibottest.WSURL(srv.URL)})
			bots = append(bots, bot)
			go bot.Receive(ctx, func(context.Context, []adapter.Event) error { return nil })
			for es.Connections() != 1 {
				time.Sleep(time.Millisecond)
			}
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/n, "heap-B/conn")
		b.ReportMetric(float64(after.StackInuse-before.StackInuse)/n, "stack-B/conn")
		cancel()
		for _, bot := range bots {
			bot.Close()
		}
		for _, srv := range servers {
			srv.Close()
		}
	}
}
