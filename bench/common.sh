# Sourced by bench/engines.sh and bench/security.sh with their arguments: the repository root as
# the working directory, ROUNDS ($1, default 3) and OUT_DIR ($2, default bench/results), a
# scratch directory `$work` removed at exit with every server the script started, the release
# build as `$bin` (or GRPC_CHAT_BIN, another build), and `wait_port PORT`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
rounds=${1:-3}
out=${2:-bench/results}
mkdir -p "$out"
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
bin=${GRPC_CHAT_BIN:-target/release/grpc-chat}
[[ -n ${GRPC_CHAT_BIN:-} ]] || cargo build --release --quiet

# Servers listen on fixed ports below the kernel's ephemeral range (32768-60999), so that no
# client connection's local port can hold one.
wait_port() {
  for _ in $(seq 300); do (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null && return; sleep 0.1; done
  echo "nothing listens on $1" >&2; exit 1
}
