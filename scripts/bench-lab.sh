#!/usr/bin/env bash
# End-to-end benchmark in the network-namespace lab (scripts/lab.sh, needs root): three nodes with
# PostgreSQL, pgbouncer, keepalived, baton monitor and pgbouncer-agent. Prints a table and writes JSON.
#   (a) kill -9 of the primary's PostgreSQL      (b) the whole primary node killed
#   (c) the primary's link cut                   → first write accepted through the VIP, through a
#       replica node's pgbouncer and through HAProxy (routing by each node's /primary); for (c) also
#       when the old primary stopped taking writes
#   (d) planned switchover under pgbench through a replica node's pgbouncer: failed transactions and
#       the longest pause          (e) acknowledged commits lost, asynchronous and synchronous mode
#   (f) memory (RSS, PSS) and CPU at rest of every Baton process, beside Patroni's where installed
# A write probe every 100 ms on every target, as ../shared/research/failover-anchors.md measured.
#   scripts/bench-lab.sh [RUNS] [JSON-FILE]       (default 10 runs, bench-lab.json)
# BENCH_ONLY="postgres node partition switchover loss rest" picks parts (default: all).
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-10}
only=" ${BENCH_ONLY:-postgres node partition switchover loss rest} "
part() { [[ "$only" == *" $1 "* ]]; }
json=${2:-bench-lab.json}
[ "$(id -u)" = 0 ] || { echo "bench-lab: needs root (network namespaces)" >&2; exit 1; }
# Built as the Debian package builds it (scripts/package-deb.sh): release, the Swift runtime linked in.
swift build -c release --static-swift-stdlib --product baton >/dev/null
swift build -c release --static-swift-stdlib --product baton-watchdog >/dev/null   # the monitor starts it from beside itself
export BATON=$PWD/.build/release/baton BATON_LAB_DIR=/tmp/baton-bench-lab
lab=scripts/lab.sh
bin=/usr/lib/postgresql/15/bin
probes=()
cleanup() { for p in "${probes[@]}"; do kill "$p" 2>/dev/null || true; done; "$lab" down; }
trap cleanup EXIT
trap 'exit 130' INT TERM
"$lab" up 3 >/dev/null
now() { date +%s.%N; }
wait_for() { local deadline=$(( $(date +%s) + $1 )); shift; until "$@"; do [ "$(date +%s)" -lt "$deadline" ] || return 1; sleep 0.1; done; }
leader() { "$lab" leader | tr -d '\n'; }
app() { PGPASSWORD=app-secret PGCONNECT_TIMEOUT=1 timeout 2 "$bin/psql" -X -q -At -U app -d postgres "$@"; }
settled() { # the leader holds the VIP, and every other node streams from it
  local l; l=$(leader); [ -n "$l" ] && [ "$("$lab" vip)" = "$l" ] || return 1
  [ "$("$lab" psql "${l#n}" -c "select count(*) from pg_stat_replication where state = 'streaming'" 2>/dev/null)" = 2 ]
}
# local_probe N LOG: one INSERT every 100 ms on node N's own PostgreSQL, from inside the node (its Unix
# socket): what the node itself still accepts when its link is cut.
local_probe() {
  ( while :; do
      if s=$(timeout 2 "$lab" psql "$1" -c "insert into writes(node) values ('local') returning inet_server_addr()" 2>/dev/null); then echo "$(now) ok 198.18.0.$1"; else echo "$(now) fail"; fi
      sleep 0.1
    done >>"$2" ) & probes+=($!)
}
# probe NAME HOST PORT LOG: a new connection and one INSERT every 100 ms; logs "time ok|fail server".
probe() {
  ( while :; do
      if s=$(app -h "$2" -p "$3" -c "insert into writes(node) values ('$1') returning inet_server_addr()" 2>/dev/null); then echo "$(now) ok ${s%/*}"; else echo "$(now) fail"; fi
      sleep 0.1
    done >>"$4" ) & probes+=($!)
}
stop_probes() { for p in "${probes[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; probes=(); }
# first_ok LOG T0 OLDADDR: seconds from T0 to the first write after T0 acknowledged by another server.
first_ok() { awk -v t0="$2" -v old="$3" '$1 > t0 && $2 == "ok" && $3 != old { printf "%.2f", $1 - t0; exit }' "$1"; }
# last_ok LOG T0 OLDADDR: seconds from T0 to the last write the old primary acknowledged.
last_ok() { awk -v t0="$2" -v old="$3" '$1 > t0 && $2 == "ok" && $3 == old { last = $1 - t0 } END { printf "%.2f", last + 0 }' "$1"; }
stats() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {m=(NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2; printf "%.2f %.2f %.2f %d", m, a[1], a[NR], NR}'; }
declare -A results
record() { results[$1]="${results[$1]:-} $2"; }

failover_runs() { # failover_runs KIND
  local kind=$1
  for run in $(seq "$runs"); do
    wait_for 120 settled
    local l; l=$(leader); local n=${l#n} other=$(( ${l#n} % 3 + 1 ))
    local old=198.18.0.$n dir=$BATON_LAB_DIR/bench; mkdir -p "$dir"
    : >"$dir/vip.log"; : >"$dir/replica.log"; : >"$dir/old.log"; : >"$dir/haproxy.log"
    probe vip 198.18.0.100 6432 "$dir/vip.log"
    probe haproxy 198.18.0.254 5000 "$dir/haproxy.log"
    probe replica "198.18.0.$other" 6432 "$dir/replica.log"
    local_probe "$n" "$dir/old.log"
    sleep 1.5
    local t0; t0=$(now)
    case $kind in
      postgres) "$lab" kill-postgres "$n" ;;
      node) "$lab" kill-node "$n" ;;
      partition) "$lab" partition "$n" ;;
    esac
    wait_for 60 bash -c "awk -v t0=$t0 -v old=$old '\$1 > t0 && \$2 == \"ok\" && \$3 != old {f=1} END {exit !f}' $dir/vip.log" || true
    sleep 2
    stop_probes
    local a b h; a=$(first_ok "$dir/vip.log" "$t0" "$old"); b=$(first_ok "$dir/replica.log" "$t0" "$old")
    h=$(first_ok "$dir/haproxy.log" "$t0" "$old")
    record "$kind.vip" "${a:-60}"; record "$kind.replica" "${b:-60}"; record "$kind.haproxy" "${h:-60}"
    local c=""; [ "$kind" = partition ] && { c=$(last_ok "$dir/old.log" "$t0" "$old"); record "$kind.old_last_write" "$c"; }
    printf '%-10s %-4s %-6s %-22s %-28s %-22s %s\n' "$kind" "$run" "$l" "${a:-none}" "${b:-none}" "${h:-none}" "$c"
    case $kind in
      node) "$lab" start-node "$n" ;;
      partition) "$lab" heal "$n" ;;
    esac
  done
}

printf '%-10s %-4s %-6s %-22s %-28s %-22s %s\n' fault run killed "first write via VIP [s]" "via replica's pgbouncer [s]" "via HAProxy [s]" "old primary's last write [s]"
for kind in postgres node partition; do part "$kind" && failover_runs "$kind"; done

# (d) switchovers under pgbench through a replica node's pgbouncer (persistent connections).
echo
printf '%-4s %-6s %-6s %-18s %-18s\n' run from to "failed xacts" "longest pause [s]"
echo "insert into writes(node) values ('pgbench');" >"$BATON_LAB_DIR/bench.sql"
for run in $(seq "$runs"); do
  part switchover || break
  wait_for 120 settled
  l=$(leader); to=n$(( ${l#n} % 3 + 1 )); via=$(( ${to#n} % 3 + 1 ))
  rm -f "$BATON_LAB_DIR"/pgbench_log*
  ( cd "$BATON_LAB_DIR" && PGPASSWORD=app-secret "$bin/pgbench" -n -h "198.18.0.$via" -p 6432 -U app -c 4 -T 8 -l -f bench.sql postgres >pgbench.out 2>&1 || true ) &
  bench=$!
  sleep 2
  "$BATON" switchover --config "$BATON_LAB_DIR/n${to#n}/baton.yaml" --to "$to" >/dev/null 2>&1 || true
  wait "$bench" || true
  failed=$(awk '/number of failed transactions/ {print $5} /aborted/ {a=1} END {if (a) print "aborted"}' "$BATON_LAB_DIR/pgbench.out" | head -1)
  pause=$(cat "$BATON_LAB_DIR"/pgbench_log* | awk '{printf "%d.%06d\n", $5, $6}' | sort -n | awk 'NR > 1 { d = $1 - p; if (d > m) m = d } { p = $1 } END { printf "%.3f", m }')
  record switchover.failed "${failed:-0}"; record switchover.pause "$pause"
  printf '%-4s %-6s %-6s %-18s %-18s\n' "$run" "$l" "$to" "${failed:-0}" "$pause"
done

# (e) acknowledged commits lost: a writer through the VIP records each acknowledged id; after kill -9
# of the primary's PostgreSQL, count the ids missing on the new primary.
echo
for mode in off on; do
  part loss || break
  "$BATON" config set --config "$BATON_LAB_DIR/n1/baton.yaml" "synchronous_mode=$mode" >/dev/null
  for run in $(seq "$runs"); do
    wait_for 120 settled
    l=$(leader); n=${l#n}
    [ "$mode" = on ] && wait_for 30 bash -c "[ -n \"\$(BATON_LAB_DIR=$BATON_LAB_DIR $lab psql $n -c \"select standby from (select pg_catalog.current_setting('synchronous_standby_names') standby) s where standby not in ('', '*')\")\" ]"
    log=$BATON_LAB_DIR/acks.log; : >"$log"
    ( while :; do id=$(app -h 198.18.0.100 -p 6432 -c "insert into writes(node) values ('acked') returning id" 2>/dev/null) && echo "$id" >>"$log"; done ) & writer=$!
    sleep 1.5
    "$lab" kill-postgres "$n"
    wait_for 60 bash -c "l=\$(BATON_LAB_DIR=$BATON_LAB_DIR $lab leader | tr -d '\n'); [ -n \"\$l\" ] && [ \"\$l\" != $l ]" || true
    sleep 2
    kill "$writer"; wait "$writer" 2>/dev/null || true
    new=$(leader)
    "$lab" psql "${new#n}" -c "select id from writes" | sort >"$BATON_LAB_DIR/present"
    lost=$(sort "$log" | comm -23 - "$BATON_LAB_DIR/present" | wc -l)
    record "lost.$mode" "$lost"
    printf 'synchronous_mode=%-4s run %-3s acknowledged %-6s lost %s\n' "$mode" "$run" "$(wc -l <"$log")" "$lost"
  done
done
"$BATON" config set --config "$BATON_LAB_DIR/n1/baton.yaml" synchronous_mode=off >/dev/null

# (f) at rest: RSS, PSS and CPU of every Baton process over 30 s — each node's monitor, watchdog and
# pgbouncer agent, and the Consul server — and beside them Patroni's, where it is installed.
if part rest; then
wait_for 120 settled
# A full event history, as in a cluster that has run for a while (the failovers above wrote some), and
# a minute (BENCH_SETTLE) to settle, as the loopback footprint waits: "at rest" is not the first seconds
# after the cluster formed or a failover ended.
python3 scripts/consul-fill.py 198.18.0.253:8500 0 lab 200
sleep "${BENCH_SETTLE:-60}"
procs=()
while read -r p name; do
  case $name in monitor | pgbouncer-agent | consul) ;; *) continue ;; esac
  [ -d /proc/$p ] || continue
  node=$(tr '\0' ' ' </proc/$p/cmdline | grep -o "$BATON_LAB_DIR/n[0-9]*/" | head -1 | grep -o 'n[0-9]*/' | tr -d /) || true
  procs+=("$name${node:+-$node}:$p")
  if [ "$name" = monitor ]; then
    w=$(pgrep -f "baton-watchdog --state-dir $BATON_LAB_DIR/$node/" | head -1) || true
    if [ -n "$w" ]; then procs+=("watchdog-$node:$w"); fi
  fi
done <"$BATON_LAB_DIR/pids"
table=$(scripts/footprint-table.sh 30 "${procs[@]}")
echo "$table"
while read -r name rss pss cpu; do
  record "rest.$name.rss_mb" "$rss"; record "rest.$name.pss_mb" "$pss"; record "rest.$name.cpu_pct" "$cpu"
done < <(echo "$table" | awk 'NR > 2 && NF == 4')
if command -v patroni >/dev/null; then scripts/footprint-patroni.sh 30 || echo "(Patroni's side could not be measured in this run)"; fi
fi

echo
echo "summary: median min max n"
{
  echo "{"
  echo "  \"date\": \"$(date -u +%Y-%m-%dT%H:%M:%SZ)\", \"runs\": $runs,"
  echo "  \"settings\": \"ttl 10s, loop_wait 1s, fence_timeout 3s, primary_start_timeout 60s (default), VRRP v3 adverts every 0.1s, the VIP moved by the tracked file\","
  first=1
  for key in $(printf '%s\n' "${!results[@]}" | sort); do
    # shellcheck disable=SC2086
    read -r m lo hi n <<<"$(stats ${results[$key]})"
    printf '%-34s %s s-or-count (min %s, max %s, n=%s)\n' "$key" "$m" "$lo" "$hi" "$n" >&2
    [ $first = 1 ] || echo ","
    first=0
    printf '  "%s": {"median": %s, "min": %s, "max": %s, "n": %s}' "$key" "$m" "$lo" "$hi" "$n"
  done
  echo
  echo "}"
} >"$json"
echo "JSON: $json"
