import BatonConsul
import ConsulAPI
import Foundation
import Testing

/// consul-api.md §3: `PUT /v1/txn`, KV operations all or nothing at one index.
@Suite("Txn conformance")
struct TxnConformanceTests {
    @Test("a transaction applies every write at one index, each operation seeing the earlier ones; write results carry no value")
    func commits() async throws {
        try await Harness.withTarget { (t: Target) async throws in
            let a = t.key("a"), b = t.key("b")
            let outcome = try await t.client.transaction([
                KVOperation(.set, a, value: Array("one".utf8), flags: 7), KVOperation(.cas, b, value: Array("two".utf8), index: 0),
                KVOperation(.get, a),
            ])
            guard case .committed(let entries) = outcome else { Issue.record("rolled back: \(outcome)"); return }
            #expect(entries.count == 3)
            #expect(entries[0].value == nil && entries[0].flags == 7, "a set's result: \(entries[0])")
            #expect(entries[0].modifyIndex == entries[1].modifyIndex, "one index for the whole transaction")
            #expect(entries[2].value == Array("one".utf8))
            let read = try #require(try await t.client.get(b).value)
            #expect(read.stringValue == "two" && read.modifyIndex == entries[1].modifyIndex)
        }
    }

    @Test("one failing operation rolls everything back: 409 with the failing operation's place and Consul's reason")
    func rollsBack() async throws {
        try await Harness.withTarget { (t: Target) async throws in
            let a = t.key("a"), b = t.key("b")
            try await t.client.put(a, "old")
            let index = try #require(try await t.client.get(a).value).modifyIndex
            let outcome = try await t.client.transaction([
                KVOperation(.set, b, value: Array("x".utf8)), KVOperation(.cas, a, value: Array("new".utf8), index: index + 100),
            ])
            #expect(outcome == .rolledBack([TransactionError(operation: 1, what: "failed to set key \"\(a)\", index is stale")]))
            #expect(try await t.client.get(b).value == nil, "the set before the failed cas left nothing")
            #expect(try await t.client.get(a).value?.stringValue == "old")
            let raw = try await t.http("PUT", "/v1/txn", body: "[{\"KV\":{\"Verb\":\"check-not-exists\",\"Key\":\"\(a)\"}}]")
            #expect(raw.status == 409)
            #expect(try t.json(raw).member("Results") == .null)
            for (verb, what) in [("check-index", "current modify index \(index) != 1"), ("get", "doesn't exist")] {
                let key = verb == "get" ? t.key("missing") : a
                let answer = try await t.client.transaction([KVOperation(verb == "get" ? .get : .checkIndex, key, index: 1)])
                guard case .rolledBack(let errors) = answer else { Issue.record("\(verb) passed"); continue }
                #expect(errors.first?.what.contains(what) == true, "\(verb): \(errors)")
            }
        }
    }

    @Test("lock, check-session, unlock, delete-cas and delete-tree behave as their single-key forms")
    func locksAndDeletes() async throws {
        try await Harness.withTarget { (t: Target) async throws in
            let session = try await t.client.createSession(SessionRequest(name: "txn", ttl: .seconds(30), lockDelay: .zero, behavior: .release))
            let lock = t.key("lock")
            guard case .committed = try await t.client.transaction([KVOperation(.lock, lock, value: Array("me".utf8), session: session)]) else {
                Issue.record("lock failed")
                return
            }
            #expect(try await t.client.get(lock).value?.session == session)
            let check = try await t.client.transaction([KVOperation(.checkSession, lock, session: "00000000-0000-0000-0000-000000000000")])
            guard case .rolledBack = check else { Issue.record("check-session of another session passed"); return }
            guard case .committed = try await t.client.transaction([KVOperation(.checkSession, lock, session: session), KVOperation(.unlock, lock, session: session)])
            else {
                Issue.record("check-session + unlock failed")
                return
            }
            #expect(try await t.client.get(lock).value?.session == nil)
            try await t.client.put(t.key("tree/1"), "1")
            try await t.client.put(t.key("tree/2"), "2")
            let index = try #require(try await t.client.get(lock).value).modifyIndex
            let outcome = try await t.client.transaction([KVOperation(.deleteCAS, lock, index: index), KVOperation(.deleteTree, t.key("tree/"))])
            #expect(outcome == .committed([]), "delete verbs return no entries")
            #expect(try await t.client.list(t.key("")).value.isEmpty)
            try await t.client.destroySession(session)
        }
    }

    @Test("a body that is not a list of KV operations is a 400; over 128 operations a 413")
    func badBodies() async throws {
        try await Harness.withTarget { (t: Target) async throws in
            for body in ["{", "{}", "[{\"KV\":{\"Verb\":\"frobnicate\",\"Key\":\"a\"}}]"] {
                let response = try await t.http("PUT", "/v1/txn", body: body)
                #expect(response.status == 400, "\(body): \(response.status) \(response.text)")
            }
            let many = "[" + Array(repeating: "{\"KV\":{\"Verb\":\"get-or-empty\",\"Key\":\"\(t.key("x"))\"}}", count: 129).joined(separator: ",") + "]"
            let response = try await t.http("PUT", "/v1/txn", body: many)
            #expect(response.status == 413, "\(response.text)")
        }
    }
}
