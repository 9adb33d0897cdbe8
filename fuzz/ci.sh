#!/usr/bin/env bash
# CI's fuzzing step: builds the fuzz targets and runs each one for FUZZ_CI_SECONDS (default 10)
# from its seed corpus and its saved regressions; fails on any crash. See docs/fuzzing.md.
set -euo pipefail
cd "$(dirname "$0")/.."
# Under the root target/ (CI's disk is limited: release, no debug info, nothing else kept).
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target/fuzz}"
start=$(date +%s)
echo "== fuzz: cargo fmt --check"
(cd fuzz && cargo fmt -- --check)
echo "== fuzz: build (libFuzzer instrumentation, release)"
fuzz/run.sh build
built=$(date +%s)
echo "== fuzz: every target for ${FUZZ_CI_SECONDS:-10} s"
FUZZ_NO_BUILD=1 fuzz/run.sh all "${FUZZ_CI_SECONDS:-10}"
end=$(date +%s)
echo "== fuzz: build $((built - start)) s, runs $((end - built)) s"
