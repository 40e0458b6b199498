#!/usr/bin/env bash
# Makes the profile of a profile-guided (PGO) release build of wsgi-rs:
#
#   scripts/pgo.sh [PROFDATA]        (default: $CARGO_TARGET_DIR or target, then pgo/wsgi.profdata)
#
# builds an instrumented `wsgi` (in its own target folder, pgo-gen, beside the usual one), runs
# scripts/pgo_train.py against it (every phase must succeed: hello, request bodies, large
# responses, HTTP/2, a --config site, daemon mode, TLS), and merges what it wrote into
# PROFDATA with the llvm-profdata of rustc's own LLVM (`rustup component add llvm-tools`; or
# set LLVM_PROFDATA). Then build with it:
#
#   RUSTFLAGS="-Cprofile-use=$PWD/target/pgo/wsgi.profdata" cargo build --release -p wsgi-cli -p wsgi-daemon
#
# (scripts/dist.sh --pgo does both). The profile fits the source and the compiler it was made
# with: make it again after either changes.
set -euo pipefail
cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-target}"
out="${1:-$target/pgo/wsgi.profdata}"

profdata="${LLVM_PROFDATA:-$(rustc --print sysroot)/lib/rustlib/$(rustc -vV | sed -n 's/^host: //p')/bin/llvm-profdata}"
if [ ! -x "$profdata" ]; then
    echo "pgo.sh: $profdata is missing: install it with \`rustup component add llvm-tools\`" \
        "(it must be the llvm-profdata of rustc's LLVM: $(rustc -vV | sed -n 's/^LLVM version: //p')), or set LLVM_PROFDATA" >&2
    exit 1
fi

# The instrumented program writes its counts here at exit. Daemon processes run as www-data
# when the training runs as root, so the folder is outside /root and anyone may write in it
# (its files are only counts).
raw=$(mktemp -d /tmp/wsgi-pgo-raw.XXXXXX)
trap 'rm -rf "$raw"' EXIT
chmod 1777 "$raw"

gen="$target/pgo-gen"
echo "pgo.sh: building an instrumented wsgi in $gen" >&2
RUSTFLAGS="${RUSTFLAGS:-} -Cprofile-generate=$raw" \
    cargo build --release -p wsgi-cli --target-dir "$gen"

# Build scripts and proc macros were instrumented too, and wrote counts of their own.
rm -f "$raw"/*.profraw

echo "pgo.sh: training it (scripts/pgo_train.py)" >&2
python3 scripts/pgo_train.py "$gen/release/wsgi"

mkdir -p "$(dirname "$out")"
"$profdata" merge -o "$out" "$raw"/*.profraw
echo "pgo.sh: profile written to $out; build with" >&2
echo "    RUSTFLAGS=\"-Cprofile-use=$(realpath "$out")\" cargo build --release -p wsgi-cli -p wsgi-daemon" >&2
echo "(not the Apache module: the training runs no Apache, see scripts/dist.sh)" >&2
