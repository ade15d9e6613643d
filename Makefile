# chatwire build and test targets. `make test` is what CI runs (.ci/run).
GO        ?= go
RACE      ?= -race
# Packages benchmarked by `make bench`; BENCH selects benchmarks, COUNT repeats them for medians.
BENCH     ?= .
COUNT     ?= 5

.PHONY: all test deps vet rules unit conformance bench bench-host bench-smoke fmt build

all: test

# build writes bin/adapter-host with its version and revision from git set by -ldflags, for
# checkouts Go does not stamp itself (git worktrees, GOFLAGS=-buildvcs=false).
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null)
REVISION ?= $(shell git rev-parse HEAD 2>/dev/null)
build:
	$(GO) build -ldflags "-X main.version=$(VERSION) -X main.revision=$(REVISION)" -o bin/adapter-host ./cmd/adapter-host

# deps makes sure the external programs the tests start (redis-server, python3, node and npm for the conformance
# oracles, promtool from Debian's prometheus package for the alerting rules) are installed. As root it installs them
# from Debian's packages; otherwise it fails and says what to install. Never a silent skip. Then it installs the npm
# packages conformance/ drives, exactly as locked in conformance/node{,-sse}/package-lock.json (npm ci; again only
# when a lockfile changed).
deps:
	@missing=; \
	command -v redis-server >/dev/null 2>&1 || missing="$$missing redis-server"; \
	command -v python3 >/dev/null 2>&1 || missing="$$missing python3"; \
	command -v node >/dev/null 2>&1 || missing="$$missing nodejs"; \
	command -v npm >/dev/null 2>&1 || missing="$$missing npm"; \
	command -v promtool >/dev/null 2>&1 || missing="$$missing prometheus"; \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
			echo "make: installing$$missing from Debian packages"; \
			apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing || exit 1; \
		else \
			echo "make: missing:$$missing (redis-server for the Redis tests, python3 for the Python example bot's test," \
				"nodejs and npm for the conformance oracles, prometheus for promtool):" \
				"install it (Debian: sudo apt-get install$$missing) and run make test again" >&2; \
			exit 1; \
		fi; \
	fi
	@command -v redis-server >/dev/null 2>&1 || { echo "make: redis-server still missing after install" >&2; exit 1; }
	@redis-server --version
	@command -v python3 >/dev/null 2>&1 || { echo "make: python3 still missing after install" >&2; exit 1; }
	@python3 --version
	@command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 || { echo "make: node or npm still missing after install" >&2; exit 1; }
	@echo "node $$(node --version), npm $$(npm --version)"
	@for d in conformance/node conformance/node-sse; do \
		if [ ! -f $$d/node_modules/.package-lock.json ] || [ $$d/package-lock.json -nt $$d/node_modules/.package-lock.json ]; then \
			echo "make: npm ci in $$d"; \
			(cd $$d && npm ci --no-audit --no-fund) || exit 1; \
		fi; \
	done
	@command -v promtool >/dev/null 2>&1 || { echo "make: promtool still missing after install (Debian package prometheus)" >&2; exit 1; }
	@promtool --version | head -1

# rules checks the shipped Prometheus alerting rules and runs their unit tests.
rules:
	promtool check rules deploy/prometheus/alerts.yaml
	cd deploy/prometheus && promtool test rules alerts_test.yaml

vet:
	$(GO) vet ./...
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
		if [ -n "$$out" ]; then echo "gofmt needed:" $$out >&2; exit 1; fi

unit:
	$(GO) test $(RACE) -count=1 ./...

# conformance pits the adapters and emulators against outside code and published payloads (conformance/, its own Go
# module so vendor test dependencies stay out of go.mod; README "Proven against"). Needs `make deps` (node, npm ci).
conformance:
	cd conformance && $(GO) vet ./...
	cd conformance && $(GO) test $(RACE) -count=1 ./...

test: deps vet rules unit conformance

# bench runs every benchmark (ours and the anchors they are compared with) in one run, COUNT
# times, so medians can be read with benchstat (BenchmarkHostMemory in ./bench/load among them:
# RSS per configured WeCom bot of a real host with 1,000 bots); then the refresh-stream
# comparison once (it runs 100 one-second token lifetimes per contender: about 6 minutes); then
# bench-smoke. The host as a whole against the least code that does the same work is
# `make bench-host` (below), run separately: it loads the machine for minutes.
# Never part of `make test`.
bench:
	GOMAXPROCS=2 $(GO) test -run='^$$' -bench='$(BENCH)' -skip='RefreshStream' -benchmem -count=$(COUNT) ./... | tee bench.txt
	GOMAXPROCS=2 $(GO) test -run='^$$' -bench='RefreshStream' -benchtime=1x -timeout=30m ./tokenmgr | tee -a bench.txt
	$(MAKE) bench-smoke

# bench-host measures adapter-host (with its plugin subprocess and Redis) against bench/baseline
# (net/http, stdlib crypto, encoding/xml, one Redis round trip per event, SSE on XREAD BLOCK, one
# POST per send) in one run: webhook → SSE latency at 500/1000/2000 events/s offered open loop,
# lost/duplicated events, CPU per event and peak RSS per process, sends sequential and with 8
# callers, RSS per bot with 1,000 bots; Markdown tables with the ratio (issue 18). It starts
# redis-server, the WeCom emulator and both servers on 127.0.0.1 and stops by itself (about
# 2 minutes). Flags: BENCH_HOST_FLAGS="--cpuprofile prof --duration 20s" (go run ./bench/load --help).
BENCH_HOST_FLAGS ?=
bench-host:
	$(GO) run ./bench/load $(BENCH_HOST_FLAGS) >bench-host.md; status=$$?; cat bench-host.md; exit $$status

# bench-smoke checks that bench/load works (a short low-rate run of the whole tool, about 20 s:
# nothing lost or doubled, numbers present; no timing asserted). Behind -tags bench because it
# builds and starts real processes, too slow for `go test ./...`.
bench-smoke:
	$(GO) test -tags bench -count=1 -run TestSmoke ./bench/load

fmt:
	gofmt -w $$(git ls-files '*.go')

# proto regenerates plugin/proto from adapter.proto with Debian's protoc (apt-get install
# protobuf-compiler; it pulls libprotobuf-dev for the well-known types) and pinned generators
# installed into ./bin. The generated code is committed; CI can run `make proto` then
# `git diff --exit-code`.
PROTOC_GEN_GO_VERSION      ?= v1.36.12
PROTOC_GEN_GO_GRPC_VERSION ?= v1.6.2
PROTO_BIN                  := $(CURDIR)/bin

.PHONY: proto
proto:
	@command -v protoc >/dev/null 2>&1 || { echo "make: protoc is missing: apt-get install protobuf-compiler" >&2; exit 1; }
	GOBIN=$(PROTO_BIN) $(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)
	GOBIN=$(PROTO_BIN) $(GO) install google.golang.org/grpc/cmd/protoc-gen-go-grpc@$(PROTOC_GEN_GO_GRPC_VERSION)
	PATH=$(PROTO_BIN):$$PATH protoc -I plugin/proto -I /usr/include \
		--go_out=plugin/proto --go_opt=paths=source_relative \
		--go-grpc_out=plugin/proto --go-grpc_opt=paths=source_relative \
		plugin/proto/adapter.proto

# demo runs the end-to-end demo: emulated WeCom and Graph, a real plugin subprocess, an echo
# bot on the HTTP API; no credentials, no network. It ends by itself.
.PHONY: demo
demo:
	$(GO) run ./cmd/adapter-host demo
