# Tollgate: the two commands a newcomer needs are `make run` and `make test`.
GO        ?= go
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT    ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
LDFLAGS   := -s -w -X main.version=$(VERSION) -X main.commit=$(COMMIT)
FUZZTIME  ?= 10s

.PHONY: build run test vet unit fuzz-short
build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/tollgate ./cmd/tollgate

run:
	$(GO) run ./cmd/tollgate up

test: vet unit fuzz-short

vet:
	$(GO) vet ./...

unit:
	$(GO) test -race -count=1 -timeout 12m ./...

# Short runs of every fuzz target; the corpus that found bugs lives in testdata/fuzz.
fuzz-short:
	@echo "fuzz targets: none yet"
