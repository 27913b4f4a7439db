# tandem's build. Run as root on Debian 12 with Go installed:
#   make lab    build tandem and boot a local lab cluster
#   make test   the whole suite: vet, staticcheck, race tests, fuzz smoke, end-to-end
SHELL := /bin/bash
GO ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null | sed 's/^v//' || echo 0.0.0-dev)
LDFLAGS := -s -w -X github.com/tandem-ha/tandem/internal/cli.Version=$(VERSION)
export CGO_ENABLED ?= 0
export GOFLAGS ?= -mod=readonly
FUZZTIME ?= 5s
# The lab's Debian packages: one list, shared with .ci/run and tandem lab up.
LAB_DEPS := $(shell sed -e 's/\#.*//' packaging/lab-deps.txt)
# What the tests need beyond the lab's packages.
TEST_DEPS := $(shell sed -e 's/\#.*//' packaging/test-deps.txt)

# install-missing installs those of the Debian packages $(1) that are not
# installed, without recommends.
define install-missing
	@missing=""; for p in $(1); do \
	  [ "$$(dpkg-query -W -f='$${db:Status-Abbrev}' $$p 2>/dev/null)" = "ii " ] || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then echo "installing:$$missing"; apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; fi
endef

.PHONY: all build lab lab-down test vet staticcheck unit fuzz e2e piuparts deb bench bench-failover bench-files bench-idle bench-package bench-deploy bench-guard chaos clean deps test-deps

all: build

build:
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/tandem ./cmd/tandem

# Installs the Debian packages the lab needs (packaging/lab-deps.txt) when
# they are missing, without recommends, as .ci/run does.
deps:
	$(call install-missing,$(LAB_DEPS))

# Installs what the tests need beyond that (packaging/test-deps.txt).
test-deps: deps
	$(call install-missing,$(TEST_DEPS))

# Run twice, it reports the running lab (or recreates one that never formed).
# LAB names the lab, so it does not collide with another one on this machine.
LAB ?= tandem
lab: build deps
	./bin/tandem lab up --reuse --name $(LAB)

lab-down: build
	./bin/tandem lab down --name $(LAB)

vet:
	$(GO) vet ./...

staticcheck:
	$(GO) tool staticcheck ./...

unit:
	CGO_ENABLED=1 $(GO) test -race -shuffle=on -count=1 -timeout 20m ./...

# Runs every fuzz target briefly; see .ci/fuzz for how failures are reported.
fuzz:
	GO=$(GO) FUZZTIME=$(FUZZTIME) ./.ci/fuzz

e2e: build
	$(GO) test -count=1 -timeout 40m -v ./test/e2e/... -tandem-bin=$(CURDIR)/bin/tandem

# Debian's piuparts (install, upgrade from the previous version, purge;
# adequate's checks) on the packages tandem builds, in the lab's cached base
# image (built by make lab or make e2e), two at a time. About four minutes
# for the seven packages on a 2-core machine.
piuparts:
	TANDEM_PIUPARTS=1 $(GO) test -count=1 -timeout 30m -v -run '^TestPiuparts$$' ./internal/debpkg/

test: test-deps vet staticcheck unit fuzz e2e piuparts

# tandem's own .deb (binary, hardened agent unit, /etc/tandem/tandem.toml
# conffile), built with the same internal/debpkg code as app packages.
DEB_OUT ?= dist
deb: build
	./bin/tandem package --self --binary bin/tandem --out $(DEB_OUT)

# Times `tandem package` against dh-virtualenv on examples/pysite and
# prints the medians of BENCH_PACKAGE_RUNS builds each and their ratio.
BENCH_PACKAGE_RUNS ?= 5
bench-package: build test-deps
	$(GO) run ./bench/package -tandem bin/tandem -runs $(BENCH_PACKAGE_RUNS)

# Measures failover in a lab of its own ("bench"): TRIALS holder power losses
# and TRIALS app failures for tandem with default settings, then the same for
# Debian's keepalived on the same topology; prints median/p95/max outage,
# split-brain samples, the ratio and issue 3's goals (exit 1 if one fails).
# Needs root. BENCH_FAILOVER_FLAGS adds flags, e.g. -json bench-failover.json.
TRIALS ?= 20
BENCH_FAILOVER_FLAGS ?=
bench-failover: build test-deps
	$(GO) run ./bench/failover -tandem-bin $(CURDIR)/bin/tandem -trials $(TRIALS) $(BENCH_FAILOVER_FLAGS)

# Replication lag from close() on the holder to the file on the standby
# (p50, p99) and 10,000 small files, for tandem's [[files]] and Debian's
# lsyncd (defaults and delay = 1) in the same lab and run, plus
# RPO_TRIALS holder kills during a stream of writes (the age of the
# oldest file lost). Needs root. BENCH_FILES_FLAGS adds flags.
RPO_TRIALS ?= 20
BENCH_FILES_FLAGS ?=
bench-files: build test-deps
	$(GO) run ./bench/files -tandem-bin $(CURDIR)/bin/tandem -rpo-trials $(RPO_TRIALS) $(BENCH_FILES_FLAGS)

# Measures an idle agent in the same kind of lab: each node's tandem CPU
# (% of one core, from /proc/PID/stat) and RSS over IDLE_WINDOW after the
# cluster settles, then keepalived's on the app nodes in the same lab;
# prints per-node figures, medians, ratios and issue 8's goal (an idle
# agent at most 1% of a core; exit 1 if missed). Needs root.
IDLE_WINDOW ?= 60s
bench-idle: build test-deps
	$(GO) run ./bench/failover -tandem-bin $(CURDIR)/bin/tandem -trials 0 -idle $(IDLE_WINDOW) $(BENCH_FAILOVER_FLAGS)

# Throughput of tandem's sshd filter against Debian's fail2ban-regex with
# its sshd.conf on one generated auth.log of BENCH_GUARD_LINES lines, in the
# same run (median of BENCH_GUARD_RUNS runs each, lines/s and the ratio;
# issue 12's goal is >= 20x), and the latency from a log line written to
# the ban decided (p50/p99; goal <= 100 ms at p99). fail2ban-regex is
# Debian's installed one, or Debian's package fetched with apt-get
# download and unpacked under /var/cache/tandem-bench, never installed (no
# fail2ban service runs). BENCH_GUARD_LAB (default -lab-latency; needs root,
# empty to skip) adds the lab half: a failure line written on node1 until the
# address is in the nftables ban set of every app node, BENCH_GUARD_TRIALS
# bans, beside fail2ban (Debian's package installed on node1 of the same
# lab, nftables action). BENCH_GUARD_FLAGS adds flags, e.g. -json FILE.
BENCH_GUARD_LINES ?= 1000000
BENCH_GUARD_RUNS ?= 3
BENCH_GUARD_TRIALS ?= 100
BENCH_GUARD_LAB ?= -lab-latency -lab-trials $(BENCH_GUARD_TRIALS)
BENCH_GUARD_FLAGS ?=
bench-guard: build deps
	$(GO) run ./bench/guard -tandem-bin $(CURDIR)/bin/tandem -lines $(BENCH_GUARD_LINES) -runs $(BENCH_GUARD_RUNS) $(BENCH_GUARD_LAB) $(BENCH_GUARD_FLAGS)

# Measures delivery in a lab of its own ("bench-deploy"): DEPLOYS builds of
# the example site delivered by tandem (lab forge, webhook, rollout through
# the floating IP), then DEPLOYS by the naive receiver (dpkg -i on every
# node at once), with a client requesting the site through the floating IP
# every 10 ms; prints failed requests and webhook-to-all-updated times
# (median, p95, max), the ratios and issue 9's goals (exit 1 if one fails).
# Needs root. BENCH_DEPLOY_FLAGS adds flags, e.g. -json bench-deploy.json.
DEPLOYS ?= 10
BENCH_DEPLOY_FLAGS ?=
bench-deploy: build deps
	$(GO) run ./bench/deploy -tandem-bin $(CURDIR)/bin/tandem -deploys $(DEPLOYS) $(BENCH_DEPLOY_FLAGS)

# A randomized fault campaign in a lab of its own ("chaos"): FAULTS faults
# drawn from SEED (the same seed replays the same campaign), one at a time,
# or with OVERLAP=1 about one in four as an overlapping pair. Prints a line
# per fault and a summary by kind; exits 1 on a split brain, a fault that
# does not settle, or an outage over its kind's bound while a healthy,
# unpenalised standby existed. Needs root. CHAOS_FLAGS adds flags, e.g.
# -json or -lab NAME.
FAULTS ?= 200
SEED ?= 1
OVERLAP ?=
CHAOS_FLAGS ?=
chaos: build deps
	$(GO) run ./bench/chaos -tandem-bin $(CURDIR)/bin/tandem -faults $(FAULTS) -seed $(SEED) $(if $(filter 1 yes true,$(OVERLAP)),-overlap) $(CHAOS_FLAGS)

clean:
	rm -rf bin dist
