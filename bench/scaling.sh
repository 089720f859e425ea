#!/usr/bin/env bash
# How fan-out cost grows with subscribers (1 to 10k, 64-byte messages) and with message size
# (64 B to 64 KiB, 100 subscribers), against grpc-chat or the Go server. About two million
# deliveries per run; a fresh server per run.
#
# Usage: bench/scaling.sh grpc-chat|go [OUT_FILE]   (JSON lines; run bench/compare.sh first for go)
set -euo pipefail
cd "$(dirname "$0")/.."
server=$1
out=${2:-bench/results/scaling-$server.jsonl}
mkdir -p "$(dirname "$out")"
port=50652
bin=target/release/grpc-chat
cargo build --release --quiet

start_server() {
  case $server in
    grpc-chat)
      "$bin" serve --listen 127.0.0.1:$port --ws-listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 \
        --history 100000 --max-content-bytes 65536 --max-message-bytes 131072 \
        --max-subscribers-per-room 20000 2>/dev/null &
      ;;
    go) "${GO_SERVER:?set GO_SERVER to the Go server binary built by compare.sh}" 2>/dev/null & ;;
  esac
  pid=$!
  for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && return; sleep 0.1; done
  echo "server did not start" >&2; exit 1
}

run() { # subscribers messages size
  start_server
  local connections=$(( ($1 + 499) / 500 )); [ $connections -lt 4 ] && connections=4
  "$bin" bench fanout --addr http://127.0.0.1:$port --server-pid $pid --json \
    --subscribers "$1" --messages "$2" --size "$3" --connections $connections --idle-timeout 20s \
    | sed "s/^{/{\"server\":\"$server\",/" | tee -a "$out"
  kill $pid; wait $pid 2>/dev/null || true
}

: > "$out"
for subscribers in 1 10 100 1000 10000; do
  messages=$(( 2000000 / subscribers )); [ $messages -gt 20000 ] && messages=20000
  run $subscribers $messages 64
done
run 100 5000 1024
run 100 2000 16384
run 100 500 65536
