#!/usr/bin/env bash
# Runs the scenarios of docs/watching-the-loop.md: for each, a server at
# --log-level trace and `readyloop client -v`, both on 127.0.0.1, and
# prints what each side printed. Usage: docs/walkthrough.sh [SCENARIO...]
# (connect, drain, reset, idle, full, uring; all by default), with
# READYLOOP=path/to/readyloop (default target/release/readyloop, built
# with `cargo build --release`). Every server stops by itself (SIGTERM).
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${READYLOOP:-target/release/readyloop}
[ -x "$bin" ] || { echo "walkthrough: no $bin (cargo build --release)" >&2; exit 1; }
addr=127.0.0.1:8989
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

# scenario NAME SERVER-FLAGS -- CLIENT-COMMAND...
scenario() {
    local name=$1; shift
    local flags=()
    while [ "$1" != -- ]; do flags+=("$1"); shift; done
    shift
    "$bin" serve --addr "$addr" --log-level trace "${flags[@]}" \
        2> "$out/server" &
    local server=$!
    for _ in $(seq 100); do
        grep -q "listening on" "$out/server" 2>/dev/null && break
        sleep 0.05
    done
    echo "=== $name: client"
    echo "\$ $*"
    bash -c "$*" 2>&1 || true
    sleep 0.3
    kill -TERM "$server"
    wait "$server" || true
    echo "=== $name: server (serve ${flags[*]} --log-level trace)"
    cat "$out/server"
    echo
}

run() {
    case $1 in
    connect) scenario connect --mode echo -- \
        "printf 'hello\n' | $bin client -v $addr" ;;
    drain) scenario drain --mode discard -- \
        "head -c 200000 /dev/zero | $bin client -v $addr" ;;
    reset) scenario reset --mode echo -- \
        "printf 'bye\n' | $bin client -v --rst $addr" ;;
    idle) scenario idle --mode echo --idle-timeout 1 -- \
        "$bin client -v --idle 3 $addr < /dev/null" ;;
    full) scenario full --mode echo --send-buffer 4K -- \
        "head -c 300000 /dev/zero | $bin client -v $addr | (sleep 1; wc -c)" ;;
    uring) scenario uring --mode echo --model uring -- \
        "printf 'hello\n' | $bin client -v $addr" ;;
    *) echo "walkthrough: no scenario $1" >&2; exit 2 ;;
    esac
}

if [ $# -eq 0 ]; then set -- connect drain reset idle full uring; fi
for s in "$@"; do run "$s"; done
