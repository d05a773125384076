#!/bin/sh
# A/B rounds for issue 22: the uring model's choices (receive bundles,
# sends in place, incremental buffers, echo's bounded multishot receive)
# each on and off, beside the mio model,
# alternated within each round so a noisy machine hurts them alike.
# Server pinned to CPU 0, load to CPU 1. Prints one line per run:
#   round config test MB/s msgs server_cpu_us_per_msg errors=N both=US
# (both: the busy time of both CPUs per message, load generator included)
# Usage: contrib/uring-ab.sh ROUNDS [SECS]   (BIN=path/to/readyloop;
# TESTS="pattern size conns;..." and CONFIGS="label:ENV=1,ENV2=0:model ..."
# narrow the runs; RL_BIN=path in a config's settings serves with another
# binary, for a before/after)
set -eu
ROUNDS=${1:-3}
SECS=${2:-3}
BIN=${BIN:-target/release/readyloop}
PORT=${PORT:-19100}
TCK=$(getconf CLK_TCK)
cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# Busy ticks of both CPUs (user, nice, system, irq, softirq, steal):
# the server's and the load generator's, the whole exchange.
busy() { awk '$1 == "cpu" { print $2 + $3 + $4 + $7 + $8 + $9 }' /proc/stat; }
one() { # round label env model pattern size conns
    # RL_BIN=path among a config's settings serves with another binary.
    bin=$BIN
    for e in $3; do case $e in RL_BIN=*) bin=${e#RL_BIN=} ;; esac; done
    env $3 taskset -c 0 "$bin" serve --model "$4" --mode echo \
        --addr "127.0.0.1:$PORT" --log-level warn 2>/dev/null &
    pid=$!
    i=0
    until (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; do
        i=$((i + 1)); [ $i -lt 100 ] || break; sleep 0.05
    done
    sleep 0.2
    t0=$(cpu $pid)
    b0=$(busy)
    json=$(taskset -c 1 "$BIN" load --addr "127.0.0.1:$PORT" --pattern "$5" \
        --size "$6" -c "$7" --duration "$SECS" --json 2>/dev/null || true)
    t1=$(cpu $pid)
    b1=$(busy)
    kill $pid; wait $pid 2>/dev/null || true
    PORT=$((PORT + 1))
    msgs=$(printf '%s' "$json" | sed -n 's/.*"messages":\([0-9]*\).*/\1/p')
    mbs=$(printf '%s' "$json" | sed -n 's/.*"mb_per_s":\([0-9.]*\).*/\1/p')
    errs=$(printf '%s' "$json" | sed -n 's/.*"errors":\([0-9]*\).*/\1/p')
    us=$(awk -v a="$t0" -v b="$t1" -v m="${msgs:-0}" -v t="$TCK" \
        'BEGIN { if (m > 0) printf "%.3f", (b - a) / t * 1e6 / m; else print "-" }')
    both=$(awk -v a="$b0" -v b="$b1" -v m="${msgs:-0}" -v t="$TCK" \
        'BEGIN { if (m > 0) printf "%.3f", (b - a) / t * 1e6 / m; else print "-" }')
    echo "$1 $2 $5-$6-c$7 ${mbs:--} ${msgs:--} $us errors=${errs:--} both=$both"
}
CONFIGS=${CONFIGS:-"mio:X=1:mio uring:X=1:uring bundle-off:READYLOOP_URING_BUNDLE=0:uring in-place-off:READYLOOP_URING_IN_PLACE=0:uring inc-off:READYLOOP_URING_INC=0:uring mshot-off:READYLOOP_URING_ECHO_MULTISHOT=0:uring"}
TESTS=${TESTS:-"stream 16384 1;stream 16384 100;pingpong 64 1000"}
r=1
while [ $r -le "$ROUNDS" ]; do
    echo "$TESTS" | tr ';' '\n' | while read -r test; do
        for c in $CONFIGS; do
            label=${c%%:*}; rest=${c#*:}; envs=$(echo "${rest%:*}" | tr , ' ')
            model=${rest##*:}
            # shellcheck disable=SC2086
            one $r $label "$envs" $model $test </dev/null
        done
    done
    # The loop above ran in a subshell: move past its ports.
    PORT=$((PORT + 100))
    r=$((r + 1))
done
