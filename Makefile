# The commands the README names. `make run` serves on the embedded default; `make test` installs the
# test tools and runs the whole suite: unit, API, deployment, hostile-client and soak tests, the
# chat page in Chromium, then a bounded fuzzing run of every target. `make web` rebuilds the page.

.PHONY: run test test-tools lint fmt web

run:
	cargo run --release -- serve

# The memory tests measure the release build (what users run); it is built first and named to them.
RELEASE_BIN = $(or $(CARGO_TARGET_DIR),$(CURDIR)/target)/release/grpc-chat

test: test-tools
	cargo build --release --bin grpc-chat
	scripts/fuzz.sh --build-only
	GRPC_CHAT_RELEASE_BIN=$(RELEASE_BIN) cargo test --all-targets -- --test-threads=8
	GRPC_CHAT_RELEASE_BIN=$(RELEASE_BIN) node --test --test-concurrency=1 web/test/*.test.mjs
	scripts/fuzz.sh

test-tools:
	scripts/install-test-tools.sh

# The chat page's build (web/dist), which the server embeds: commit what it changes.
web:
	sh web/build.sh

lint:
	cargo fmt --check
	cargo fmt --check --manifest-path fuzz/Cargo.toml
	cargo clippy --all-targets -- -D warnings
	cargo clippy --manifest-path fuzz/Cargo.toml --all-targets -- -D warnings

fmt:
	cargo fmt
	cargo fmt --manifest-path fuzz/Cargo.toml
