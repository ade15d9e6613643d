package api_test

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"

	"github.com/seed-a64d9e1f/chatwire/api"
)

// TestOpenAPIDocumentValid loads api/openapi.yaml with kin-openapi's loader and validates it
// as an OpenAPI 3.1 document; it must name every route adapter-host serves (server.go's
// routes), and every /v1 error response must be the Error schema.
func TestOpenAPIDocumentValid(t *testing.T) {
	loader := openapi3.NewLoader()
	doc, err := loader.LoadFromData(api.OpenAPI)
	if err != nil {
		t.Fatalf("loading api/openapi.yaml: %v", err)
	}
	if err := doc.Validate(context.Background()); err != nil {
		t.Fatalf("api/openapi.yaml is not a valid OpenAPI document: %v", err)
	}
	if !doc.IsOpenAPI31OrLater() || doc.OpenAPI != "3.1.0" {
		t.Errorf("openapi: %q; want 3.1.0", doc.OpenAPI)
	}
	var got []string
	for path, item := range doc.Paths.Map() {
		for method := range item.Operations() {
			got = append(got, method+" "+path)
		}
	}
	slices.Sort(got)
	// The routes adapter-host registers, read from its source, so a new route without a
	// document entry (or the reverse) fails here.
	want := serverRoutes(t)
	if !slices.Equal(got, want) {
		t.Errorf("operations in api/openapi.yaml:\n%s\nwant (server.go's routes):\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	errSchema := doc.Components.Schemas["Error"]
	if errSchema == nil {
		t.Fatal("no Error schema")
	}
	for path, item := range doc.Paths.Map() {
		if !strings.HasPrefix(path, "/v1/") {
			continue
		}
		for method, op := range item.Operations() {
			for code, ref := range op.Responses.Map() {
				if code[0] != '4' && code[0] != '5' {
					continue
				}
				mt := ref.Value.Content.Get("application/json")
				if mt == nil || mt.Schema == nil || mt.Schema.Value != errSchema.Value {
					t.Errorf("%s %s %s: not the Error schema as application/json", method, path, code)
				}
				if rh := ref.Value.Headers["Retry-After"]; (code == "429" || code == "503") && (rh == nil || !rh.Value.Required) {
					t.Errorf("%s %s %s: Retry-After not declared as required", method, path, code)
				}
			}
			for _, code := range []string{"401", "403", "429", "503"} {
				if op.Responses.Status(atoi(code)) == nil {
					t.Errorf("%s %s: no %s response", method, path, code)
				}
			}
		}
	}
}

func atoi(s string) int {
	n := 0
	for _, c := range s {
		n = n*10 + int(c-'0')
	}
	return n
}

// serverRoutes returns the "METHOD /path" patterns internal/host registers on its server's
// mux (named mux; the emulators of `adapter-host emulate` are in internal/demo).
func serverRoutes(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join("..", "internal", "host", "*.go"))
	if err != nil || len(files) == 0 {
		t.Fatalf("internal/host sources: %v", err)
	}
	re := regexp.MustCompile(`\bmux\.Handle(?:Func)?\("([A-Z]+ /[^"]*)"`)
	var routes []string
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range re.FindAllSubmatch(b, -1) {
			routes = append(routes, string(m[1]))
		}
	}
	if len(routes) == 0 {
		t.Fatal("found no mux.Handle routes in internal/host: the pattern is out of date")
	}
	slices.Sort(routes)
	return routes
}
