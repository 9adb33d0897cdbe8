#!/usr/bin/env bash
# Stops the dev appliance started by deploy/dev-up.sh (SIGTERM: vhsmd flushes and zeroizes keys).
set -euo pipefail
DEV="$(cd "$(dirname "$0")/.." && pwd)/.dev"
for f in "$DEV"/xks-front.pid "$DEV"/vhsmd*.pid; do
  if [ -f "$f" ]; then
    p=$(basename "$f" .pid)
    pid=$(cat "$f")
    kill -TERM "$pid" 2>/dev/null && echo "stopped $p ($pid)" || true
    rm -f "$f"
  fi
done
