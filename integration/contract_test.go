package integration

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/seed-a64d9e1f/chatwire/adapter/wecom/wecomtest"

	"github.com/seed-a64d9e1f/chatwire/api/apitest"
)

// Every request this suite makes to an adapter-host, and every response it gets, is checked
// against api/openapi.yaml: TestMain puts a validating transport in place of
// http.DefaultTransport (which http.DefaultClient, http.Get/Post, clients without a Transport
// and the emulators' callback pushers use), and clients with their own transport wrap it with
// validated. A mismatch fails the test that started the host, when the host is stopped.
var contract struct {
	v     *apitest.Validator
	mu    sync.Mutex
	hosts map[string]*contractLog // by host address
	seen  map[string]int          // "GET /healthz 200" → exchanges seen
}

// contractLog collects the mismatches seen in the exchanges with one host.
type contractLog struct {
	mu   sync.Mutex
	errs []string
}

// installContractCheck loads the document and wraps http.DefaultTransport.
func installContractCheck() error {
	v, err := apitest.New()
	if err != nil {
		return err
	}
	contract.v = v
	contract.hosts = map[string]*contractLog{}
	contract.seen = map[string]int{}
	http.DefaultTransport = validated(http.DefaultTransport)
	return nil
}

// validated returns next wrapped so that exchanges with a host started by startHost are
// validated against api/openapi.yaml.
func validated(next http.RoundTripper) http.RoundTripper {
	return &apitest.Transport{Next: next, Validator: contract.v,
		Match: func(r *http.Request) bool { return hostLog(r.URL.Host) != nil },
		Report: func(r *http.Request, err error) {
			if l := hostLog(r.URL.Host); l != nil {
				l.mu.Lock()
				l.errs = append(l.errs, err.Error())
				l.mu.Unlock()
			}
		},
		Observe: func(r *http.Request, resp *http.Response) {
			if op := contract.v.Operation(r); op != "" {
				contract.mu.Lock()
				contract.seen[fmt.Sprintf("%s %d", op, resp.StatusCode)]++
				contract.mu.Unlock()
			}
		}}
}

// contractCoverage writes which of the document's responses the run exercised (with
// CHATWIRE_CONTRACT_COVERAGE=1), to see what the suite leaves unproven.
func contractCoverage(w io.Writer) {
	contract.mu.Lock()
	defer contract.mu.Unlock()
	for _, r := range contract.v.Responses() {
		fmt.Fprintf(w, "contract coverage: %-45s %d\n", r, contract.seen[r])
	}
}

func hostLog(addr string) *contractLog {
	contract.mu.Lock()
	defer contract.mu.Unlock()
	return contract.hosts[addr]
}

// watchContract starts validating the exchanges with the host at addr; the function it
// returns stops that and fails t for every mismatch seen.
func watchContract(t testing.TB, addr string) func() {
	l := &contractLog{}
	contract.mu.Lock()
	contract.hosts[addr] = l
	contract.mu.Unlock()
	return func() {
		contract.mu.Lock()
		if contract.hosts[addr] == l {
			delete(contract.hosts, addr)
		}
		contract.mu.Unlock()
		l.mu.Lock()
		defer l.mu.Unlock()
		seen := map[string]int{}
		for _, e := range l.errs {
			seen[e]++
		}
		for e, n := range seen {
			t.Errorf("HTTP exchange with %s does not match api/openapi.yaml (%d times): %s", addr, n, e)
		}
	}
}

// checkDelivery validates an event delivery the host POSTed to a bot (headers and Event JSON)
// and returns the mismatch, if any.
func checkDelivery(r *http.Request, body []byte) string {
	if err := contract.v.CheckDelivery(r, body); err != nil {
		return fmt.Sprint(err)
	}
	return ""
}

// TestContractCheckFailsOnDrift: the suite's validation is in force. A host answering with
// something api/openapi.yaml does not declare (a status, a missing header, a route) is
// reported for the host's test; a conforming exchange is not.
func TestContractCheckFailsOnDrift(t *testing.T) {
	drifted := http.NewServeMux()
	drifted.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusAccepted) // undeclared
	})
	drifted.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Write([]byte("ready\n"))
	})
	drifted.HandleFunc("POST /v1/bots/hr/messages", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusServiceUnavailable) // no Retry-After
		w.Write([]byte(`{"error":{"kind":"unavailable","message":"down","platform_code":""}}`))
	})
	srv := httptest.NewServer(drifted)
	defer srv.Close()
	addr := srv.Listener.Addr().String()
	rec := &recordingTB{TB: t}
	stop := watchContract(rec, addr)
	for _, c := range []struct{ method, path, body string }{
		{"GET", "/healthz", ""},
		{"GET", "/readyz", ""},
		{"POST", "/v1/bots/hr/messages", `{"to":{"user":"a"},"text":"hi"}`},
	} {
		req, _ := http.NewRequest(c.method, "http://"+addr+c.path, strings.NewReader(c.body))
		if c.body != "" {
			req.Header.Set("Content-Type", "application/json")
		}
		resp, err := http.DefaultClient.Do(req) // the suite's validating default transport
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	stop()
	got := strings.Join(rec.errs, "\n")
	if len(rec.errs) != 2 || !strings.Contains(got, "GET /healthz: response 202") || !strings.Contains(got, "Retry-After") {
		t.Errorf("mismatches reported:\n%s\nwant two: /healthz's undeclared 202 and the 503 without Retry-After", got)
	}
}

// recordingTB records Errorf calls instead of failing.
type recordingTB struct {
	testing.TB
	errs []string
}

func (r *recordingTB) Errorf(format string, args ...any) {
	r.errs = append(r.errs, fmt.Sprintf(format, args...))
}

// TestContractTour makes, against real binaries, the requests the other tests leave out, so
// that every route and its usual answers are checked against api/openapi.yaml: health,
// readiness, metrics, the bot list and token status, the API key refused on each /v1 route,
// a bad Last-Event-ID, WeCom's URL check (good, forged, without echostr), routes and methods
// the server does not have, and a host without API keys answering anonymous requests.
func TestContractTour(t *testing.T) {
	emu := &wecomtest.Server{LenientAgentID: true}
	emu.AddApp(corpID, corpSecret, agentID)
	api := httptest.NewServer(emu)
	defer api.Close()
	cfg := singleHostConfig(api.URL, t.TempDir())
	h := startHost(t, "host", cfg, secretEnv()...)
	keyless := `  api_keys: ["${CHATWIRE_API_KEY}"]` + "\n"
	if !strings.Contains(cfg, keyless) {
		t.Fatalf("singleHostConfig changed; no api_keys line in:\n%s", cfg)
	}
	// A store directory serves one host (its event and outbox journals are locked): the
	// keyless host gets its own.
	open := startHost(t, "keyless", strings.Replace(singleHostConfig(api.URL, t.TempDir()), keyless, "", 1), secretEnv()...)

	cb := wecomtest.Callback{Token: cbToken, EncodingAESKey: aesKey, CorpID: corpID, AgentID: agentID}
	verify, err := wecomtest.VerifyQuery(cb, "echo-4711", time.Now().Unix(), "v1")
	if err != nil {
		t.Fatal(err)
	}
	forged := url.Values{}
	for k, v := range verify {
		forged[k] = v
	}
	forged.Set("msg_signature", strings.Repeat("0", 40))
	send := `{"to":{"user":"zhangsan"},"text":"tour"}`
	cases := []struct {
		name, method, path string
		host               *host
		key                string // "-": none
		header             []string
		body               string
		status             int
		contains           string
	}{
		{"healthz", "GET", "/healthz", h, "-", nil, "", 200, "ok"},
		{"readyz", "GET", "/readyz", h, "-", nil, "", 200, "ready"},
		{"metrics", "GET", "/metrics", h, "-", nil, "", 200, "chatwire_"},
		{"bots", "GET", "/v1/bots", h, apiKey, nil, "", 200, `"hr"`},
		{"tokens", "GET", "/v1/tokens", h, apiKey, nil, "", 200, `"bots"`},
		{"bots without key", "GET", "/v1/bots", h, "-", nil, "", 401, "unauthorized"},
		{"tokens with a wrong key", "GET", "/v1/tokens", h, "not-the-key", nil, "", 401, "unauthorized"},
		{"events without key", "GET", "/v1/bots/hr/events", h, "-", nil, "", 401, "unauthorized"},
		{"events of no bot", "GET", "/v1/bots/nobody/events", h, apiKey, nil, "", 404, "not_found"},
		{"events with a bad Last-Event-ID", "GET", "/v1/bots/hr/events", h, apiKey, []string{"Last-Event-ID", "abc"}, "", 400, "invalid_request"},
		{"wecom url check", "GET", "/webhook/hr?" + verify.Encode(), h, "-", nil, "", 200, "echo-4711"},
		{"wecom url check forged", "GET", "/webhook/hr?" + forged.Encode(), h, "-", nil, "", 401, ""},
		{"wecom url check without echostr", "GET", "/webhook/hr", h, "-", nil, "", 400, ""},
		{"url check of no bot", "GET", "/webhook/nobody?" + verify.Encode(), h, "-", nil, "", 404, ""},
		{"a method the server lacks", "PUT", "/webhook/hr", h, "-", nil, "x", 405, ""},
		{"a path the server lacks", "GET", "/v2/bots", h, apiKey, nil, "", 404, ""},
		{"keyless: bots", "GET", "/v1/bots", open, "-", nil, "", 200, `"hr"`},
		{"keyless: send", "POST", "/v1/bots/hr/messages", open, "-", []string{"Content-Type", "application/json"}, send, 200, `"platform":"wecom"`},
		{"keyless: a key is accepted too", "GET", "/v1/tokens", open, apiKey, nil, "", 200, `"bots"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var body io.Reader
			if tc.body != "" {
				body = strings.NewReader(tc.body)
			}
			req, _ := http.NewRequest(tc.method, "http://"+tc.host.addr+tc.path, body)
			if tc.key != "-" {
				req.Header.Set("Authorization", "Bearer "+tc.key)
			}
			for i := 0; i+1 < len(tc.header); i += 2 {
				req.Header.Set(tc.header[i], tc.header[i+1])
			}
			resp, err := http.DefaultClient.Do(req) // validated against api/openapi.yaml
			if err != nil {
				t.Fatal(err)
			}
			out, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.status || !strings.Contains(string(out), tc.contains) {
				t.Errorf("%s %s: %d %q; want %d with %q", tc.method, tc.path, resp.StatusCode, out, tc.status, tc.contains)
			}
		})
	}
}
