# The test command of the README: checks formatting and lints, then runs
# every test. Each tool the tests need is installed by the `deps` target.
.PHONY: test deps

test: deps
	cargo fmt --all --check
	cargo clippy --all-targets --locked -- -D warnings
	cargo test --workspace --locked

deps:
	@command -v cargo >/dev/null || { echo "cargo is required (https://rustup.rs)"; exit 1; }
