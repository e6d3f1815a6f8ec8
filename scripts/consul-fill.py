#!/usr/bin/env python3
"""Writes COUNT keys of 100 bytes under footprint/keys/ into a Consul (or Baton's embedded server) at
HOST:PORT over one kept-alive connection: the load under which the benchmarks measure the server's
footprint.   scripts/consul-fill.py HOST:PORT COUNT"""
import http.client
import sys

address, count = sys.argv[1], int(sys.argv[2])
host, port = address.rsplit(":", 1)
connection = http.client.HTTPConnection(host, int(port), timeout=10)
value = b"x" * 100
for i in range(count):
    connection.request("PUT", f"/v1/kv/footprint/keys/{i}", body=value)
    response = connection.getresponse()
    body = response.read()
    if response.status != 200 or body.strip() != b"true":
        sys.exit(f"consul-fill: PUT footprint/keys/{i} answered {response.status} {body[:200]!r}")
