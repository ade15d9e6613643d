package apitest

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/getkin/kin-openapi/openapi3filter"
)

// fakeHost answers like adapter-host, and in the ways a drifted host would.
func fakeHost() http.Handler {
	mux := http.NewServeMux()
	jsonAnswer := func(status int, body string, hdr ...string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			io.Copy(io.Discard, r.Body)
			for i := 0; i+1 < len(hdr); i += 2 {
				w.Header().Set(hdr[i], hdr[i+1])
			}
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(status)
			io.WriteString(w, body)
		}
	}
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok\n") })
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusTeapot) })
	mux.HandleFunc("POST /v1/bots/good/messages", jsonAnswer(200, `{"id":"m1","bot":"good","platform":"wecom","invalid":[]}`))
	mux.HandleFunc("POST /v1/bots/nokey/messages", jsonAnswer(401, `{"error":{"kind":"unauthorized","message":"no key","platform_code":""}}`,
		"WWW-Authenticate", `Bearer realm="chatwire"`))
	mux.HandleFunc("POST /v1/bots/slow/messages", jsonAnswer(429, `{"error":{"kind":"rate_limited","message":"slow down","platform_code":"45009"}}`))
	mux.HandleFunc("POST /v1/bots/badbody/messages", jsonAnswer(200, `{"id":"m1","bot":"badbody","platform":"wecom"}`))
	mux.HandleFunc("POST /v1/bots/badkind/messages", jsonAnswer(400, `{"error":{"kind":"oops","message":"x","platform_code":""}}`))
	mux.HandleFunc("GET /v1/bots", jsonAnswer(200, `{"bots":[{"name":"good","platform":"wecom"}]}`))
	mux.HandleFunc("GET /v1/secret", jsonAnswer(200, `{}`))
	mux.HandleFunc("GET /v1/bots/{bot}/events", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		if r.PathValue("bot") != "nocache" {
			w.Header().Set("Cache-Control", "no-cache")
		}
		w.WriteHeader(200)
		io.WriteString(w, ": hello\n\nid: 1\nevent: message\ndata: {}\n\n")
		w.(http.Flusher).Flush()
		<-r.Context().Done() // an endless stream: the transport must not read it to the end
	})
	return mux
}

// TestTransportValidates: exchanges that match api/openapi.yaml pass, and each kind of drift
// (an undeclared status, a body or header that differs, a route the document lacks, a request
// the document forbids but the server accepts) is reported.
func TestTransportValidates(t *testing.T) {
	srv := httptest.NewServer(fakeHost())
	defer srv.Close()
	v, err := New()
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var reports []string
	client := &http.Client{Transport: &Transport{Validator: v, Report: func(req *http.Request, err error) {
		mu.Lock()
		defer mu.Unlock()
		reports = append(reports, err.Error())
	}}}
	cases := []struct {
		name, method, path, body string
		want                     string // a part of the report; "" means no report
	}{
		{"healthz ok", "GET", "/healthz", "", ""},
		{"send ok", "POST", "/v1/bots/good/messages", `{"to":{"user":"a"},"text":"hi"}`, ""},
		{"401 ok", "POST", "/v1/bots/nokey/messages", `{"to":{"user":"a"},"text":"hi"}`, ""},
		{"invalid request refused with 4xx ok", "POST", "/v1/bots/nokey/messages", `{"to":{"user":"a"},"colour":"red"}`, ""},
		{"list ok", "GET", "/v1/bots", "", ""},
		{"sse ok", "GET", "/v1/bots/good/events", "", ""},
		{"unknown route 404 ok", "GET", "/nowhere", "", ""},
		{"undeclared status", "GET", "/readyz", "", "status is not supported"},
		{"429 without Retry-After", "POST", "/v1/bots/slow/messages", `{"to":{"user":"a"},"text":"hi"}`, "Retry-After"},
		{"body missing a field", "POST", "/v1/bots/badbody/messages", `{"to":{"user":"a"},"text":"hi"}`, "invalid"},
		{"error kind not in the enum", "POST", "/v1/bots/badkind/messages", `{"to":{"user":"a"},"text":"hi"}`, "kind"},
		{"route not in the document", "GET", "/v1/secret", "", "is not in api/openapi.yaml"},
		{"forbidden request accepted", "POST", "/v1/bots/good/messages", `{"to":{"user":"a"},"colour":"red"}`, "stricter than the server"},
		{"sse without Cache-Control", "GET", "/v1/bots/nocache/events", "", "Cache-Control"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			mu.Lock()
			reports = nil
			mu.Unlock()
			req, _ := http.NewRequest(tc.method, srv.URL+tc.path, strings.NewReader(tc.body))
			if tc.body != "" {
				req.Header.Set("Content-Type", "application/json")
			} else {
				req.Body = http.NoBody
			}
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			if strings.HasSuffix(tc.path, "/events") {
				// The stream is handed on unread and still readable.
				line, err := bufio.NewReader(resp.Body).ReadString('\n')
				if err != nil || line != ": hello\n" {
					t.Errorf("first line of the stream: %q, %v", line, err)
				}
			} else if _, err := io.ReadAll(resp.Body); err != nil {
				t.Errorf("reading the body the transport handed on: %v", err)
			}
			resp.Body.Close()
			mu.Lock()
			got := reports
			mu.Unlock()
			switch {
			case tc.want == "" && len(got) > 0:
				t.Errorf("reported a mismatch for an exchange that matches the document: %v", got)
			case tc.want != "" && len(got) != 1:
				t.Errorf("reports %q; want one about %q", got, tc.want)
			case tc.want != "" && !strings.Contains(got[0], tc.want):
				t.Errorf("report %q does not mention %q", got[0], tc.want)
			}
		})
	}
}

// TestBearerPresent: a bearer requirement holds only with "Authorization: Bearer <key>", so a
// document that demanded a key would be caught accepting anonymous requests.
func TestBearerPresent(t *testing.T) {
	v, err := New()
	if err != nil {
		t.Fatal(err)
	}
	scheme := v.doc.Components.SecuritySchemes["bearer"].Value
	for _, tc := range []struct {
		header string
		ok     bool
	}{{"Bearer k1", true}, {"bearer k1", true}, {"", false}, {"Bearer ", false}, {"Basic a2V5", false}, {"k1", false}} {
		req, _ := http.NewRequest("GET", "http://127.0.0.1/v1/bots", nil)
		if tc.header != "" {
			req.Header.Set("Authorization", tc.header)
		}
		in := &openapi3filter.AuthenticationInput{RequestValidationInput: &openapi3filter.RequestValidationInput{Request: req},
			SecuritySchemeName: "bearer", SecurityScheme: scheme}
		if err := bearerPresent(context.Background(), in); (err == nil) != tc.ok {
			t.Errorf("Authorization %q: err %v; want ok=%v", tc.header, err, tc.ok)
		}
	}
}
