#!/usr/bin/env bash
# A bounded cargo-fuzz run of every target (default 20 s each): a crash, or a broken property, is
# a failure. Targets and their seed corpus are in fuzz/; what a run discovers is kept in a
# scratch corpus, not in the repository.
#
# Usage: scripts/fuzz.sh [SECONDS_PER_TARGET | --build-only]
# (`make test` builds the targets first, so that a target that no longer compiles fails the suite
# in minutes rather than after it.)
# On the stable toolchain, so without AddressSanitizer (the code is `unsafe`-free Rust);
# libFuzzer's coverage instrumentation works all the same.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds=${1:-20}
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
cargo fuzz build --sanitizer none
if [[ $seconds == --build-only ]]; then
  exit 0
fi
for target in $(cargo fuzz list); do
  mkdir -p "$scratch/$target"
  if ! cargo fuzz run --sanitizer none "$target" "$scratch/$target" "corpus/$target" -- \
    -max_total_time="$seconds" -rss_limit_mb=2048 >"$scratch/$target.log" 2>&1; then
    tail -40 "$scratch/$target.log" >&2
    echo "fuzz target $target failed; the input that broke it is in fuzz/artifacts/$target/" >&2
    exit 1
  fi
  echo "fuzz $target: $(grep -E '^Done' "$scratch/$target.log")" >&2
done
