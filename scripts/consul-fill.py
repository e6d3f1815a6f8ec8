#!/usr/bin/env python3
"""Writes COUNT keys of 100 bytes under footprint/keys/ into a Consul (or Baton's embedded server) at
HOST:PORT over one kept-alive connection, and with CLUSTER and EVENTS that many events (~200 B each, as
the monitors write them) into the cluster's event history: the load under which the benchmarks measure
the daemons' footprint, that of a cluster that has been running for a while.
    scripts/consul-fill.py HOST:PORT COUNT [CLUSTER EVENTS]"""
import http.client
import json
import sys
import time

if len(sys.argv) not in (3, 5):
    sys.exit(__doc__)
address, count = sys.argv[1], int(sys.argv[2])
cluster, events = (sys.argv[3], int(sys.argv[4])) if len(sys.argv) == 5 else (None, 0)
host, port = address.rsplit(":", 1)
connection = http.client.HTTPConnection(host, int(port), timeout=10)


def put(key, body):
    connection.request("PUT", f"/v1/kv/{key}", body=body)
    response = connection.getresponse()
    answer = response.read()
    if response.status != 200 or answer.strip() != b"true":
        sys.exit(f"consul-fill: PUT {key} answered {response.status} {answer[:200]!r}")


value = b"x" * 100
for i in range(count):
    put(f"footprint/keys/{i}", value)
# Events as ClusterEvent.key and .json make them: nanoseconds since the epoch (20 digits), then the node.
start = time.time_ns() - events * 1_000_000_000
for i in range(events):
    stamp = start + i * 1_000_000_000
    event = {"time": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(stamp / 1e9)), "node": "pg1", "kind": "restart",
             "detail": f"PostgreSQL restarted in 812 ms (stopped: fast); applied shared_buffers, work_mem, max_connections ({i})"}
    put(f"baton/{cluster}.events/{stamp:020d}-pg1", json.dumps(event, separators=(",", ":")).encode())
