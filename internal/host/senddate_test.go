package host

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/seed-a64d9e1f/chatwire/adapter"
)

// TestSendAnswersSetDate: a send's answer (sent, refused, replayed from its Idempotency-Key,
// a conflict) carries this second's Date, set by the host from its per-second cache
// (setDate) rather than formatted by net/http per response: the handler's header has it,
// once, in the HTTP format, and a replayed answer's stored headers do not bring an old one.
// Without setDate on these paths the header a handler writes has no Date.
func TestSendAnswersSetDate(t *testing.T) {
	for _, tc := range []struct {
		name  string
		write func(w http.ResponseWriter)
	}{
		{"sent", func(w http.ResponseWriter) {
			writeOutcome(w, jsonOutcome(200, nil, sendResponse{ID: "m1", Bot: "hr"}, true), false)
		}},
		{"refused by pacing", func(w http.ResponseWriter) {
			writeOutcome(w, errorOutcome(&adapter.Error{Kind: adapter.KindRateLimited, RetryAfter: time.Second}, false), false)
		}},
		{"replayed", func(w http.ResponseWriter) {
			o := jsonOutcome(200, map[string]string{"Date": "Mon, 02 Jan 2006 15:04:05 GMT"}, sendResponse{ID: "m1"}, true)
			writeOutcome(w, o, true)
		}},
		{"bad request", func(w http.ResponseWriter) {
			writeError(w, &adapter.Error{Kind: adapter.KindInvalidRequest, Message: "bad"})
		}},
		{"conflict", func(w http.ResponseWriter) { writeConflict(w, errors.New("reused")) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := time.Now().Truncate(time.Second)
			rec := httptest.NewRecorder()
			tc.write(rec)
			after := time.Now()
			dates := rec.Result().Header.Values("Date")
			if len(dates) != 1 {
				t.Fatalf("Date %q; want one", dates)
			}
			d, err := http.ParseTime(dates[0])
			if err != nil || d.Before(before) || d.After(after) || dates[0] != d.UTC().Format(http.TimeFormat) {
				t.Fatalf("Date %q (%v): want this second (%v to %v) in the HTTP format", dates[0], err, before, after)
			}
		})
	}
}
