#!/usr/bin/env bash
# Instructions per request of `wsgi serve`, counted by callgrind: noise-free, so a change to the
# hot path can be measured on a busy machine (wall-clock numbers need the pinned comparison,
# bench/compare).
#
#   bench/callgrind.sh [-b BIN] [-c | -p] APP [N1 N2]
#
# Serves bench/apps/APP.py (hello, echo: a 64 KiB POST, big: a 1 MiB streamed response) with
# --threads 4 under callgrind, sends N1 and then, in a second run, N2 requests over one
# keep-alive connection, and prints (front's instructions at N2 - at N1) / (N2 - N1): start-up
# and shut-down cancel out. -c: each request on a new connection (`Connection: close`); -p:
# the same, each connection starting with a PROXY protocol v1 header, served with
# --proxy-protocol (what the header costs: -p's count less -c's). Defaults: BIN
# target/release/wsgi, N1 200, N2 1200 (hello) or 50, 250 (echo, big). Needs valgrind. Prints
# the two profiles' paths for callgrind_annotate.
set -euo pipefail
cd "$(dirname "$0")/.."

bin=target/release/wsgi
mode=keepalive
flags=()
while [ $# -gt 0 ]; do
    case "$1" in
        -b) bin=$2; shift 2 ;;
        -c) mode=close; shift ;;
        -p) mode=proxy; flags=(--proxy-protocol); shift ;;
        *) break ;;
    esac
done
app=${1:?usage: bench/callgrind.sh [-b BIN] [-c | -p] hello|echo|big [N1 N2]}
case "$app" in
    hello) n1=${2:-200}; n2=${3:-1200} ;;
    echo | big) n1=${2:-50}; n2=${3:-250} ;;
    *) echo "unknown app $app (hello, echo, big)" >&2; exit 2 ;;
esac
command -v valgrind >/dev/null || { echo "valgrind is missing: apt-get install valgrind" >&2; exit 1; }
out=$(mktemp -d /tmp/wsgi-callgrind.XXXXXX)

# Serves APP under callgrind for $1 requests; prints the front process's profile file.
run() {
    local n=$1 port
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    valgrind --tool=callgrind --trace-children=yes --callgrind-out-file="$out/$n.%p" \
        "$bin" serve "bench/apps/$app.py" --threads 4 --port "$port" --allow-root "${flags[@]}" \
        >"$out/$n.log" 2>&1 &
    local pid=$!
    python3 - "$port" "$n" "$app" "$mode" <<'PY'
import re, socket, sys, time
port, n, app, mode = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
# What starts each connection.
first = b"PROXY TCP4 192.0.2.7 127.0.0.1 51234 8000\r\n" if mode == "proxy" else b""
for _ in range(600):
    try:
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(first)
        break
    except OSError:
        time.sleep(0.2)
else:
    sys.exit("the server did not start")
close = b"" if mode == "keepalive" else b"Connection: close\r\n"
if app == "echo":
    req = (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\n"
           + close + b"Content-Length: 65536\r\n\r\n" + b"x" * 65536)
else:
    req = b"GET / HTTP/1.1\r\nHost: x\r\n" + close + b"\r\n"
for i in range(n):
    if mode != "keepalive" and i > 0:
        s.close()
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(first)
    s.sendall(req)
    buf = b""
    while True:
        chunk = s.recv(1 << 20)
        if not chunk:
            sys.exit("the server closed the connection")
        buf += chunk
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            continue
        length = int(re.search(rb"(?i)content-length: *(\d+)", buf[:end]).group(1))
        if len(buf) - end - 4 >= length:
            break
PY
    kill -TERM "$pid"
    wait "$pid" || true
    # The front is the process with the largest profile (the master only supervises).
    ls -S "$out/$n".[0-9]* | head -1
}

total() {
    callgrind_annotate "$1" 2>/dev/null | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1; exit }'
}

a=$(run "$n1")
b=$(run "$n2")
echo "$app ($mode): $(( ($(total "$b") - $(total "$a")) / (n2 - n1) )) instructions per request ($bin)"
echo "profiles: $a $b"
