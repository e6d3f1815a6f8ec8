#!/usr/bin/env bash
# Baton's embedded Consul-compatible server in front of you: start it, write and read keys through
# Baton's own client, watch a blocking query wake on a change, take a lock, then stop and clean up.
set -euo pipefail
cd "$(dirname "$0")/.."
swift build --product baton >/dev/null
baton=.build/debug/baton
dir=$(mktemp -d /tmp/baton-demo.XXXXXX)
port=${BATON_DEMO_PORT:-18500}
"$baton" consul serve --listen "127.0.0.1:$port" --data-dir "$dir/consul" 2>"$dir/server.log" &
server=$!
cleanup() { kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; rm -rf "$dir"; }
trap cleanup EXIT INT TERM
export CONSUL_HTTP_ADDR="127.0.0.1:$port"
for _ in $(seq 100); do curl -sf "http://$CONSUL_HTTP_ADDR/v1/status/leader" >/dev/null && break; sleep 0.05; done
step() { printf '\n\033[1m%s\033[0m\n' "$*"; }

step "1. the server is up (pid $server, data in $dir/consul)"
curl -s "http://$CONSUL_HTTP_ADDR/v1/status/leader"; echo
step "2. write a key and read it back"
"$baton" consul kv put demo/leader node-a
"$baton" consul kv get demo/leader
"$baton" consul kv get --detailed demo/leader
step "3. check-and-set: create-only (cas=0) succeeds once"
"$baton" consul kv put --cas 0 demo/initialize node-a
"$baton" consul kv put --cas 0 demo/initialize node-b || echo "(refused, as it must be)"
step "4. a blocking query waits for a change and wakes at once"
index=$(curl -s -D - -o /dev/null "http://$CONSUL_HTTP_ADDR/v1/kv/demo/leader" | tr -d '\r' | awk -F': ' 'tolower($1)=="x-consul-index"{print $2}')
( sleep 1; "$baton" consul kv put demo/leader node-b >/dev/null ) &
start=$(date +%s.%N)
"$baton" consul kv get --index "$index" demo/leader
printf 'woke after %.2f s (the write came at 1 s)\n' "$(echo "$(date +%s.%N) - $start" | bc)"
step "5. a session takes the leader lock; destroying it releases the lock"
session=$(curl -s -X PUT "http://$CONSUL_HTTP_ADDR/v1/session/create" -d '{"Name":"demo","TTL":"15s","LockDelay":"0s"}' | sed 's/.*"ID":"\([^"]*\)".*/\1/')
curl -s -X PUT "http://$CONSUL_HTTP_ADDR/v1/kv/demo/leader?acquire=$session" -d node-b; echo " (acquired by $session)"
curl -s -X PUT "http://$CONSUL_HTTP_ADDR/v1/session/destroy/$session" >/dev/null
curl -s "http://$CONSUL_HTTP_ADDR/v1/kv/demo/leader"; echo " (no Session field: released)"
step "6. restart the server: the data is still there"
kill "$server"; wait "$server" 2>/dev/null || true
"$baton" consul serve --listen "127.0.0.1:$port" --data-dir "$dir/consul" 2>>"$dir/server.log" &
server=$!
for _ in $(seq 100); do curl -sf "http://$CONSUL_HTTP_ADDR/v1/status/leader" >/dev/null && break; sleep 0.05; done
"$baton" consul kv list demo/
step "done; stopping the server and removing $dir"
