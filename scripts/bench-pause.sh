#!/usr/bin/env bash
# An unplanned failover as clients see it (issue 26): eight clients write as fast as they can (transaction
# pooling) while the primary's whole node dies, or its postmaster, and each client's failed transactions
# and the longest pause between its commits are counted. Runs each case N times (default 10) and prints
# one line per run and a summary. Needs root (the live tests' PostgreSQL OS user, the lab's namespaces).
#
#   scripts/bench-pause.sh [N] [replica|vip]
#
# replica: through a replica node's pgbouncer, three nodes on loopback (the live test
#          `unplannedFailoverIsAPause`, which CI also runs once per fault).
# vip:     through the lab's virtual IP, with vip_policy primary and priority (the lab test
#          `unplannedFailoverThroughTheVIP`, a benchmark only: BATON_BENCH_VIP=1); a node's death is
#          silent (every process frozen, then its link cut and every process killed); "link" cuts
#          only the link of a machine that runs on.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-10}
path=${2:-replica}
case "$path" in
  replica) filter=unplannedFailoverIsAPause ;;
  vip) filter=unplannedFailoverThroughTheVIP; export BATON_BENCH_VIP=1 ;;
  *) echo "usage: scripts/bench-pause.sh [N] [replica|vip]" >&2; exit 2 ;;
esac
case "$runs" in ''|*[!0-9]*) echo "N must be a number of runs, not '$runs'" >&2; exit 2 ;; esac
swift build --build-tests >/dev/null
out=$(mktemp)
trap 'rm -f "$out"' EXIT
for i in $(seq "$runs"); do
  swift test --skip-build --filter "$filter" 2>&1 | grep -E "killed, 8 clients|a client failing twice" | tee -a "$out" || true
done
# "node killed, 8 clients through …: failed transactions per client [1, 1, …], longest pause 3505 ms"
awk '
  /failed transactions per client/ { kind = $0; sub(/: failed transactions.*/, "", kind); sub(/, 8 clients/, "", kind)
    line = $0; sub(/.*per client \[/, "", line); split(line, parts, "]"); n = split(parts[1], f, ", ");
    worst = 0; total = 0; for (i = 1; i <= n; i++) { total += f[i]; if (f[i] > worst) worst = f[i] }
    match($0, /longest pause [0-9]+/); pause = substr($0, RSTART + 14, RLENGTH - 14);
    runs[kind]++; worsts[kind] = worsts[kind] " " worst; totals[kind] = totals[kind] " " total; pauses[kind] = pauses[kind] " " pause }
  END { for (k in runs) printf "%s — %d runs: failed transactions per client, worst client of each run:%s; all clients:%s; longest pause (ms):%s\n", k, runs[k], worsts[k], totals[k], pauses[k] }
' "$out"
