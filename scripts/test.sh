#!/usr/bin/env bash
# Runs every test of the workspace on a fresh Debian machine: installs what the tests need
# (idempotently), then checks formatting and lints, then runs the tests.
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/setup-test-env.sh
export WSGI_RS_TEST_TOOLS="${WSGI_RS_TEST_TOOLS:-/var/tmp/wsgi-rs-test/tools/bin}"

cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps
cargo test --workspace

# wsgi-interp again against Python 3.12: own-GIL sub-interpreters (WSGIPerInterpreterGIL On)
# exist only there, and the rest of the crate must work on it too.
PY312=/root/.pyenv/versions/3.12.1/bin/python3.12
if [ ! -x "$PY312" ]; then
    echo "error: $PY312 is missing; the WSGIPerInterpreterGIL tests need it." >&2
    echo "Install it as a shared build: PYTHON_CONFIGURE_OPTS=--enable-shared pyenv install 3.12.1" >&2
    exit 1
fi
PYO3_PYTHON="$PY312" CARGO_TARGET_DIR=target/py312 cargo test -p wsgi-interp
