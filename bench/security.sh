#!/usr/bin/env bash
# What identity and TLS cost on the busiest call: `grpc-chat bench unary` (SendMessage) against
# the release server with auth off, with auth on (an HS256 and an RS256 token verified on every
# call, the publish and call limits off so the figure is the verification's), and over TLS,
# alternated, ROUNDS times.
#
# Usage: bench/security.sh [ROUNDS] [OUT_DIR]   (JSON lines in OUT_DIR/security.jsonl)
source "$(dirname "$0")/common.sh" "$@"

# Keys and a certificate, made fresh.
openssl rand -hex 32 > "$work/hmac"
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$work/rsa.pem" 2>/dev/null
openssl pkey -in "$work/rsa.pem" -pubout -out "$work/rsa.pub.pem"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$work/tls.key" \
  -out "$work/tls.crt" -days 1 -subj /CN=localhost -addext subjectAltName=IP:127.0.0.1 \
  -addext basicConstraints=critical,CA:FALSE 2>/dev/null
hs256=$("$bin" token --sub bench --room '*:all' --secret-file "$work/hmac")
# An RS256 token with the same claims, signed by openssl.
b64() { openssl base64 -A | tr '+/' '-_' | tr -d '='; }
now=$(date +%s)
header=$(printf '{"alg":"RS256","typ":"JWT"}' | b64)
payload=$(printf '{"sub":"bench","iat":%d,"exp":%d,"rooms":["*:all"]}' "$now" $((now + 3600)) | b64)
signature=$(printf '%s.%s' "$header" "$payload" | openssl dgst -sha256 -sign "$work/rsa.pem" -binary | b64)
rs256="$header.$payload.$signature"

serve() { # port extra-args... -> background server
  local port=$1; shift
  "$bin" serve --listen 127.0.0.1:$port --ws-listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 \
    "$@" 2>/dev/null &
  server_pid=$!
  wait_port "$port"
}

run() { # label bench-args...
  local label=$1; shift
  "$bin" bench unary --json --duration 5s --server-pid "$server_pid" "$@" \
    | sed "s/^{/{\"label\":\"$label\",/" | tee -a "$out/security.jsonl"
  kill "$server_pid"; wait "$server_pid" 2>/dev/null || true
}

unlimited=(--publish-rate 0 --call-rate 0)
for round in $(seq "$rounds"); do
  echo "round $round" >&2
  serve 20851
  run open --addr http://127.0.0.1:20851
  serve 20852 --jwt-hmac-secret-file "$work/hmac" "${unlimited[@]}"
  run hs256 --addr http://127.0.0.1:20852 --token "$hs256"
  serve 20853 --jwt-public-keys "$work/rsa.pub.pem" "${unlimited[@]}"
  run rs256 --addr http://127.0.0.1:20853 --token "$rs256"
  serve 20854 --tls-cert "$work/tls.crt" --tls-key "$work/tls.key"
  run tls --addr https://127.0.0.1:20854 --tls-ca "$work/tls.crt"
done
