#!/usr/bin/env bash
# Stops the dev appliance started by deploy/dev-up.sh (SIGTERM: vhsmd flushes and zeroizes keys).
set -euo pipefail
DEV="$(cd "$(dirname "$0")/.." && pwd)/.dev"
for p in xks-front vhsmd; do
  if [ -f "$DEV/$p.pid" ]; then
    pid=$(cat "$DEV/$p.pid")
    kill -TERM "$pid" 2>/dev/null && echo "stopped $p ($pid)" || true
    rm -f "$DEV/$p.pid"
  fi
done
