#!/usr/bin/env bash
# Per-request cost of the XKS Encrypt path, per process (xks-front and vhsmd): syscalls,
# sched_yield calls, context switches and CPU time, counted while `xks_load` drives a real
# appliance at a fixed rate. Counts (not times) are the robust figures on a noisy machine.
#
# usage: tests/examples/per_layer.sh [TARGET_DIR] [RATE] [SECONDS] [CONNECTIONS]
#   TARGET_DIR   cargo target dir holding release/examples/xks_load (default: target)
#   RATE         requests/s in total (default 500); must be well below saturation, since
#                requests are counted as RATE x window
#   SECONDS      length of the xks_load run (default 10); the window is SECONDS - 4
#   CONNECTIONS  keep-alive client connections (default 16)
# Extra `xks load` flags go through XKS_LOAD_ARGS as for xks_load itself (default request: a
# 32-byte Encrypt, no AAD). Needs `perf` (tracepoints raw_syscalls:sys_enter and
# syscalls:sys_enter_sched_yield; root or kernel.perf_event_paranoid <= 0).
#
# Build first: cargo build --release --bins --examples -p vhsm-e2e -p vhsm -p xks-front -p vhsm-admin
# Prints one line per process, then the load generator's own summary.
set -euo pipefail

target=${1:-target}
rate=${2:-500}
seconds=${3:-10}
conns=${4:-16}
window=$((seconds - 4))
if [ "$window" -lt 2 ]; then
    echo "SECONDS must be at least 6" >&2
    exit 2
fi
load="$target/release/examples/xks_load"
[ -x "$load" ] || { echo "$load not built" >&2; exit 2; }
command -v perf >/dev/null || { echo "perf not installed" >&2; exit 2; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export XKS_LOAD_ARGS=${XKS_LOAD_ARGS:---payload-bytes 32 --aad-bytes 0}

"$load" "$conns" "$seconds" "$rate" >"$work/load.out" 2>"$work/load.err" &
load_pid=$!

# Wait for the load generator (vhsm-admin xks load) to start: the servers are up by then.
front="" vhsmd="" gen=""
for _ in $(seq 1 600); do
    front=$(pgrep -P "$load_pid" -x xks-front || true)
    vhsmd=$(pgrep -P "$load_pid" -x vhsmd | head -1 || true)
    for p in $(pgrep -P "$load_pid" -x vhsm-admin || true); do
        if tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null | grep -q ' xks load '; then gen=$p; fi
    done
    [ -n "$front" ] && [ -n "$vhsmd" ] && [ -n "$gen" ] && break
    sleep 0.1
done
if [ -z "$gen" ]; then
    echo "load generator did not start" >&2
    cat "$work/load.err" >&2
    exit 1
fi
# 1 s warm-up in xks load, plus a second to settle.
sleep 2

ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
ctxt() {
    cat /proc/"$1"/task/*/status 2>/dev/null |
        awk '/^voluntary_ctxt_switches/ {v += $2} /^nonvoluntary_ctxt_switches/ {n += $2} END {print v, n}'
}

declare -A t0 c0
for p in "$front" "$vhsmd"; do
    t0[$p]=$(ticks "$p")
    c0[$p]=$(ctxt "$p")
done
events=raw_syscalls:sys_enter,syscalls:sys_enter_sched_yield,context-switches,task-clock
perf stat -x, -e "$events" -p "$front" -o "$work/front.perf" -- sleep "$window" &
perf_front=$!
perf stat -x, -e "$events" -p "$vhsmd" -o "$work/vhsmd.perf" -- sleep "$window" &
perf_vhsmd=$!
wait "$perf_front" "$perf_vhsmd"
declare -A t1 c1
for p in "$front" "$vhsmd"; do
    t1[$p]=$(ticks "$p")
    c1[$p]=$(ctxt "$p")
done
wait "$load_pid" || true

hz=$(getconf CLK_TCK)
requests=$((rate * window))
report() {
    local name=$1 pid=$2 file=$3
    awk -F, -v name="$name" -v req="$requests" -v hz="$hz" \
        -v t0="${t0[$pid]}" -v t1="${t1[$pid]}" -v c0="${c0[$pid]}" -v c1="${c1[$pid]}" '
        $3 == "raw_syscalls:sys_enter" { sys = $1 }
        $3 == "syscalls:sys_enter_sched_yield" { yld = $1 }
        $3 == "context-switches" { cs = $1 }
        $3 == "task-clock" { clk = $1 }   # milliseconds
        END {
            split(c0, a, " "); split(c1, b, " ")
            printf "%-9s syscalls/req %6.2f  sched_yield/req %5.2f  ctx-switches/req %5.2f (vol %5.2f invol %5.2f)  cpu us/req %6.1f (task-clock %6.1f)\n",
                name, sys / req, yld / req, cs / req, (b[1] - a[1]) / req, (b[2] - a[2]) / req,
                (t1 - t0) / hz * 1e6 / req, clk * 1000 / req
        }' "$file"
}
echo "rate $rate req/s, window $window s ($requests requests), $conns connections, XKS_LOAD_ARGS=$XKS_LOAD_ARGS"
report xks-front "$front" "$work/front.perf"
report vhsmd "$vhsmd" "$work/vhsmd.perf"
cat "$work/load.out"
