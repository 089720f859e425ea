#!/usr/bin/env bash
# Memory figures of a grpc-chat server: resident memory per message held in history (after
# publishing, after a gRPC replay, with live gRPC + WebSocket subscribers), per idle WebSocket and
# per idle gRPC subscription, and whether memory returns after a flood.
#
# Usage: bench/memory.sh [SERVER_BINARY] [OUT_FILE]
#   SERVER_BINARY defaults to target/release/grpc-chat (built here); the load generator is always
#   this checkout's. Results are JSON lines, appended to OUT_FILE (default bench/results/memory.jsonl).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
bench_bin=target/release/grpc-chat
server_bin=${1:-$bench_bin}
out=${2:-bench/results/memory.jsonl}
mkdir -p "$(dirname "$out")"
log=$(mktemp)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -f "$log"' EXIT
# 3,000 sockets and their server ends.
ulimit -n 16384

start_server() { # serve args... -> sets pid, grpc, ws
  "$server_bin" serve --listen 127.0.0.1:0 --ws-listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 \
    "$@" 2>"$log" &
  pid=$!
  for _ in $(seq 100); do
    if line=$(grep -m1 'listening' "$log"); then
      grpc=$(sed -E 's/.* addr=([^ ]+).*/\1/' <<<"$line")
      ws=$(sed -E 's/.* ws_addr=([^ ]+).*/\1/' <<<"$line")
      return
    fi
    sleep 0.1
  done
  echo "server did not start: $(cat "$log")" >&2
  exit 1
}

run() { # label scenario args...
  local label=$1; shift
  "$bench_bin" bench "$@" --addr "http://$grpc" --server-pid "$pid" --json \
    | sed "s/^{\"scenario\":\"[a-z]*\"/{\"server\":\"$(basename "$server_bin")\",\"scenario\":\"$label\"/" \
    | tee -a "$out"
}

stop_server() { kill "$pid"; wait "$pid" || true; }

# Memory per message is measured with every message held: a server that bounds history in bytes
# gets a budget above what the runs publish.
unbounded=()
if "$server_bin" serve --help | grep -q -- --history-bytes; then
  unbounded=(--history-bytes 4GiB --room-history-bytes 64MiB)
fi
# Thousands of connections from this one address.
one_address=()
if "$server_bin" serve --help | grep -q -- --max-connections-per-address; then
  one_address=(--max-connections-per-address 0)
fi

start_server "${unbounded[@]}"
run history-10k-rooms history --rooms 10000 --messages 10 --size 4096
stop_server

# Chat-sized messages.
start_server "${unbounded[@]}"
run history-100-bytes history --rooms 10000 --messages 10 --size 100
stop_server

start_server "${unbounded[@]}" "${one_address[@]}"
run history-live history --rooms 1000 --messages 10 --size 4096 --ws-addr "$ws"
stop_server

# Rooms dropped 5 s after their last use: does the memory come back?
start_server "${unbounded[@]}" --room-idle-ttl 5s
run history-then-idle history --rooms 10000 --messages 10 --size 4096 --wait-after 20s
stop_server

if ((${#unbounded[@]})); then
  # The same with the default budget: what the server holds stays within it.
  start_server
  run history-default-budget history --rooms 10000 --messages 10 --size 4096
  stop_server
fi

start_server "${one_address[@]}"
run idle-websocket idle --door websocket --ws-addr "$ws" --streams 3000 --wave 100
stop_server

start_server "${one_address[@]}"
run idle-grpc-own-connection idle --streams 3000 --connections 3000 --wave 100
stop_server

start_server
run idle-grpc-shared-connections idle --streams 3000 --connections 6
stop_server
