#!/usr/bin/env bash
# Splits the debug information off each FILE: FILE.debug keeps it, FILE is stripped of it and
# of its symbol table and names FILE.debug in a .gnu_debuglink section (gdb and perf look for
# it beside FILE, in FILE's .debug folder and under /usr/lib/debug).
set -euo pipefail
if [ "$#" -eq 0 ]; then
    echo "usage: $0 FILE..." >&2
    exit 2
fi
for file in "$@"; do
    dir="$(dirname "$file")"
    name="$(basename "$file")"
    objcopy --only-keep-debug "$file" "$file.debug"
    chmod 0644 "$file.debug"
    # --add-gnu-debuglink reads the .debug file by the name it records: run it beside it.
    (cd "$dir" && objcopy --strip-debug --strip-unneeded --add-gnu-debuglink="$name.debug" "$name")
done
