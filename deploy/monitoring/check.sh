#!/usr/bin/env bash
# Checks the monitoring files offline: the alert rules (promtool check + unit tests), the Grafana
# dashboard's JSON and the PromQL of every dashboard query (parsed by promtool as recording rules).
# That every metric named here is exported is checked against the live services by the
# end-to-end test tests/tests/monitoring.rs.
set -euo pipefail
cd "$(dirname "$0")"
command -v promtool >/dev/null || { echo "promtool not found (Debian: apt-get install prometheus)" >&2; exit 1; }

promtool check rules alerts.yml
promtool test rules alerts_test.yml

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 - grafana-dashboard.json "$tmp/dashboard-queries.yml" <<'PY'
import json, sys
dash = json.load(open(sys.argv[1]))  # fails on invalid JSON
exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
assert exprs, "the dashboard has no queries"
# Grafana's variables, replaced by what they stand for, so promtool can parse the queries.
subst = {"$__rate_interval": "5m", "$xks_job": "xks-front", "$vhsm_job": "vhsmd"}
with open(sys.argv[2], "w") as out:
    out.write("groups:\n  - name: dashboard\n    rules:\n")
    for i, e in enumerate(exprs):
        for k, v in subst.items():
            e = e.replace(k, v)
        assert "$" not in e, f"unknown variable in {e}"
        out.write(f"      - record: dashboard:query_{i}\n        expr: {json.dumps(e)}\n")
print(f"dashboard: {len(dash['panels'])} panels, {len(exprs)} queries")
PY
promtool check rules "$tmp/dashboard-queries.yml"
