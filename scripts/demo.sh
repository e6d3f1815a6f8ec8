#!/usr/bin/env bash
# Baton's main job in front of you: a three-node cluster on this machine (network namespaces with
# keepalived's virtual IP when run as root; loopback otherwise), then the primary's PostgreSQL is
# killed and you watch, with timestamps, the lock and the VIP move, the new primary take writes, the
# replica follow, every pgbouncer retarget, a client through the VIP write again and the old primary
# rejoin as a replica. Everything is torn down at the end, on failure and on Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
say() { printf '\033[1m%s\033[0m %s\n' "$(date +%H:%M:%S.%3N)" "$*"; }
# Root runs everything itself; a user with sudo installs and runs the lab through sudo but builds as
# itself (no root-owned .build in the checkout); a user without sudo gets the loopback variant.
as_root=()
if [ "$(id -u)" != 0 ]; then
  if command -v sudo >/dev/null && [ -z "${BATON_DEMO_NO_SUDO:-}" ]; then as_root=(sudo); fi
fi
# What the lab runs: installed here when missing (on Debian), as .ci/run does.
missing=()
[ -x /usr/lib/postgresql/15/bin/pg_ctl ] || missing+=(postgresql-15)
command -v pgbouncer >/dev/null || [ -x /usr/sbin/pgbouncer ] || missing+=(pgbouncer)
command -v keepalived >/dev/null || [ -x /usr/sbin/keepalived ] || missing+=(keepalived)
command -v haproxy >/dev/null || [ -x /usr/sbin/haproxy ] || missing+=(haproxy)
command -v curl >/dev/null || missing+=(curl)
command -v ip >/dev/null || [ -x /usr/sbin/ip ] || missing+=(iproute2)
[ -f /usr/include/postgresql/libpq-fe.h ] || missing+=(libpq-dev)
[ -f /usr/include/x86_64-linux-gnu/curl/curl.h ] || [ -f /usr/include/curl/curl.h ] || missing+=(libcurl4-openssl-dev)
[ -f /usr/include/openssl/hmac.h ] || missing+=(libssl-dev)
if [ ${#missing[@]} -gt 0 ]; then
  if { [ "$(id -u)" = 0 ] || [ ${#as_root[@]} -gt 0 ]; } && command -v apt-get >/dev/null; then
    say "installing ${missing[*]} (apt-get)…"
    "${as_root[@]}" apt-get update -qq >/dev/null
    "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "demo: needs ${missing[*]}; install them (apt-get install ${missing[*]}, as root) or run this as root" >&2
    exit 1
  fi
fi
if [ -z "${BATON_DEMO_BUILT:-}" ]; then
  say "building baton (swift build)…"
  swift build --product baton >/dev/null
  swift build --product baton-watchdog >/dev/null
fi
if [ ${#as_root[@]} -gt 0 ]; then
  exec sudo env BATON_DEMO_BUILT=1 ${BATON_LAB_DIR:+BATON_LAB_DIR="$BATON_LAB_DIR"} "$(pwd)/scripts/demo.sh" "$@"
fi
export BATON_LAB_DIR=${BATON_LAB_DIR:-/tmp/baton-demo-lab}
lab=scripts/lab.sh
watcher=""
cleanup() {
  [ -n "$watcher" ] && kill -- -"$watcher" 2>/dev/null || true
  say "tearing the lab down"
  "$lab" down
}
trap cleanup EXIT
trap 'exit 130' INT TERM
"$lab" up 3
mode=$(cat "$BATON_LAB_DIR/mode")
[ "$mode" = netns ] || say "(not root: no namespaces, no keepalived, no VIP; the pgbouncer of n1 stands in for the VIP)"
"$lab" status
nodes=(n1 n2 n3)
target() { awk '/^\* = / {for (i = 3; i <= NF; i++) if ($i ~ /^(host|port)=/) {sub(/^[a-z]+=/, "", $i); printf "%s%s", s, $i; s=":"}; print ""}' "$BATON_LAB_DIR/$1/pgbouncer/pgbouncer.ini"; }
role() { "$lab" psql "${1#n}" -c "select case when pg_is_in_recovery() then 'replica' else 'primary' end || coalesce(' of ' || (select sender_host from pg_stat_wal_receiver where status = 'streaming'), '')" 2>/dev/null || echo down; }
# watch NAME CMD…: prints NAME's value each time it changes (polled every 50 ms). One watcher per
# item runs in parallel, so each change is stamped when it happens.
watch() {
  local name=$1 last="" value; shift
  while :; do
    value=$("$@" 2>/dev/null | tr '\n' ' ' | sed 's/ *$//') || true
    [ "$value" != "$last" ] && say "$name: ${value:-(none)}" && last=$value
    sleep 0.05
  done
}
write_through_vip() { timeout 3 "$lab" psql vip -c "insert into writes(node) values ('demo') returning 'ok, on ' || inet_server_addr()" || echo failing; }
watch_cluster() {
  watch leader "$lab" leader &
  [ "$mode" = netns ] && watch vip "$lab" vip &
  for n in "${nodes[@]}"; do watch "$n" role "$n" & watch "$n's pgbouncer routes to" target "$n" & done
  watch "a write through the VIP" write_through_vip &
  wait
}
say "the cluster as it stands:"
# The watchers run in a process group of their own, so that stopping them stops every command they run.
set -m
watch_cluster & watcher=$!
set +m
sleep 3
primary=$("$lab" leader | tr -d '\n')
say "baton explain — if $primary's PostgreSQL died now:"
explained=$("$lab" explain)
echo "$explained"
predicted=$(echo "$explained" | sed -n 's/^If .* failed now: \([^ ]*\) would take over\.$/\1/p')
say ">>> kill -9 of $primary's PostgreSQL (its postmaster)"
"$lab" kill-postgres "${primary#n}"
for _ in $(seq 600); do
  new=$("$lab" leader | tr -d '\n')
  if [ -n "$new" ] && [ "$new" != "$primary" ] && role "$primary" | grep -q "replica of"; then break; fi
  sleep 0.1
done
sleep 2
kill -- -"$watcher" 2>/dev/null || true; watcher=""
say "done: $new leads, $primary rejoined as its replica"
if [ "$new" = "$predicted" ]; then say "as baton explain predicted before the kill"; else say "baton explain had predicted $predicted (see the events for why $new took over)"; fi
"$lab" status
say "every node's API serves a status page, e.g. $("$lab" page-url 1) (open it while the lab runs: scripts/lab.sh up 3)"
