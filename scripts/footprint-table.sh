#!/usr/bin/env bash
# The footprint table the benchmarks print: for each NAME:PID, RSS and PSS (/proc/PID/smaps_rollup) at
# the end and the share of one core used over SECONDS. A header line first unless FOOTPRINT_HEADER=0.
#   scripts/footprint-table.sh SECONDS NAME:PID...
set -euo pipefail
seconds=$1; shift
hz=$(getconf CLK_TCK)
cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }
declare -A start
for p in "$@"; do start[$p]=$(cpu "${p#*:}"); done
sleep "$seconds"
[ "${FOOTPRINT_HEADER:-1}" = 0 ] || printf '\n%-22s %-10s %-10s %-10s\n' process "RSS [MB]" "PSS [MB]" "CPU [%]"
for p in "$@"; do
  name=${p%%:*}; pid=${p#*:}
  [ -r "/proc/$pid/smaps_rollup" ] || { printf '%-22s (gone)\n' "$name"; continue; }
  rss=$(awk '/^Rss:/ {print $2}' "/proc/$pid/smaps_rollup"); pss=$(awk '/^Pss:/ {print $2}' "/proc/$pid/smaps_rollup")
  printf '%-22s %-10.1f %-10.1f %-10.2f\n' "$name" "$(echo "$rss / 1024" | bc -l)" "$(echo "$pss / 1024" | bc -l)" \
    "$(echo "($(cpu "$pid") - ${start[$p]}) * 100 / $hz / $seconds" | bc -l)"
done
