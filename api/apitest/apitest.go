// Package apitest checks HTTP exchanges with adapter-host against api/openapi.yaml, with
// kin-openapi's openapi3filter. Tests wrap their HTTP client's transport in a [Transport], so
// every request they make and every response they get is validated: the document cannot
// drift from the server without a test failing.
package apitest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net/http"
	"slices"
	"strings"
	"sync"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/legacy"

	"github.com/seed-a64d9e1f/chatwire/api"
)

// Load parses api/openapi.yaml and validates it as an OpenAPI document.
func Load() (*openapi3.T, error) {
	loader := openapi3.NewLoader()
	doc, err := loader.LoadFromData(api.OpenAPI)
	if err != nil {
		return nil, fmt.Errorf("api/openapi.yaml: %w", err)
	}
	if err := doc.Validate(loader.Context); err != nil {
		return nil, fmt.Errorf("api/openapi.yaml is not a valid OpenAPI document: %w", err)
	}
	return doc, nil
}

// Validator checks exchanges against the document. It is safe for concurrent use.
type Validator struct {
	doc    *openapi3.T
	router routers.Router
}

// NDJSON is the content type of a streamed send's body.
const NDJSON = "application/x-ndjson"

var registerNDJSON sync.Once

// decodeNDJSON decodes a streamed send's body for openapi3filter (which knows no NDJSON):
// every non-empty line must be a JSON object; the body is the string the document declares.
func decodeNDJSON(body io.Reader, _ http.Header, _ *openapi3.SchemaRef, _ openapi3filter.EncodingFn) (any, error) {
	data, err := io.ReadAll(body)
	if err != nil {
		return nil, err
	}
	for i, line := range strings.Split(string(data), "\n") {
		if line = strings.TrimSpace(line); line == "" {
			continue
		}
		var obj map[string]any
		if err := json.Unmarshal([]byte(line), &obj); err != nil {
			return nil, fmt.Errorf("NDJSON line %d is not a JSON object: %v", i+1, err)
		}
	}
	return string(data), nil
}

// New returns a Validator for api/openapi.yaml.
func New() (*Validator, error) {
	registerNDJSON.Do(func() { openapi3filter.RegisterBodyDecoder(NDJSON, decodeNDJSON) })
	doc, err := Load()
	if err != nil {
		return nil, err
	}
	// Routes match by path and method only: tests run hosts on any loopback port, not on the
	// document's example server.
	doc.Servers = nil
	r, err := legacy.NewRouter(doc)
	if err != nil {
		return nil, err
	}
	return &Validator{doc: doc, router: r}, nil
}

// Check validates one exchange: req (whose body was reqBody) and the response to it (whose
// body was respBody; ignored for a text/event-stream, whose status and headers are still
// checked). It returns nil if both match the document, and otherwise an error saying what
// differs. A request the document does not allow must be refused with a 4xx (which must
// itself match the document); a route the document does not name must be unknown to the
// server too (404 or 405).
func (v *Validator) Check(req *http.Request, reqBody []byte, resp *http.Response, respBody []byte) error {
	what := req.Method + " " + req.URL.Path
	route, params, err := v.router.FindRoute(req)
	if err != nil {
		if resp.StatusCode == http.StatusNotFound || resp.StatusCode == http.StatusMethodNotAllowed {
			return nil
		}
		return fmt.Errorf("%s is not in api/openapi.yaml (%v), yet the server answered %d", what, err, resp.StatusCode)
	}
	ctx := context.Background()
	r := req.Clone(ctx)
	r.Body = io.NopCloser(bytes.NewReader(reqBody))
	in := &openapi3filter.RequestValidationInput{
		Request:    r,
		PathParams: params,
		Route:      route,
		Options: &openapi3filter.Options{
			AuthenticationFunc: bearerPresent,
			MultiError:         true,
		},
	}
	reqErr := openapi3filter.ValidateRequest(ctx, in)
	if reqErr != nil && (resp.StatusCode < 400 || resp.StatusCode > 499) {
		return fmt.Errorf("%s: the request does not match api/openapi.yaml, yet the server answered %d (the document is stricter than the server): %v",
			what, resp.StatusCode, reqErr)
	}
	ct := resp.Header.Get("Content-Type")
	stream := isEventStream(ct)
	out := &openapi3filter.ResponseValidationInput{
		RequestValidationInput: in,
		Status:                 resp.StatusCode,
		Header:                 resp.Header,
		Body:                   io.NopCloser(bytes.NewReader(respBody)),
		Options: &openapi3filter.Options{
			IncludeResponseStatus: true,
			MultiError:            true,
			ExcludeResponseBody:   stream,
		},
	}
	if err := openapi3filter.ValidateResponse(ctx, out); err != nil {
		return fmt.Errorf("%s: response %d does not match api/openapi.yaml: %v", what, resp.StatusCode, err)
	}
	if stream {
		// The body is not read, so openapi3filter did not compare the content type.
		ref := route.Operation.Responses.Status(resp.StatusCode)
		if ref == nil || ref.Value == nil || ref.Value.Content.Get(ct) == nil {
			return fmt.Errorf("%s: response %d is a %s, which api/openapi.yaml does not declare for it", what, resp.StatusCode, ct)
		}
	}
	return nil
}

// Operation names the document's operation req is for ("POST /v1/bots/{bot}/messages"), or
// returns "" if the document has none.
func (v *Validator) Operation(req *http.Request) string {
	route, _, err := v.router.FindRoute(req)
	if err != nil {
		return ""
	}
	return route.Method + " " + route.Path
}

// Responses lists every operation and response status the document declares, as
// "GET /healthz 200".
func (v *Validator) Responses() []string {
	var out []string
	for path, item := range v.doc.Paths.Map() {
		for method, op := range item.Operations() {
			for code := range op.Responses.Map() {
				out = append(out, method+" "+path+" "+code)
			}
		}
	}
	slices.Sort(out)
	return out
}

// bearerPresent checks the form of the credentials a security scheme asks for: an HTTP bearer
// scheme needs "Authorization: Bearer <something>". Whether the key is right is the server's
// business (a wrong one gets 401, which the document declares).
func bearerPresent(_ context.Context, in *openapi3filter.AuthenticationInput) error {
	s := in.SecurityScheme
	if s == nil || s.Type != "http" || !strings.EqualFold(s.Scheme, "bearer") {
		return in.NewError(fmt.Errorf("security scheme %q: only http bearer is supported here", in.SecuritySchemeName))
	}
	scheme, cred, ok := strings.Cut(in.RequestValidationInput.Request.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(cred) == "" {
		return in.NewError(fmt.Errorf("no Authorization: Bearer <key> header"))
	}
	return nil
}

func isEventStream(ct string) bool {
	mt, _, err := mime.ParseMediaType(ct)
	return err == nil && mt == "text/event-stream"
}

// Transport is an http.RoundTripper that validates the exchanges it carries with a
// [Validator] and reports every mismatch. Bodies are read in full (they are handed on
// unchanged); a text/event-stream response body is passed through unread.
type Transport struct {
	Next      http.RoundTripper // nil means http.DefaultTransport (as it was when first used)
	Validator *Validator
	// Match selects the requests to validate (those to an adapter-host); nil means all.
	Match func(*http.Request) bool
	// Report receives each mismatch.
	Report func(req *http.Request, err error)
	// Observe, if set, receives every validated exchange (for coverage of the document).
	Observe func(req *http.Request, resp *http.Response)
}

// RoundTrip implements http.RoundTripper.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	next := t.Next
	if next == nil {
		next = http.DefaultTransport
	}
	if t.Match != nil && !t.Match(req) {
		return next.RoundTrip(req)
	}
	var reqBody []byte
	var streamed *recorder
	if req.Body != nil && req.Body != http.NoBody && isNDJSON(req.Header.Get("Content-Type")) {
		// A streamed send goes out as it is written (the server acts on each line as it
		// arrives); the body is recorded for validation. The server answers once it has read
		// the whole body, or early with an error, so the record is complete or the part the
		// answer is about.
		streamed = &recorder{r: req.Body}
		req = req.Clone(req.Context())
		req.Body = streamed
		req.GetBody = nil
	} else if req.Body != nil && req.Body != http.NoBody {
		var err error
		reqBody, err = io.ReadAll(req.Body)
		req.Body.Close()
		if err != nil {
			return nil, err
		}
		// A RoundTripper must not modify the request: send a copy with the body restored.
		req = req.Clone(req.Context())
		req.Body = io.NopCloser(bytes.NewReader(reqBody))
		req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(reqBody)), nil }
		req.ContentLength = int64(len(reqBody))
	}
	resp, err := next.RoundTrip(req)
	if err != nil {
		return resp, err
	}
	var respBody []byte
	if !isEventStream(resp.Header.Get("Content-Type")) {
		respBody, err = io.ReadAll(resp.Body)
		resp.Body.Close()
		resp.Body = io.NopCloser(bytes.NewReader(respBody))
		if err != nil {
			// The caller sees the same failure when it reads the body; nothing to validate.
			resp.Body = io.NopCloser(io.MultiReader(bytes.NewReader(respBody), errReader{err}))
			return resp, nil
		}
	}
	if streamed != nil {
		reqBody = streamed.bytes()
	}
	if verr := t.Validator.Check(req, reqBody, resp, respBody); verr != nil && t.Report != nil {
		t.Report(req, verr)
	}
	if t.Observe != nil {
		t.Observe(req, resp)
	}
	return resp, nil
}

func isNDJSON(ct string) bool {
	mt, _, _ := mime.ParseMediaType(ct)
	return mt == NDJSON
}

// recorder is a request body that keeps a copy of what was read from it.
type recorder struct {
	r   io.ReadCloser
	mu  sync.Mutex
	buf bytes.Buffer
}

func (r *recorder) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	r.mu.Lock()
	r.buf.Write(p[:n])
	r.mu.Unlock()
	return n, err
}

func (r *recorder) Close() error { return r.r.Close() }

func (r *recorder) bytes() []byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return bytes.Clone(r.buf.Bytes())
}

type errReader struct{ err error }

func (r errReader) Read([]byte) (int, error) { return 0, r.err }

// CheckDelivery validates an event delivery the host POSTed to a bot's deliver.webhook_url
// (the document's "event" webhook): its headers and its body, the Event JSON.
func (v *Validator) CheckDelivery(req *http.Request, body []byte) error {
	item := v.doc.Webhooks["event"]
	if item == nil || item.Post == nil {
		return fmt.Errorf("api/openapi.yaml declares no event webhook")
	}
	ctx := context.Background()
	r := req.Clone(ctx)
	r.Body = io.NopCloser(bytes.NewReader(body))
	in := &openapi3filter.RequestValidationInput{
		Request: r,
		Route:   &routers.Route{Spec: v.doc, Path: req.URL.Path, PathItem: item, Method: http.MethodPost, Operation: item.Post},
		Options: &openapi3filter.Options{AuthenticationFunc: openapi3filter.NoopAuthenticationFunc, MultiError: true},
	}
	if err := openapi3filter.ValidateRequest(ctx, in); err != nil {
		return fmt.Errorf("event delivery does not match api/openapi.yaml's event webhook: %v", err)
	}
	return nil
}

// CheckEvent validates one event's JSON (an SSE data: field) against the Event schema.
func (v *Validator) CheckEvent(data []byte) error {
	s := v.doc.Components.Schemas["Event"]
	if s == nil || s.Value == nil {
		return fmt.Errorf("api/openapi.yaml has no Event schema")
	}
	var ev any
	if err := json.Unmarshal(data, &ev); err != nil {
		return fmt.Errorf("event data is not JSON: %v", err)
	}
	if err := s.Value.VisitJSON(ev, openapi3.EnableJSONSchema2020(), openapi3.MultiErrors()); err != nil {
		return fmt.Errorf("event does not match api/openapi.yaml's Event schema: %v", err)
	}
	return nil
}
