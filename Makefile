# The commands the README names. `make run` serves on the embedded default; `make test` installs the
# test tools and runs the whole suite.

.PHONY: run test test-tools lint fmt

run:
	cargo run --release -- serve

test: test-tools
	cargo test --all-targets -- --test-threads=8

test-tools:
	scripts/install-test-tools.sh

lint:
	cargo fmt --check
	cargo clippy --all-targets -- -D warnings

fmt:
	cargo fmt
