#!/usr/bin/env bash
# Runs the whole test suite: builds the binaries the end-to-end tests start, then every unit,
# known-answer, integration and end-to-end test, and closes with one summary line.
set -euo pipefail
cd "$(dirname "$0")/.."
# Built with the tests' feature set (--tests), so `cargo test` below reuses the same artefacts
# instead of compiling the dependency tree a second time.
cargo build --workspace --bins --tests
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test --workspace --lib --bins --tests --no-fail-fast "$@" 2>&1 | tee "$log" || status=$?
awk '/^test result:/ { passed += $4; failed += $6; ignored += $8 }
     END { printf "tests: %d passed, %d failed, %d skipped\n", passed, failed, ignored }' "$log"
exit "$status"
