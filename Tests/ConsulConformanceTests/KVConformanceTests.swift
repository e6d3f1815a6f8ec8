import BatonConsul
import ConsulAPI
import Foundation
import Testing

/// consul-api.md §7, cases 1–26: headers, KV semantics, CAS, listings and blocking queries.
@Suite("KV conformance")
struct KVConformanceTests {
    @Test("1-2: a missing key is a 404 with index headers; a written key reads back in Consul's shape")
    func missingAndPresentKeys() async throws {
        try await Harness.withTarget { (t: Target) async throws in
            let missing = try await t.http("GET", "/v1/kv/" + t.key("nope"))
            #expect(missing.status == 404)
            #expect(missing.body.isEmpty)
            #expect(t.index(missing) >= 1)
            #expect(missing.header("X-Consul-KnownLeader") == "true")
            #expect(missing.header("X-Consul-LastContact") == "0")

            let put = try await t.http("PUT", "/v1/kv/" + t.key("foo"), body: "bar")
            #expect(put.status == 200)
            #expect(put.text == "true")
            #expect(put.header("Content-Type") == "application/json")
            let got = try await t.http("GET", "/v1/kv/" + t.key("foo"))
            #expect(got.status == 200)
            let entry = try #require(try t.json(got).arrayValue?.first)
            #expect(entry.member("Value") == .string("YmFy"))
            #expect(entry.member("Flags") == .number("0"))
            #expect(entry.member("LockIndex") == .number("0"))
            #expect(entry.member("Session") == nil)
            let created = try #require(entry.member("CreateIndex")?.uint64Value)
            #expect(entry.member("ModifyIndex")?.uint64Value == created)
            #expect(t.index(got) == created)
            #expect(created > 1)
            if case .object(let members) = entry {
                #expect(members.map(\.0) == ["LockIndex", "Key", "Flags", "Value", "CreateIndex", "ModifyIndex"])
            }
        }
    }

    @Test("3: a no-op write keeps ModifyIndex and wakes no one; the blocked read times out at wait")
    func noOpWrite() async throws {
        try await Harness.withTarget { (t: Target) async throws in
            let key = t.key("foo")
            try await t.client.put(key, "bar")
            let first = try #require(try await t.client.get(key).value)
            try await t.client.put(key, "bar")
            let second = try #require(try await t.client.get(key).value)
            #expect(second.modifyIndex == first.modifyIndex)
            let (response, seconds) = try await Harness.timed {
                try await t.http("GET", "/v1/kv/\(key)?index=\(first.modifyIndex)&wait=1s")
            }
            #expect(response.status == 200)
            #expect(t.index(response) == first.modifyIndex)
            #expect(seconds >= 0.95 && seconds < 5, "blocked \(seconds) s for wait=1s")
        }
    }

    @Test("4-6: flags are rewritten by every PUT; an empty body is a null value; ?raw returns the bytes")
    func flagsEmptyAndRaw() async throws {
        try await Harness.withTarget { (t: Target) async throws in
            let key = t.key("foo")
            _ = try await t.http("PUT", "/v1/kv/\(key)?flags=42", body: "x")
            #expect(try await t.client.get(key).value?.flags == 42)
            _ = try await t.http("PUT", "/v1/kv/\(key)", body: "y")
            #expect(try await t.client.get(key).value?.flags == 0)
            let big: UInt64 = 3_304_740_253_564_472_344
            try await t.client.put(key, "z", flags: big)
            #expect(try await t.client.get(key).value?.flags == big)

            _ = try await t.http("PUT", "/v1/kv/" + t.key("empty"), body: "")
            let empty = try await t.http("GET", "/v1/kv/" + t.key("empty"))
            #expect(try t.json(empty).arrayValue?.first?.member("Value") == .null)

            _ = try await t.http("PUT", "/v1/kv/\(key)", body: "y")
            let raw = try await t.http("GET", "/v1/kv/\(key)?raw")
            #expect(raw.status == 200)
            #expect(raw.text == "y")
            #expect(raw.header("Content-Type")?.hasPrefix("text/plain") == true)
            #expect(try await t.http("GET", "/v1/kv/" + t.key("nope") + "?raw").status == 404)
        }
    }

    @Test("7-9: missing key names, wrong methods, bad parameters and unknown datacenters are rejected")
    func badRequests() async throws {
        try await Harness.withTarget { (t: Target) async throws in
            let put = try await t.http("PUT", "/v1/kv/", body: "x")
            #expect(put.status == 400)
            #expect(put.text.contains("Missing key name"))
            let get = try await t.http("GET", "/v1/kv/")
            #expect(get.status == 400)
            let post = try await t.http("POST", "/v1/kv/foo", body: "x")
            #expect(post.status == 405)
            #expect(post.header("Allow")?.contains("PUT") == true)

            let key = t.key("foo")
            try await t.client.put(key, "v")
            #expect(try await t.http("GET", "/v1/kv/\(key)?index=abc").text.contains("Invalid index"))
            let badWait = try await t.http("GET", "/v1/kv/\(key)?index=1&wait=abc")
            #expect(badWait.status == 400 && badWait.text.contains("Invalid wait time"))
            #expect(try await t.http("GET", "/v1/kv/\(key)?index=1&wait=10").status == 400)
            let conflicting = try await t.http("GET", "/v1/kv/\(key)?stale&consistent")
            #expect(conflicting.status == 400)
            #expect(conflicting.text.contains("Cannot specify ?stale with ?consistent, conflicting semantics."))
            let dc2 = try await t.http("GET", "/v1/kv/\(key)?dc=dc2")
            #expect(dc2.status == 500 && dc2.text.contains("No path to datacenter"))
            #expect(try await t.http("GET", "/v1/kv/\(key)?dc=dc1").status == 200)
        }
    }

    @Test("10: tokens in the header, the query or a Bearer header are accepted when ACLs are off")
    func tokensIgnoredWithoutACLs() async throws {
        try await Harness.withTarget { (t: Target) async throws in
            guard !Target.isRealConsul else { return }  // a real Consul may have ACLs on
            let key = t.key("foo")
            try await t.client.put(key, "v")
            #expect(try await t.http("GET", "/v1/kv/\(key)", headers: [("X-Consul-Token", "t")]).status == 200)
            #expect(try await t.http("GET", "/v1/kv/\(key)?token=t").status == 200)
            #expect(try await t.http("GET", "/v1/kv/\(key)", headers: [("Authorization", "Bearer t")]).status == 200)
        }
    }

    @Test("11-12: a value of 524,288 bytes is stored, one byte more is 413; bad flags and conflicting modes are rejected")
    func sizeAndFlagLimits() async throws {
        try await Harness.withTarget { (t: Target) async throws in
            let key = t.key("big")
            let ok = try await t.http("PUT", "/v1/kv/\(key)", body: String(repeating: "a", count: 524_288))
            #expect(ok.text == "true")
            let tooBig = try await t.http("PUT", "/v1/kv/" + t.key("bigger"), body: String(repeating: "a", count: 524_289))
            #expect(tooBig.status == 413)
            #expect(tooBig.text.hasPrefix("Request body(524289 bytes) too large"))
            #expect(try await t.client.get(t.key("bigger")).value == nil)

            #expect(try await t.http("PUT", "/v1/kv/\(key)?flags=abc", body: "x").status == 500)
            let session = try await t.session()
            let conflicting = try await t.http("PUT", "/v1/kv/\(key)?cas=0&acquire=\(session)", body: "x")
            #expect(conflicting.status == 400)
            #expect(conflicting.text.hasPrefix("Conflicting flags"))
            #expect(try await t.http("DELETE", "/v1/kv/\(key)?recurse&cas=1").status == 400)
            #expect(try await t.client.get(key).value?.value?.count == 524_288)
            try await t.client.destroySession(session)
        }
    }

    @Test("13-14: cas=0 creates only once; cas on a missing key fails")
    func checkAndSetCreate() async throws {
        try await Harness.withTarget { (t: Target) async throws in
            let key = t.key("init")
            #expect(try await t.client.put(key, "a", mode: .cas(0)))
            #expect(try await t.client.put(key, "b", mode: .cas(0)) == false)
            #expect(try await t.client.get(key).value?.stringValue == "a")
            #expect(try await t.client.put(t.key("ghost"), "x", mode: .cas(5)) == false)
            #expect(try await t.client.get(t.key("ghost")).value == nil)
            await #expect(throws: ConsulError.self) { try await t.client.compareAndSet(key, Array("c".utf8), index: 0) }
        }
    }

    @Test("15: sixteen concurrent check-and-set writers: exactly one wins")
    func casRace() async throws {
        try await Harness.withTarget { (t: Target) async throws in
            let key = t.key("race")
            try await t.client.put(key, "start")
            let m = try #require(try await t.client.get(key).value).modifyIndex
            let wins = try await withThrowingTaskGroup(of: (Int, Bool).self) { group in
                for i in 0..<16 {
                    group.addTask { (i, try await t.client.put(key, "w\(i)", mode: .cas(m))) }
                }
                var wins: [Int] = []
                for try await (i, ok) in group where ok { wins.append(i) }
                return wins
            }
            #expect(wins.count == 1)
            let final = try #require(try await t.client.get(key).value)
            #expect(final.stringValue == "w\(wins.first ?? -1)")
            #expect(final.modifyIndex > m)
        }
    }

    @Test("16: delete with cas only matches the current index; a missing key deletes as true")
    func deleteCAS() async throws {
        try await Harness.withTarget { (t: Target) async throws in
            let key = t.key("init")
            try await t.client.put(key, "a")
            let m = try #require(try await t.client.get(key).value).modifyIndex
            try await t.client.put(key, "b")
            #expect(try await t.client.delete(key, cas: m) == false)
            let current = try #require(try await t.client.get(key).value).modifyIndex
            #expect(try await t.client.delete(key, cas: current))
            let gone = try await t.http("GET", "/v1/kv/\(key)")
            #expect(gone.status == 404)
            #expect(t.index(gone) > current)
            #expect(try await t.client.delete(key, cas: 7))
        }
    }

    @Test("17-19: recurse and keys listings by raw prefix, separators, and recursive deletes with tombstones")
    func listings() async throws {
        try await Harness.withTarget { (t: Target) async throws in
            for k in ["a/1", "a/2", "a/b/3", "ab"] { try await t.client.put(t.key(k), k) }
            let all = try await t.client.list(t.key("a"))
            #expect(all.value.map(\.key) == ["a/1", "a/2", "a/b/3", "ab"].map(t.key))
            let under = try await t.client.list(t.key("a/"))
            #expect(under.value.count == 3)
            #expect(under.index == under.value.map(\.modifyIndex).max())
            let keys = try await t.client.keys(t.key("a/"), separator: "/")
            #expect(keys.value == ["a/1", "a/2", "a/b/"].map(t.key))
            #expect(try await t.http("GET", "/v1/kv/" + t.key("zzz/") + "?keys").status == 404)

            try await t.client.deleteTree(t.key("a/"))
            let afterDelete = try await t.http("GET", "/v1/kv/" + t.key("a/") + "?recurse")
            #expect(afterDelete.status == 404)
            let deleteIndex = t.index(afterDelete)
            #expect(deleteIndex > under.index)
            let rest = try await t.client.list(t.key("a"))
            #expect(rest.value.map(\.key) == [t.key("ab")])
            #expect(rest.index >= deleteIndex, "a tombstone keeps the listing's index from sliding back")
        }
    }

    @Test("18: on an empty store ?keys is 200 [] and ?recurse is 404")
    func emptyStoreListings() async throws {
        try await Harness.withTarget { (t: Target) async throws in
            guard !Target.isRealConsul else { return }  // a real Consul is not empty
            let keys = try await t.http("GET", "/v1/kv/?keys")
            #expect(keys.status == 200 && keys.text == "[]")
            #expect(try await t.http("GET", "/v1/kv/?recurse").status == 404)
        }
    }

    @Test("20: a blocked read wakes on a write to its key")
    func blockingWakesOnChange() async throws {
        try await Harness.withTarget { (t: Target) async throws in
            let key = t.key("foo")
            try await t.client.put(key, "one")
            let m = try #require(try await t.client.get(key).value).modifyIndex
            let blocked = Task { try await t.client.get(key, QueryOptions(index: m, wait: .seconds(30))) }
            try await Task.sleep(for: .milliseconds(500))
            let (result, seconds) = try await Harness.timed {
                try await t.client.put(key, "two")
                return try await blocked.value
            }
            #expect(result.value?.stringValue == "two")
            #expect(result.index > m)
            #expect(seconds < 5, "woke \(seconds) s after the write")
        }
    }

    @Test("21: writes to other keys do not wake a blocked read")
    func unrelatedWritesDoNotWake() async throws {
        try await Harness.withTarget { (t: Target) async throws in
            let key = t.key("foo")
            try await t.client.put(key, "one")
            let m = try #require(try await t.client.get(key).value).modifyIndex
            async let blocked = Harness.timed { try await t.client.get(key, QueryOptions(index: m, wait: .seconds(2))) }
            for i in 0..<10 { try await t.client.put(t.key("other"), "\(i)") }
            let (result, seconds) = try await blocked
            #expect(result.index == m)
            #expect(seconds >= 1.9, "returned after \(seconds) s, before its wait")
        }
    }

    @Test("22: a read blocked on a missing key ignores unrelated writes and returns when the key appears")
    func missingKeyWait() async throws {
        try await Harness.withTarget { (t: Target) async throws in
            let key = t.key("later")
            let first = try await t.http("GET", "/v1/kv/\(key)")
            let i = t.index(first)
            async let blocked = t.http("GET", "/v1/kv/\(key)?index=\(i)&wait=10s")
            try await Task.sleep(for: .milliseconds(300))
            try await t.client.put(t.key("unrelated"), "x")
            try await Task.sleep(for: .seconds(1))
            try await t.client.put(key, "now")
            let response = try await blocked
            #expect(response.status == 200)
            let created = try #require(try await t.client.get(key).value).createIndex
            #expect(t.index(response) == created)
        }
    }

    @Test("23: a prefix watch wakes on a delete under the prefix")
    func prefixWakesOnDelete() async throws {
        try await Harness.withTarget { (t: Target) async throws in
            try await t.client.put(t.key("p/x"), "1")
            try await t.client.put(t.key("p/y"), "2")
            let listing = try await t.client.list(t.key("p/"))
            async let blocked = t.client.list(t.key("p/"), QueryOptions(index: listing.index, wait: .seconds(10)))
            try await Task.sleep(for: .milliseconds(300))
            try await t.client.delete(t.key("p/x"))
            let result = try await blocked
            #expect(result.index > listing.index)
            #expect(result.value.map(\.key) == [t.key("p/y")])
        }
    }

    @Test("24-25: index 0 answers at once; wait=0s blocks; an index ahead of the key blocks for the wait")
    func indexEdges() async throws {
        try await Harness.withTarget { (t: Target) async throws in
            let key = t.key("foo")
            try await t.client.put(key, "v")
            let m = try #require(try await t.client.get(key).value).modifyIndex
            let (_, immediate) = try await Harness.timed { try await t.http("GET", "/v1/kv/\(key)?index=0&wait=30s") }
            #expect(immediate < 3, "index=0 must answer at once, not block for the wait")
            let waiter = Task { try await t.http("GET", "/v1/kv/\(key)?index=\(m)&wait=0s", timeout: .seconds(30)) }
            try await Task.sleep(for: .seconds(2))
            #expect(waiter.isCancelled == false)
            waiter.cancel()
            let (ahead, seconds) = try await Harness.timed { try await t.http("GET", "/v1/kv/\(key)?index=\(m + 1000)&wait=1s") }
            #expect(seconds >= 0.95, "an index in the future must not return early")
            #expect(t.index(ahead) == m)
        }
    }

    @Test("26: blocking timeouts stay within wait + wait/16 (Patroni's read timeout)")
    func jitterBound() async throws {
        try await Harness.withTarget { (t: Target) async throws in
            let key = t.key("foo")
            try await t.client.put(key, "v")
            let m = try #require(try await t.client.get(key).value).modifyIndex
            let durations = try await withThrowingTaskGroup(of: Double.self) { group in
                for _ in 0..<20 {
                    group.addTask { try await Harness.timed { try await t.http("GET", "/v1/kv/\(key)?index=\(m)&wait=1.6s") }.1 }
                }
                var all: [Double] = []
                for try await d in group { all.append(d) }
                return all
            }
            #expect(durations.allSatisfy { $0 >= 1.55 }, "\(durations)")
            // The server answers by 1.7 s (wait + wait/16); the slack is for a loaded test machine.
            #expect(durations.allSatisfy { $0 <= 1.7 + 1.3 }, "\(durations)")
        }
    }

    @Test("client-side key validation refuses keys Consul would mangle, sending nothing")
    func clientRefusesBadKeys() async throws {
        try await Harness.withTarget { (t: Target) async throws in
            for bad in ["/lead", "a//b", "a/../b", "new\nline"] {
                await #expect(throws: ConsulError.self) { try await t.client.put(bad, "x") }
            }
        }
    }

    @Test("a path with an empty, '.' or '..' segment is refused with 400 and writes nothing; a trailing slash is a key")
    func uncleanPaths() async throws {
        try await Harness.withTarget { (t: Target) async throws in
            // Consul's mux redirects such paths instead; the embedded server refuses them. The dots are
            // percent-encoded, or the HTTP client would resolve them before sending.
            guard !Target.isRealConsul else { return }
            for path in ["/v1/kv/a//b", "/v1/kv/a/%2E/b", "/v1/kv/a/%2E%2E/b", "/v1/kv/a/%2E%2E", "/v1/kv/a/%2E"] {
                let response = try await t.http("PUT", path, body: "x")
                #expect(response.status == 400, "\(path): \(response.status)")
                #expect(response.text.contains("not clean"), "\(path): \(response.text)")
            }
            #expect(try await t.client.list("a").value.isEmpty)
            #expect(try await t.http("PUT", "/v1/kv/a/b/", body: "x").status == 200)
        }
    }
}
