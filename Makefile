# l3ha — two commands set up a fresh machine:
#   make demo   installs what is missing, builds, runs the lab failover scenario
#   make test   installs what is missing, runs every test tier
GO      ?= go
BIN     := bin/l3ha
PKGS    := ./...
# Packages whose tests run under the race detector. Left out: store-heavy
# packages (the SQLite driver is transpiled C, too slow under -race) and the
# kernel tiers, whose timing assertions (adverts every 100 ms under a flood)
# mean nothing at race-detector speed.
RACE_PKGS := ./internal/agent/... ./internal/agentapi/... ./internal/vrrp ./internal/vrrp/group ./internal/ctsync ./internal/cli/... ./internal/ipam/... ./internal/ha/... ./internal/config/... ./internal/keystone

.PHONY: all build deps postgres test unit race fuzz tempest demo bench bench-controlplane bench-neutron clean

all: build

build:
	$(GO) build -o $(BIN) ./cmd/l3ha

deps:
	@scripts/deps.sh

postgres: deps
	@scripts/postgres.sh

# Every tier: vet; unit, API (SQLite and PostgreSQL, the real openstack
# client), kernel (throwaway namespaces) and lab end-to-end tests, one
# package at a time so timing-sensitive kernel tests do not compete for the
# two cores; the race detector on the concurrent packages; a short run of
# every fuzz target.
test: deps build
	$(GO) vet $(PKGS)
	@pg=$$(scripts/postgres.sh) && \
	  L3HA_TEST_POSTGRES="$$pg" L3HA_TEST_REQUIRE_POSTGRES=1 L3HA_TEST_REQUIRE_ALL=1 L3HA_LAB_E2E=1 \
	  $(GO) test -count=1 -p 1 -timeout 45m $(PKGS)
	$(GO) test -count=1 -race -timeout 15m $(RACE_PKGS)
	$(MAKE) --no-print-directory fuzz

# tempest's network API tests (Debian's tempest) against the server behind a
# private Keystone, alone (make test runs them too, in ./internal/server):
# about 9 minutes, counts and skip reasons in the log.
tempest: deps build
	L3HA_TEST_REQUIRE_ALL=1 $(GO) test -count=1 -run '^TestTempestNetworkAPI$$' -v -timeout 30m ./internal/server

fuzz:
	$(GO) test -run='^$$' -fuzz='^FuzzParse$$' -fuzztime=10s ./internal/vrrp
	$(GO) test -run='^$$' -fuzz='^FuzzAPIRequestBodies$$' -fuzztime=10s ./internal/api
	$(GO) test -run='^$$' -fuzz='^FuzzPingLogLine$$' -fuzztime=5s ./internal/lab
	$(GO) test -run='^$$' -fuzz='^FuzzDecode$$' -fuzztime=10s ./internal/ctsync

# Failover and convergence at scale, keepalived vs native (l3ha lab bench
# compare, in a lab of its own named "bench", torn down after every run):
# N = 1, 10, 100, 500 HA routers with all masters on one node, that node
# failed, per router the time until the other node holds the VIPs, answers
# probes and shows active in the API; an agent starting with 500 routers.
# Writes bench/results.json and bench/failover.svg (about 15 minutes on 2
# cores). The control-plane benchmark is bench-controlplane.
bench: deps build
	@$(BIN) lab down --name bench >/dev/null 2>&1 || true
	$(BIN) lab bench compare --out bench

# Control-plane benchmark: 1000 HA routers created through the API with 3
# fake agents, on SQLite and PostgreSQL (p50/p99/total).
bench-controlplane: deps build
	@pg=$$(scripts/postgres.sh) && \
	  L3HA_TEST_POSTGRES="$$pg" L3HA_BENCH=1 $(GO) test -count=1 -run 'TestCreate1000HARoutersLatency' -v ./internal/server

# l3ha inside a real Neutron (Debian's neutron-server, RabbitMQ, MariaDB,
# linuxbridge agents on namespaced nodes): a node fault of the master with
# neutron-l3-agent on both nodes, l3ha neutron-l3-agent on both, and one of
# each, 10 HA routers each; outage, lost pings and the L3 agent's memory per
# router, in one run (about 15 minutes).
bench-neutron: deps build
	L3HA_TEST_REQUIRE_ALL=1 $(GO) test -count=1 -run '^$$' -bench '^BenchmarkNeutronFailover$$' -benchtime 1x -timeout 60m -v ./internal/neutronagent

# The blog's failover test in a lab of namespaces: HA router on two network
# nodes, the instance pinging upstream every 10 ms, the master's ha- device
# taken down. The lab is torn down at the end.
demo: deps build
	@$(BIN) lab down --name demo >/dev/null 2>&1 || true
	$(BIN) lab failover --name demo --fault ha-link

clean:
	rm -rf bin
	scripts/postgres.sh stop || true
