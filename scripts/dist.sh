#!/usr/bin/env bash
# Builds the release artifacts — the `wsgi` program, the Apache module and the `wsgi-daemon`
# program it execs — and writes them to OUTDIR (default target/dist) stripped, each with its
# debug information split off into NAME.debug (linked by .gnu_debuglink).
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-target/dist}"
target="${CARGO_TARGET_DIR:-target}"

cargo build --release -p wsgi-cli -p wsgi-daemon -p wsgi-apache
mkdir -p "$out"
cp "$target/release/wsgi" "$target/release/wsgi-daemon" "$out/"
cp "$target/release/libwsgi_apache.so" "$out/mod_wsgi_rs.so"
./scripts/split-debuginfo.sh "$out/wsgi" "$out/wsgi-daemon" "$out/mod_wsgi_rs.so"
ls -l "$out"
