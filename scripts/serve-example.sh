#!/usr/bin/env bash
# Serves one of the examples with `wsgi serve` on http://127.0.0.1:8000/ (PORT=, HOST= change it):
#
#     ./scripts/serve-example.sh [hello|flask|django] [more `wsgi serve` flags...]
#
# On a fresh Debian machine, as root, it first does (idempotently; a second run only builds
# and starts):
#   * apt: Debian's python3.11 with venv support and libpython3.11 (the CPython wsgi-rs embeds),
#     and a C compiler for the build, when missing;
#   * examples/<name>/.venv made with /usr/bin/python3.11 -m venv, and pip install -r
#     requirements.txt (again only when requirements.txt changed); the hello example has no
#     requirements and runs on the embedded Python itself;
#   * cargo build --release -p wsgi-cli (into $CARGO_TARGET_DIR, default target/);
# then execs: wsgi serve examples/<name>/app.wsgi --python-home examples/<name>/.venv --port 8000
#
# As root, wsgi serve runs the application as www-data (it keeps root only in its master
# process); when www-data cannot read this checkout (a clone under /root, say), the script
# says so and adds --allow-root, so the example still runs. Give --user NAME to choose.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PY=/usr/bin/python3.11
NAME="${1:-flask}"
[ "$#" -gt 0 ] && shift

case "$NAME" in
    hello) SCRIPT="$ROOT/examples/hello/hello.wsgi" ;;
    flask | django) SCRIPT="$ROOT/examples/$NAME/app.wsgi" ;;
    -h | --help)
        sed -n '2,/^set /{/^#/p}' "$0" | sed 's/^# \{0,1\}//'
        exit 0
        ;;
    *)
        echo "serve-example: unknown example '$NAME' (hello, flask or django)" >&2
        exit 2
        ;;
esac
EXAMPLE="$(dirname "$SCRIPT")"

# 1. Debian packages: the Python to embed and to make the venv with, and the build tools.
need_apt=()
for pkg in python3.11 python3.11-venv libpython3.11-dev; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need_apt+=("$pkg")
done
command -v cc >/dev/null || need_apt+=(gcc libc6-dev)
if [ "${#need_apt[@]}" -gt 0 ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "serve-example: missing Debian packages: ${need_apt[*]} (run as root, or apt-get install them)" >&2
        exit 2
    fi
    echo "serve-example: apt-get install ${need_apt[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need_apt[@]}"
fi
if ! command -v cargo >/dev/null; then
    echo "serve-example: cargo not found: install a Rust toolchain (https://rustup.rs) first" >&2
    exit 2
fi

# 2. The example's venv, made by the same Python the build embeds.
VENV_ARGS=()
if [ -f "$EXAMPLE/requirements.txt" ]; then
    VENV="$EXAMPLE/.venv"
    if [ ! -x "$VENV/bin/python" ]; then
        echo "serve-example: creating $VENV with $PY" >&2
        "$PY" -m venv "$VENV"
    fi
    want="$(sha256sum "$EXAMPLE/requirements.txt" | cut -d' ' -f1)"
    if [ "$(cat "$VENV/.requirements.sha256" 2>/dev/null)" != "$want" ]; then
        echo "serve-example: pip install -r $EXAMPLE/requirements.txt" >&2
        "$VENV/bin/pip" install -q --disable-pip-version-check -r "$EXAMPLE/requirements.txt"
        printf '%s\n' "$want" > "$VENV/.requirements.sha256"
    fi
    VENV_ARGS=(--python-home "$VENV")
fi

# 3. The server.
(cd "$ROOT" && cargo build --release -p wsgi-cli)
WSGI="${CARGO_TARGET_DIR:-$ROOT/target}/release/wsgi"
case "$WSGI" in /*) ;; *) WSGI="$ROOT/$WSGI" ;; esac

# 4. As root: the application runs as www-data unless told otherwise; it must be able to read
# the example (and its venv).
PRIVILEGE_ARGS=()
if [ "$(id -u)" = 0 ] && ! printf '%s\n' "$@" | grep -qx -e --user -e --allow-root; then
    if ! runuser -u www-data -- sh -c 'test -r "$1" && { test -z "$2" || test -r "$2/pyvenv.cfg"; }' \
        _ "$SCRIPT" "${VENV:-}" 2>/dev/null; then
        echo "serve-example: www-data cannot read $EXAMPLE (is the checkout under a private folder such as /root?);" >&2
        echo "serve-example: running the example as root with --allow-root. In production, put the application where" >&2
        echo "serve-example: its user can read it and let wsgi serve switch to that user (--user NAME)." >&2
        PRIVILEGE_ARGS=(--allow-root)
    fi
fi

exec "$WSGI" serve "$SCRIPT" "${VENV_ARGS[@]}" "${PRIVILEGE_ARGS[@]}" --host "${HOST:-127.0.0.1}" --port "${PORT:-8000}" "$@"
