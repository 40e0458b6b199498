#!/usr/bin/env bash
# Instructions per request of `wsgi serve`, counted by callgrind: noise-free, so a change to the
# hot path can be measured on a busy machine (wall-clock numbers need the pinned comparison,
# bench/compare).
#
#   bench/callgrind.sh [-b BIN] [-g] [-m] [-c | -p | -2] APP [N1 N2]
#
# Serves bench/apps/APP.py (hello, echo: a 64 KiB POST, big: a 1 MiB streamed response) with
# --threads 4 under callgrind, sends N1 and then, in a second run, N2 requests over one
# keep-alive connection, and prints (front's instructions at N2 - at N1) / (N2 - N1): start-up
# and shut-down cancel out. -c: each request on a new connection (`Connection: close`); -p:
# the same, each connection starting with a PROXY protocol v1 header, served with
# --proxy-protocol (what the header costs: -p's count less -c's); -2: HTTP/2 with prior
# knowledge, h2load on one connection with 10 streams at a time (hello only). -g: granian
# instead (`--workers 1 --blocking-threads 4`, from $WSGI_RS_BENCH_ROOT/venv as bench/compare
# installs it), driven the same way, for the same count of a peer. -m: callgrind simulates
# the caches too (`--cache-sim=yes`; all threads on one simulated cache, as the pinned runs
# put them on one core) and the first-level misses a request are printed beside the
# instructions: instruction fetches, data reads, data writes, and the instructions plus ten
# for each miss (a rough cost: between two servers it tracked the ratio of user-space time
# `perf` measured). Defaults: BIN
# target/release/wsgi, N1 200, N2 1200 (hello) or 50, 250 (echo, big). Needs valgrind. The
# profile counted is the serving process's (the front; granian's worker); its paths are
# printed for callgrind_annotate.
set -euo pipefail
cd "$(dirname "$0")/.."

bin=target/release/wsgi
granian=${WSGI_RS_BENCH_ROOT:-/var/tmp/wsgi-rs-bench}/venv/bin/granian
server=wsgi
mode=keepalive
flags=()
cache=()
while [ $# -gt 0 ]; do
    case "$1" in
        -b) bin=$2; shift 2 ;;
        -g) server=granian; shift ;;
        -m) cache=(--cache-sim=yes); shift ;;
        -c) mode=close; shift ;;
        -p) mode=proxy; flags=(--proxy-protocol); shift ;;
        -2) mode=h2; shift ;;
        *) break ;;
    esac
done
app=${1:?usage: bench/callgrind.sh [-b BIN] [-g] [-m] [-c | -p | -2] hello|echo|big [N1 N2]}
case "$app" in
    hello) n1=${2:-200}; n2=${3:-1200} ;;
    echo | big) n1=${2:-50}; n2=${3:-250} ;;
    *) echo "unknown app $app (hello, echo, big)" >&2; exit 2 ;;
esac
if [ "$mode" = h2 ] && [ "$app" != hello ]; then
    echo "-2 drives hello only" >&2; exit 2
fi
if [ "$server" = granian ]; then
    [ "$mode" = proxy ] && { echo "-g: granian reads no PROXY header" >&2; exit 2; }
    [ -x "$granian" ] || { echo "$granian is missing (bench/compare installs it)" >&2; exit 1; }
    label=granian
else
    label=$bin
fi
command -v valgrind >/dev/null || { echo "valgrind is missing: apt-get install valgrind" >&2; exit 1; }
out=$(mktemp -d /tmp/wsgi-callgrind.XXXXXX)

# A profile's count of EVENT (callgrind's name: Ir, I1mr, D1mr, D1mw...). awk reads to the
# end: callgrind_annotate must not die of a closed pipe (pipefail).
event() {
    callgrind_annotate "$1" 2>/dev/null | awk -v want="$2" '
        /^Events recorded:/ { for (i = 3; i <= NF; i++) if ($i == want) col = i - 2 }
        /PROGRAM TOTALS/ && !done {
            line = $0; gsub(/\([0-9.]+%\)/, "", line); split(line, f, " ")
            v = f[col]; gsub(",", "", v); print v; done = 1
        }'
}

# A profile's instruction count.
total() {
    event "$1" Ir
}

# Serves APP under callgrind for $1 requests; prints the serving process's profile file.
run() {
    local n=$1 port
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    local cmd
    if [ "$server" = granian ]; then
        local http=1
        [ "$mode" = h2 ] && http=2
        cmd=(bash -c 'cd bench/apps && exec "$0" --interface wsgi --http "$1" --host 127.0.0.1 --port "$2" --workers 1 --blocking-threads 4 "$3:application"'
             "$granian" "$http" "$port" "$app")
    else
        cmd=("$bin" serve "bench/apps/$app.py" --threads 4 --port "$port" --allow-root "${flags[@]}")
    fi
    valgrind --tool=callgrind "${cache[@]}" --trace-children=yes --callgrind-out-file="$out/$n.%p" \
        "${cmd[@]}" >"$out/$n.log" 2>&1 &
    local pid=$!
    if [ "$mode" = h2 ]; then
        local i
        for i in $(seq 600); do
            curl -s -o /dev/null --http2-prior-knowledge "http://127.0.0.1:$port/" && break
            sleep 0.2
        done
        h2load -n "$n" -c 1 -m 10 "http://127.0.0.1:$port/" >"$out/$n.h2load" 2>&1
        grep -q "$n succeeded" "$out/$n.h2load" || { cat "$out/$n.h2load" >&2; exit 1; }
    else
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
    fi
    kill -TERM "$pid"
    wait "$pid" || true
    # The process that served: the last one started (the front, which the master started;
    # granian's worker). Not the busiest: a short run's start-up can outweigh its requests.
    local best="" newest=-1 f pid
    for f in "$out/$n".[0-9]*; do
        pid=${f##*.}
        if [ "$pid" -gt "$newest" ]; then
            newest=$pid
            best=$f
        fi
    done
    echo "$best"
}

a=$(run "$n1")
b=$(run "$n2")
per_request() { echo $(( ($(event "$b" "$1") - $(event "$a" "$1")) / (n2 - n1) )); }
instructions=$(( ($(total "$b") - $(total "$a")) / (n2 - n1) ))
echo "$app ($mode): $instructions instructions per request ($label)"
if [ ${#cache[@]} -gt 0 ]; then
    i1=$(per_request I1mr) d1r=$(per_request D1mr) d1w=$(per_request D1mw)
    echo "first-level misses per request: $i1 instruction, $d1r data read, $d1w data write;" \
        "instructions + 10 x misses: $(( instructions + 10 * (i1 + d1r + d1w) ))"
fi
echo "profiles: $a $b"
