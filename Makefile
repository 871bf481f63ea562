# Spool: build, test, lint, run. `make test` is the one command that runs every test.
GO        ?= go
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT    ?= $(shell git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
LDFLAGS   := -s -w -X main.version=$(VERSION) -X main.commit=$(COMMIT)
# grpcnotrace: gRPC (linked by the OTLP trace exporters) leaves out its
# golang.org/x/net/trace debug pages, whose html/template costs 3 MB of the
# binary; Spool never serves them. The Dockerfile builds with the same tag.
TAGS      := grpcnotrace
STATICCHECK_VERSION ?= v0.8.2

.PHONY: build test test-docker test-short lint run clean

build: ## the static binary in bin/spool
	CGO_ENABLED=0 $(GO) build -trimpath -tags '$(TAGS)' -ldflags '$(LDFLAGS)' -o bin/spool ./cmd/spool

test: ## every test: unit, both stores (real PostgreSQL started by the tests), end-to-end; the container tests too when a Docker engine answers
	$(GO) vet ./...
	$(GO) test -count=1 -timeout 30m ./...
	$(MAKE) test-kubernetes
	$(MAKE) test-manifests
	@if [ "$$SPOOL_TEST_REQUIRE_DOCKER" = 1 ] || docker info >/dev/null 2>&1; then $(MAKE) test-docker; else echo "no Docker engine: skipping make test-docker"; fi

# screenshots: the dashboard's browser tests, writing their screenshots to
# docs/images (docs/dashboard.md shows them).
.PHONY: screenshots
screenshots: ## refresh docs/images from the dashboard's browser tests (needs chromium)
	SPOOL_TEST_REQUIRE_CHROMIUM=1 SPOOL_SCREENSHOTS_DIR=$(CURDIR)/docs/images $(GO) test -count=1 -run . ./test/browser
	rm -f docs/images/failure.png

# test-manifests: the Kubernetes manifests and the Helm chart, rendered and
# checked without a cluster (test/manifests and its render package, modules
# of their own so the main module never pulls in Helm or Kustomize).
.PHONY: test-manifests
test-manifests: ## render every Kustomize overlay and the Helm chart; strict decoding and policy checks
	cd test/manifests/render && $(GO) vet ./... && $(GO) test -count=1 ./...
	cd test/manifests && $(GO) vet ./... && $(GO) test -count=1 -timeout 10m ./...

# test-docker: the image and the Compose stack on the Docker engine (build
# tag docker, so `go test ./...` leaves them out). Skips without an engine;
# SPOOL_TEST_REQUIRE_DOCKER=1 makes that a failure.
test-docker: ## the container image and Compose stack on the local Docker engine
	$(GO) vet -tags docker ./test/docker/
	$(GO) test -tags docker -count=1 -timeout 20m -v ./test/docker/

# test-kubernetes: deploy/'s manifests on a real in-process control plane, in
# the separate module test/kubernetes so k8s.io/kubernetes stays out of the
# main module. Minutes to compile from cold, about three to run. Never built with
# -trimpath: the API server's test certificates are found beside its source.
.PHONY: test-kubernetes
test-kubernetes: ## manifests on an in-process Kubernetes control plane (etcd, apiserver, scheduler, controller-manager, kwok nodes)
	cd test/kubernetes && $(GO) vet ./... && $(GO) test -trimpath=false -count=1 -timeout 20m -v ./...

# soak: the long soak (test/soak): spool serve on SQLite and PostgreSQL under
# a steady mixed load, RSS and goroutines sampled, pruning watched. `go test
# ./...` runs the same test for 2 minutes; SPOOL_SOAK_DURATION overrides.
.PHONY: soak
soak: ## 10-minute soak on both stores: memory and goroutines flat, pruning keeps the table bounded
	SPOOL_SOAK_DURATION=$${SPOOL_SOAK_DURATION:-10m} $(GO) test -count=1 -v -run TestSoak -timeout 30m ./test/soak

test-short: ## the fast tests only
	$(GO) test -count=1 -short ./...

lint: ## go vet + staticcheck
	$(GO) vet ./...
	$(GO) run honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION) ./...

.PHONY: lint-workflows
lint-workflows: ## actionlint (with shellcheck) on .github/workflows, shellcheck on .ci/run and scripts/
	./scripts/lint-workflows.sh

# run: Spool on the embedded SQLite store in ./data, on loopback (no API key
# needed there), with a `spool sink` receiver on 127.0.0.1:8081 to deliver to.
run: build
	@echo "spool API on http://127.0.0.1:8000, sink on http://127.0.0.1:8081 (Ctrl-C stops both)"
	@./bin/spool sink --addr 127.0.0.1:8081 & sink=$$!; trap 'kill $$sink 2>/dev/null' EXIT; \
	SPOOL_HTTP_ADDR=127.0.0.1:8000 SPOOL_ADMIN_ADDR=127.0.0.1:9090 SPOOL_ALLOWED_TARGET_CIDRS=127.0.0.0/8 \
	SPOOL_DRAIN_DELAY=0s ./bin/spool serve

clean:
	rm -rf bin
