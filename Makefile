# Tollgate: the two commands a newcomer needs are `make run` and `make test`.
GO        ?= go
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT    ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
LDFLAGS   := -s -w -X main.version=$(VERSION) -X main.commit=$(COMMIT)
IMAGE     ?= tollgate:$(VERSION)

.PHONY: build run test check vet unit fuzz-short image kind-up kind-down e2e-kind soak bench-authz oidc-deps
build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/tollgate ./cmd/tollgate

# The binary itself, not `go run`: Ctrl-C then ends with the binary's own
# clean exit ("Tollgate stopped."), and make passes the interrupt on.
run: build
	@exec ./bin/tollgate up

# Every test (about 15 minutes on 2 cores; see the README), the fuzz
# targets' short runs first, so the last thing printed is the summary of
# the tests: packages, passed, failed, skipped (with why), and the time.
test: vet fuzz-short unit

# A quick inner loop for developers: vet, then the tests of the parts
# without the race detector, the end-to-end suites and the chart checks.
check: vet
	$(GO) test -count=1 $$($(GO) list ./... | grep -v -e /e2e/ -e /deploy/)

vet:
	$(GO) vet ./...

GOTESTSUM = bin/gotestsum
$(GOTESTSUM): tools/gotestsum/go.mod
	$(GO) build -C tools/gotestsum -o $(CURDIR)/$(GOTESTSUM) gotest.tools/gotestsum

# Modules of their own whose tests run with the main module's. e2e/cluster
# builds the pinned control plane on its first run (about 18 minutes on 2
# busy cores; cached by version after that), hence the long timeout.
TEST_MODULES = e2e/kind e2e/compose e2e/cluster

unit: $(GOTESTSUM) oidc-deps
	$(GOTESTSUM) --format pkgname-and-test-fails --format-hide-empty-pkg --raw-command -- sh -c '\
	  s=0; $(GO) test -json -race -count=1 -timeout 12m ./... || s=1; \
	  for m in $(TEST_MODULES); do (cd $$m && $(GO) test -json -count=1 -timeout 55m ./...) || s=1; done; exit $$s'

# The npm client tests' packages (openid-client, dpop), pinned by
# e2e/oidc/package-lock.json and installed again when it is newer than
# the installed tree; without npm the tests skip (and fail under
# TOLLGATE_REQUIRE_ALL=1).
oidc-deps:
	@if [ e2e/oidc/package-lock.json -nt e2e/oidc/node_modules/.package-lock.json ] && command -v npm >/dev/null 2>&1; then cd e2e/oidc && npm ci --no-audit --no-fund; fi

# Short runs of every fuzz target. The seeds that found bugs live in each
# package's testdata/fuzz and also run as plain tests in `unit`. Budgets
# are execution counts, not durations: Go 1.26's fuzz coordinator can fail
# a duration-bounded run with "context deadline exceeded" on a loaded
# machine (golang/go#75804). `make fuzz-long FUZZTIME=5m` fuzzes longer.
FUZZTIME ?= 20000x
FUZZ = $(GO) test -run '^$$' -fuzztime $(FUZZTIME) -fuzz
.PHONY: fuzz-long
fuzz-long: fuzz-short
fuzz-short:
	$(FUZZ) '^FuzzDecodeRegister$$' ./issuer/
	$(FUZZ) '^FuzzClientAddr$$' ./issuer/
	$(FUZZ) '^FuzzDecodeBook$$' ./books/
	$(FUZZ) '^FuzzLoadConfig$$' -fuzzminimizetime 5s ./envoy/gateway/
	$(FUZZ) '^FuzzNormalizePath$$' ./envoy/gateway/
	$(FUZZ) '^FuzzCheck$$' ./authz/
	$(FUZZ) '^FuzzKeySet$$' ./authz/
	$(FUZZ) '^FuzzVerify$$' ./internal/dpop/
	$(FUZZ) '^FuzzNormalizeURL$$' ./internal/dpop/

image:
	docker build -t $(IMAGE) --build-arg VERSION=$(VERSION) --build-arg COMMIT=$(COMMIT) .

# A local kind cluster with the chart installed and the tutorial smoke-tested.
kind-up:
	k8s/kind.sh up
kind-down:
	k8s/kind.sh down

# The end-to-end test against real Envoy in a kind cluster (needs Docker).
e2e-kind:
	cd e2e/kind && $(GO) test -tags kind -count=1 -timeout 30m -v ./...

# authz under ghz beside a no-op Check server: checks/s, p50/p99/p99.9 and
# their ratios. BENCH_ARGS='-runs 5 -duration 20s' for longer runs.
bench-authz:
	./e2e/authzbench/run.sh $(BENCH_ARGS)

# The resilience scenarios' long forms (about 7 minutes on 2 cores; the
# short forms run in `unit`), then the Reliability table.
soak:
	@mkdir -p bin
	TOLLGATE_SOAK=1 TOLLGATE_SOAK_REPORT=$(CURDIR)/bin/soak-report.md $(GO) test -count=1 -timeout 30m ./e2e/resilience/
	@cat bin/soak-report.md
