package client

import (
	"errors"
	"io"
	"reflect"
	"strings"
	"testing"
	"testing/iotest"
	"time"
)

// readAll parses stream, fed through feed, into its dispatched events.
func readAll(t *testing.T, r io.Reader, lastID string) ([]sseMessage, *sseReader) {
	t.Helper()
	sr := newSSEReader(r, lastID)
	var out []sseMessage
	for {
		m, err := sr.Next()
		if errors.Is(err, io.EOF) {
			return out, sr
		}
		if err != nil {
			t.Fatalf("Next() = %v", err)
		}
		out = append(out, m)
	}
}

func TestSSEParsing(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		stream string
		want   []sseMessage
		lastID string // the reader's last event ID at the end
	}{
		{"one event", "id: 1-0\nevent: message\ndata: {}\n\n",
			[]sseMessage{{"1-0", "message", []byte("{}")}}, "1-0"},
		{"multi-line data joined with LF", "data: a\ndata: b\ndata\n\n",
			[]sseMessage{{"", "message", []byte("a\nb\n")}}, ""},
		{"CRLF and CR line ends", "id: 1\r\ndata: x\r\n\r\nid: 2\rdata: y\r\r",
			[]sseMessage{{"1", "message", []byte("x")}, {"2", "message", []byte("y")}}, "2"},
		{"CRLF between data lines of one event", "data: a\r\ndata: b\r\n\r\n",
			[]sseMessage{{"", "message", []byte("a\nb")}}, ""},
		{"BOM, comments, unknown fields", "\uFEFF: hello\nfoo: bar\n:ping\ndata: x\n\n",
			[]sseMessage{{"", "message", []byte("x")}}, ""},
		{"one space stripped, no colon, colon in value", "data:  two\ndata:a:b\n\n",
			[]sseMessage{{"", "message", []byte(" two\na:b")}}, ""},
		{"id persists to later events", "id: 7\ndata: a\n\ndata: b\n\n",
			[]sseMessage{{"7", "message", []byte("a")}, {"7", "message", []byte("b")}}, "7"},
		{"id with NUL ignored", "id: 1\ndata: a\n\nid: 2\x003\ndata: b\n\n",
			[]sseMessage{{"1", "message", []byte("a")}, {"1", "message", []byte("b")}}, "1"},
		{"empty id resets", "id: 1\ndata: a\n\nid\ndata: b\n\n",
			[]sseMessage{{"1", "message", []byte("a")}, {"", "message", []byte("b")}}, ""},
		{"no data: not dispatched, event type reset, id kept", "id: 5\nevent: x\n\ndata: a\n\n",
			[]sseMessage{{"5", "message", []byte("a")}}, "5"},
		{"empty data line dispatches empty data", "data\n\n",
			[]sseMessage{{"", "message", []byte("")}}, ""},
		{"event cut off by the end is discarded, its id too", "id: 1\ndata: a\n\nid: 2\ndata: b\n",
			[]sseMessage{{"1", "message", []byte("a")}}, "1"},
		{"last line without end is not a line", "data: a\n\ndata: b",
			[]sseMessage{{"", "message", []byte("a")}}, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for _, feed := range []struct {
				name string
				r    func() io.Reader
			}{
				{"whole", func() io.Reader { return strings.NewReader(tc.stream) }},
				{"byte by byte", func() io.Reader { return iotest.OneByteReader(strings.NewReader(tc.stream)) }},
			} {
				got, sr := readAll(t, feed.r(), "")
				if len(got) == 0 && len(tc.want) == 0 {
					continue
				}
				if !reflect.DeepEqual(got, tc.want) {
					t.Errorf("%s: events of %q = %q; want %q", feed.name, tc.stream, got, tc.want)
				}
				if sr.lastID != tc.lastID {
					t.Errorf("%s: last event ID of %q = %q; want %q", feed.name, tc.stream, sr.lastID, tc.lastID)
				}
			}
		})
	}
}

func TestSSERetry(t *testing.T) {
	t.Parallel()
	tests := []struct {
		stream string
		want   time.Duration
	}{
		{"retry: 2500\n\n", 2500 * time.Millisecond},
		{"retry: 25x\n\n", 0},
		{"retry: -5\n\n", 0},
		{"retry: +5\n\n", 0},
		{"retry\n\n", 0},
		{"retry: 100\nretry: oops\n\n", 100 * time.Millisecond},
	}
	for _, tc := range tests {
		_, sr := readAll(t, strings.NewReader(tc.stream), "")
		if sr.retry != tc.want {
			t.Errorf("retry of %q = %v; want %v", tc.stream, sr.retry, tc.want)
		}
	}
}

// TestSSEKeepsStartID: a stream that sends no id: keeps the id it was resumed with.
func TestSSEKeepsStartID(t *testing.T) {
	t.Parallel()
	got, sr := readAll(t, strings.NewReader("data: a\n\n"), "9-1")
	if len(got) != 1 || got[0].ID != "9-1" || sr.lastID != "9-1" {
		t.Errorf("events %q, last id %q; want one event with id 9-1", got, sr.lastID)
	}
}

func TestBackoff(t *testing.T) {
	t.Parallel()
	for n, want := range map[int]time.Duration{1: time.Second, 2: 2 * time.Second, 3: 4 * time.Second, 10: 30 * time.Second} {
		for range 50 {
			if d := backoff(time.Second, n, 30*time.Second); d < want/2 || d > want {
				t.Fatalf("backoff(1s, %d, 30s) = %v; want in [%v, %v]", n, d, want/2, want)
			}
		}
	}
}
