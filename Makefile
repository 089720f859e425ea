# The commands the README names. `make run` serves on the embedded default; `make test` installs the
# test tools and runs the whole suite.

.PHONY: run test test-tools lint fmt

run:
	cargo run --release -- serve

# The memory tests measure the release build (what users run); it is built first and named to them.
RELEASE_BIN = $(or $(CARGO_TARGET_DIR),$(CURDIR)/target)/release/grpc-chat

test: test-tools
	cargo build --release --bin grpc-chat
	GRPC_CHAT_RELEASE_BIN=$(RELEASE_BIN) cargo test --all-targets -- --test-threads=8

test-tools:
	scripts/install-test-tools.sh

lint:
	cargo fmt --check
	cargo clippy --all-targets -- -D warnings

fmt:
	cargo fmt
