# Piped. `make test` runs every test (it is what CI runs); `make demo` runs a
# local node with the example echo backend.

GO       ?= go
BIN      ?= bin
# How every Piped binary is built, in this one place: bin/ (make build), the
# container image (the Dockerfile runs make build) and the node the
# integration tests run (test/harness runs make build-piped). Static
# (no cgo: the image has no libc) and without build paths.
CGO_ENABLED    := 0
GO_BUILD_FLAGS := -trimpath
GO_LDFLAGS     := -s -w
GO_BUILD        = CGO_ENABLED=$(CGO_ENABLED) $(GO) build $(GO_BUILD_FLAGS) -ldflags='$(GO_LDFLAGS)'
# A count of executions, not a duration: with a duration, Go 1.26's fuzz
# coordinator can fail a target with a bare "context deadline exceeded" when
# the deadline hits a starved worker (go.dev/issue/75804, fixed in Go 1.27).
# 400000 executions take 10-40 s per target on 2 cores.
FUZZTIME ?= 400000x
# Tests that stop or block the whole broker: they run after everything else,
# one package at a time.
FAULTS_DIR  := test/faults
FAULTS_TAGS := faults
# package:target pairs.
FUZZ_TARGETS := ./internal/wsframe:FuzzParseHeader ./protocol:FuzzParseFrame ./protocol:FuzzParseInbound ./protocol:FuzzParseControl ./protocol:FuzzCanonicalID

# The steps of `test` must run in order, even under make -j.
.NOTPARALLEL:

.PHONY: all build build-piped build-echo-backend demo test npm lint fmt-check vet unit tracing faults cluster federation fuzz bench bench-quick bench-capacity bench-go build-bench rabbitmq jaeger clean

all: build

build: build-piped build-echo-backend

build-piped:
	$(GO_BUILD) -o $(BIN)/piped .

build-echo-backend:
	$(GO_BUILD) -o $(BIN)/echo-backend ./examples/echo-backend

demo:
	./scripts/demo.sh

# Every test: broker, Jaeger binary (for test/tracing), npm packages (for the
# Node.js backend and the browser test), lint, unit and integration tests with
# -race, then the fault tests alone, then the cluster tests (three brokers
# of their own), then the federation tests (two brokers of their own), then
# a bounded fuzz run of each fuzz target.
test: rabbitmq jaeger npm lint unit tracing faults cluster federation fuzz

rabbitmq:
	./scripts/ensure-rabbitmq.sh

# bin/jaeger, which test/tracing runs; built once (about 5 minutes with a cold
# module cache), again only when tools/jaeger/go.mod changes.
jaeger:
	./scripts/jaeger.sh build

# The npm packages the tests run, exactly as each package-lock.json pins them
# (amqplib for examples/node-backend, playwright-core for client/test), when
# node_modules is missing. playwright-core uses Debian's /usr/bin/chromium.
NPM_DIRS := examples/node-backend client/test
npm:
	@set -e; for d in $(NPM_DIRS); do \
		if [ ! -d $$d/node_modules ]; then echo "npm ci --prefix $$d"; npm ci --prefix $$d --no-audit --no-fund; fi; \
	done

lint: fmt-check vet

fmt-check:
	@files="$$(gofmt -l .)"; \
	if [ -n "$$files" ]; then \
		echo "gofmt: these files need formatting (run gofmt -w):"; echo "$$files"; exit 1; \
	fi; \
	echo "gofmt: ok"

vet:
	$(GO) vet ./...

# The allocation tests skip under -race (it adds allocations), so they run
# once more without it.
unit:
	$(GO) test -count=1 -race $$($(GO) list ./... | grep -v /test/tracing)
	$(GO) test -count=1 -run 'Allocs' ./protocol/ ./routing/

# The end-to-end tracing test, against bin/jaeger (the jaeger target).
tracing:
	$(GO) test -count=1 -race ./test/tracing/

faults:
	@if [ -d "$(FAULTS_DIR)" ]; then \
		echo "$(GO) test -count=1 -p 1 -tags $(FAULTS_TAGS) ./$(FAULTS_DIR)/..."; \
		$(GO) test -count=1 -p 1 -tags $(FAULTS_TAGS) ./$(FAULTS_DIR)/...; \
	else \
		echo "faults: $(FAULTS_DIR) does not exist; skipping the fault tests"; \
	fi

# Piped on a three-node RabbitMQ cluster that the tests start on free ports
# and remove (test/cluster): spread over the brokers, failover under traffic.
cluster:
	$(GO) test -count=1 -p 1 -tags cluster ./test/cluster/

# Two regions: two RabbitMQ nodes of the tests' own (internal/rabbitnode,
# rabbitmq_federation) with exchange-mass federated both ways, and Piped
# nodes in each; about 30 s.
federation:
	$(GO) test -count=1 -p 1 -tags federation ./test/federation/

fuzz:
	@set -e; for pair in $(FUZZ_TARGETS); do \
		pkg=$${pair%%:*}; target=$${pair#*:}; \
		echo "$(GO) test -run='^\$$' -fuzz='^$$target\$$' -fuzztime=$(FUZZTIME) $$pkg"; \
		$(GO) test -run='^$$' -fuzz="^$$target\$$" -fuzztime=$(FUZZTIME) $$pkg; \
	done

# The benchmark harness (cmd/piped-bench, docs/benchmarks.md): a node and
# the echo backend as processes against a RabbitMQ node of its own (the
# local broker when it cannot start one), about 3 minutes
# on 2 cores; prints one markdown table and writes docs/benchmarks.json and
# docs/benchmarks.svg. BENCH_FLAGS passes flags, e.g. BENCH_FLAGS='-only rpc,idle'.
BENCH_FLAGS ?=
bench: build build-bench rabbitmq
	$(BIN)/piped-bench -own-broker -piped $(BIN)/piped -echo-backend $(BIN)/echo-backend $(BENCH_FLAGS)

# About a minute, written to $(BIN)/bench-quick rather than docs/.
bench-quick: build build-bench rabbitmq
	$(BIN)/piped-bench -own-broker -quick -piped $(BIN)/piped -echo-backend $(BIN)/echo-backend -out $(BIN)/bench-quick $(BENCH_FLAGS)

# The capacity inputs (docs/benchmarks.md "Capacity inputs"): fanout beside
# fanout-filter, binding churn, and rpc across a 3-node RabbitMQ cluster the
# harness starts and removes (root); about 7 minutes on 2 cores. Written to
# $(CAPACITY_OUT), so that the standard run in docs/ stays.
CAPACITY_OUT ?= docs/capacity
bench-capacity: build build-bench rabbitmq
	$(BIN)/piped-bench -own-broker -only fanout,fanout-filter,churn,cluster-rpc -piped $(BIN)/piped -echo-backend $(BIN)/echo-backend -out $(CAPACITY_OUT) $(BENCH_FLAGS)

build-bench:
	$(GO_BUILD) -o $(BIN)/piped-bench ./cmd/piped-bench

# The Go benchmarks (testing.B, with allocations) beside the code they measure.
bench-go:
	$(GO) test -run='^$$' -bench=. -benchmem ./...

clean:
	rm -rf $(BIN)
