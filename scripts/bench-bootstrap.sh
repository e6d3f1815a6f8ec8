#!/usr/bin/env bash
# Bootstrap benchmark: time to bootstrap a master, and to join a replica of a ~100 MB and a ~1 GB
# database, beside plain pg_basebackup of the same primary: Baton's overhead over the copy itself.
# Runs on loopback against the embedded Consul server; needs root (PostgreSQL runs as postgres).
#   scripts/bench-bootstrap.sh [SIZES…]    sizes as pgbench scale factors (default: 7 70 ≈ 100 MB, 1 GB)
set -euo pipefail
cd "$(dirname "$0")/.."
swift build -c release --product baton >/dev/null
baton=$PWD/.build/release/baton
bin=/usr/lib/postgresql/15/bin
scales=("${@:-7 70}")
[ $# -gt 0 ] || scales=(7 70)
root=$(mktemp -d /tmp/baton-bench-bootstrap.XXXXXX)
chmod 755 "$root"
consul_port=$((20000 + RANDOM % 20000))
"$baton" consul serve --listen "127.0.0.1:$consul_port" --data-dir "$root/consul" 2>"$root/consul.log" &
consul=$!
cleanup() {
  for d in "$root"/*/data "$root"/*/plain; do
    [ -f "$d/postmaster.pid" ] && runuser -u postgres -- "$bin/pg_ctl" stop -D "$d" -m immediate >/dev/null 2>&1 || true
  done
  kill "$consul" 2>/dev/null || true; wait "$consul" 2>/dev/null || true
  rm -rf "$root"
}
trap cleanup EXIT INT TERM
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$consul_port/v1/status/leader" >/dev/null && break; sleep 0.05; done
echo "bench-password" > "$root/pw"
now() { date +%s.%N; }
elapsed() { echo "$(now) - $1" | bc; }
common=(--consul "127.0.0.1:$consul_port" --address 127.0.0.1 --pg-bindir "$bin" --pg-socket-dir "$root/sock" \
  --replication-password-file "$root/pw" --pgbouncer-auth-file "$root/userlist.txt" --templates-dir "$PWD")
node() { echo --node-name "$1" --pgdata "$root/$1/data" --pg-port "$2" --state-dir "$root/$1/state" \
  --pgbouncer-ini "$root/$1/pgbouncer.ini" --keepalived-conf "$root/$1/keepalived.conf"; }

printf '%-44s %s\n' "step" "seconds"
i=0
for scale in "${scales[@]}"; do
  i=$((i + 1))
  cluster="bench$i"; mport=$((30000 + i * 10)); rport=$((mport + 1))
  t=$(now); "$baton" bootstrap --master --cluster "$cluster" "${common[@]}" $(node "m$i" "$mport") >/dev/null
  master=$(elapsed "$t")
  runuser -u postgres -- "$bin/pgbench" -q -i -s "$scale" -h "$root/sock" -p "$mport" postgres >/dev/null 2>&1
  size=$(runuser -u postgres -- "$bin/psql" -X -At -h "$root/sock" -p "$mport" -c "select pg_size_pretty(pg_database_size('postgres'))" postgres)
  runuser -u postgres -- "$bin/psql" -X -q -h "$root/sock" -p "$mport" -c checkpoint postgres
  t=$(now); "$baton" bootstrap --join "127.0.0.1:$consul_port" --cluster "$cluster" "${common[@]}" $(node "r$i" "$rport") >/dev/null
  join=$(elapsed "$t")
  mkdir -p "$root/p$i" && chown postgres "$root/p$i"
  t=$(now)
  runuser -u postgres -- "$bin/pg_basebackup" -D "$root/p$i/plain" -h 127.0.0.1 -p "$mport" -U replicator -X stream -c fast \
    -d "passfile=$root/m$i/state/pgpass" --no-password >/dev/null 2>&1
  plain=$(elapsed "$t")
  printf '%-44s %.2f\n' "bootstrap --master (empty cluster)" "$master"
  printf '%-44s %.2f\n' "bootstrap --join, database $size" "$join"
  printf '%-44s %.2f\n' "plain pg_basebackup -X stream, same data" "$plain"
  printf '%-44s %.2f\n' "Baton's overhead over the copy" "$(echo "$join - $plain" | bc)"
done
