#!/usr/bin/env bash
# How fan-out cost grows with subscribers (1 to 10k, 64-byte messages) and with message size
# (64 B to 64 KiB, 100 subscribers), against grpc-chat or a Go seed server. About two million
# deliveries per multiplexed run, one million per run with a connection per subscriber; a fresh
# server per run. Every row names its sweep:
#   multiplexed      gRPC, subscribers on 4 connections (one more per 500 beyond 2,000)
#   per-connection   gRPC, a connection per subscriber, as every browser tab and phone has
#   websocket        WebSocket rooms, a socket per subscriber (the seed's JSON frames)
# grpc-chat runs all three, go (seed 000) the gRPC ones, go-ws (seed 001) the WebSocket one.
#
# Usage: bench/scaling.sh grpc-chat|go|go-ws [OUT_FILE]   (JSON lines; for go and go-ws set
# GO_SERVER / GO_WS_SERVER to the binaries bench/compare.sh builds)
set -euo pipefail
cd "$(dirname "$0")/.."
server=$1
out=${2:-bench/results/scaling-$server.jsonl}
mkdir -p "$(dirname "$out")"
port=20652
ws_port=8652
bin=target/release/grpc-chat
cargo build --release --quiet
# 10,000 sockets each side of loopback, in this shell's processes only.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

start_server() { # port to wait for
  case $server in
    grpc-chat)
      "$bin" serve --listen 127.0.0.1:$port --ws-listen 127.0.0.1:$ws_port --admin-listen 127.0.0.1:0 \
        --history 100000 --max-content-bytes 65536 --max-message-bytes 131072 \
        --max-connections 30000 --max-connections-per-address 0 \
        --max-subscribers-per-room 30000 --max-subscriptions 30000 2>/dev/null &
      ;;
    go) "${GO_SERVER:?set GO_SERVER to the Go server binary built by compare.sh}" 2>/dev/null & ;;
    go-ws) "${GO_WS_SERVER:?set GO_WS_SERVER to the Go WebSocket server built by compare.sh}" 2>/dev/null & ;;
  esac
  pid=$!
  for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null && return; sleep 0.1; done
  echo "server did not start" >&2; exit 1
}

run() { # sweep subscribers messages size
  local sweep=$1 subscribers=$2 messages=$3 size=$4 wait=$port shape
  case $sweep in
    multiplexed)
      local connections=$(( (subscribers + 499) / 500 )); [ $connections -lt 4 ] && connections=4
      shape=(--connections $connections) ;;
    per-connection) shape=(--connections "$subscribers") ;;
    websocket) shape=(--door websocket --ws-addr 127.0.0.1:$ws_port); wait=$ws_port ;;
  esac
  start_server $wait
  "$bin" bench fanout --addr http://127.0.0.1:$port --server-pid $pid --json \
    --subscribers "$subscribers" --messages "$messages" --size "$size" --idle-timeout 20s "${shape[@]}" \
    | sed "s/^{/{\"server\":\"$server\",\"sweep\":\"$sweep\",/" | tee -a "$out"
  kill $pid; wait $pid 2>/dev/null || true
}

sweep() { # name deliveries
  for subscribers in 1 10 100 1000 10000; do
    local messages=$(( $2 / subscribers )); [ $messages -gt 20000 ] && messages=20000
    run "$1" $subscribers $messages 64
  done
}

: > "$out"
case $server in
  grpc-chat | go)
    sweep multiplexed 2000000
    run multiplexed 100 5000 1024
    run multiplexed 100 2000 16384
    run multiplexed 100 500 65536
    sweep per-connection 1000000
    ;;
esac
case $server in
  grpc-chat | go-ws) sweep websocket 1000000 ;;
esac
