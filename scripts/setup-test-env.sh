#!/usr/bin/env bash
# Installs what the wsgi-rs tests need on a fresh Debian machine, idempotently:
# Debian's python3.11 (the CPython every crate embeds) with venv support and headers, Apache
# httpd with its development headers (the Apache module is built and loaded by the tests) and
# Debian's mod_wsgi (to compare with), a world-readable tools venv with virtualenv and uv
# (the venv makers the tests use), pip's mod_wsgi 6.1.1 (the release whose environ and
# directives wsgi-rs follows, loaded by the side-by-side tests), iproute2 (`ss`, to read listen
# backlogs; `ip netns`, for the scale-out test's hosts), nginx and HAProxy (the load balancers in
# front of them; the tests start their own, with their own configurations, and never use the
# system's services).
set -euo pipefail

TOOLS_ROOT="${WSGI_RS_TEST_ROOT:-/var/tmp/wsgi-rs-test}"
PY=/usr/bin/python3.11

need_apt=()
for pkg in python3.11 python3.11-venv python3.11-dev libpython3.11-dev apache2 apache2-dev libapache2-mod-wsgi-py3 iproute2 nginx haproxy nghttp2-client; do
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

# A second CPython the daemon processes of a group may run on (wsgi-cli/tests/install.rs):
# pyenv's 3.12.1 copied out of /root, which Apache's www-data and wsgi serve's nobody cannot
# read, with its build configuration's paths (sysconfig's LIBDIR, which gives the library's
# run path to what is built against it) pointing at the copy.
PYENV_312=/root/.pyenv/versions/3.12.1
PY312_COPY="$TOOLS_ROOT/python3.12"
if [ ! -x "$PY312_COPY/bin/python3.12" ] && [ -x "$PYENV_312/bin/python3.12" ]; then
    echo "setup: copying $PYENV_312 to $PY312_COPY (readable by every user)"
    rm -rf "$PY312_COPY.tmp"
    cp -a "$PYENV_312" "$PY312_COPY.tmp"
    rm -rf "$PY312_COPY.tmp/lib/python3.12/test"
    grep -rlF "$PYENV_312" "$PY312_COPY.tmp/lib/python3.12/"_sysconfigdata*.py \
        "$PY312_COPY.tmp/bin/python3.12-config" "$PY312_COPY.tmp/lib/pkgconfig" \
        | xargs sed -i "s#$PYENV_312#$PY312_COPY#g"
    mv "$PY312_COPY.tmp" "$PY312_COPY"
fi
if [ ! -x "$TOOLS_ROOT/tools/bin/uv" ] || [ ! -x "$TOOLS_ROOT/tools/bin/virtualenv" ]; then
    echo "setup: creating the test tools venv in $TOOLS_ROOT/tools"
    rm -rf "$TOOLS_ROOT/tools"
    "$PY" -m venv "$TOOLS_ROOT/tools"
    "$TOOLS_ROOT/tools/bin/pip" install -q --disable-pip-version-check virtualenv uv
fi
chmod -R a+rX "$TOOLS_ROOT"
echo "setup: ok ($TOOLS_ROOT/tools/bin has virtualenv and uv)"

# The frameworks venv (wsgi-cli/tests/frameworks.rs serves examples/flask and examples/django
# with it as python-home): Debian's python3.11, Flask 3 and Django 5 (both support 3.11), and
# numpy, an extension that loads into only one interpreter per process (the tests show the hint
# wsgi-interp adds to its import error).
# Skipped when it already holds exactly these requirements; remade when they change.
FRAMEWORKS="$TOOLS_ROOT/frameworks"
FRAMEWORK_SPECS="flask>=3.1,<4 django>=5.2,<6 numpy<3"
if [ ! -x "$FRAMEWORKS/bin/python" ] || [ "$(cat "$FRAMEWORKS/.wsgi-rs-specs" 2>/dev/null)" != "$FRAMEWORK_SPECS" ]; then
    echo "setup: creating the frameworks venv in $FRAMEWORKS ($FRAMEWORK_SPECS)"
    rm -rf "$FRAMEWORKS"
    "$PY" -m venv "$FRAMEWORKS"
    # shellcheck disable=SC2086 # the specs are separate words on purpose
    "$FRAMEWORKS/bin/pip" install -q --disable-pip-version-check $FRAMEWORK_SPECS
    printf '%s' "$FRAMEWORK_SPECS" > "$FRAMEWORKS/.wsgi-rs-specs"
    chmod -R a+rX "$FRAMEWORKS"
fi
echo "setup: ok ($FRAMEWORKS has $("$FRAMEWORKS/bin/python" -c 'import flask, django; from importlib.metadata import version; print("flask", version("flask"), "django", django.get_version())'))"

# mod_wsgi 6.1.1 from PyPI, built against Debian's python3.11 and apache2-dev: the tests load its
# module beside ours in the same Apache (testkit/src/apache.rs: mod_wsgi_61).
MOD_WSGI_61="$TOOLS_ROOT/mod_wsgi61"
if [ ! -f "$MOD_WSGI_61/.wsgi-rs-ok" ]; then
    echo "setup: building mod_wsgi 6.1.1 in $MOD_WSGI_61"
    rm -rf "$MOD_WSGI_61"
    "$PY" -m venv "$MOD_WSGI_61"
    "$MOD_WSGI_61/bin/pip" install -q --disable-pip-version-check mod-wsgi==6.1.1
    so=$(echo "$MOD_WSGI_61"/lib/python3.11/site-packages/mod_wsgi/server/mod_wsgi-py311*.so)
    ln -sf "$so" "$MOD_WSGI_61/mod_wsgi.so"
    touch "$MOD_WSGI_61/.wsgi-rs-ok"
    chmod -R a+rX "$MOD_WSGI_61"
fi
echo "setup: ok ($MOD_WSGI_61/mod_wsgi.so is mod_wsgi 6.1.1)"
