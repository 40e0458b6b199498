#!/usr/bin/env bash
# Installs what the wsgi-rs tests need on a fresh Debian machine, idempotently:
# Debian's python3.11 (the CPython every crate embeds) with venv support and headers, Apache
# httpd with its development headers (the Apache module is built and loaded by the tests) and
# Debian's mod_wsgi (to compare with), and a world-readable tools venv with virtualenv and uv
# (the venv makers the tests use).
set -euo pipefail

TOOLS_ROOT="${WSGI_RS_TEST_ROOT:-/var/tmp/wsgi-rs-test}"
PY=/usr/bin/python3.11

need_apt=()
for pkg in python3.11 python3.11-venv python3.11-dev libpython3.11-dev apache2 apache2-dev libapache2-mod-wsgi-py3; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need_apt+=("$pkg")
done
if [ "${#need_apt[@]}" -gt 0 ]; then
    echo "setup: installing ${need_apt[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need_apt[@]}"
fi

mkdir -p "$TOOLS_ROOT"
chmod 0755 "$TOOLS_ROOT"
if [ ! -x "$TOOLS_ROOT/tools/bin/uv" ] || [ ! -x "$TOOLS_ROOT/tools/bin/virtualenv" ]; then
    echo "setup: creating the test tools venv in $TOOLS_ROOT/tools"
    rm -rf "$TOOLS_ROOT/tools"
    "$PY" -m venv "$TOOLS_ROOT/tools"
    "$TOOLS_ROOT/tools/bin/pip" install -q --disable-pip-version-check virtualenv uv
fi
chmod -R a+rX "$TOOLS_ROOT"
echo "setup: ok ($TOOLS_ROOT/tools/bin has virtualenv and uv)"
