#!/usr/bin/env bash
# Builds the project's Dockerfile with a real Docker engine, runs the image on the host network
# and waits for its HEALTHCHECK to report healthy; then grpcurl lists the services through it.
#
# No image registry is reachable here, so the two base images the Dockerfile names are stand-ins
# made locally and tagged with the names the Dockerfile pulls:
#   debian:bookworm-slim      <- a Debian bookworm minbase root filesystem made by debootstrap
#   rust:1.95-slim-bookworm   <- the same plus gcc and this machine's Rust toolchain, trusting the
#                                certificate authorities this machine trusts (so cargo in the
#                                build reaches the crate registry exactly as the host does)
# The Dockerfile itself is the one users build.
#
# Usage: tests/deploy/docker.sh GRPC_PORT   (a free port on 127.0.0.1)
set -euo pipefail
cd "$(dirname "$0")/../.."
port=$1
state=/tmp/chat-docker
export DOCKER_HOST=unix://$state/docker.sock
log() { echo "docker.sh: $*" >&2; }

started_dockerd=""
if ! docker version >/dev/null 2>&1; then
  log "starting dockerd (no bridge, no iptables: host network only)"
  mkdir -p $state
  dockerd --host "$DOCKER_HOST" --data-root $state/data --exec-root $state/exec \
    --pidfile $state/dockerd.pid --bridge=none --iptables=false --ip-forward=false --ip-masq=false \
    >$state/dockerd.log 2>&1 &
  started_dockerd=$!
  for _ in $(seq 100); do docker version >/dev/null 2>&1 && break; sleep 0.2; done
fi
container=""
cleanup() {
  [ -z "$container" ] || docker rm -f "$container" >/dev/null 2>&1 || true
  if [ -n "$started_dockerd" ]; then kill "$started_dockerd"; wait "$started_dockerd" || true; fi
}
trap cleanup EXIT

rootfs() { # a Debian bookworm minbase root filesystem in $1, with extra packages $2
  [ -x "$1/bin/sh" ] && return
  log "debootstrap bookworm into $1 (+ $2)"
  rm -rf "$1"
  debootstrap --variant=minbase ${2:+--include=$2} bookworm "$1" >/dev/null
}

if ! docker image inspect debian:bookworm-slim >/dev/null 2>&1; then
  rootfs $state/rootfs-debian ""
  tar -C $state/rootfs-debian -c . | docker import - debian:bookworm-slim >/dev/null
fi
if ! docker image inspect rust:1.95-slim-bookworm >/dev/null 2>&1; then
  rootfs $state/rootfs-rust gcc,libc6-dev,ca-certificates
  toolchain=$(rustc --print sysroot)
  log "copying the Rust toolchain $toolchain into the builder stand-in"
  mkdir -p $state/rootfs-rust/usr/local/rust $state/rootfs-rust/usr/local/cargo/bin
  tar -C "$toolchain" --exclude=share/doc -c . | tar -C $state/rootfs-rust/usr/local/rust -x
  for tool in cargo rustc rustdoc; do ln -sf ../../rust/bin/$tool $state/rootfs-rust/usr/local/cargo/bin/$tool; done
  cp /etc/ssl/certs/ca-certificates.crt $state/rootfs-rust/etc/ssl/certs/ca-certificates.crt
  tar -C $state/rootfs-rust -c . | docker import \
    --change 'ENV CARGO_HOME=/usr/local/cargo' \
    --change 'ENV PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    - rust:1.95-slim-bookworm >/dev/null
fi

log "docker build"
docker build --network host -t grpc-chat:test . >$state/build.log 2>&1 || { tail -n 40 $state/build.log; exit 1; }

log "docker run on port $port"
container=$(docker run -d --network host \
  -e GRPC_CHAT_LISTEN=127.0.0.1:$port -e GRPC_CHAT_ADDR=http://127.0.0.1:$port \
  -e GRPC_CHAT_WS_LISTEN=127.0.0.1:0 -e GRPC_CHAT_ADMIN_LISTEN=127.0.0.1:0 \
  grpc-chat:test)
status=""
for _ in $(seq 60); do
  status=$(docker inspect --format '{{.State.Health.Status}}' "$container")
  [ "$status" = healthy ] && break
  sleep 1
done
echo "health: $status"
[ "$status" = healthy ] || { docker logs "$container" >&2; exit 1; }
echo "user: $(docker inspect --format '{{.Config.User}}' "$container")"
.tools/venv/bin/grpcurl -plaintext 127.0.0.1:$port list
