#!/usr/bin/env bash
# A Baton cluster on one machine, each node a network namespace of its own on a private bridge
# (198.18.0.0/24, a benchmarking range, on a bridge this script creates; nothing else is touched).
# Every node runs the real stack, set up by `baton bootstrap` exactly as in production: PostgreSQL 15,
# pgbouncer, keepalived with Baton's check and notify hooks (VIP 198.18.0.100), `baton monitor` and
# `baton pgbouncer-agent`. The bridge is the host's side (198.18.0.254: HAProxy, clients); the embedded
# Consul server listens on an address of its own on it (198.18.0.253:8500), so that a node can be cut
# from Consul alone.
# Without root (no namespaces), the same cluster runs on loopback without keepalived.
#
#   scripts/lab.sh up [N]            build nothing; start N nodes (default 3) — run `swift build` first
#   scripts/lab.sh down              stop everything the lab started, delete namespaces, bridge, files
#   scripts/lab.sh status            baton status
#   scripts/lab.sh explain [--json]  baton explain: who would take over if the primary died now
#   scripts/lab.sh page-url N        the address of node N's status page (GET / on its API)
#   scripts/lab.sh kill-postgres N   kill -9 of node N's postmaster
#   scripts/lab.sh kill-node N       kill -9 of every process of node N (the node dies)
#   scripts/lab.sh freeze-node N     SIGSTOP of every process of node N (a hung machine: nothing it runs
#                                    says a word, not even a dying keepalived); thaw-node N continues them
#   scripts/lab.sh start-node N      start node N's daemons again (after kill-node)
#   scripts/lab.sh partition N       cut node N's link;  scripts/lab.sh heal N  restores it
#   scripts/lab.sh stop-consul       stop the Consul server;  scripts/lab.sh start-consul  starts it
#   scripts/lab.sh consul-fault KIND [--for D] [--delay L] [--node N]   Consul misbehaves as a real one
#                                    does (`baton consul fault`: election, hang, slow, agent-restart, clear)
#   scripts/lab.sh consul-snapshot save|restore FILE   the embedded server's whole store saved, or put
#                                    back (keys, sessions and indexes roll back, as a Consul restore does)
#   scripts/lab.sh kill-keepalived N kill -9 of node N's keepalived; start-keepalived N starts it again
#   scripts/lab.sh start-daemon N monitor|pgbouncer-agent|pgbouncer   start one daemon of node N again
#   scripts/lab.sh vip               the node holding the VIP;   scripts/lab.sh leader   the lock holder
#   scripts/lab.sh psql N|vip|haproxy ARGS…  psql to node N's PostgreSQL, or as `app` through the VIP's
#                                    pgbouncer or through HAProxy (198.18.0.254:5000, routing by /primary)
# BATON_LAB_DIR (default /tmp/baton-lab) holds the lab; BATON (default .build/debug/baton) is the binary.
# BATON_LAB_CONSUL_PROXY (a program, e.g. `.build/debug/baton-chaos proxy`): Consul listens on port 8501
# and that program, started with --listen 198.18.0.253:8500 --upstream 198.18.0.253:8501 --delay-file
# $BATON_LAB_DIR/consul-delay, stands in front of it (the chaos suite makes Consul slow through it).
# BATON_LAB_VRRP=unicast: keepalived talks unicast VRRP (bootstrap --vrrp-unicast), as where multicast
# is dropped; each monitor keeps its node's peers in keepalived.conf.
set -euo pipefail
# Daemons started here must not inherit a descriptor of whoever ran us (a test's output pipe would
# never see EOF): keep only standard input, output and error.
for fd in $(ls /proc/$$/fd); do if [ "$fd" -gt 2 ] && [ "$fd" -lt 255 ]; then eval "exec $fd>&-" 2>/dev/null || true; fi; done
repo=$(cd "$(dirname "$0")/.." && pwd)
lab=${BATON_LAB_DIR:-/tmp/baton-lab}
baton=${BATON:-$repo/.build/debug/baton}
bin=/usr/lib/postgresql/15/bin
bridge=batonlab0
net=198.18.0
vip=$net.100
host_ip=$net.254
consul_ip=$net.253

mode() { cat "$lab/mode" 2>/dev/null || echo none; }
require_netns() { [ "$(mode)" = netns ] || { echo "lab.sh $1: needs the lab in network namespaces (this one runs as '$(mode)')" >&2; exit 2; }; }
ns() { echo "baton-lab-$1"; }
nodes() { cat "$lab/nodes" 2>/dev/null || echo 0; }
# require_node CMD N: N must name one of this lab's nodes (a typo must not be a silent no-op).
require_node() {
  [ "$(nodes)" -gt 0 ] || { echo "lab.sh $1: no lab is up in $lab (scripts/lab.sh up 3)" >&2; exit 2; }
  case "${2:-}" in ''|*[!0-9]*) echo "usage: lab.sh $1 N (a node of this lab: 1 to $(nodes))" >&2; exit 2 ;; esac
  if [ "$2" -lt 1 ] || [ "$2" -gt "$(nodes)" ] || [ ! -d "$lab/n$2" ]; then
    echo "lab.sh $1: this lab has no node '$2' (it has 1 to $(nodes))" >&2
    exit 2
  fi
}
# in N CMD…: run CMD in node N's namespace (directly on loopback).
in_node() { local n=$1; shift; if [ "$(mode)" = netns ]; then ip netns exec "$(ns "$n")" "$@"; else "$@"; fi; }
address() { if [ "$(mode)" = netns ]; then echo "$net.$1"; else echo 127.0.0.1; fi; }
pgport() { if [ "$(mode)" = netns ]; then echo 5432; else echo $((25430 + $1)); fi; }
bouncerport() { if [ "$(mode)" = netns ]; then echo 6432; else echo $((26430 + $1)); fi; }
consul_addr() { if [ "$(mode)" = netns ]; then echo "$consul_ip:8500"; else echo 127.0.0.1:28500; fi; }
# Where the Consul server itself listens: behind the proxy when there is one.
consul_listen() { if [ -n "${BATON_LAB_CONSUL_PROXY:-}" ]; then consul_addr | sed 's/:8500$/:8501/; s/:28500$/:28501/'; else consul_addr; fi; }
# The embedded server's fault control (loopback only, on the host).
fault_control=127.0.0.1:28599
start_consul() { start_daemon 0 consul "$baton" consul serve --listen "$(consul_listen)" --data-dir "$lab/consul" --fault-control "$fault_control"; }
say() { printf '%s %s\n' "$(date +%H:%M:%S.%3N)" "$*"; }

# Started daemons are recorded as "PID NAME" lines, so that only they are ever stopped.
remember() { echo "$1 $2" >>"$lab/pids"; }
start_daemon() { # start_daemon N NAME CMD…  (N=0: on the host)
  local n=$1 name=$2; shift 2
  # Simple commands only, so that $! is the daemon itself (ip netns exec execs it in place).
  if [ "$n" = 0 ]; then "$@" >>"$lab/$name.log" 2>&1 &
  elif [ "$(mode)" = netns ]; then ip netns exec "$(ns "$n")" "$@" >>"$lab/n$n/$name.log" 2>&1 &
  else "$@" >>"$lab/n$n/$name.log" 2>&1 &
  fi
  remember $! "$name"
}

down() {
  [ -d "$lab" ] || [ -n "$(ip netns list 2>/dev/null | grep baton-lab- || true)" ] || ip link show "$bridge" >/dev/null 2>&1 \
    || ip link show bl1 >/dev/null 2>&1 || return 0
  if [ -f "$lab/pids" ]; then
    while read -r pid _; do kill "$pid" 2>/dev/null || true; done <"$lab/pids"
  fi
  # The monitors' watchdogs outlive them by design (on loopback they run outside any namespace).
  pkill -9 -f "baton-watchdog --state-dir $lab/" 2>/dev/null || true
  # Whatever still runs inside the lab's namespaces is the lab's.
  for n in $(ip netns list 2>/dev/null | awk '/^baton-lab-/ {print $1}'); do
    ip netns pids "$n" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
  done
  sleep 0.5
  if [ -f "$lab/pids" ]; then
    while read -r pid _; do kill -9 "$pid" 2>/dev/null || true; done <"$lab/pids"
  fi
  for d in "$lab"/n*/data; do
    local as_postgres=(); [ "$(id -u)" = 0 ] && as_postgres=(runuser -u postgres --)
    [ -f "$d/postmaster.pid" ] && "${as_postgres[@]}" "$bin/pg_ctl" stop -D "$d" -m immediate >/dev/null 2>&1 || true
  done
  # Delete the veth pairs ourselves: a deleted namespace frees its end only when the kernel gets to it.
  for link in $(ip -o link show 2>/dev/null | awk -F'[:@ ]+' '$2 ~ /^bl[0-9]+$/ {print $2}'); do ip link del "$link" 2>/dev/null || true; done
  for n in $(ip netns list 2>/dev/null | awk '/^baton-lab-/ {print $1}'); do ip netns del "$n" 2>/dev/null || true; done
  ip link del "$bridge" 2>/dev/null || true
  # BATON_LAB_KEEP=1 keeps the logs for a post-mortem, in $lab.kept.
  if [ -n "${BATON_LAB_KEEP:-}" ] && [ -d "$lab" ]; then
    rm -rf "$lab.kept"; mkdir -p "$lab.kept"
    (cd "$lab" && find . -name '*.log' -exec cp --parents {} "$lab.kept" \;)
  fi
  rm -rf "$lab"
}

network() {
  local count=$1
  ip link add "$bridge" type bridge
  # The host's address first: it is the source of every connection the host opens to a node (clients,
  # HAProxy's checks); Consul's, a secondary address, is only ever the one the nodes dial.
  ip addr add "$host_ip/24" dev "$bridge"
  ip addr add "$consul_ip/24" dev "$bridge"
  ip link set "$bridge" up
  for n in $(seq "$count"); do
    local name; name=$(ns "$n")
    ip netns add "$name"
    ip link add "bl$n" type veth peer name eth0 netns "$name"
    ip link set "bl$n" master "$bridge" up
    ip netns exec "$name" ip addr add "$net.$n/24" dev eth0
    ip netns exec "$name" ip link set eth0 up
    ip netns exec "$name" ip link set lo up
  done
}

# start_one N monitor|pgbouncer-agent|pgbouncer: one daemon of node N.
start_one() {
  local n=$1 d="$lab/n$1"
  local as_postgres=(); [ "$(id -u)" = 0 ] && as_postgres=(runuser -u postgres --)
  case "$2" in
    pgbouncer) rm -f "$d/pgbouncer/pgbouncer.pid"; start_daemon "$n" pgbouncer "${as_postgres[@]}" /usr/sbin/pgbouncer "$d/pgbouncer/pgbouncer.ini" ;;
    monitor) start_daemon "$n" monitor "$baton" monitor --config "$d/baton.yaml" ;;
    pgbouncer-agent) start_daemon "$n" pgbouncer-agent "$baton" pgbouncer-agent --config "$d/baton.yaml" ;;
    *) echo "lab: no daemon called $2" >&2; return 2 ;;
  esac
}

start_node() {
  local n=$1 d="$lab/n$1"
  start_one "$n" pgbouncer
  start_one "$n" monitor
  start_one "$n" pgbouncer-agent
  if [ "$(mode)" = netns ]; then
    start_daemon "$n" keepalived keepalived --dont-fork --log-console --log-detail -f "$d/keepalived.conf" \
      --pid "$d/keepalived.pid" --vrrp_pid "$d/vrrp.pid" --checkers_pid "$d/checkers.pid"
  fi
}

up() {
  local count=${1:-3}
  [ -x "$baton" ] || { echo "lab: $baton is missing; run swift build first" >&2; exit 1; }
  if [ -d "$lab" ] || ip link show "$bridge" >/dev/null 2>&1 || ip link show bl1 >/dev/null 2>&1 || ip netns list 2>/dev/null | grep -q baton-lab-; then
    say "a previous lab was left behind; tearing it down first"
    down
  fi
  mkdir -p "$lab"; chmod 755 "$lab"
  if [ "$(id -u)" = 0 ] && ip netns add baton-lab-probe 2>/dev/null; then
    ip netns del baton-lab-probe; echo netns >"$lab/mode"
  else
    echo loopback >"$lab/mode"
    say "no network namespaces here (not root?): running the nodes on loopback, without keepalived and its VIP"
  fi
  echo "$count" >"$lab/nodes"
  [ "$(mode)" = netns ] && network "$count"
  start_consul
  if [ -n "${BATON_LAB_CONSUL_PROXY:-}" ]; then
    echo 0 >"$lab/consul-delay"
    # shellcheck disable=SC2086
    start_daemon 0 consul-proxy $BATON_LAB_CONSUL_PROXY --listen "$(consul_addr)" --upstream "$(consul_listen)" --delay-file "$lab/consul-delay"
  fi
  for _ in $(seq 100); do curl -sf "http://$(consul_addr)/v1/status/leader" >/dev/null && break; sleep 0.1; done
  echo "lab-replication-$RANDOM$RANDOM" >"$lab/replication-password"; chmod 600 "$lab/replication-password"
  echo '"app" "app-secret"' >"$lab/userlist.txt"
  for n in $(seq "$count"); do
    local d="$lab/n$n" how=(--master) vipargs=()
    [ "$n" -gt 1 ] && how=(--join "$(consul_addr)")
    if [ "$(mode)" = netns ]; then vipargs=(--virtual-ip "$vip/24" --interface eth0 --keepalived-pid-file "$d/keepalived.pid"); else vipargs=(--api-listen "127.0.0.1:$((28000 + n))"); fi
    [ "$(mode)" = netns ] && [ "${BATON_LAB_VRRP:-multicast}" = unicast ] && vipargs+=(--vrrp-unicast)
    mkdir -p "$d/sock" "$d/pgbouncer"; chown postgres:postgres "$d/sock" 2>/dev/null || true
    say "bootstrap n$n at $(address "$n")"
    in_node "$n" "$baton" bootstrap "${how[@]}" --consul "$(consul_addr)" --cluster lab --node-name "n$n" \
      --address "$(address "$n")" --allowed-network "$(address "$n" | sed 's/\.[0-9]*$/.0/')/24" --pgdata "$d/data" \
      --pg-port "$(pgport "$n")" --pg-bindir "$bin" --pg-socket-dir "$d/sock" --state-dir "$d/state" \
      --replication-password-file "$lab/replication-password" --pgbouncer-ini "$d/pgbouncer/pgbouncer.ini" \
      --pgbouncer-port "$(bouncerport "$n")" --pgbouncer-auth-file "$lab/userlist.txt" --keepalived-conf "$d/keepalived.conf" \
      --baton-config "$d/baton.yaml" --baton-executable "$baton" --templates-dir "$repo" "${vipargs[@]}" >"$d/bootstrap.log" 2>&1 \
      || { cat "$d/bootstrap.log" >&2; exit 1; }
    if [ "$n" = 1 ]; then
      # The application's own access, as an operator would add it (the clones copy pg_hba.conf).
      echo "host all app $(address 1 | sed 's/\.[0-9]*$/.0/')/24 scram-sha-256" >>"$d/data/pg_hba.conf"
      psql_node 1 -c "SELECT pg_reload_conf()" >/dev/null
      psql_node 1 -c "CREATE ROLE app LOGIN PASSWORD 'app-secret'" \
        -c "CREATE TABLE writes (id bigserial PRIMARY KEY, node text, at timestamptz DEFAULT now())" -c "GRANT ALL ON writes, writes_id_seq TO app"
    fi
  done
  chown -R postgres:postgres "$lab"/n*/pgbouncer "$lab/userlist.txt" 2>/dev/null || true
  for n in $(seq "$count"); do start_node "$n"; done
  start_haproxy
  for _ in $(seq 300); do [ "$(leader)" = n1 ] && break; sleep 0.1; done
  if [ "$(mode)" = netns ]; then for _ in $(seq 100); do [ "$(vip_holder)" = n1 ] && break; sleep 0.1; done; fi
  say "lab up: $count nodes ($(mode)), leader $(leader)"
}

psql_node() { local n=$1; shift; in_node "$n" "$bin/psql" -X -q -At -U postgres -h "$lab/n$n/sock" -p "$(pgport "$n")" -d postgres "$@"; }
# HAProxy in front of the nodes (Debian's haproxy): writes on :5000 go to the node whose API answers
# /primary with 200, reads on :5001 to the replicas within 1 MB of it (/replica?lag=1MB).
apiport() { if [ "$(mode)" = netns ]; then echo 8008; else echo $((28000 + $1)); fi; }
haproxy_addr() { if [ "$(mode)" = netns ]; then echo "$host_ip"; else echo 127.0.0.1; fi; }
haproxy_port() { if [ "$(mode)" = netns ]; then echo $((5000 + $1)); else echo $((25000 + $1)); fi; }
start_haproxy() {
  command -v haproxy >/dev/null || [ -x /usr/sbin/haproxy ] || { say "no haproxy installed: the lab runs without it"; return 0; }
  local servers="" n
  for n in $(seq "$(nodes)"); do servers+="    server n$n $(address "$n"):$(pgport "$n") check port $(apiport "$n")"$'\n'; done
  {
    printf 'global\n    maxconn 1000\ndefaults\n    mode tcp\n    timeout connect 1s\n    timeout client 30m\n    timeout server 30m\n    timeout check 1s\n'
    # retries 0: a connection to a primary that just died fails at once (the client reconnects and lands
    # on the new one) instead of being retried for a second per attempt against the dead server.
    printf 'listen primary\n    bind %s:%s\n    retries 0\n    option httpchk GET /primary\n    http-check expect status 200\n' "$(haproxy_addr)" "$(haproxy_port 0)"
    printf '    default-server inter 300ms fall 1 rise 1 on-marked-down shutdown-sessions\n%s' "$servers"
    printf 'listen replicas\n    bind %s:%s\n    balance roundrobin\n    option httpchk GET /replica?lag=1MB\n    http-check expect status 200\n' "$(haproxy_addr)" "$(haproxy_port 1)"
    printf '    default-server inter 1s fall 2 rise 1 on-marked-down shutdown-sessions\n%s' "$servers"
  } >"$lab/haproxy.cfg"
  start_daemon 0 haproxy "$(command -v haproxy || echo /usr/sbin/haproxy)" -db -f "$lab/haproxy.cfg"
}
psql_haproxy() {
  PGPASSWORD=app-secret PGCONNECT_TIMEOUT=2 "$bin/psql" -X -q -At -U app -h "$(haproxy_addr)" -p "$(haproxy_port 0)" -d postgres "$@"
}
psql_vip() {
  local host=$vip port=6432
  if [ "$(mode)" != netns ]; then host=127.0.0.1; port=$(bouncerport 1); fi
  PGPASSWORD=app-secret PGCONNECT_TIMEOUT=2 "$bin/psql" -X -q -At -U app -h "$host" -p "$port" -d postgres "$@"
}
leader() {
  local v; v=$(curl -sf "http://$(consul_addr)/v1/kv/baton/lab/leader" 2>/dev/null || true)
  case "$v" in *'"Session"'*) curl -sf "http://$(consul_addr)/v1/kv/baton/lab/leader?raw" ;; *) echo "" ;; esac
}
vip_holder() {
  for n in $(seq "$(nodes)"); do
    ip netns exec "$(ns "$n")" ip -4 addr show dev eth0 2>/dev/null | grep -q " $vip/" && echo "n$n"
  done
  return 0
}
postmaster() { head -1 "$lab/n$1/data/postmaster.pid" 2>/dev/null; }

cmd=${1:-}; shift || true
case "$cmd" in
  page-url|kill-postgres|kill-node|freeze-node|thaw-node|start-node|partition|heal|kill-keepalived|start-keepalived) require_node "$cmd" "${1:-}" ;;
esac
case "$cmd" in
  up) up "${1:-3}" ;;
  down) down ;;
  status) "$baton" status --cluster lab --consul "$(consul_addr)" ;;
  explain) "$baton" explain --cluster lab --consul "$(consul_addr)" "$@" ;;
  page-url) echo "http://$(address "$1"):$(apiport "$1")/" ;;
  kill-postgres) kill -9 "$(postmaster "$1")" ;;
  kill-node)
    if [ "$(mode)" = netns ]; then ip netns pids "$(ns "$1")" | xargs -r kill -9 2>/dev/null || true
    else for p in $(awk '{print $1}' "$lab/pids"); do grep -q "n$1/" "/proc/$p/cmdline" 2>/dev/null && kill -9 "$p"; done; kill -9 "$(postmaster "$1")" 2>/dev/null || true; fi ;;
  freeze-node|thaw-node)
    require_netns "$cmd"
    pids=$(ip netns pids "$(ns "$1")" 2>/dev/null) || { echo "lab.sh $cmd: this lab has no node '$1'" >&2; exit 2; }
    if [ "$cmd" = freeze-node ]; then signal=STOP; else signal=CONT; fi
    echo "$pids" | xargs -r kill -"$signal" 2>/dev/null || true ;;
  start-node) rm -f "$lab/n$1"/*.pid "$lab/n$1/pgbouncer/pgbouncer.pid"; start_node "$1" ;;
  partition) ip netns exec "$(ns "$1")" ip link set eth0 down ;;
  heal) ip netns exec "$(ns "$1")" ip link set eth0 up ;;
  stop-consul) pid=$(awk '$2 == "consul" {print $1}' "$lab/pids" | tail -1); kill "$pid"; while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done ;;
  start-consul) start_consul ;;
  consul-fault) "$baton" consul fault --control "$fault_control" "$@" ;;
  consul-snapshot) "$baton" consul snapshot "$1" --consul "$(consul_listen)" "$2" ;;
  kill-keepalived) for p in $(ip netns pids "$(ns "$1")"); do if grep -q '^keepalived' "/proc/$p/comm" 2>/dev/null; then kill -9 "$p"; fi; done ;;
  start-keepalived)
    d="$lab/n$1"; rm -f "$d"/keepalived.pid "$d"/vrrp.pid "$d"/checkers.pid
    start_daemon "$1" keepalived keepalived --dont-fork --log-console --log-detail -f "$d/keepalived.conf" \
      --pid "$d/keepalived.pid" --vrrp_pid "$d/vrrp.pid" --checkers_pid "$d/checkers.pid" ;;
  start-daemon) start_one "$1" "$2" ;;
  vip) vip_holder ;;
  leader) leader; echo ;;
  psql) case "$1" in vip) shift; psql_vip "$@" ;; haproxy) shift; psql_haproxy "$@" ;; *) psql_node "$@" ;; esac ;;
  *) sed -n '2,30p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
