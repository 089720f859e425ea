#!/usr/bin/env bash
# Side-by-side benchmark: the same `grpc-chat bench` scenarios against grpc-chat and against the
# source documents' Go servers, one server at a time on this machine, then the ratios:
#   go      seed 000's chat.ChatService server (bench/go-server, grpc-go from Debian)
#   go-ws   seed 001's WebSocket rooms server (bench/go-ws-server, gorilla/websocket from Debian)
#   floor   the CPU of one small write() per socket to N loopback sockets (bench/floor), the least
#           a server can spend per delivery on this machine
# Scenarios: multiplexed gRPC (subscribers on 4 or 10 connections), a connection per subscriber
# on gRPC and on WebSocket rooms (1,000 and 10,000), saturated and paced, unary, idle.
#
# Usage: bench/compare.sh [OUT_DIR] [ROUNDS]   (results as JSON lines in OUT_DIR/results.jsonl,
# default bench/results; ROUNDS, default 1, repeats the whole set: the floor and every server, so
# each round's ratios are taken minutes apart, and summarise.py prints medians and ranges).
# ONLY="label ..." runs just those scenarios (and the floor); SERVERS="grpc-chat ..." just those
# servers (default all three); GRPC_CHAT_BIN another build of grpc-chat to serve, BENCH_BIN another
# build's load generator (bench/ab.sh uses both).
# Tools: run `make test-tools` first (Go, protoc, grpc-go, gorilla/websocket).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-bench/results}
rounds=${2:-1}
mkdir -p "$out"
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
port=20651
ws_port=8651
# 10,000 sockets each side of loopback, in this shell's processes only.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

echo "building grpc-chat (release), the Go servers and the floor" >&2
bin=${GRPC_CHAT_BIN:-target/release/grpc-chat}
[[ -n ${GRPC_CHAT_BIN:-} ]] || cargo build --release --quiet
servers=" ${SERVERS:-grpc-chat go go-ws} "
gopath="$work:/usr/share/gocode"
go_build() { # output package
  GO111MODULE=off GOPROXY=off GOFLAGS=-mod=mod GOPATH="$gopath" GOCACHE="$work/cache" \
    go build -o "$work/$1" "$2"
}
mkdir -p "$work/src/grpc-streaming/server" "$work/src/ws-seed" "$work/src/floor"
protoc -Itests/go-client/proto -I/usr/include --go_out="$work/src" --go-grpc_out="$work/src" chat.proto
# The only change to the original servers: they listen on loopback at the benchmark's ports.
sed "s/\":50051\"/\"127.0.0.1:$port\"/" bench/go-server/main.go > "$work/src/grpc-streaming/server/main.go"
sed "s/\":8080\"/\"127.0.0.1:$ws_port\"/" bench/go-ws-server/main.go > "$work/src/ws-seed/main.go"
cp bench/floor/main.go "$work/src/floor/"
go_build go-server grpc-streaming/server
go_build go-ws-server ws-seed
go_build floor floor

start_server() { # name -> sets pid
  local wait=$port
  case $1 in
    grpc-chat)
      "$bin" serve --listen 127.0.0.1:$port --ws-listen 127.0.0.1:$ws_port --admin-listen 127.0.0.1:0 \
        --history 100000 --max-content-bytes 65536 --max-message-bytes 131072 \
        --max-connections 30000 --max-connections-per-address 0 \
        --max-subscribers-per-room 30000 --max-subscriptions 30000 2>/dev/null &
      ;;
    go) "$work/go-server" 2>/dev/null & ;;
    go-ws) "$work/go-ws-server" 2>/dev/null & wait=$ws_port ;;
  esac
  pid=$!
  for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$wait) 2>/dev/null && return; sleep 0.1; done
  echo "server $1 did not start" >&2; exit 1
}

run() { # server label scenario args...   (label names the run in the results)
  local server=$1 label=$2; shift 2
  [[ -n ${ONLY:-} && " $ONLY " != *" $label "* ]] && return
  local door=()
  [[ " $* " == *" websocket "* ]] && door=(--ws-addr 127.0.0.1:$ws_port)
  start_server "$server"
  "${BENCH_BIN:-$bin}" bench "$@" "${door[@]}" --addr http://127.0.0.1:$port --server-pid "$pid" --json \
    | sed "s/^{\"scenario\":\"[a-z]*\"/{\"round\":$round,\"server\":\"$server\",\"scenario\":\"$label\"/" \
    | tee -a "$out/results.jsonl"
  kill "$pid"; wait "$pid" || true
}

grpc_scenarios() { # server
  run "$1" unary unary --connections 4 --concurrency 64 --duration 10s
  run "$1" fanout fanout --connections 4 --subscribers 1000 --messages 2000
  # The same at an equal, moderate load for both (300k deliveries/s): latency and CPU not at saturation.
  run "$1" fanout-paced fanout --connections 4 --subscribers 1000 --messages 2000 --rate 300
  run "$1" fanout-mux10 fanout --connections 10 --subscribers 1000 --messages 2000
  # A connection per subscriber, as every browser tab and phone has.
  run "$1" conn-1k fanout --connections 1000 --subscribers 1000 --messages 1000
  run "$1" conn-1k-paced fanout --connections 1000 --subscribers 1000 --messages 1000 --rate 300
  # A load the Go seed carries too (on this machine it delivers well under 300k/s with a
  # connection per subscriber), for latency at an equal load.
  run "$1" conn-1k-paced-50 fanout --connections 1000 --subscribers 1000 --messages 1000 --rate 50
  run "$1" conn-10k fanout --connections 10000 --subscribers 10000 --messages 200
  run "$1" rooms rooms --connections 4 --subscribers 1000 --rooms 250 --publishers 4 --messages 2000
  run "$1" idle idle --streams 10000
  # The same streams opened 100 at a time, as clients arriving over time would.
  run "$1" idle-waves idle --streams 10000 --wave 100
}

websocket_scenarios() { # server
  run "$1" ws-1k fanout --door websocket --subscribers 1000 --messages 1000
  run "$1" ws-1k-paced fanout --door websocket --subscribers 1000 --messages 1000 --rate 300
  run "$1" ws-1k-paced-50 fanout --door websocket --subscribers 1000 --messages 1000 --rate 50
  run "$1" ws-10k fanout --door websocket --subscribers 10000 --messages 200
  run "$1" ws-idle idle --door websocket --streams 10000
}

: > "$out/results.jsonl"
# 9,000, not 10,000: both ends of every socket are in the floor's one process, which the
# machine's hard limit of 20,000 descriptors would not hold at 10,000.
for round in $(seq "$rounds"); do
  echo "== round $round of $rounds" >&2
  for sockets in 1000 9000; do
    "$work/floor" -sockets $sockets -rounds $((1000000 / sockets)) \
      | sed "s/^{/{\"round\":$round,/" | tee -a "$out/results.jsonl"
  done
  if [[ $servers == *" grpc-chat "* ]]; then
    echo "== grpc-chat" >&2; grpc_scenarios grpc-chat; websocket_scenarios grpc-chat
  fi
  if [[ $servers == *" go "* ]]; then echo "== go" >&2; grpc_scenarios go; fi
  if [[ $servers == *" go-ws "* ]]; then echo "== go-ws" >&2; websocket_scenarios go-ws; fi
done

python3 bench/summarise.py "$out/results.jsonl"
