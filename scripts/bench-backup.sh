#!/usr/bin/env bash
# Backup benchmark (pgBackRest, issue: backups that follow the primary): on loopback against the embedded
# Consul server, a master bootstrapped with --backup pgbackrest and a pgbench database of SCALE (default
# 70 ≈ 1 GB); then
#   - `baton backup --type full` (monitors running, so that the node leads),
#   - a replica joined from the repository (--clone-from backup) beside one joined with pg_basebackup
#     (--clone-from primary): time, and bytes that crossed loopback meanwhile (the primary's data sent
#     to the replica; the repository is a local directory, so it is not counted),
#   - the archive's backlog while pgbench writes for BENCH_LOAD seconds (default 30): the most segments
#     waiting for the archiver and the longest wait, sampled every second,
#   - `baton reinit` of the replica joined from the repository, after the load: the backup restored over
#     its data directory with --delta, until it streams again (time, loopback bytes),
#   - `baton clone --to-time` of the present: restore and recovery time.
# Needs root (PostgreSQL runs as postgres).
#   scripts/bench-backup.sh [SCALE]
set -euo pipefail
cd "$(dirname "$0")/.."
scale=${1:-70}
load=${BENCH_LOAD:-30}
swift build -c release --static-swift-stdlib --product baton >/dev/null
swift build -c release --static-swift-stdlib --product baton-watchdog >/dev/null
baton=$PWD/.build/release/baton
bin=/usr/lib/postgresql/15/bin
root=$(mktemp -d /tmp/baton-bench-backup.XXXXXX)
chmod 755 "$root"
port=$((20000 + RANDOM % 20000))
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  sleep 1
  for d in "$root"/*/data "$root"/clone; do
    [ -f "$d/postmaster.pid" ] && runuser -u postgres -- "$bin/pg_ctl" stop -D "$d" -m immediate >/dev/null 2>&1 || true
  done
  pkill -f "baton-watchdog.*$root/" 2>/dev/null || true
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$root"
}
trap cleanup EXIT INT TERM
"$baton" consul serve --listen "127.0.0.1:$port" --data-dir "$root/consul" 2>"$root/consul.log" & pids+=($!)
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/v1/status/leader" >/dev/null && break; sleep 0.05; done
echo "bench-password" > "$root/pw"
now() { date +%s.%N; }
elapsed() { echo "$(now) - $1" | bc; }
loopback() { awk '$1 == "lo:" {print $2}' /proc/net/dev; }
pgport() { echo $((port + $1)); }
psql() { runuser -u postgres -- "$bin/psql" -X -q -At -h "$root/sock" -p "$(pgport 1)" "$@" postgres; }
bootstrap() {  # NODE MODE [FLAGS…]
  local n=$1 mode=$2; shift 2
  "$baton" bootstrap $mode --consul "127.0.0.1:$port" --cluster bench --node-name "pg$n" --address 127.0.0.1 \
    --pgdata "$root/pg$n/data" --pg-port "$(pgport "$n")" --pg-bindir "$bin" --pg-socket-dir "$root/sock" \
    --state-dir "$root/pg$n/state" --replication-password-file "$root/pw" --pgbouncer-ini "$root/pg$n/pgbouncer.ini" \
    --pgbouncer-auth-file "$root/userlist.txt" --keepalived-conf "$root/pg$n/keepalived.conf" --baton-config "$root/pg$n/baton.yaml" \
    --api-listen "127.0.0.1:$((port + 100 + n))" --templates-dir "$PWD" --backup pgbackrest --backup-repo "$root/repo" "$@" >/dev/null
}
bootstrap 1 --master
"$baton" monitor --config "$root/pg1/baton.yaml" 2>"$root/monitor1.log" & pids+=($!)
runuser -u postgres -- "$bin/pgbench" -q -i -s "$scale" -h "$root/sock" -p "$(pgport 1)" postgres >/dev/null 2>&1
size=$(psql -c "select pg_size_pretty(pg_database_size('postgres'))")
for _ in $(seq 200); do [ "$(curl -s "http://127.0.0.1:$port/v1/kv/baton/bench/leader?raw")" = pg1 ] && break; sleep 0.1; done

printf '%-62s %10s %14s\n' "step (database $size, pgBackRest $(pgbackrest version | awk '{print $2}'))" "seconds" "loopback MB"
t=$(now); "$baton" backup --type full --config "$root/pg1/baton.yaml" >/dev/null; took=$(elapsed "$t")
printf '%-62s %10.2f %14s\n' "baton backup --type full" "$took" "-"
for source in backup primary; do
  n=$([ $source = backup ] && echo 2 || echo 3)
  before=$(loopback); t=$(now)
  bootstrap "$n" "--join 127.0.0.1:$port" --clone-from "$source"
  took=$(elapsed "$t"); bytes=$(( $(loopback) - before ))
  printf '%-62s %10.2f %14.1f\n' "bootstrap --join --clone-from $source (until it streams)" "$took" "$(echo "$bytes / 1048576" | bc -l)"
done

# pg2's monitor, so that `baton reinit pg2` below has a monitor to carry it out.
"$baton" monitor --config "$root/pg2/baton.yaml" 2>"$root/monitor2.log" & pids+=($!)

# The archive's backlog under load, sampled every second.
runuser -u postgres -- "$bin/pgbench" -c 4 -j 2 -T "$load" -h "$root/sock" -p "$(pgport 1)" postgres >"$root/pgbench.log" 2>&1 & bench=$!
most=0; longest=0
while kill -0 "$bench" 2>/dev/null; do
  waiting=$(find "$root/pg1/data/pg_wal/archive_status" -name '*.ready' | wc -l)
  oldest=$(find "$root/pg1/data/pg_wal/archive_status" -name '*.ready' -printf '%T@\n' | sort -n | head -1)
  wait_s=0; [ -n "$oldest" ] && wait_s=$(echo "$(date +%s.%N) - $oldest" | bc)
  [ "$waiting" -gt "$most" ] && most=$waiting
  [ "$(echo "$wait_s > $longest" | bc)" = 1 ] && longest=$wait_s
  sleep 1
done
wait "$bench" || true
tps=$(awk '/^tps/ {print $3; exit}' "$root/pgbench.log")
printf '%-62s %10s\n' "pgbench -c 4 for ${load} s ($tps tps): most segments waiting" "$most"
printf '%-62s %10.2f\n' "  longest a segment waited for the archiver" "$longest"
archived=$(psql -c "select archived_count || ' archived, ' || failed_count || ' failed' from pg_stat_archiver")
printf '%-62s %s\n' "  pg_stat_archiver" "$archived"

# `baton reinit pg2` after the load: the backup restored over its data directory with --delta (only the
# files that differ from the backup are copied), then streaming catches up.
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$((port + 102))/replica" >/dev/null && break; sleep 0.3; done
before=$(loopback); t=$(now)
"$baton" reinit pg2 --config "$root/pg1/baton.yaml" >"$root/reinit.out" 2>&1 || echo "reinit failed: $(cat "$root/reinit.out")"
for _ in $(seq 600); do curl -sf "http://127.0.0.1:$((port + 102))/replica" >/dev/null && break; sleep 0.1; done
took=$(elapsed "$t"); bytes=$(( $(loopback) - before ))
printf '%-62s %10.2f %14.1f\n' "baton reinit pg2 (--delta over its data, until it streams)" "$took" "$(echo "$bytes / 1048576" | bc -l)"
grep -o 'restore size = [^;)]*' "$root/reinit.out" | sed 's/^/  /' || true

target=$(psql -c "select now()::text")
# Recovery stops at the first commit after the target: one must be in the archive.
psql -c "create table after_target ()" >/dev/null
psql -c "select pg_switch_wal()" >/dev/null
sleep 2
t=$(now)
"$baton" clone --to-time "$target" --pgdata "$root/clone" --port "$(pgport 9)" --config "$root/pg1/baton.yaml" >/dev/null
printf '%-62s %10.2f\n' "baton clone --to-time (restore, recovery, promotion)" "$(elapsed "$t")"
