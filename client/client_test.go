package client_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/seed-a64d9e1f/chatwire/adapter"
	"github.com/seed-a64d9e1f/chatwire/client"
	"github.com/seed-a64d9e1f/chatwire/tokenmgr"
)

const testKey = "api-key-do-not-log-0123456789"

// setup returns a client of a test server whose routes the test adds to mux.
func setup(t *testing.T) (*client.Client, *http.ServeMux, *bytes.Buffer) {
	t.Helper()
	mux := http.NewServeMux()
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	logs := &bytes.Buffer{}
	c, err := client.New(srv.URL, client.Options{APIKey: testKey, Logger: slog.New(slog.NewTextHandler(&lockedWriter{w: logs}, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	if err != nil {
		t.Fatal(err)
	}
	return c, mux, logs
}

type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func writeError(w http.ResponseWriter, status int, kind, msg, code string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	fmt.Fprintf(w, `{"error":{"kind":%q,"message":%q,"platform_code":%q}}`, kind, msg, code)
}

func TestSend(t *testing.T) {
	t.Parallel()
	c, mux, logs := setup(t)
	var mu sync.Mutex
	var got []*http.Request
	var bodies []adapter.Message
	mux.HandleFunc("POST /v1/bots/{bot}/messages", func(w http.ResponseWriter, r *http.Request) {
		data, _ := io.ReadAll(r.Body)
		dec := json.NewDecoder(bytes.NewReader(data))
		dec.DisallowUnknownFields() // as the host decodes
		var m adapter.Message
		if err := dec.Decode(&m); err != nil || int64(len(data)) != r.ContentLength {
			t.Errorf("body %q (Content-Length %d): %v", data, r.ContentLength, err)
		}
		mu.Lock()
		got, bodies = append(got, r), append(bodies, m)
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		if r.Header.Get("Idempotency-Key") == "seen" {
			w.Header().Set("Idempotent-Replayed", "true")
		}
		fmt.Fprintf(w, `{"id":"m1","bot":%q,"platform":"wecom","invalid":["user:bob"]}`, r.PathValue("bot"))
	})
	msg := client.Message{To: client.Target{User: "alice"}, Text: "hi"}
	rc, err := c.Send(t.Context(), "hr", msg, client.WithIdempotencyKey("key-1"))
	if err != nil {
		t.Fatal(err)
	}
	if want := (client.Receipt{ID: "m1", Bot: "hr", Platform: "wecom", Invalid: []string{"user:bob"}}); !reflect.DeepEqual(*rc, want) {
		t.Errorf("Send() = %+v; want %+v", *rc, want)
	}
	if _, err := c.Send(t.Context(), "hr", msg); err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 {
		t.Fatalf("host got %d sends; want 2", len(got))
	}
	for i, r := range got {
		if ct := r.Header.Get("Content-Type"); ct != "application/json" {
			t.Errorf("send %d: Content-Type %q; want application/json", i, ct)
		}
		if a := r.Header.Get("Authorization"); a != "Bearer "+testKey {
			t.Errorf("send %d: Authorization %q", i, a)
		}
		if !reflect.DeepEqual(bodies[i], msg) {
			t.Errorf("send %d: host decoded %+v; want %+v", i, bodies[i], msg)
		}
	}
	if k := got[0].Header.Get("Idempotency-Key"); k != "key-1" {
		t.Errorf("Idempotency-Key with WithIdempotencyKey(\"key-1\") = %q", k)
	}
	if k, ok := got[1].Header["Idempotency-Key"]; ok {
		t.Errorf("Idempotency-Key without the option = %q; want none", k)
	}
	if strings.Contains(logs.String(), testKey) {
		t.Errorf("log holds the API key:\n%s", logs)
	}
	if rc, err := c.Send(t.Context(), "hr", msg, client.WithIdempotencyKey("seen")); err != nil || !rc.Replayed {
		t.Errorf("Send() answered with Idempotent-Replayed = %+v, %v; want Replayed", rc, err)
	}
	if rc.Replayed {
		t.Errorf("first Send() = %+v; want not Replayed", rc)
	}
	for _, bad := range []string{"tab\tkey", strings.Repeat("k", 256), "é"} {
		if _, err := c.Send(t.Context(), "hr", msg, client.WithIdempotencyKey(bad)); !errors.Is(err, adapter.ErrInvalidRequest) {
			t.Errorf("Send(WithIdempotencyKey(%.10q)) = %v; want invalid_request", bad, err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 3 {
		t.Errorf("host got %d sends; want 3 (none with a bad key)", len(got))
	}
}

func TestNewIdempotencyKey(t *testing.T) {
	t.Parallel()
	a, b := client.NewIdempotencyKey(), client.NewIdempotencyKey()
	if a == b || len(a) < 20 {
		t.Errorf("NewIdempotencyKey() = %q, %q; want two distinct random keys", a, b)
	}
}

// TestSendStreamsAttachments: attachments with Body are streamed base64 inside the JSON, with
// an exact Content-Length; Data attachments sit beside them.
func TestSendStreamsAttachments(t *testing.T) {
	t.Parallel()
	c, mux, _ := setup(t)
	var got adapter.Message
	mux.HandleFunc("POST /v1/bots/hr/messages", func(w http.ResponseWriter, r *http.Request) {
		data, _ := io.ReadAll(r.Body)
		dec := json.NewDecoder(bytes.NewReader(data))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&got); err != nil {
			writeError(w, 400, "invalid_request", err.Error(), "")
			return
		}
		if r.ContentLength != int64(len(data)) || r.TransferEncoding != nil {
			t.Errorf("Content-Length %d, Transfer-Encoding %v; body is %d bytes", r.ContentLength, r.TransferEncoding, len(data))
		}
		io.WriteString(w, `{"id":"m","bot":"hr","platform":"wecom","invalid":[]}`)
	})
	big := bytes.Repeat([]byte("chatwire\x00\xff"), 100_000)
	msg := client.Message{To: client.Target{Chat: "c1"}, Text: "files", Attachments: []client.Attachment{
		{Name: "small.txt", ContentType: "text/plain", Data: []byte("small")},
		{Name: "big.bin", ContentType: "application/octet-stream", Body: bytes.NewReader(big), Size: int64(len(big))},
		{Body: strings.NewReader("x"), Size: 1}, // no metadata at all
	}}
	if _, err := c.Send(t.Context(), "hr", msg); err != nil {
		t.Fatal(err)
	}
	if len(got.Attachments) != 3 || string(got.Attachments[0].Data) != "small" || !bytes.Equal(got.Attachments[1].Data, big) ||
		got.Attachments[1].Name != "big.bin" || got.Attachments[1].Size != int64(len(big)) || string(got.Attachments[2].Data) != "x" || got.Text != "files" {
		t.Errorf("host decoded %d attachments (%+v)", len(got.Attachments), got.Attachments)
	}

	for _, tc := range []struct {
		name string
		a    client.Attachment
		want string
	}{
		{"short body", client.Attachment{Name: "s", Body: strings.NewReader("abc"), Size: 10}, "Body ended after 3 bytes"},
		{"long body", client.Attachment{Name: "l", Body: strings.NewReader("abcdef"), Size: 3}, "longer than Size"},
		{"no size", client.Attachment{Name: "n", Body: strings.NewReader("abc")}, "Body without Size"},
	} {
		_, err := c.Send(t.Context(), "hr", client.Message{To: client.Target{User: "a"}, Attachments: []client.Attachment{tc.a}})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: Send() = %v; want an error saying %q", tc.name, err, tc.want)
		}
	}
}

func TestErrors(t *testing.T) {
	t.Parallel()
	c, mux, _ := setup(t)
	date := time.Now().Add(90 * time.Second).UTC().Format(http.TimeFormat)
	mux.HandleFunc("POST /v1/bots/{bot}/messages", func(w http.ResponseWriter, r *http.Request) {
		switch r.PathValue("bot") {
		case "limited":
			w.Header().Set("Retry-After", "61")
			writeError(w, 429, "rate_limited", "api freq out of limit", "45009")
		case "dated":
			w.Header().Set("Retry-After", date)
			writeError(w, 503, "unavailable", "plugin restarting", "")
		case "nobody":
			writeError(w, 400, "invalid_recipient", "no such user", "81013")
		case "proxy":
			w.WriteHeader(502)
			io.WriteString(w, "<html>bad gateway</html>")
		case "conflict":
			writeError(w, 409, "conflict", "idempotency key reused with another body", "")
		case "future":
			writeError(w, 418, "teapot", "a kind from a newer host", "")
		}
	})
	tests := []struct {
		bot        string
		status     int
		kind       adapter.Kind
		code       string
		retryAfter time.Duration
		sentinel   error
		temporary  bool
	}{
		{"limited", 429, adapter.KindRateLimited, "45009", 61 * time.Second, adapter.ErrRateLimited, true},
		{"dated", 503, adapter.KindUnavailable, "", 90 * time.Second, adapter.ErrUnavailable, true},
		{"nobody", 400, adapter.KindInvalidRecipient, "81013", 0, adapter.ErrInvalidRecipient, false},
		{"proxy", 502, adapter.KindUnavailable, "", 0, adapter.ErrUnavailable, true},
		{"conflict", 409, client.KindConflict, "", 0, client.ErrConflict, false},
		{"future", 418, "teapot", "", 0, adapter.ErrInternal, false},
	}
	for _, tc := range tests {
		t.Run(tc.bot, func(t *testing.T) {
			_, err := c.Send(t.Context(), tc.bot, client.Message{To: client.Target{User: "a"}, Text: "x"})
			var ae *client.Error
			if !errors.As(err, &ae) {
				t.Fatalf("Send() = %v; want a *client.Error", err)
			}
			if ae.StatusCode != tc.status || ae.Kind != tc.kind || ae.PlatformCode != tc.code || ae.Message == "" {
				t.Errorf("Send() = %+v; want status %d kind %s code %q", ae, tc.status, tc.kind, tc.code)
			}
			if d := ae.RetryAfter - tc.retryAfter; d < -2*time.Second || d > 0 && tc.retryAfter == 0 || d > time.Second {
				t.Errorf("RetryAfter = %v; want %v", ae.RetryAfter, tc.retryAfter)
			}
			if !errors.Is(err, tc.sentinel) || errors.Is(err, tokenmgr.ErrTemporary) != tc.temporary || ae.Temporary() != tc.temporary {
				t.Errorf("errors.Is(%v, %v) = false, or Temporary() != %v", err, tc.sentinel, tc.temporary)
			}
			if tc.sentinel != adapter.ErrInternal && errors.Is(err, adapter.ErrInternal) {
				t.Errorf("errors.Is(%v, ErrInternal) = true", err)
			}
			if tc.code != "" && !strings.Contains(err.Error(), tc.code) {
				t.Errorf("Error() = %q; want the platform code", err)
			}
		})
	}
}

// TestAPIKeyNeverShown: the API key is in no error, log line or formatting of the client.
func TestAPIKeyNeverShown(t *testing.T) {
	t.Parallel()
	logs := &bytes.Buffer{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeError(w, 401, "unauthorized", "wrong API key", "")
	}))
	c, err := client.New(srv.URL, client.Options{APIKey: testKey, Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	if err != nil {
		t.Fatal(err)
	}
	var errs []error
	_, err = c.Send(t.Context(), "hr", client.Message{To: client.Target{User: "a"}, Text: "x"}, client.WithIdempotencyKey("k"))
	errs = append(errs, err)
	_, err = c.Tokens(t.Context())
	errs = append(errs, err)
	for _, err := range c.Events(t.Context(), "hr", client.EventsOptions{}) {
		errs = append(errs, err)
	}
	srv.Close() // now: no answer at all
	_, err = c.Bots(t.Context())
	errs = append(errs, err)
	for i, err := range errs {
		if err == nil {
			t.Errorf("call %d succeeded; want an error", i)
			continue
		}
		if strings.Contains(fmt.Sprintf("%v %+v %#v", err, err, err), testKey) {
			t.Errorf("error %d holds the API key: %v", i, err)
		}
	}
	if s := fmt.Sprintf("%v %+v %#v %s", c, c, c, c); strings.Contains(s, testKey) {
		t.Errorf("formatting the client shows the API key: %s", s)
	}
	if strings.Contains(logs.String(), testKey) {
		t.Errorf("log holds the API key:\n%s", logs)
	}
}

func TestTokensBotsReady(t *testing.T) {
	t.Parallel()
	c, mux, _ := setup(t)
	mux.HandleFunc("GET /v1/tokens", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, `{"bots":[{"bot":"hr","platform":"wecom","healthy":true,"tokens":[{"key":"wecom/ww1/1","platform":"wecom","state":"fresh","fp":"abcd1234","generation":2,"refreshes":2,"fetches":2,"failures":0}],"queued":3,"unconsumed":1}]}`)
	})
	mux.HandleFunc("GET /v1/bots", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, `{"bots":[{"name":"hr","platform":"wecom"},{"name":"teams","platform":"graph"}]}`)
	})
	ready := true
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if !ready {
			http.Error(w, "plugin not ready", 503)
			return
		}
		io.WriteString(w, "ready\n")
	})
	st, err := c.Tokens(t.Context())
	if err != nil || len(st) != 1 || st[0].Bot != "hr" || !st[0].Healthy || st[0].Queued != 3 || st[0].Unconsumed != 1 ||
		len(st[0].Tokens) != 1 || st[0].Tokens[0].Fingerprint != "abcd1234" || st[0].Tokens[0].Generation != 2 {
		t.Errorf("Tokens() = %+v, %v", st, err)
	}
	bots, err := c.Bots(t.Context())
	if want := []client.Bot{{"hr", "wecom"}, {"teams", "graph"}}; err != nil || !reflect.DeepEqual(bots, want) {
		t.Errorf("Bots() = %+v, %v; want %+v", bots, err, want)
	}
	if err := c.Ready(t.Context()); err != nil {
		t.Errorf("Ready() = %v; want nil", err)
	}
	ready = false
	if err := c.Ready(t.Context()); !errors.Is(err, adapter.ErrUnavailable) || !strings.Contains(err.Error(), "plugin not ready") {
		t.Errorf("Ready() of a host not ready = %v; want unavailable with the host's reason", err)
	}
}

func TestAck(t *testing.T) {
	t.Parallel()
	c, mux, _ := setup(t)
	var batches []int
	mux.HandleFunc("POST /v1/bots/hr/events/ack", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Group string   `json:"group"`
			IDs   []string `json:"ids"`
		}
		if r.Header.Get("Content-Type") != "application/json" || json.NewDecoder(r.Body).Decode(&req) != nil || req.Group != "g" {
			writeError(w, 400, "invalid_request", "bad ack", "")
			return
		}
		batches = append(batches, len(req.IDs))
		fmt.Fprintf(w, `{"acked":%d}`, len(req.IDs)-1)
	})
	if n, err := c.Ack(t.Context(), "hr", "g", "1-0", "2-0"); n != 1 || err != nil {
		t.Errorf("Ack(2 ids) = %d, %v; want 1 (as the host says)", n, err)
	}
	ids := make([]string, 10_001)
	for i := range ids {
		ids[i] = fmt.Sprintf("%d-0", i+1)
	}
	if n, err := c.Ack(t.Context(), "hr", "g", ids...); n != 9_999+0 || err != nil || !reflect.DeepEqual(batches[1:], []int{10_000, 1}) {
		t.Errorf("Ack(10,001 ids) = %d, %v in batches %v; want 9999 in batches of 10,000 and 1", n, err, batches[1:])
	}
	if n, err := c.Ack(t.Context(), "nobody", "g", "1-0"); n != 0 || !errors.Is(err, adapter.ErrNotFound) {
		t.Errorf("Ack(unknown bot) = %d, %v; want not found", n, err)
	}
}

func TestNewRejectsBadURLs(t *testing.T) {
	t.Parallel()
	for _, u := range []string{"", "127.0.0.1:8080", "ftp://host", "http://", "http://h/?q=1", "http://h:bad"} {
		if _, err := client.New(u, client.Options{}); err == nil {
			t.Errorf("New(%q) = nil error", u)
		}
	}
	c, err := client.New("http://127.0.0.1:8080/prefix/", client.Options{})
	if err != nil || c.BaseURL() != "http://127.0.0.1:8080/prefix" {
		t.Errorf("New(with a prefix) = %v, %v", c, err)
	}
}

// ctxTimeout is how long a test waits for something that should be quick.
const ctxTimeout = 20 * time.Second

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), ctxTimeout)
	t.Cleanup(cancel)
	return ctx
}
