#!/usr/bin/env bash
# An unplanned failover as clients see it (issue 26): eight clients write as fast as they can through a
# replica node's pgbouncer (transaction pooling) while the primary's whole node dies, or its postmaster;
# the live test `unplannedFailoverIsAPause` counts each client's failed transactions and the longest
# pause between its commits. Runs it N times (default 10) and prints one line per run and a summary.
# Needs root (the live tests' PostgreSQL OS user), like the test command.
#
#   scripts/bench-pause.sh [N]
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-10}
swift build --build-tests >/dev/null
out=$(mktemp)
trap 'rm -f "$out"' EXIT
for i in $(seq "$runs"); do
  swift test --skip-build --filter unplannedFailoverIsAPause 2>&1 | grep -E "killed, 8 clients" | tee -a "$out" || true
done
# "node killed, 8 clients …: failed transactions per client [1, 1, …], longest pause 3505 ms"
awk '
  { kind = $1; sub(/.*per client \[/, ""); split($0, parts, "]"); n = split(parts[1], f, ", ");
    worst = 0; total = 0; for (i = 1; i <= n; i++) { total += f[i]; if (f[i] > worst) worst = f[i] }
    match($0, /longest pause [0-9]+/); pause = substr($0, RSTART + 14, RLENGTH - 14);
    runs[kind]++; worsts[kind] = worsts[kind] " " worst; totals[kind] = totals[kind] " " total; pauses[kind] = pauses[kind] " " pause }
  END { for (k in runs) printf "%s killed, %d runs: failed transactions per client, worst client of each run:%s; all clients:%s; longest pause (ms):%s\n", k, runs[k], worsts[k], totals[k], pauses[k] }
' "$out"
