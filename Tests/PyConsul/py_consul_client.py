#!/usr/bin/env python3
"""py-consul (PyPI), used unchanged, against a Consul HTTP API: KV, CAS, sessions, locks and health.

Usage: py_consul_client.py HOST PORT
Exits 0 when every step behaved as Consul does; prints the failing step otherwise.
"""
import sys
import threading
import time

import consul


def main() -> int:
    host, port = sys.argv[1], int(sys.argv[2])
    c = consul.Consul(host=host, port=port)
    prefix = "py-consul/%d/" % int(time.time() * 1000)

    # KV: put, get, flags, null values, recurse, keys, delete.
    assert c.kv.put(prefix + "foo", "bar") is True
    index, data = c.kv.get(prefix + "foo")
    assert data["Value"] == b"bar", data
    assert int(index) == data["ModifyIndex"]
    assert c.kv.put(prefix + "flags", "x", flags=50) is True
    assert c.kv.get(prefix + "flags")[1]["Flags"] == 50
    assert c.kv.put(prefix + "empty", "") is True
    assert c.kv.get(prefix + "empty")[1]["Value"] is None
    for k in ("a/1", "a/2", "a/b/3"):
        c.kv.put(prefix + k, k)
    _, entries = c.kv.get(prefix + "a/", recurse=True)
    assert [e["Key"] for e in entries] == [prefix + k for k in ("a/1", "a/2", "a/b/3")], entries
    _, keys = c.kv.get(prefix + "a/", keys=True, separator="/")
    assert keys == [prefix + "a/1", prefix + "a/2", prefix + "a/b/"], keys
    assert c.kv.delete(prefix + "a/", recurse=True) is True
    assert c.kv.get(prefix + "a/", recurse=True)[1] is None
    assert c.kv.get(prefix + "missing")[1] is None

    # CAS.
    assert c.kv.put(prefix + "init", "a", cas=0) is True
    assert c.kv.put(prefix + "init", "b", cas=0) is False
    idx = c.kv.get(prefix + "init")[1]["ModifyIndex"]
    assert c.kv.put(prefix + "init", "c", cas=idx) is True
    assert c.kv.put(prefix + "init", "d", cas=idx) is False
    assert c.kv.get(prefix + "init")[1]["Value"] == b"c"

    # Blocking query wakes on a change.
    idx = c.kv.get(prefix + "init")[1]["ModifyIndex"]
    result = {}

    def watch():
        result["value"] = c.kv.get(prefix + "init", index=idx, wait="10s")

    t = threading.Thread(target=watch)
    t.start()
    time.sleep(0.3)
    c.kv.put(prefix + "init", "e")
    t.join(timeout=5)
    assert not t.is_alive(), "blocking query did not wake"
    assert result["value"][1]["Value"] == b"e"

    # Sessions and locks.
    s1 = c.session.create(name="one", lock_delay=0, ttl=30)
    s2 = c.session.create(name="two", behavior="delete", lock_delay=0)
    assert c.session.info(s1)[1]["Name"] == "one"
    assert {s["ID"] for s in c.session.list()[1]} >= {s1, s2}
    assert c.session.renew(s1)["ID"] == s1
    assert c.kv.put(prefix + "lock", "x", acquire=s1) is True
    assert c.kv.put(prefix + "lock", "y", acquire=s2) is False
    assert c.kv.get(prefix + "lock")[1]["Session"] == s1
    assert c.kv.put(prefix + "lock", "x", release=s1) is True
    assert c.kv.put(prefix + "lock", "y", acquire=s2) is True
    assert c.session.destroy(s2) is True
    assert c.kv.get(prefix + "lock")[1] is None, "a delete-session's key goes with it"
    try:
        c.kv.put(prefix + "lock", "z", acquire="foo")
        raise AssertionError("acquire with a bogus session must raise")
    except consul.ConsulException:
        pass
    c.session.destroy(s1)
    try:
        c.session.renew(s1)
        raise AssertionError("renewing a destroyed session must raise NotFound")
    except consul.NotFound:
        pass

    # Transactions (py-consul's txn API): all or nothing, each operation seeing the earlier ones.
    import base64

    def b64(text):
        return base64.b64encode(text.encode()).decode()

    r = c.txn.put([{"KV": {"Verb": "set", "Key": prefix + "t1", "Value": b64("one")}}, {"KV": {"Verb": "get", "Key": prefix + "t1"}}])
    assert r["Errors"] is None and len(r["Results"]) == 2, r
    assert r["Results"][0]["KV"]["Value"] is None, "a write's result carries no value"
    assert base64.b64decode(r["Results"][1]["KV"]["Value"]) == b"one"
    written = r["Results"][0]["KV"]["ModifyIndex"]
    try:
        c.txn.put([{"KV": {"Verb": "set", "Key": prefix + "t2", "Value": b64("x")}},
                   {"KV": {"Verb": "cas", "Key": prefix + "t1", "Value": b64("two"), "Index": written + 1000}}])
        raise AssertionError("a stale cas must roll the whole transaction back")
    except consul.ConsulException as e:
        assert "409" in str(e) and "index is stale" in str(e), e
    assert c.kv.get(prefix + "t2")[1] is None, "the rolled-back set left nothing"
    r = c.txn.put([{"KV": {"Verb": "cas", "Key": prefix + "t1", "Value": b64("two"), "Index": written}},
                   {"KV": {"Verb": "delete", "Key": prefix + "t1"}}])
    assert r["Errors"] is None and len(r["Results"]) == 1, r
    assert c.kv.get(prefix + "t1")[1] is None

    # Agent, TTL check, health.
    name = "pysvc%d" % int(time.time() * 1000)
    assert c.agent.service.register(name, service_id=name, port=5432, tags=["primary"], check=consul.Check.ttl("10s")) is True
    assert name in c.agent.services()
    _, nodes = c.health.service(name, passing=True)
    assert nodes == [], "a TTL check starts critical"
    assert c.agent.check.ttl_pass("service:" + name, "ok") is True
    _, nodes = c.health.service(name, passing=True)
    assert len(nodes) == 1 and nodes[0]["Service"]["ID"] == name, nodes
    _, tagged = c.health.service(name, tag="primary")
    assert len(tagged) == 1
    assert name in c.catalog.services()[1]
    assert c.agent.service.deregister(name) is True

    assert c.status.leader() != ""
    assert c.agent.self()["Config"]["NodeName"]
    c.kv.delete(prefix, recurse=True)
    print("py-consul: KV, CAS, blocking, sessions, locks, agent and health all behaved as Consul's")
    return 0


if __name__ == "__main__":
    sys.exit(main())
