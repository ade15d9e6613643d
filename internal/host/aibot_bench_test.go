package host

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/seed-a64d9e1f/chatwire/adapter/wecom/aibot/aibottest"
)

// BenchmarkStreamedSendFirstFrame measures, through the host and its plugin, the time from a
// delta written into a streamed send (NDJSON over HTTP) to the emulator reading the frame that
// carries it: the first delta of each stream, which the adapter's pace does not delay. The
// stream is opened before the clock starts. Reports p50 and p99.
func BenchmarkStreamedSendFirstFrame(b *testing.B) {
	frames := make(chan struct{}, 16)
	emu := &aibottest.Server{PerMinute: -1, PerHour: -1, OnFrame: func(f aibottest.Frame) {
		if f.Cmd == "aibot_respond_msg" {
			frames <- struct{}{}
		}
	}}
	e := aibotHostB(b, emu)
	events := e.subscribe("")
	lat := make([]time.Duration, 0, b.N)
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		emu.PushText(aibottest.Conv{User: "u"}, "q")
		var id string
		select {
		case ev := <-events:
			id = ev.ev.ID
		case <-time.After(10 * time.Second):
			b.Fatal("no event")
		}
		pr, pw := io.Pipe()
		req, _ := http.NewRequest("POST", e.h.URL()+"/v1/bots/hr/messages", pr)
		req.Header.Set("Authorization", "Bearer "+testAPIKey)
		req.Header.Set("Content-Type", "application/x-ndjson")
		done := make(chan error, 1)
		go func() {
			resp, err := http.DefaultClient.Do(req)
			if err == nil {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
			done <- err
		}()
		enc := json.NewEncoder(pw)
		enc.Encode(map[string]string{"reply_to": id})
		b.StartTimer()
		t0 := time.Now()
		enc.Encode(map[string]string{"delta": fmt.Sprint("answer ", i)})
		<-frames
		lat = append(lat, time.Since(t0))
		b.StopTimer()
		pw.Close()
		<-frames // the finishing frame
		if err := <-done; err != nil {
			b.Fatal(err)
		}
	}
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
}
