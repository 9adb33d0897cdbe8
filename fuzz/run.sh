#!/usr/bin/env bash
# Builds the fuzz targets with libFuzzer's coverage instrumentation (stable toolchain) and runs
# them. See docs/fuzzing.md.
#
#   fuzz/run.sh [TARGET|all] [SECONDS]   run each target for SECONDS (default 60), one after
#                                        another, from its seed corpus; print executions, cov, ft
#   fuzz/run.sh TARGET repro FILE...     run TARGET once on each FILE (reproduce a crash)
#   fuzz/run.sh TARGET minimize FILE     shrink a crashing FILE (writes minimized-from-*)
#   fuzz/run.sh build                    only build
#
# Environment: CARGO_TARGET_DIR (default fuzz/target), FUZZ_JOBS (cargo -j, default: cargo's),
# FUZZ_NO_BUILD=1 (reuse the last build), FUZZ_ARGS (extra libFuzzer flags, e.g. -dict=...).
# New corpus entries go to $CARGO_TARGET_DIR/fuzz-work/corpus/TARGET (the committed seeds in
# fuzz/corpus/TARGET are only read); crashes go to $CARGO_TARGET_DIR/fuzz-work/artifacts/TARGET.
# Exits non-zero when any target crashed, leaked, timed out or ran out of memory.
set -euo pipefail
FUZZ_DIR="$(cd "$(dirname "$0")" && pwd)"
TRIPLE="$(rustc -vV | sed -n 's/^host: //p')"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$FUZZ_DIR/target}"
BIN_DIR="$CARGO_TARGET_DIR/$TRIPLE/release"
WORK="$CARGO_TARGET_DIR/fuzz-work"
TARGETS=(xks_request sigv4 keystores_toml config_toml share header envelope key_record backup
  audit_line passphrase_fd)

build() {
  if [[ "${FUZZ_NO_BUILD:-}" == 1 ]]; then return; fi
  # The flags cargo-fuzz passes (coverage counters, PC table, comparison tracing for libFuzzer's
  # value profile and CMP-guided mutations), on stable. --target keeps them off build scripts.
  local flags="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4"
  flags+=" -Cllvm-args=-sanitizer-coverage-inline-8bit-counters"
  flags+=" -Cllvm-args=-sanitizer-coverage-pc-table"
  flags+=" -Cllvm-args=-sanitizer-coverage-trace-compares"
  flags+=" --cfg fuzzing -Cdebug-assertions -Coverflow-checks"
  (cd "$FUZZ_DIR" && RUSTFLAGS="$flags" cargo build --release --locked --target "$TRIPLE" \
    ${FUZZ_JOBS:+-j "$FUZZ_JOBS"} --bins)
}

libfuzzer_flags=(-rss_limit_mb=2048 -timeout=10 -print_final_stats=1)

run_one() {
  local t="$1" secs="$2"
  local corpus="$WORK/corpus/$t" artifacts="$WORK/artifacts/$t/" log="$WORK/logs/$t.log"
  mkdir -p "$corpus" "$artifacts" "$WORK/logs"
  local inputs=("$corpus" "$FUZZ_DIR/corpus/$t")
  [[ -d "$FUZZ_DIR/regressions/$t" ]] && inputs+=("$FUZZ_DIR/regressions/$t")
  local rc=0
  # shellcheck disable=SC2086
  "$BIN_DIR/$t" "${libfuzzer_flags[@]}" -max_total_time="$secs" -artifact_prefix="$artifacts" \
    ${FUZZ_ARGS:-} "${inputs[@]}" >"$log" 2>&1 || rc=$?
  local done_line execs cov ft corp
  done_line="$(grep -E '^#[0-9]+\s+(DONE|pulse|NEW|REDUCE|INITED)' "$log" | tail -1 || true)"
  execs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)"
  cov="$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$done_line")"
  ft="$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$done_line")"
  corp="$(sed -n 's/.* corp: \([0-9]*\/[0-9a-zA-Z]*\).*/\1/p' <<<"$done_line")"
  local verdict=ok
  if [[ $rc -ne 0 ]]; then verdict="FAILED (exit $rc, log $log)"; fi
  printf '%-15s %6ss  execs %-10s cov %-6s ft %-6s corpus %-12s %s\n' \
    "$t" "$secs" "${execs:-?}" "${cov:-?}" "${ft:-?}" "${corp:-?}" "$verdict"
  if [[ $rc -ne 0 ]]; then
    grep -E 'panicked at|ERROR: libFuzzer|SUMMARY|Test unit written' "$log" | head -5 | sed 's/^/    /'
  fi
  return $rc
}

case "${1:-all}" in
  build) build; exit 0 ;;
esac
target="${1:-all}"
if [[ "${2:-}" == repro || "${2:-}" == minimize ]]; then
  build
  mode="$2"; shift 2
  if [[ "$mode" == repro ]]; then
    exec "$BIN_DIR/$target" -runs=1 "$@"
  fi
  exec "$BIN_DIR/$target" -minimize_crash=1 -max_total_time=60 \
    -exact_artifact_path="minimized-from-$(basename "$1")" "$1"
fi
secs="${2:-60}"
if [[ "$target" == all ]]; then selected=("${TARGETS[@]}"); else selected=("$target"); fi
build
passed=0 failed=0
for t in "${selected[@]}"; do
  if run_one "$t" "$secs"; then passed=$((passed + 1)); else failed=$((failed + 1)); fi
done
echo "fuzz: $passed passed, $failed failed"
[[ $failed -eq 0 ]]
