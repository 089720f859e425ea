#!/usr/bin/env bash
# Side-by-side benchmark: the same `grpc-chat bench` scenarios against grpc-chat and against the
# original Go server of chat.ChatService (bench/go-server/main.go, built offline from Debian's
# grpc-go), one server at a time on this machine, then the ratios.
#
# Usage: bench/compare.sh [OUT_DIR]   (results as JSON lines in OUT_DIR, default bench/results)
# Tools: run `make test-tools` first (Go, protoc, grpc-go).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-bench/results}
mkdir -p "$out"
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
port=50651

echo "building grpc-chat (release) and the Go server" >&2
cargo build --release --quiet
bin=target/release/grpc-chat
mkdir -p "$work/src/grpc-streaming/server"
protoc -Itests/go-client/proto -I/usr/include --go_out="$work/src" --go-grpc_out="$work/src" chat.proto
# The only change to the original server: it listens on loopback at the benchmark's port.
sed "s/\":50051\"/\"127.0.0.1:$port\"/" bench/go-server/main.go > "$work/src/grpc-streaming/server/main.go"
GO111MODULE=off GOPROXY=off GOFLAGS=-mod=mod GOPATH="$work:/usr/share/gocode" GOCACHE="$work/cache" \
  go build -o "$work/go-server" grpc-streaming/server

start_server() { # name -> sets pid
  case $1 in
    grpc-chat)
      "$bin" serve --listen 127.0.0.1:$port --ws-listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 \
        --history 100000 --max-content-bytes 65536 --max-message-bytes 131072 2>/dev/null &
      ;;
    go) "$work/go-server" 2>/dev/null & ;;
  esac
  pid=$!
  for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && return; sleep 0.1; done
  echo "server $1 did not start" >&2; exit 1
}

bench() { # server label scenario args...   (label names the run in the results)
  local server=$1 label=$2; shift 2
  "$bin" bench "$@" --addr http://127.0.0.1:$port --server-pid "$pid" --json \
    | sed "s/^{\"scenario\":\"[a-z]*\"/{\"server\":\"$server\",\"scenario\":\"$label\"/" \
    | tee -a "$out/results.jsonl"
}

: > "$out/results.jsonl"
for server in grpc-chat go; do
  echo "== $server" >&2
  start_server $server; bench $server unary unary --connections 4 --concurrency 64 --duration 10s; kill $pid; wait $pid || true
  start_server $server; bench $server fanout fanout --connections 4 --subscribers 1000 --messages 2000; kill $pid; wait $pid || true
  # The same at an equal, moderate load for both (300k deliveries/s): latency and CPU not at saturation.
  start_server $server; bench $server fanout-paced fanout --connections 4 --subscribers 1000 --messages 2000 --rate 300; kill $pid; wait $pid || true
  start_server $server; bench $server rooms rooms --connections 4 --subscribers 1000 --rooms 250 --publishers 4 --messages 2000; kill $pid; wait $pid || true
  start_server $server; bench $server idle idle --streams 10000; kill $pid; wait $pid || true
  # The same streams opened 100 at a time, as clients arriving over time would.
  start_server $server; bench $server idle-waves idle --streams 10000 --wave 100; kill $pid; wait $pid || true
done

python3 bench/summarise.py "$out/results.jsonl"
