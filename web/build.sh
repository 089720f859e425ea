#!/bin/sh
# Builds the chat page into dist/ (committed; the server embeds it): generates the protobuf code
# from proto/chat.proto, type-checks, and bundles. `dist=DIR sh build.sh` builds elsewhere (the
# test compares a fresh build with the committed one).
set -eu
cd "$(dirname "$0")"
dist=${dist:-dist}
[ -d node_modules ] || npm ci --silent --no-audit --no-fund
rm -rf gen && mkdir -p gen "$dist"
protoc -I ../proto --plugin=protoc-gen-es=node_modules/.bin/protoc-gen-es --es_out=gen \
  --es_opt=target=ts ../proto/chat.proto
node_modules/.bin/tsc -p .
node_modules/.bin/esbuild src/chat.ts --bundle --format=esm --target=es2022 --minify \
  --legal-comments=none --log-level=warning --outfile="$dist/chat.js"
node_modules/.bin/esbuild src/chat.css --bundle --minify --log-level=warning --outfile="$dist/chat.css"
# Served to browsers that accept gzip (-n: no name or time in it, so builds are reproducible).
gzip -9nc "$dist/chat.js" > "$dist/chat.js.gz"
gzip -9nc "$dist/chat.css" > "$dist/chat.css.gz"
