#!/usr/bin/env bash
# Patroni's footprint at rest, for the side-by-side rows of scripts/bench-failover.sh: three Patroni
# nodes (Debian's patroni, PostgreSQL 15) and one etcd member on loopback, at Patroni's shortest
# documented timings (ttl 20, loop_wait 1, retry_timeout 3); once the leader runs and both replicas
# stream, each Patroni process's RSS, PSS (/proc/PID/smaps_rollup) and share of one core over SECONDS.
# Prints rows in bench-failover's footprint format. Needs root (PostgreSQL and Patroni run as postgres).
#   scripts/footprint-patroni.sh [SECONDS]     (default 30)
set -euo pipefail
seconds=${1:-30}
command -v patroni >/dev/null && command -v etcd >/dev/null || { echo "patroni or etcd not installed (apt-get install patroni etcd-server)"; exit 0; }
bin=/usr/lib/postgresql/15/bin
root=$(mktemp -d /tmp/baton-footprint-patroni.XXXXXX); chmod 755 "$root"
base=$((30000 + RANDOM % 20000))
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  sleep 2
  for n in 1 2 3; do [ -f "$root/p$n/data/postmaster.pid" ] && runuser -u postgres -- "$bin/pg_ctl" stop -D "$root/p$n/data" -m immediate >/dev/null 2>&1 || true; done
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  rm -rf "$root"
}
trap cleanup EXIT INT TERM
etcd --name default --data-dir "$root/etcd" --listen-client-urls "http://127.0.0.1:$base" --advertise-client-urls "http://127.0.0.1:$base" \
  --listen-peer-urls "http://127.0.0.1:$((base + 1))" --initial-advertise-peer-urls "http://127.0.0.1:$((base + 1))" \
  --initial-cluster "default=http://127.0.0.1:$((base + 1))" >"$root/etcd.log" 2>&1 & pids+=($!); etcd_pid=$!
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$base/health" >/dev/null && break; sleep 0.1; done
mkdir -p "$root/sock"; chown postgres "$root/sock"
declare -A patroni
for n in 1 2 3; do
  mkdir -p "$root/p$n"; chown postgres "$root/p$n"
  cat >"$root/p$n/patroni.yml" <<EOF
scope: footprint
name: p$n
restapi: {listen: "127.0.0.1:$((base + 10 + n))", connect_address: "127.0.0.1:$((base + 10 + n))"}
etcd3: {hosts: "127.0.0.1:$base"}
bootstrap:
  dcs: {ttl: 20, loop_wait: 1, retry_timeout: 3, maximum_lag_on_failover: 1048576, postgresql: {use_pg_rewind: true}}
  initdb: [{encoding: UTF8}]
  pg_hba: ["local all all trust", "host replication replicator 127.0.0.1/32 md5", "host all all 127.0.0.1/32 md5"]
postgresql:
  listen: "127.0.0.1:$((base + 20 + n))"
  connect_address: "127.0.0.1:$((base + 20 + n))"
  data_dir: "$root/p$n/data"
  bin_dir: "$bin"
  authentication: {replication: {username: replicator, password: rep}, superuser: {username: postgres, password: pg}}
  parameters: {unix_socket_directories: "$root/sock"}
EOF
  chown postgres "$root/p$n/patroni.yml"
  runuser -u postgres -- patroni "$root/p$n/patroni.yml" >"$root/p$n/patroni.log" 2>&1 & pids+=($!)
  # runuser forks: the Patroni process is its child.
  sleep 0.5; patroni[$n]=$(pgrep -f "patroni $root/p$n/patroni.yml" | while read -r p; do [ "$(cat /proc/"$p"/comm)" != runuser ] && echo "$p"; done | head -1)
  [ "$n" = 1 ] && for _ in $(seq 300); do curl -sf "http://127.0.0.1:$((base + 11))/primary" >/dev/null && break; sleep 0.1; done
done
streaming() { [ "$(runuser -u postgres -- "$bin/psql" -X -At -h "$root/sock" -p $((base + 21)) -c "select count(*) from pg_stat_replication where state = 'streaming'" postgres 2>/dev/null)" = 2 ]; }
# Both replicas take a base backup first (each waits for a checkpoint): up to 3 minutes on a busy machine.
deadline=$(( $(date +%s) + 180 ))
until streaming || [ "$(date +%s)" -ge "$deadline" ]; do sleep 0.5; done
streaming || { echo "Patroni's replicas do not stream; see $root/p*/patroni.log"; tail -n 5 "$root"/p*/patroni.log; exit 1; }
sleep 5
FOOTPRINT_HEADER=0 "$(dirname "$0")/footprint-table.sh" "$seconds" \
  "patroni-p1:${patroni[1]}" "patroni-p2:${patroni[2]}" "patroni-p3:${patroni[3]}" "etcd:$etcd_pid"
echo "(Patroni $(patroni --version 2>&1 | awk '{print $2}'), ttl 20, loop_wait 1, retry_timeout 3; etcd $(etcd --version | awk 'NR==1 {print $3}'), one member)"
