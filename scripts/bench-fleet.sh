#!/usr/bin/env bash
# Fleet benchmark (issue 24, item 5): how many Baton clusters one embedded Consul server carries. Clusters
# of three real nodes (PostgreSQL 15, `baton monitor` and its watchdog; no pgbouncer or keepalived) are
# added to one `baton consul serve` in steps; after each step, with every cluster at rest, the server's
# own count of the requests it served, its CPU and RSS, and the monitors' CPU, over BENCH_REST seconds
# (default 60). Then, with the whole fleet resting beside it, kill -9 of one cluster's primary
# postmaster, BENCH_FAILOVERS times (default 3, a different cluster each time): the time until a write
# is accepted by its new primary (a write probe on each of its nodes every 100 ms, as
# scripts/bench-failover.sh measures).
# Needs root (PostgreSQL runs as postgres). Bounded: at most 40 clusters; everything it started is
# stopped by PID and its directory removed at the end, also on failure (BENCH_KEEP=1 keeps the directory).
#   scripts/bench-fleet.sh [STEPS]      (default "1 10 30": the fleet sizes measured, ascending)
set -euo pipefail
cd "$(dirname "$0")/.."
read -r -a steps <<<"${1:-1 10 30}"
previous=0
for size in "${steps[@]}"; do
  [[ "$size" =~ ^[0-9]+$ ]] && [ "$size" -gt "$previous" ] && [ "$size" -le 40 ] \
    || { echo "STEPS must be fleet sizes from 1 to 40 clusters (120 PostgreSQL servers), ascending, e.g. \"1 10 30\"; got \"${1:-}\"" >&2; exit 2; }
  previous=$size
done
[[ "${BENCH_REST:-60}" =~ ^[1-9][0-9]*$ && "${BENCH_FAILOVERS:-3}" =~ ^[0-9]+$ ]] \
  || { echo "BENCH_REST must be a whole number of seconds (at least 1), BENCH_FAILOVERS a count" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "run as root: PostgreSQL runs as the postgres user" >&2; exit 2; }
swift build -c release --static-swift-stdlib --product baton >/dev/null
swift build -c release --static-swift-stdlib --product baton-watchdog >/dev/null   # the monitor starts it from beside itself
baton=$PWD/.build/release/baton
bin=/usr/lib/postgresql/15/bin
root=$(mktemp -d /tmp/baton-bench-fleet.XXXXXX); chmod 755 "$root"
base=$((20000 + RANDOM % 10000))
rest=${BENCH_REST:-60}
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  sleep 1
  for d in "$root"/c*/pg*/data; do [ -f "$d/postmaster.pid" ] && runuser -u postgres -- "$bin/pg_ctl" stop -D "$d" -m immediate >/dev/null 2>&1 || true; done
  # The monitors' watchdogs outlive them by design: those of this fleet's state directories.
  pkill -f "baton-watchdog --state-dir $root/" 2>/dev/null || true
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  if [ -n "${BENCH_KEEP:-}" ]; then echo "kept: $root"; else rm -rf "$root"; fi
}
trap cleanup EXIT INT TERM
consul=127.0.0.1:$base
fault_control=127.0.0.1:$((base + 1))
"$baton" consul serve --listen "$consul" --data-dir "$root/consul" --fault-control "$fault_control" 2>"$root/consul.log" & pids+=($!); consul_pid=$!
for _ in $(seq 100); do curl -sf "http://$consul/v1/status/leader" >/dev/null && break; sleep 0.05; done
echo "bench-pw" > "$root/pw"
# Cluster C (1…40), node N (1…3): PostgreSQL on base + 100·C + N, the node API on base + 100·C + 10 + N.
pgport() { echo $((base + 100 * $1 + $2)); }
declare -A monitor
add_cluster() {
  local c=$1 n mode
  for n in 1 2 3; do
    mode=--master; [ "$n" -gt 1 ] && mode="--join $consul"
    "$baton" bootstrap $mode --consul "$consul" --cluster "c$c" --node-name "pg$n" --address 127.0.0.1 \
      --pgdata "$root/c$c/pg$n/data" --pg-port "$(pgport "$c" "$n")" --pg-bindir "$bin" --pg-socket-dir "$root/sock" \
      --state-dir "$root/c$c/pg$n/state" --replication-password-file "$root/pw" --pgbouncer-ini "$root/c$c/pg$n/pgbouncer.ini" \
      --pgbouncer-auth-file "$root/userlist.txt" --keepalived-conf "$root/c$c/pg$n/keepalived.conf" --baton-config "$root/c$c/pg$n/baton.yaml" \
      --api-listen "127.0.0.1:$((base + 100 * c + 10 + n))" --templates-dir "$PWD" >"$root/c$c-bootstrap$n.log" 2>&1 \
      || { echo "bootstrap of c$c/pg$n failed:"; tail -5 "$root/c$c-bootstrap$n.log"; exit 1; }
  done
  psql -p "$(pgport "$c" 1)" -c "create table probe (at timestamptz default now(), node text)" postgres
  for n in 1 2 3; do
    "$baton" monitor --config "$root/c$c/pg$n/baton.yaml" 2>>"$root/c$c-monitor$n.log" & pids+=($!); monitor[$c.$n]=$!
  done
}
psql() { "$bin/psql" -X -q -At -U postgres -h "$root/sock" "$@"; }
leader() { curl -s "http://$consul/v1/kv/baton/c$1/leader" | grep -q '"Session"' && curl -s "http://$consul/v1/kv/baton/c$1/leader?raw"; }
now() { date +%s.%N; }
wait_for() { local deadline=$(( $(date +%s) + $1 )); shift; until "$@"; do [ "$(date +%s)" -lt "$deadline" ] || return 1; sleep 0.1; done; }
streams() { [ "$(psql -p "$(pgport "$1" "$2")" -c "select status from pg_stat_wal_receiver" postgres 2>/dev/null)" = streaming ]; }
settled() { local c=$1 l n; l=$(leader "$c") || return 1; for n in 1 2 3; do [ "pg$n" = "$l" ] || streams "$c" "$n" || return 1; done; }
served() { curl -s "http://$fault_control/fault" | sed -n 's/.*"requests":\([0-9]*\).*/\1/p'; }
cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }
rss_mb() { awk '/^VmRSS:/ {printf "%.1f", $2 / 1024}' "/proc/$1/status"; }
hz=$(getconf CLK_TCK)

printf '%-9s %-10s %-14s %-20s %-18s %-16s %-22s\n' clusters monitors "requests/s" "requests/s/cluster" "server CPU [%]" "server RSS [MB]" "monitors' CPU [%, sum]"
added=0
for size in "${steps[@]}"; do
  while [ "$added" -lt "$size" ]; do added=$((added + 1)); add_cluster "$added"; done
  for c in $(seq "$size"); do wait_for 120 settled "$c" || { echo "cluster c$c did not settle; its monitors' logs: $root/c$c-monitor*.log"; BENCH_KEEP=1; exit 1; }; done
  sleep 10   # past the start-up writes (registrations, first reports)
  a=$(served); s0=$(cpu "$consul_pid"); m0=0
  for p in "${!monitor[@]}"; do m0=$((m0 + $(cpu "${monitor[$p]}"))); done
  sleep "$rest"
  b=$(served); s1=$(cpu "$consul_pid"); m1=0
  for p in "${!monitor[@]}"; do m1=$((m1 + $(cpu "${monitor[$p]}"))); done
  printf '%-9s %-10s %-14.1f %-20.2f %-18.2f %-16s %-22.1f\n' "$size" "$((size * 3))" "$(echo "($b - $a) / $rest" | bc -l)" \
    "$(echo "($b - $a) / $rest / $size" | bc -l)" "$(echo "($s1 - $s0) * 100 / $hz / $rest" | bc -l)" "$(rss_mb "$consul_pid")" \
    "$(echo "($m1 - $m0) * 100 / $hz / $rest" | bc -l)"
done

# One cluster's primary postmaster killed while the rest of the fleet rests beside it.
printf '\n%-4s %-9s %-8s %-8s %-26s\n' run cluster killed promoted "first write on new [s]"
times=()
for run in $(seq "${BENCH_FAILOVERS:-3}"); do
  c=$(( (run - 1) * added / ${BENCH_FAILOVERS:-3} + 1 ))
  wait_for 120 settled "$c" || { echo "cluster c$c did not settle before run $run"; continue; }
  l=$(leader "$c"); l=${l#pg}
  log=$root/probe$run.log; : >"$log"
  ( while :; do for n in 1 2 3; do
      psql -p "$(pgport "$c" "$n")" -c "insert into probe(node) values ('pg$n')" postgres >/dev/null 2>&1 && echo "$(now) pg$n" >>"$log"
    done; sleep 0.1; done ) & probe=$!
  sleep 2; t0=$(now)
  kill -9 "$(head -1 "$root/c$c/pg$l/data/postmaster.pid")"
  new=""
  for _ in $(seq 600); do
    new=$(awk -v t0="$t0" -v old="pg$l" '$1 > t0 && $2 != old {print $2; exit}' "$log"); [ -n "$new" ] && break; sleep 0.05
  done
  kill "$probe"; wait "$probe" 2>/dev/null || true
  [ -n "$new" ] || { printf '%-4s %-9s %-8s %s\n' "$run" "c$c" "pg$l" "no new primary within 30 s"; continue; }
  t1=$(awk -v t0="$t0" -v old="pg$l" '$1 > t0 && $2 != old {print $1; exit}' "$log")
  times+=("$(echo "$t1 - $t0" | bc)")
  printf '%-4s %-9s %-8s %-8s %-26.2f\n' "$run" "c$c" "pg$l" "$new" "${times[-1]}"
done
[ "${#times[@]}" = 0 ] || printf '%s\n' "${times[@]}" | sort -n | awk '{a[NR]=$1} END {m=(NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2; printf "kill -9 of one cluster'"'"'s postmaster beside %d resting clusters -> first write on its new primary: median %.2f s (min %.2f, max %.2f, n=%d)\n", '"$added"' - 1, m, a[1], a[NR], NR}'
echo "settings: shipped defaults (ttl 10s, loop_wait 1s, fence_timeout 3s, failsafe_mode on), asynchronous; one baton consul serve; $(nproc) cores; release build"
