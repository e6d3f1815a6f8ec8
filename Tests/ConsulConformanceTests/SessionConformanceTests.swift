import BatonConsul
import ConsulAPI
import BatonTestSupport
import Foundation
import Testing

/// consul-api.md §7, cases 27–41: sessions, locks, lock-delay, TTL expiry and check-bound sessions.
@Suite("Session and lock conformance")
struct SessionConformanceTests {
    @Test("27: an empty create body gets Consul's defaults")
    func defaults() async throws {
        try await Harness.withTarget { (t: Target) async throws in
            let id = try await t.session("")
            let info = try await t.http("GET", "/v1/session/info/\(id)")
            let session = try #require(try t.json(info).arrayValue?.first)
            #expect(session.member("Behavior") == .string("release"))
            #expect(session.member("LockDelay") == .number("15000000000"))
            #expect(session.member("TTL") == .string(""))
            #expect(session.member("NodeChecks") == .array([.string("serfHealth")]))
            #expect(t.index(info) >= 1)
            if !Target.isRealConsul { #expect(session.member("Node") == .string("node1")) }
            try await t.client.destroySession(id)
        }
    }

    @Test("28-29: Patroni's lower-case body, and LockDelay as a number of seconds")
    func patroniBodyAndLockDelay() async throws {
        try await Harness.withTarget { (t: Target) async throws in
            let id = try await t.session(#"{"name":"batman-pg0","checks":[],"lockdelay":"0.001s","behavior":"delete","ttl":"15.0s"}"#)
            let entry = try #require(try await t.client.sessionInfo(id).value)
            #expect(entry.ttl == "15.0s")
            #expect(entry.lockDelay == .milliseconds(1))
            #expect(entry.nodeChecks == [])
            #expect(entry.behavior == .delete)
            let numeric = try await t.session(#"{"LockDelay":15}"#)
            #expect(try await t.client.sessionInfo(numeric).value?.lockDelay == .seconds(15))
            #expect(try await t.http("PUT", "/v1/session/create", body: #"{"LockDelay":"15"}"#).status == 400)
            try await t.client.destroySession(id)
            try await t.client.destroySession(numeric)
        }
    }

    @Test("30-31: bad TTLs, bad JSON, bad behaviour, unknown nodes and checks are refused with Consul's texts")
    func badSessionRequests() async throws {
        try await Harness.withTarget(sessionTTLMin: .seconds(10)) { (t: Target) async throws in
            guard !Target.isRealConsul || !Target.realConsulHasShortTTL else { return }
            let before = try await t.client.listSessions().value.count
            let short = try await t.http("PUT", "/v1/session/create", body: #"{"TTL":"5s"}"#)
            #expect(short.status == 500)
            #expect(short.text.hasPrefix("Invalid Session TTL '5000000000', must be between [10s=24h0m0s]"))
            let junk = try await t.http("PUT", "/v1/session/create", body: #"{"TTL":"abc"}"#)
            #expect(junk.status == 500 && junk.text.contains(#"Session TTL 'abc' invalid: time: invalid duration "abc""#))
            #expect(try await t.http("PUT", "/v1/session/create", body: #"{"TTL":"86401s"}"#).text.hasPrefix("Invalid Session TTL"))
            let number = try await t.http("PUT", "/v1/session/create", body: #"{"TTL":30}"#)
            #expect(number.status == 400 && number.text.hasPrefix("Request decode failed"))
            let broken = try await t.http("PUT", "/v1/session/create", body: #"{"Name":"#)
            #expect(broken.status == 400 && broken.text.hasPrefix("Request decode failed:"))
            let keep = try await t.http("PUT", "/v1/session/create", body: #"{"Behavior":"keep"}"#)
            #expect(keep.status == 500 && keep.text.contains("Invalid Behavior setting 'keep'"))
            let node = try await t.http("PUT", "/v1/session/create", body: #"{"Node":"n2"}"#)
            #expect(node.status == 500 && node.text.contains("Missing node registration"))
            let check = try await t.http("PUT", "/v1/session/create", body: #"{"NodeChecks":["nope"]}"#)
            #expect(check.status == 500 && check.text.contains("Missing check 'nope' registration"))
            #expect(try await t.client.listSessions().value.count == before, "a refused create stores nothing")

            let zero = try await t.session(#"{"TTL":"0s"}"#)
            let day = try await t.session(#"{"TTL":"86400s"}"#)
            try await t.client.destroySession(zero)
            try await t.client.destroySession(day)
        }
    }

    @Test("32: renew, destroy and info of known and unknown sessions")
    func renewAndUnknownSessions() async throws {
        try await Harness.withTarget(sessionTTLMin: .seconds(10)) { (t: Target) async throws in
            let id = try await t.session(#"{"TTL":"30s"}"#)
            let renewed = try await t.http("PUT", "/v1/session/renew/\(id)")
            #expect(renewed.status == 200)
            #expect(try t.json(renewed).arrayValue?.first?.member("TTL") == .string("30s"))
            let unknown = "11111111-1111-1111-1111-111111111111"
            let missing = try await t.http("PUT", "/v1/session/renew/\(unknown)")
            #expect(missing.status == 404 && missing.text.contains("Session id '\(unknown)' not found"))
            await #expect(throws: ConsulError.self) { try await t.client.renewSession(unknown) }
            do {
                try await t.client.renewSession(unknown)
            } catch let error as ConsulError {
                #expect(error.code == .sessionNotFound)
            }
            #expect(try await t.http("PUT", "/v1/session/destroy/\(unknown)").text == "true")
            #expect(try await t.http("GET", "/v1/session/info/\(unknown)").text == "[]")
            #expect(try await t.http("GET", "/v1/session/node/nope").text == "[]")
            try await t.client.destroySession(id)
        }
    }

    @Test("33-34: acquire, re-acquire, release and LockIndex; a plain PUT keeps the lock")
    func lockLifecycle() async throws {
        try await Harness.withTarget { (t: Target) async throws in
            let s1 = try await t.session(#"{"LockDelay":"0s"}"#)
            let s2 = try await t.session(#"{"LockDelay":"0s"}"#)
            let key = t.key("lk")
            #expect(try await t.client.put(key, "1", mode: .acquire(session: s1)))
            var entry = try #require(try await t.client.get(key).value)
            #expect(entry.session == s1 && entry.lockIndex == 1)
            #expect(try await t.client.put(key, "x", mode: .acquire(session: s2)) == false)
            #expect(try await t.client.put(key, "1b", mode: .acquire(session: s1)))
            entry = try #require(try await t.client.get(key).value)
            #expect(entry.lockIndex == 1 && entry.stringValue == "1b")
            #expect(try await t.client.put(key, "x", mode: .release(session: s2)) == false)
            #expect(try await t.client.put(key, "r", mode: .release(session: s1)))
            entry = try #require(try await t.client.get(key).value)
            #expect(entry.session == nil && entry.lockIndex == 1 && entry.stringValue == "r")
            #expect(try await t.client.put(key, "2", mode: .acquire(session: s2)))
            #expect(try await t.client.get(key).value?.lockIndex == 2)
            #expect(try await t.client.put(key, "z"))
            entry = try #require(try await t.client.get(key).value)
            #expect(entry.session == s2 && entry.lockIndex == 2 && entry.stringValue == "z")
            try await t.client.destroySession(s1)
            try await t.client.destroySession(s2)
        }
    }

    @Test("35: acquiring with an unknown, malformed or empty session is an error; releasing with one is false")
    func unknownSessions() async throws {
        try await Harness.withTarget { (t: Target) async throws in
            let key = t.key("lk")
            let unknown = try await t.http("PUT", "/v1/kv/\(key)?acquire=11111111-1111-1111-1111-111111111111", body: "x")
            #expect(unknown.status == 500 && unknown.text.hasPrefix("invalid session"))
            #expect(try await t.http("PUT", "/v1/kv/\(key)?acquire=foo", body: "x").status == 500)
            let empty = try await t.http("PUT", "/v1/kv/\(key)?acquire=", body: "x")
            #expect(empty.status == 500 && empty.text.contains("missing session"))
            let release = try await t.http("PUT", "/v1/kv/\(key)?release=foo", body: "x")
            #expect(release.status == 200 && release.text == "false")
            do {
                try await t.client.put(key, "x", mode: .acquire(session: "11111111-1111-1111-1111-111111111111"))
                Issue.record("acquire with an unknown session must throw")
            } catch let error as ConsulError {
                #expect(error.code == .sessionNotFound)
            }
            #expect(try await t.client.get(key).value == nil, "nothing was stored")
        }
    }

    @Test("36: ten sessions contend for one lock: exactly one wins")
    func contention() async throws {
        try await Harness.withTarget { (t: Target) async throws in
            var sessions: [String] = []
            for _ in 0..<10 { sessions.append(try await t.session(#"{"LockDelay":"0s"}"#)) }
            let key = t.key("race")
            let winners = try await withThrowingTaskGroup(of: (String, Bool).self) { group in
                for s in sessions { group.addTask { (s, try await t.client.put(key, s, mode: .acquire(session: s))) } }
                var won: [String] = []
                for try await (s, ok) in group where ok { won.append(s) }
                return won
            }
            #expect(winners.count == 1)
            #expect(try await t.client.get(key).value?.session == winners.first)
            for s in sessions { try await t.client.destroySession(s) }
        }
    }

    @Test("37: destroying a release-session unlocks its key in place and wakes its watcher")
    func invalidationReleases() async throws {
        try await Harness.withTarget { (t: Target) async throws in
            let s = try await t.session(#"{"LockDelay":"0s"}"#)
            let key = t.key("lk2")
            #expect(try await t.client.put(key, "v", mode: .acquire(session: s)))
            let before = try #require(try await t.client.get(key).value)
            async let watcher = t.client.get(key, QueryOptions(index: before.modifyIndex, wait: .seconds(10)))
            try await Task.sleep(for: .milliseconds(300))
            try await t.client.destroySession(s)
            let woken = try #require(try await watcher.value)
            #expect(woken.session == nil)
            #expect(woken.stringValue == "v" && woken.lockIndex == before.lockIndex)
            #expect(woken.modifyIndex > before.modifyIndex)
        }
    }

    @Test("38: destroying a delete-session deletes its key; the watcher gets a 404 with a newer index")
    func invalidationDeletes() async throws {
        try await Harness.withTarget { (t: Target) async throws in
            let s = try await t.session(#"{"LockDelay":"0s","Behavior":"delete"}"#)
            let key = t.key("eph")
            #expect(try await t.client.put(key, "v", mode: .acquire(session: s)))
            let m = try #require(try await t.client.get(key).value).modifyIndex
            async let watcher = t.http("GET", "/v1/kv/\(key)?index=\(m)&wait=10s")
            try await Task.sleep(for: .milliseconds(300))
            try await t.client.destroySession(s)
            let response = try await watcher
            #expect(response.status == 404)
            #expect(t.index(response) > m)
        }
    }

    @Test("39: lock-delay blocks acquires (not plain PUTs) after invalidation, not after a release; capped at 60 s")
    func lockDelay() async throws {
        try await Harness.withTarget { (t: Target) async throws in
            let s1 = try await t.session(#"{"LockDelay":"5s"}"#)
            let key = t.key("ld")
            #expect(try await t.client.put(key, "1", mode: .acquire(session: s1)))
            try await t.client.destroySession(s1)
            let s2 = try await t.session(#"{"LockDelay":"0s"}"#)
            #expect(try await t.client.put(key, "2", mode: .acquire(session: s2)) == false)
            #expect(try await t.client.put(key, "plain"))
            let acquired = try await eventually(timeout: .seconds(10)) {
                try await t.client.put(key, "2", mode: .acquire(session: s2))
            }
            #expect(acquired)

            let s3 = try await t.session(#"{"LockDelay":"2s"}"#)
            let key2 = t.key("ld2")
            #expect(try await t.client.put(key2, "1", mode: .acquire(session: s3)))
            #expect(try await t.client.put(key2, "1", mode: .release(session: s3)))
            #expect(try await t.client.put(key2, "2", mode: .acquire(session: s2)), "a release arms no lock-delay")

            let s4 = try await t.session(#"{"LockDelay":"120s"}"#)
            #expect(try await t.client.sessionInfo(s4).value?.lockDelay == .seconds(120))
            for s in [s2, s3, s4] { try await t.client.destroySession(s) }
        }
    }

    @Test("40: a TTL session lives between TTL and 2×TTL, then releases its lock; renewals keep it and move no index")
    func ttlExpiry() async throws {
        try await Harness.withTarget(sessionTTLMin: .seconds(1)) { (t: Target) async throws in
            guard !Target.isRealConsul || Target.realConsulHasShortTTL else { return }
            // Taken before the session exists, so the session's 2×TTL deadline is at least start + 2 s.
            let start = ContinuousClock.now
            let s = try await t.session(#"{"TTL":"1s","LockDelay":"0s"}"#)
            let key = t.key("tk")
            #expect(try await t.client.put(key, "v", mode: .acquire(session: s)))
            let locked = try #require(try await t.client.get(key).value)
            try await Task.sleep(until: start + .milliseconds(1500), clock: .continuous)
            #expect(try await t.client.sessionInfo(s).value != nil, "gone before 1.5 s: Consul keeps a session up to 2×TTL")
            #expect(try await t.client.get(key).value?.session == s)
            let released = try await eventually(timeout: .seconds(3)) { try await t.client.get(key).value?.session == nil }
            #expect(released)
            let elapsed = ContinuousClock.now - start
            #expect(elapsed < .seconds(4))
            #expect(try await t.client.sessionInfo(s).value == nil)
            let after = try #require(try await t.client.get(key).value)
            #expect(after.modifyIndex > locked.modifyIndex && after.lockIndex == locked.lockIndex)

            let kept = try await t.session(#"{"TTL":"2s"}"#)
            let listIndex = try await t.client.listSessions().index
            for _ in 0..<10 {
                try await Task.sleep(for: .milliseconds(500))
                try await t.client.renewSession(kept)
            }
            #expect(try await t.client.sessionInfo(kept).value != nil, "renewed every 0.5 s, still alive at 5 s (TTL 2 s)")
            #expect(try await t.client.listSessions().index == listIndex, "renewals are not writes")
            try await t.client.destroySession(kept)
        }
    }

    @Test("41: a session bound to a check dies when the check fails; binding to a critical check is refused")
    func checkBoundSession() async throws {
        try await Harness.withTarget { (t: Target) async throws in
            let checkID = "c1-\(UUID().uuidString.prefix(6))"
            let reg = try await t.http(
                "PUT", "/v1/agent/check/register", body: #"{"Name":"\#(checkID)","TTL":"10s","Status":"passing"}"#)
            #expect(reg.status == 200)
            let s = try await t.session(#"{"NodeChecks":["serfHealth","\#(checkID)"],"LockDelay":"0s"}"#)
            let key = t.key("ck")
            #expect(try await t.client.put(key, "v", mode: .acquire(session: s)))
            #expect(try await t.http("PUT", "/v1/agent/check/fail/\(checkID)").status == 200)
            #expect(try await t.client.sessionInfo(s).value == nil)
            #expect(try await t.client.get(key).value?.session == nil)
            let refused = try await t.http("PUT", "/v1/session/create", body: #"{"NodeChecks":["\#(checkID)"]}"#)
            #expect(refused.status == 500 && refused.text.contains("Check '\(checkID)' is in critical state"))
            try await t.client.deregisterCheck(checkID)
        }
    }
}
