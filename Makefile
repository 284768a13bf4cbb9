# l3ha — two commands set up a fresh machine:
#   make demo   installs what is missing, builds, runs the lab failover scenario
#   make test   installs what is missing, runs every test tier
GO      ?= go
BIN     := bin/l3ha
PKGS    := ./...
# Packages whose tests run under the race detector (the SQLite driver is
# transpiled C: too slow under -race, so store-heavy packages run without).
RACE_PKGS := ./internal/agent/... ./internal/agentapi/... ./internal/vrrp/... ./internal/cli/... ./internal/ipam/... ./internal/ha/... ./internal/config/...

.PHONY: all build deps postgres test unit race fuzz demo bench clean

all: build

build:
	$(GO) build -o $(BIN) ./cmd/l3ha

deps:
	@scripts/deps.sh

postgres: deps
	@scripts/postgres.sh

# Every tier: vet, unit and API tests on SQLite and PostgreSQL (with the real
# openstack client), race detector on the concurrent packages, and a short
# run of every fuzz target.
test: deps build
	$(GO) vet $(PKGS)
	@pg=$$(scripts/postgres.sh) && \
	  L3HA_TEST_POSTGRES="$$pg" L3HA_TEST_REQUIRE_POSTGRES=1 L3HA_TEST_REQUIRE_ALL=1 \
	  $(GO) test -count=1 -timeout 30m $(PKGS)
	$(GO) test -count=1 -race -timeout 15m $(RACE_PKGS)
	$(MAKE) --no-print-directory fuzz

fuzz:
	$(GO) test -run='^$$' -fuzz='^FuzzParse$$' -fuzztime=10s ./internal/vrrp
	$(GO) test -run='^$$' -fuzz='^FuzzAPIRequestBodies$$' -fuzztime=10s ./internal/api

# Control-plane benchmark: 1000 HA routers created through the API with 3
# fake agents, on SQLite and PostgreSQL (p50/p99/total).
bench: deps build
	@pg=$$(scripts/postgres.sh) && \
	  L3HA_TEST_POSTGRES="$$pg" L3HA_BENCH=1 $(GO) test -count=1 -run 'TestCreate1000HARoutersLatency' -v ./internal/server

demo: deps build
	@echo "l3ha demo: the control plane is built ($(BIN))."
	@echo "The lab failover scenario (l3ha lab failover) arrives with the Linux data plane;"
	@echo "until then, this runs the control-plane scenario: a server, two fake-dataplane"
	@echo "agents, an HA router, and the l3-agent table with one active and one standby."
	@scripts/demo-controlplane.sh $(BIN)

clean:
	rm -rf bin
	scripts/postgres.sh stop || true
