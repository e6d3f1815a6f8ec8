import BatonConsul
import BatonConsulServer
import ConsulAPI
import Testing

/// The embedded server in this process (``InProcessConsul``, no socket) answers the client as the same
/// server over HTTP does: one script of calls against both gives the same outcomes, and its faults and
/// timeouts reach the client as a network's would.
@Suite("the embedded server in process")
struct InProcessConsulTests {
    /// What one script of calls observed, comparable across servers (indexes excepted: they are
    /// compared within a run, as clients use them).
    struct Outcomes: Equatable {
        var lines: [String] = []
        mutating func record(_ line: String) { lines.append(line) }
    }

    /// KV writes in every mode, a listing, a transaction that commits and one that rolls back, sessions
    /// and their locks, a blocking read woken by a write, and the errors of bad calls.
    static func script(_ client: ConsulClient) async throws -> Outcomes {
        var out = Outcomes()
        out.record("put \(try await client.put("app/a", "1"))")
        let a = try #require(try await client.get("app/a").value)
        out.record("get \(a.stringValue) flags \(a.flags)")
        out.record("cas stale \(try await client.put("app/a", "2", mode: .cas(a.modifyIndex + 100)))")
        out.record("cas fresh \(try await client.put("app/a", "2", mode: .cas(a.modifyIndex)))")
        out.record("cas create-only \(try await client.put("app/a", "3", mode: .cas(0)))")
        try await client.put("app/b", "x", flags: 7)
        out.record("list \(try await client.list("app/").value.map { "\($0.key)=\($0.stringValue)/\($0.flags)" })")
        out.record("keys \(try await client.keys("", separator: "/").value)")
        out.record("missing \(String(describing: try await client.get("app/none").value))")
        let session = try await client.createSession(SessionRequest(name: "s", ttl: .seconds(10), lockDelay: .zero, nodeChecks: []))
        let other = try await client.createSession(SessionRequest(name: "t", ttl: .seconds(10), lockDelay: .zero, nodeChecks: []))
        out.record("acquire \(try await client.put("app/lock", "me", mode: .acquire(session: session)))")
        out.record("acquire by another \(try await client.put("app/lock", "you", mode: .acquire(session: other)))")
        out.record("holder \(try await client.get("app/lock").value?.session == session)")
        out.record("release \(try await client.put("app/lock", "free", mode: .release(session: session)))")
        out.record("released \(try await client.get("app/lock").value?.session == nil)")
        out.record("session info \(try await client.sessionInfo(session).value?.name ?? "none")")
        out.record("sessions \(try await client.listSessions().value.map(\.name).sorted())")
        try await client.destroySession(other)
        out.record("destroyed \(try await client.sessionInfo(other).value == nil)")
        do {
            _ = try await client.put("app/lock", "x", mode: .acquire(session: other))
            out.record("acquire with a destroyed session: applied")
        } catch let error as ConsulError {
            out.record("acquire with a destroyed session: \(error.code)")
        }
        let committed = try await client.transaction([
            KVOperation(.set, "app/t1", value: Array("1".utf8)), KVOperation(.set, "app/t2", value: Array("2".utf8)),
        ])
        if case .committed(let entries) = committed { out.record("txn committed \(entries.map(\.key))") } else { out.record("txn \(committed)") }
        let rolledBack = try await client.transaction([
            KVOperation(.set, "app/t3", value: Array("3".utf8)), KVOperation(.checkIndex, "app/t1", index: 1),
        ])
        if case .rolledBack(let errors) = rolledBack { out.record("txn rolled back at \(errors.map(\.operation))") } else { out.record("txn \(rolledBack)") }
        out.record("t3 \(String(describing: try await client.get("app/t3").value))")
        // A blocking read returns when the key changes, with a higher index.
        let before = try await client.get("app/a")
        async let woken = client.get("app/a", QueryOptions(index: before.index, wait: .seconds(5)))
        try await Task.sleep(for: .milliseconds(100))
        try await client.put("app/a", "4")
        let after = try await woken
        out.record("blocking read woke with \(after.value?.stringValue ?? "nothing"), index up \(after.index > before.index)")
        do {
            _ = try await client.get("bad//key")
            out.record("bad key: read")
        } catch let error as ConsulError {
            out.record("bad key: \(error.code)")
        }
        out.record("deleted \(try await client.delete("app/b"))")
        out.record("after delete \(try await client.list("app/").value.map(\.key))")
        return out
    }

    @Test("one script of KV, session, transaction and blocking calls gives the same outcomes in process as over HTTP")
    func sameAsOverHTTP() async throws {
        let server = try await Harness.startServer(directory: nil)
        let overHTTP: Outcomes
        do {
            overHTTP = try await Self.script(Harness.target(for: server, directory: nil).client)
        } catch {
            await server.shutdown()
            throw error
        }
        await server.shutdown()
        let inProcess = try await InProcessConsul(settings: ServerSettings(sessionTTLMin: .seconds(1)), logger: Harness.logger)
        defer { inProcess.shutdown() }
        let here = try await Self.script(inProcess.client())
        #expect(here == overHTTP)
        #expect(here.lines.count == 24, "every step recorded: \(here.lines)")
        #expect(here.lines.contains("acquire by another false") && here.lines.contains("acquire with a destroyed session: sessionNotFound"), "\(here.lines)")
    }

    @Test("a lock asked for with a session that no longer exists is refused at once, not asked again until the call's time is up")
    func missingSessionIsNotRetried() async throws {
        let consul = try await InProcessConsul(logger: Harness.logger)
        defer { consul.shutdown() }
        let client = consul.client(requestTimeout: .seconds(5))
        let session = try await client.createSession(SessionRequest(name: "gone", ttl: .seconds(10), lockDelay: .zero, nodeChecks: []))
        try await client.destroySession(session)
        let before = consul.faults.requestsServed
        await #expect(throws: ConsulError.self) { _ = try await client.put("lock", "me", mode: .acquire(session: session)) }
        #expect(consul.faults.requestsServed - before == 1, "asked \(consul.faults.requestsServed - before) times")
    }

    @Test("Consul's trouble in process reaches the client as over a network: a hang outlasts the call's timeout, an election answers 500 until it ends")
    func faultsReachTheClient() async throws {
        let consul = try await InProcessConsul(logger: Harness.logger)
        defer { consul.shutdown() }
        let client = consul.client(requestTimeout: .milliseconds(500))
        try await client.put("k", "v")
        consul.faults.hang(for: .seconds(2))
        // Held past the call's timeout: no answer, as from a network (the hang's end would have answered).
        do {
            _ = try await client.get("k")
            Issue.record("a read during a hang longer than its timeout was answered")
        } catch let error as ConsulError {
            #expect(error.code == .unreachable, "\(error)")
        }
        consul.faults.clear()
        #expect(try await client.get("k").value?.stringValue == "v")
        consul.faults.election(for: .seconds(1))
        do {
            _ = try await client.get("k")
            Issue.record("read during an election was answered")
        } catch let error as ConsulError {
            #expect(error.code == .server && "\(error)".contains("No cluster leader"), "\(error)")
        }
        #expect(try await client.get("k", QueryOptions(consistency: .stale)).knownLeader == false, "a stale read is served without a leader")
        try await Task.sleep(for: .seconds(1))
        #expect(try await client.get("k").value?.stringValue == "v", "answered again once the election is over")
    }
}
