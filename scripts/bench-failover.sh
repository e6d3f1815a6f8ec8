#!/usr/bin/env bash
# Failover benchmark: three nodes on loopback (PostgreSQL 15, baton monitor, the embedded Consul
# server), a write probe on every node every 100 ms; kill -9 of the primary's postmaster, and kill -9 of
# every process of the primary "node" (monitor, watchdog, PostgreSQL), then the time until a write is
# accepted by the new primary, and until the other replica streams from it. The old primary rejoins
# (pg_rewind; a killed node's monitor is started again) before the next run. Then planned switchovers,
# then `baton restart` of the primary (no failover: the longest write gap, the leader unchanged).
# Needs root (PostgreSQL runs as postgres).
#   scripts/bench-failover.sh [RUNS]      (default 10; BENCH_KEEP=1 keeps the directory and its logs;
#                                          BENCH_ONLY=restarts|footprint|consul|rest measures only that)
# BENCH_ONLY=rest: the requests per second the three monitors at rest send the Consul server, counted by
# the server itself over BENCH_REST seconds (default 30).
# BENCH_ONLY=consul: Consul's everyday trouble played by the embedded server (`baton consul fault`):
# an election of 5 s and of 15 s (every call 500), every answer 2 s late for 10 s, calls held 5 s, the
# leader's session invalidated (an agent restart); RUNS trials each (default 2): whether the primary
# moved, and the longest gap between writes.
# First, the footprint at rest: RSS and PSS (/proc/PID/smaps_rollup) and CPU of every Baton process over
# BENCH_REST seconds (default 30), and where the monitor's resident memory lies, by mapping; beside
# them the same for Patroni (scripts/footprint-patroni.sh) when Debian's patroni is installed.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-10}
# Built as the Debian package builds it (scripts/package-deb.sh): release, the Swift runtime linked in.
swift build -c release --static-swift-stdlib --product baton >/dev/null
swift build -c release --static-swift-stdlib --product baton-watchdog >/dev/null   # the monitor starts it from beside itself
baton=$PWD/.build/release/baton
bin=/usr/lib/postgresql/15/bin
root=$(mktemp -d /tmp/baton-bench-failover.XXXXXX); chmod 755 "$root"
port=$((20000 + RANDOM % 20000))
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  sleep 1
  for d in "$root"/pg*/data*; do [ -f "$d/postmaster.pid" ] && runuser -u postgres -- "$bin/pg_ctl" stop -D "$d" -m immediate >/dev/null 2>&1 || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  if [ -n "${BENCH_KEEP:-}" ]; then echo "kept: $root"; else rm -rf "$root"; fi
}
trap cleanup EXIT INT TERM
fault_control=127.0.0.1:$((port + 99))
"$baton" consul serve --listen "127.0.0.1:$port" --data-dir "$root/consul" --fault-control "$fault_control" 2>"$root/consul.log" & pids+=($!); consul_pid=$!
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/v1/status/leader" >/dev/null && break; sleep 0.05; done
echo "bench-pw" > "$root/pw"
pgport() { echo $((port + $1)); }
for n in 1 2 3; do
  mode=--master; [ "$n" -gt 1 ] && mode="--join 127.0.0.1:$port"
  "$baton" bootstrap $mode --consul "127.0.0.1:$port" --cluster bench --node-name "pg$n" --address 127.0.0.1 \
    --pgdata "$root/pg$n/data" --pg-port "$(pgport $n)" --pg-bindir "$bin" --pg-socket-dir "$root/sock" \
    --state-dir "$root/pg$n/state" --replication-password-file "$root/pw" --pgbouncer-ini "$root/pg$n/pgbouncer.ini" \
    --pgbouncer-auth-file "$root/userlist.txt" --keepalived-conf "$root/pg$n/keepalived.conf" --baton-config "$root/pg$n/baton.yaml" \
    --api-listen "127.0.0.1:$((port + 100 + n))" --templates-dir "$PWD" >/dev/null
done
psql() { "$bin/psql" -X -q -At -U postgres -h "$root/sock" "$@"; }
psql -p "$(pgport 1)" -c "create table probe (at timestamptz default now(), node text)" postgres
declare -A monitor
start_monitor() { "$baton" monitor --config "$root/pg$1/baton.yaml" 2>>"$root/monitor$1.log" & pids+=($!); monitor[$1]=$!; }
for n in 1 2 3; do start_monitor "$n"; done
leader() { curl -s "http://127.0.0.1:$port/v1/kv/baton/bench/leader" | grep -q '"Session"' && curl -s "http://127.0.0.1:$port/v1/kv/baton/bench/leader?raw"; }
now() { date +%s.%N; }
wait_for() { local deadline=$(( $(date +%s) + $1 )); shift; until "$@"; do [ "$(date +%s)" -lt "$deadline" ] || return 1; sleep 0.05; done; }
streams_from() { [ "$(psql -p "$(pgport "$1")" -c "select status||':'||sender_port from pg_stat_wal_receiver" postgres 2>/dev/null)" = "streaming:$(pgport "$2")" ]; }
all_follow() { local l=$1; for n in 1 2 3; do [ "$n" = "$l" ] || streams_from "$n" "$l" || return 1; done; }
wait_for 30 leader >/dev/null
# A write on every node every INTERVAL seconds; each acknowledged one is logged with its time.
start_probe() {
  ( while :; do for n in 1 2 3; do
      psql -p "$(pgport $n)" -c "insert into probe(node) values ('pg$n')" postgres >/dev/null 2>&1 && echo "$(now) pg$n" >>"$2"
    done; sleep "$1"; done ) & probe=$!
}

# settle INTERVAL LOG: once every replica follows the leader (l), a probe every INTERVAL s logs to LOG;
# t0 is when the fault or command starts, a second later.
settle() {
  l=$(leader); l=${l#pg}
  wait_for 90 all_follow "$l"
  sleep 1
  probe_log=$2; : >"$probe_log"
  start_probe "$1" "$probe_log"
  sleep 1
  t0=$(now)
}
children() { cat /proc/"$1"/task/*/children 2>/dev/null || true; }
# kill_node N: every process of node N at once (its monitor, the monitor's watchdog, PostgreSQL).
kill_node() {
  local pm; pm=$(head -1 "$root/pg$1/data/postmaster.pid")
  # shellcheck disable=SC2046
  kill -9 "${monitor[$1]}" $(children "${monitor[$1]}") "$pm" $(children "$pm") 2>/dev/null || true
}
# failovers KIND: postmaster (kill -9 of the primary's postmaster) or node (kill_node of the primary).
failovers() {
failover=(); follow=()
printf '\n%-4s %-8s %-8s %-26s %-22s\n' run killed promoted "first write on new [s]" "replica streams [s]"
for run in $(seq "$runs"); do
  settle 0.1 "$root/probe$1$run.log"
  if [ "$1" = node ]; then kill_node "$l"; else kill -9 "$(head -1 "$root/pg$l/data/postmaster.pid")"; fi
  new=""
  for _ in $(seq 600); do
    new=$(awk -v t0="$t0" -v old="pg$l" '$1 > t0 && $2 != old {print $2; exit}' "$probe_log")
    [ -n "$new" ] && break; sleep 0.05
  done
  t1=$(awk -v t0="$t0" -v old="pg$l" '$1 > t0 && $2 != old {print $1; exit}' "$probe_log")
  other=""; for n in 1 2 3; do [ "pg$n" = "pg$l" ] || [ "pg$n" = "$new" ] || other=${n}; done
  wait_for 30 streams_from "$other" "${new#pg}" || true
  t2=$(now)
  kill "$probe"; wait "$probe" 2>/dev/null || true
  if [ "$1" = node ]; then wait "${monitor[$l]}" 2>/dev/null || true; start_monitor "$l"; fi
  fo=$(echo "$t1 - $t0" | bc); fl=$(echo "$t2 - $t0" | bc)
  failover+=("$fo"); follow+=("$fl")
  printf '%-4s %-8s %-8s %-26.2f %-22.2f\n' "$run" "pg$l" "$new" "$fo" "$fl"
done
echo "kill -9 $1 -> first write accepted by the new primary: $(stats "${failover[@]}")"
echo "kill -9 $1 -> remaining replica streaming from it (probed every 50 ms, an upper bound): $(stats "${follow[@]}")"
}
# footprint SECONDS: each Baton process's RSS, PSS and share of one core while the cluster rests, the
# Consul server holding BENCH_KEYS (default 10,000) keys of 100 B besides the cluster's and a full event
# history (BENCH_EVENTS, default 200: a cluster that has run for a while), written a minute (BENCH_SETTLE)
# before: at rest, the daemons keep resident only the code they run (ResidentCodeTrimmer).
footprint() {
  local procs=() pid
  for n in 1 2 3; do
    procs+=("monitor-pg$n:${monitor[$n]}")
    pid=$(pgrep -f "baton-watchdog --state-dir $root/pg$n/state" | head -1); [ -n "$pid" ] && procs+=("watchdog-pg$n:$pid")
  done
  python3 scripts/consul-fill.py "127.0.0.1:$port" "${BENCH_KEYS:-10000}" bench "${BENCH_EVENTS:-200}"
  sleep "${BENCH_SETTLE:-60}"
  procs+=("consul-serve:$consul_pid")
  scripts/footprint-table.sh "$1" "${procs[@]}"
  echo "(the Consul server holds ${BENCH_KEYS:-10000} extra keys of 100 B, and ${BENCH_EVENTS:-200} events in the history)"
  # The same measurement of Patroni, where it is installed: one table, same machine, same run.
  if command -v patroni >/dev/null; then scripts/footprint-patroni.sh "$1" || echo "(Patroni's side could not be measured in this run)"; fi
  echo "monitor-pg1's resident memory by mapping and permissions (kB, largest first):"
  awk '/^[0-9a-f]+-[0-9a-f]+ / {name = (NF >= 6 ? $6 : "[anonymous]") " " $2} /^Rss:/ {rss[name] += $2} END {for (n in rss) if (rss[n] >= 256) printf "  %8d  %s\n", rss[n], n}' \
    "/proc/${monitor[1]}/smaps" | sort -rn | head -12
}
stats() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {m=(NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2; printf "median %.2f s (min %.2f, max %.2f, n=%d)", m, a[1], a[NR], NR}'; }
# consul_trouble: each row of issue 24's table, RUNS times, under the probe every 100 ms.
consul_trouble() {
  printf '\n%-44s %-4s %-10s %-12s %-26s\n' "Consul does this" run "leader" "moved" "longest write gap [s]"
  local row name args hold
  for row in "election 5 s|election --for 5s|5" "election 15 s|election --for 15s|15" "answers 2 s late for 10 s|slow --delay 2s --for 10s|10" \
    "calls held 5 s (hang)|hang --for 5s|5" "leader's session invalidated (agent restart)|agent-restart --node node1 --name baton-bench-LEADER|1"; do
    IFS='|' read -r name args hold <<<"$row"
    for run in $(seq "$runs"); do
      settle 0.1 "$root/consul$run.log"
      # shellcheck disable=SC2086
      "$baton" consul fault --control "$fault_control" ${args//LEADER/pg$l} >/dev/null
      sleep "$hold"; sleep 3
      kill "$probe"; wait "$probe" 2>/dev/null || true
      others=$(awk -v t0="$t0" -v l="pg$l" '$1 >= t0 && $2 != l' "$probe_log" | wc -l)
      gap=$(sort -n "$probe_log" | awk -v t0="$t0" '$1 >= t0 - 0.5 { if (prev) { d = $1 - prev; if (d > m) m = d }; prev = $1 } END { printf "%.3f", m }')
      printf '%-44s %-4s %-10s %-12s %-26s\n' "$name" "$run" "pg$l" "$([ "$others" = 0 ] && echo stays || echo "FAILED OVER")" "$gap"
    done
  done
  echo "settings: shipped defaults (ttl 10s, loop_wait 1s, fence_timeout 3s, failsafe_mode on), asynchronous, probe every 100 ms on every node"
}
# rest_requests SECONDS: what the cluster at rest costs Consul, counted by the server.
rest_requests() {
  served() { curl -s "http://$fault_control/fault" | sed -n 's/.*"requests":\([0-9]*\).*/\1/p'; }
  local a b; a=$(served); sleep "$1"; b=$(served)
  echo "at rest, three monitors (no pgbouncer agents): $((b - a)) requests to Consul in $1 s: $(echo "scale=2; ($b - $a) / $1" | bc) per second, $(echo "scale=2; ($b - $a) / $1 / 3" | bc) per node"
}
sleep 5
if [ "${BENCH_ONLY:-}" = consul ]; then consul_trouble; exit 0; fi
if [ "${BENCH_ONLY:-}" = rest ]; then sleep 5; rest_requests "${BENCH_REST:-30}"; exit 0; fi
# The footprint opens a full run, or is the whole of BENCH_ONLY=footprint.
if [ -z "${BENCH_SWITCHOVERS_ONLY:-}" ] && [ "${BENCH_ONLY:-footprint}" = footprint ]; then footprint "${BENCH_REST:-30}"; fi
[ "${BENCH_ONLY:-}" = footprint ] && exit 0
if [ -z "${BENCH_SWITCHOVERS_ONLY:-}" ] && [ "${BENCH_ONLY:-}" != restarts ]; then
  failovers postmaster
  failovers node
fi
if [ "${BENCH_ONLY:-}" != restarts ]; then
# Planned switchovers under the same probe: the longest gap between writes acknowledged by any node.
gaps=(); durations=()
printf '\n%-4s %-8s %-8s %-30s %-22s\n' run from to "longest write gap [s]" "command [s]"
for run in $(seq "$runs"); do
  settle 0.02 "$root/switch$run.log"
  to=$(( l % 3 + 1 ))
  if ! "$baton" switchover --config "$root/pg$to/baton.yaml" --to "pg$to" >"$root/switchover.out" 2>&1; then
    kept=/tmp/bench-failover-logs.$$; mkdir -p "$kept"; cp "$root"/monitor*.log "$root/switchover.out" "$kept"/ 2>/dev/null || true
    echo "switchover $run failed: $(cat "$root/switchover.out"); monitor logs kept in $kept"
  fi
  t1=$(now)
  sleep 1
  kill "$probe"; wait "$probe" 2>/dev/null || true
  gap=$(sort -n "$probe_log" | awk -v t0="$t0" '$1 >= t0 - 0.5 { if (prev) { d = $1 - prev; if (d > m) m = d }; prev = $1 } END { printf "%.3f", m }')
  gaps+=("$gap"); durations+=("$(echo "$t1 - $t0" | bc)")
  printf '%-4s %-8s %-8s %-30s %-22.2f\n' "$run" "pg$l" "pg$to" "$gap" "$(echo "$t1 - $t0" | bc)"
done

echo
echo "switchover -> longest gap between acknowledged writes (probe every ~20 ms per node, no pgbouncer): $(stats "${gaps[@]}")"
echo "switchover -> command duration: $(stats "${durations[@]}")"
fi

# `baton restart` of the primary under the same probe: the lock stays, nobody else takes a write.
gaps=(); durations=()
printf '\n%-4s %-8s %-30s %-14s %-10s\n' run restarted "longest write gap [s]" "command [s]" "leader after"
for run in $(seq "$runs"); do
  settle 0.02 "$root/restart$run.log"
  "$baton" restart --config "$root/pg$l/baton.yaml" "pg$l" >"$root/restart.out" 2>&1 || echo "restart $run failed: $(cat "$root/restart.out")"
  t1=$(now)
  sleep 1
  kill "$probe"; wait "$probe" 2>/dev/null || true
  others=$(awk -v t0="$t0" -v l="pg$l" '$1 >= t0 && $2 != l' "$probe_log" | wc -l)
  [ "$others" = 0 ] || echo "restart $run: $others writes accepted by another node (must be none)"
  gap=$(awk -v l="pg$l" '$2 == l' "$probe_log" | sort -n | awk -v t0="$t0" '$1 >= t0 - 0.5 { if (prev) { d = $1 - prev; if (d > m) m = d }; prev = $1 } END { printf "%.3f", m }')
  gaps+=("$gap"); durations+=("$(echo "$t1 - $t0" | bc)")
  printf '%-4s %-8s %-30s %-14.2f %-10s\n' "$run" "pg$l" "$gap" "$(echo "$t1 - $t0" | bc)" "$(leader)"
done
echo
echo "baton restart of the primary -> longest gap between writes it acknowledged (probe every ~20 ms, no pgbouncer): $(stats "${gaps[@]}")"
echo "baton restart of the primary -> command duration: $(stats "${durations[@]}")"
echo "settings: ttl 10s, loop_wait 1s, fence_timeout 3s, primary_start_timeout 60s (default), asynchronous replication, write probe every 100 ms on every node"
