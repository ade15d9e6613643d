package host

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/seed-a64d9e1f/chatwire/adapter"
	"github.com/seed-a64d9e1f/chatwire/internal/eventlog"
)

// TestWebhookRequestAsAdapters: the host's webhookRequest hands the adapter what
// adapter.NewWebhookRequest did, for a body with a Content-Length (read into a buffer of
// that size), without one (chunked), empty, over the limit, and cut short by the client.
func TestWebhookRequestAsAdapters(t *testing.T) {
	const target = "/webhook/hr?msg_signature=abc&timestamp=1&nonce=n&echostr=a%2Bb"
	body := strings.Repeat("<xml>x</xml>", 100)
	cases := []struct {
		name   string
		body   io.Reader
		length int64 // -1: unknown (chunked)
		limit  int64
		kind   adapter.Kind // of the error; "" for none
	}{
		{"content-length", strings.NewReader(body), int64(len(body)), 1 << 20, ""},
		{"chunked", strings.NewReader(body), -1, 1 << 20, ""},
		{"empty", strings.NewReader(""), 0, 1 << 20, ""},
		{"chunked over the limit", strings.NewReader(body), -1, 100, adapter.KindTooLarge},
		{"cut short", strings.NewReader(body), int64(len(body)), 1 << 20, adapter.KindInvalidRequest},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := httptest.NewRequest("POST", target, nil)
			r.Header.Set("Content-Type", "text/xml")
			r.Header.Add("X-Multi", "1")
			r.Header.Add("X-Multi", "2")
			r.RemoteAddr = "192.0.2.1:1234"
			data, _ := io.ReadAll(c.body)
			r2 := r.Clone(context.Background())
			r.Body, r.ContentLength = io.NopCloser(readerOf(data, c.name == "cut short")), c.length
			r2.Body, r2.ContentLength = io.NopCloser(readerOf(data, c.name == "cut short")), c.length
			got, err := webhookRequest(r, c.limit)
			want, wantErr := adapter.NewWebhookRequest(r2, c.limit)
			if c.kind != "" {
				if adapter.KindOf(err) != c.kind || adapter.KindOf(wantErr) != c.kind {
					t.Fatalf("errors = %v, %v (NewWebhookRequest); want kind %s", err, wantErr, c.kind)
				}
				return
			}
			if err != nil || wantErr != nil {
				t.Fatalf("errors = %v, %v (NewWebhookRequest)", err, wantErr)
			}
			if !bytes.Equal(got.Body, want.Body) || got.Method != want.Method || got.Path != want.Path ||
				got.RemoteAddr != want.RemoteAddr || !reflect.DeepEqual(got.Query, want.Query) || !reflect.DeepEqual(got.Header, want.Header) {
				t.Fatalf("webhookRequest = %+v\nNewWebhookRequest = %+v", got, want)
			}
			if c.length > 0 && cap(got.Body) != int(c.length) {
				t.Errorf("body buffer of %d bytes for a Content-Length of %d; want one of its size", cap(got.Body), c.length)
			}
		})
	}
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }

// readerOf reads data, or its first 10 bytes and then fails as a client that hangs up does.
func readerOf(data []byte, cut bool) io.Reader {
	if cut {
		return io.MultiReader(bytes.NewReader(data[:10]), errReader{io.ErrUnexpectedEOF})
	}
	return bytes.NewReader(data)
}

// TestCountQueuedNoAllocs: counting and logging a queued event allocates nothing when its
// debug line is not logged (its attributes are not built, its counter is not looked up by
// label per event); the lines and counts are still what they were.
func TestCountQueuedNoAllocs(t *testing.T) {
	var logs bytes.Buffer
	s := &server{log: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo})), m: newMetrics()}
	b := newBot("hr", adapter.PlatformWeCom, nil, eventlog.NewMemory(eventlog.Options{}))
	e := adapter.Event{ID: "wecom:1", Kind: adapter.EventMessage}
	ctx := context.Background()
	s.countQueued(ctx, b, &e, false) // the first looks the counters up
	if n := testing.AllocsPerRun(100, func() { s.countQueued(ctx, b, &e, false) }); n != 0 {
		t.Errorf("countQueued of a queued event: %v allocations; want 0", n)
	}
	if logs.Len() != 0 {
		t.Errorf("logged at Info: %s; want nothing for a queued event", logs.String())
	}
	s.countQueued(ctx, b, &e, true)
	if !strings.Contains(logs.String(), `msg="duplicate event dropped" bot=hr event=wecom:1`) {
		t.Errorf("log = %q; want the duplicate line", logs.String())
	}
	logs.Reset()
	s.log = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	s.countQueued(ctx, b, &e, false)
	if !strings.Contains(logs.String(), `msg="event queued" bot=hr event=wecom:1 kind=message`) {
		t.Errorf("log at Debug = %q; want the queued line", logs.String())
	}
	if n := testutil.ToFloat64(s.m.events.WithLabelValues("hr", "queued")); n != 103 {
		t.Errorf("chatwire_events_total{outcome=queued} = %v; want 103", n)
	}
	if n := testutil.ToFloat64(s.m.events.WithLabelValues("hr", "duplicate")); n != 1 {
		t.Errorf("chatwire_events_total{outcome=duplicate} = %v; want 1", n)
	}
}

// TestWebhookDateHeader: a webhook's answer carries one Date header, this second's in the
// HTTP format, also across a change of second (the host sets it from a per-second cache).
func TestWebhookDateHeader(t *testing.T) {
	ev, body := wecomEvent(t)
	l := eventlog.NewMemory(eventlog.Options{})
	defer l.Close()
	m := newMetrics()
	s := &server{
		bots:  map[string]*bot{"hr": newBot("hr", adapter.PlatformWeCom, &hookAdapter{ev: ev}, l)},
		names: []string{"hr"}, ready: func() bool { return true },
		log: slog.New(slog.DiscardHandler), m: m, closing: make(chan struct{}),
	}
	srv := httptest.NewServer(s.routes())
	defer srv.Close()
	for range 3 {
		before := time.Now().Truncate(time.Second)
		resp, err := http.Post(srv.URL+"/webhook/hr", "text/xml", bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		after := time.Now()
		dates := resp.Header.Values("Date")
		if resp.StatusCode != 200 || len(dates) != 1 {
			t.Fatalf("answer %d with Date %q; want 200 and one Date", resp.StatusCode, dates)
		}
		d, err := http.ParseTime(dates[0])
		if err != nil || d.Before(before) || d.After(after) || dates[0] != d.UTC().Format(http.TimeFormat) {
			t.Fatalf("Date %q (%v): want this second (%v to %v) in the HTTP format", dates[0], err, before, after)
		}
		time.Sleep(time.Second / 2) // the next one may be in the next second
	}
}
