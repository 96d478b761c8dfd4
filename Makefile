# Tollgate: the two commands a newcomer needs are `make run` and `make test`.
GO        ?= go
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT    ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
LDFLAGS   := -s -w -X main.version=$(VERSION) -X main.commit=$(COMMIT)
IMAGE     ?= tollgate:$(VERSION)

.PHONY: build run test vet unit fuzz-short image kind-up kind-down e2e-kind soak bench-authz
build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/tollgate ./cmd/tollgate

run:
	$(GO) run ./cmd/tollgate up

test: vet unit fuzz-short

vet:
	$(GO) vet ./...

unit:
	$(GO) test -race -count=1 -timeout 12m ./...
	cd e2e/kind && $(GO) test -count=1 ./...
	cd e2e/cluster && $(GO) test -count=1 -timeout 55m ./...

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
	$(FUZZ) '^FuzzDecodeBook$$' ./books/
	$(FUZZ) '^FuzzLoadConfig$$' -fuzzminimizetime 5s ./envoy/
	$(FUZZ) '^FuzzNormalizePath$$' ./envoy/
	$(FUZZ) '^FuzzCheck$$' ./authz/
	$(FUZZ) '^FuzzKeySet$$' ./authz/

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
	./authz/bench/run.sh $(BENCH_ARGS)

# The resilience scenarios' long forms (about 7 minutes on 2 cores; the
# short forms run in `unit`), then the Reliability table.
soak:
	@mkdir -p bin
	TOLLGATE_SOAK=1 TOLLGATE_SOAK_REPORT=$(CURDIR)/bin/soak-report.md $(GO) test -count=1 -timeout 30m ./resilience/
	@cat bin/soak-report.md
