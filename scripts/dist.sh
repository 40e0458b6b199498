#!/usr/bin/env bash
# Builds the release artifacts — the `wsgi` program, the Apache module and the `wsgi-daemon`
# program it execs — and writes them to OUTDIR (default target/dist) stripped, each with its
# debug information split off into NAME.debug (linked by .gnu_debuglink).
#
#   scripts/dist.sh [--pgo] [OUTDIR]
#
# --pgo: `wsgi` and `wsgi-daemon` profile-guided: scripts/pgo.sh makes the profile (an
# instrumented build of `wsgi` and its training run), and they are built with it in their own
# target folder (pgo-use). The Apache module is built as without --pgo: the training runs no
# Apache, so the module's own code has no counts, and code it shares with `wsgi` that the
# training never ran would be laid out as cold.
set -euo pipefail
cd "$(dirname "$0")/.."
pgo=
if [ "${1:-}" = --pgo ]; then
    pgo=1
    shift
fi
out="${1:-target/dist}"
target="${CARGO_TARGET_DIR:-target}"
built="$target/release"

if [ -n "$pgo" ]; then
    cargo build --release -p wsgi-apache
    profile="$target/pgo/wsgi.profdata"
    ./scripts/pgo.sh "$profile"
    RUSTFLAGS="${RUSTFLAGS:-} -Cprofile-use=$(realpath "$profile")" \
        cargo build --release -p wsgi-cli -p wsgi-daemon --target-dir "$target/pgo-use"
    built="$target/pgo-use/release"
else
    cargo build --release -p wsgi-cli -p wsgi-daemon -p wsgi-apache
fi
mkdir -p "$out"
cp "$built/wsgi" "$built/wsgi-daemon" "$out/"
cp "$target/release/libwsgi_apache.so" "$out/mod_wsgi_rs.so"
./scripts/split-debuginfo.sh "$out/wsgi" "$out/wsgi-daemon" "$out/mod_wsgi_rs.so"
ls -l "$out"
