#!/usr/bin/env bash
# Runs every test of the workspace on a fresh Debian machine: installs what the tests need
# (idempotently), then checks formatting and lints, then runs the tests.
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/setup-test-env.sh
export WSGI_RS_TEST_TOOLS="${WSGI_RS_TEST_TOOLS:-/var/tmp/wsgi-rs-test/tools/bin}"

cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace
