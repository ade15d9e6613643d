package client

import (
	"bufio"
	"bytes"
	"io"
	"strconv"
	"time"
)

// An sseMessage is one dispatched Server-Sent Event.
type sseMessage struct {
	ID    string // the last event ID when it was dispatched
	Event string // the event type; "message" if the stream gave none
	Data  []byte
}

// sseReader parses a text/event-stream as the WHATWG HTML standard says ("9.2.6 Interpreting
// an event stream"): lines end in CRLF, LF or CR; a leading BOM is skipped; comments start
// with ':'; "field: value" loses one space after the colon; data lines join with LF; an id
// with a NUL is ignored; retry takes ASCII digits only; a blank line dispatches, unless no
// data came; a last event ID persists across events; an event cut off by the end of the
// stream is discarded.
type sseReader struct {
	sc     *bufio.Scanner
	idBuf  string        // the last event ID buffer: set by id:
	lastID string        // the last event ID string: idBuf as of the last blank line
	retry  time.Duration // the last retry: field; zero if none
	first  bool          // no line read yet (BOM check)
}

// maxLine bounds one line of the stream (an event's data line holds its whole JSON).
const maxLine = 16 << 20

func newSSEReader(r io.Reader, lastID string) *sseReader {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), maxLine)
	skipLF := false // the previous line ended in CR: a LF right after it belongs to it
	sc.Split(func(data []byte, atEOF bool) (int, []byte, error) {
		start := 0
		if skipLF && len(data) > 0 {
			skipLF = false
			if data[0] == '\n' {
				start = 1
			}
		}
		if i := bytes.IndexAny(data[start:], "\r\n"); i >= 0 {
			end := start + i
			if data[end] == '\r' {
				if end+1 < len(data) {
					if data[end+1] == '\n' {
						return end + 2, data[start:end], nil
					}
				} else {
					skipLF = true
				}
			}
			return end + 1, data[start:end], nil
		}
		if atEOF {
			// A last line without its end is not a line; and an event needs a blank line.
			return len(data), nil, nil
		}
		return start, nil, nil
	})
	return &sseReader{sc: sc, idBuf: lastID, lastID: lastID, first: true}
}

// Next returns the next dispatched event, or the error that ended the stream (io.EOF if it
// ended cleanly).
func (r *sseReader) Next() (sseMessage, error) {
	var event string
	var data []byte
	hasData := false
	for r.sc.Scan() {
		line := r.sc.Bytes()
		if r.first {
			r.first = false
			line = bytes.TrimPrefix(line, []byte("\uFEFF"))
		}
		if len(line) == 0 {
			r.lastID = r.idBuf
			if !hasData {
				event = ""
				continue
			}
			if len(data) > 0 && data[len(data)-1] == '\n' {
				data = data[:len(data)-1]
			}
			if event == "" {
				event = "message"
			}
			return sseMessage{ID: r.lastID, Event: event, Data: data}, nil
		}
		if line[0] == ':' {
			continue
		}
		field, value := line, []byte(nil)
		if i := bytes.IndexByte(line, ':'); i >= 0 {
			field, value = line[:i], line[i+1:]
			if len(value) > 0 && value[0] == ' ' {
				value = value[1:]
			}
		}
		switch string(field) {
		case "event":
			event = string(value)
		case "data":
			hasData = true
			data = append(data, value...)
			data = append(data, '\n')
		case "id":
			if bytes.IndexByte(value, 0) < 0 {
				r.idBuf = string(value)
			}
		case "retry":
			if ms, err := strconv.ParseUint(string(value), 10, 63); err == nil && isASCIIDigits(value) {
				r.retry = time.Duration(min(ms, uint64(time.Hour/time.Millisecond))) * time.Millisecond
			}
		}
	}
	if err := r.sc.Err(); err != nil {
		return sseMessage{}, err
	}
	return sseMessage{}, io.EOF
}

func isASCIIDigits(b []byte) bool {
	for _, c := range b {
		if c < '0' || c > '9' {
			return false
		}
	}
	return len(b) > 0
}
