package integration

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

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
