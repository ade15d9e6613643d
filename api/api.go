// Package api holds the host's HTTP API description, api/openapi.yaml (OpenAPI 3.1), embedded
// so tests and tools can load it without knowing where the repository is.
package api

import _ "embed"

// OpenAPI is the text of openapi.yaml: every route `adapter-host run` serves, its parameters,
// bodies, status codes and headers. integration/ validates every exchange it makes against it.
//
//go:embed openapi.yaml
var OpenAPI []byte
