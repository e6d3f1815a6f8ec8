import BatonConsul
@testable import BatonConsulServer
import BatonConsulStore
import ConsulAPI
import Foundation
import Synchronization
import BatonTestSupport
import Testing

/// The embedded server's own promises: durability across restarts and crashes, torn-write recovery,
/// one server per data directory, and ACL enforcement. A real Consul is not restarted by these tests.
@Suite("Embedded server durability and ACLs", .enabled(if: !Target.isRealConsul, "restarts and crashes the embedded server only"))
struct DurabilityTests {
    @Test("a restart keeps every key and session, and the index never moves backwards")
    func restartKeepsState() async throws {
        let directory = Harness.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        var server = try await Harness.startServer(directory: directory, sessionTTLMin: .seconds(10))
        var t = Harness.target(for: server, directory: directory)
        for i in 0..<50 { try await t.client.put("k/\(i)", "v\(i)") }
        let session = try await t.session(#"{"TTL":"60s","LockDelay":"0s"}"#)
        #expect(try await t.client.put("leader", "me", mode: .acquire(session: session)))
        try await t.client.delete("k/0")
        let indexBefore = try await t.client.list("").index
        await server.shutdown()

        server = try await Harness.startServer(directory: directory, sessionTTLMin: .seconds(10))
        t = Harness.target(for: server, directory: directory)
        let after = try await t.client.list("")
        #expect(after.value.count == 50)
        #expect(after.index >= indexBefore)
        #expect(try await t.client.get("k/0").value == nil)
        #expect(try await t.client.get("leader").value?.session == session)
        #expect(try await t.client.sessionInfo(session).value != nil)
        try await t.client.put("new", "x")
        #expect(try #require(try await t.client.get("new").value).modifyIndex > indexBefore)
        await server.shutdown()
    }

    /// Issue 24: `GET /v1/snapshot` saves the store, `PUT /v1/snapshot` brings it back as Consul's
    /// restore does — keys, sessions and indexes roll back, a blocked reader wakes, it survives a
    /// restart — and a body that is not such a snapshot changes nothing.
    @Test("a snapshot saved and restored rolls keys, sessions and indexes back, wakes blocked readers and survives a restart; a bad one changes nothing")
    func snapshotSaveAndRestore() async throws {
        let directory = Harness.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        var server = try await Harness.startServer(directory: directory, sessionTTLMin: .seconds(10))
        var t = Harness.target(for: server, directory: directory)
        try await t.client.put("k/a", "one")
        let session = try await t.session(#"{"TTL":"60s","LockDelay":"0s"}"#)
        #expect(try await t.client.put("leader", "me", mode: .acquire(session: session)))
        let saved = try await t.http("GET", "/v1/snapshot")
        #expect(saved.status == 200 && saved.header("content-type") == "application/json")
        let savedIndex = try #require(saved.header("x-consul-index").flatMap { UInt64($0) })

        try await t.client.put("k/a", "two")
        try await t.client.put("k/b", "new")
        try await t.client.destroySession(session)
        let later = try await t.client.list("k/").index
        #expect(later > savedIndex)
        // A reader blocked on the current index wakes when the store rolls back under it.
        let reader = t.client
        let blocked = ContinuousClock.now
        async let woken = reader.list("k/", QueryOptions(index: later, wait: .seconds(60)))
        try await Task.sleep(for: .milliseconds(200))
        let restored = try await t.http("PUT", "/v1/snapshot", body: saved.text)
        #expect(restored.status == 200, "\(restored.text)")
        let afterWake = try await woken
        #expect(ContinuousClock.now - blocked < .seconds(30), "woken by the restore, not by its 60 s wait running out")
        #expect(afterWake.value.map(\.stringValue) == ["one"], "woken with the restored keys")
        #expect(afterWake.index <= later, "the index went back (Consul's clients then read afresh)")
        #expect(try await t.client.get("leader").value?.session == session, "the session and its lock came back")
        #expect(try await t.client.sessionInfo(session).value != nil)

        for bad in ["", "{}", #"{"format":"consul 1.18 archive"}"#, #"{"format":"baton-consul-snapshot 1","changes":"x"}"#] {
            let refused = try await t.http("PUT", "/v1/snapshot", body: bad)
            #expect(refused.status == 400, "\(bad): \(refused.status) \(refused.text)")
        }
        #expect(try await t.client.get("k/a").value?.stringValue == "one", "a refused snapshot changed nothing")

        await server.shutdown()
        server = try await Harness.startServer(directory: directory, sessionTTLMin: .seconds(10))
        t = Harness.target(for: server, directory: directory)
        #expect(try await t.client.list("k/").value.map(\.stringValue) == ["one"], "the restore is durable")
        #expect(try await t.client.get("leader").value?.session == session)
        await server.shutdown()
    }

    @Test("a write torn by a crash is cut off on start, never loaded in part; damage in the middle refuses to start")
    func tornWrite() async throws {
        let directory = Harness.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        var server = try await Harness.startServer(directory: directory)
        var t = Harness.target(for: server, directory: directory)
        for i in 0..<10 { try await t.client.put("k/\(i)", "v\(i)") }
        await server.shutdown()

        let log = directory + "/raft.log"
        let good = try Data(contentsOf: URL(fileURLWithPath: log))
        #expect(good.count > 0)
        // The last record cut short, as a crash in the middle of its append leaves it: that write was
        // never acknowledged.
        let torn = good.prefix(good.count - 5)
        try torn.write(to: URL(fileURLWithPath: log))
        server = try await Harness.startServer(directory: directory)
        t = Harness.target(for: server, directory: directory)
        #expect(try await t.client.list("k/").value.count == 9)
        #expect(try await t.client.get("k/9").value == nil)
        try await t.client.put("k/after", "x")
        await server.shutdown()
        server = try await Harness.startServer(directory: directory)
        t = Harness.target(for: server, directory: directory)
        #expect(try await t.client.get("k/after").value?.stringValue == "x")
        for i in 0..<5 { try await t.client.put("m/\(i)", "v") }
        await server.shutdown()

        // Flip a byte inside the first record of the log, with good records after it.
        let written = try Data(contentsOf: URL(fileURLWithPath: log))
        var damaged = written
        #expect(damaged.count > 40)
        damaged[damaged.count / 4] ^= 0xFF
        try damaged.write(to: URL(fileURLWithPath: log))
        await #expect(throws: DataDirectoryError.self) { _ = try await Harness.startServer(directory: directory) }

        // Issue 23, finding 11: the length field of the first record damaged so that it runs past the
        // end of the file. Read as a torn tail, every acknowledged write after it was cut off silently;
        // the record headers carry a checksum of their own now, and the server refuses to start.
        for byte in 0..<4 {
            var longer = written
            let first = Self.firstRecordOffset(written)
            longer[first + byte] ^= 0x40
            try longer.write(to: URL(fileURLWithPath: log))
            await #expect(throws: DataDirectoryError.self, "length byte \(byte)") { _ = try await Harness.startServer(directory: directory) }
        }
        // And the same file, intact, still starts with every write.
        try written.write(to: URL(fileURLWithPath: log))
        server = try await Harness.startServer(directory: directory)
        t = Harness.target(for: server, directory: directory)
        #expect(try await t.client.list("m/").value.count == 5)
        await server.shutdown()
    }

    @Test("a data directory written by an earlier Baton (records without a header checksum) still starts with every write")
    func firstFormatStillReads() async throws {
        let directory = Harness.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        var server = try await Harness.startServer(directory: directory)
        var t = Harness.target(for: server, directory: directory)
        for i in 0..<5 { try await t.client.put("k/\(i)", "v\(i)") }
        await server.shutdown()
        // The same records, framed as the first format framed them.
        let log = directory + "/raft.log"
        let bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: log)))
        var offset = WriteAheadLog.Format.second.start
        var legacy: [UInt8] = []
        while case .record(let payload, let next) = WriteAheadLog.readRecord(bytes, at: offset, format: .second) {
            legacy += WriteAheadLog.frame(payload, format: .first)
            offset = next
        }
        #expect(offset == bytes.count && !legacy.isEmpty)
        try Data(legacy).write(to: URL(fileURLWithPath: log))
        server = try await Harness.startServer(directory: directory)
        t = Harness.target(for: server, directory: directory)
        #expect(try await t.client.list("k/").value.count == 5)
        try await t.client.put("k/5", "v5")
        await server.shutdown()
        server = try await Harness.startServer(directory: directory)
        t = Harness.target(for: server, directory: directory)
        #expect(try await t.client.list("k/").value.count == 6)
        let snapshot = try Data(contentsOf: URL(fileURLWithPath: directory + "/state.snapshot"))
        #expect(snapshot.starts(with: WriteAheadLog.Format.magicLine), "the snapshot each start writes is of the second format")
        try await t.client.put("k/6", "v6")
        let appended = try Data(contentsOf: URL(fileURLWithPath: log))
        #expect(appended.starts(with: WriteAheadLog.Format.magicLine), "and so is the log from the next start on")
        await server.shutdown()
    }

    /// Where the first record starts in a log: after the format's magic line when there is one.
    static func firstRecordOffset(_ log: Data) -> Int {
        let magic = Array("BATON-WAL 2\n".utf8)
        return log.prefix(magic.count).elementsEqual(magic) ? magic.count : 0
    }

    @Test("two servers never share a data directory")
    func oneServerPerDirectory() async throws {
        let directory = Harness.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let server = try await Harness.startServer(directory: directory)
        await #expect(throws: DataDirectoryError.self) { _ = try await Harness.startServer(directory: directory) }
        await server.shutdown()
    }

    @Test("with an ACL token configured, a request without it or with another is refused and stores nothing")
    func aclToken() async throws {
        let directory = Harness.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let server = try await Harness.startServer(directory: directory, aclToken: "s3cret")
        let base = "http://127.0.0.1:\(server.localAddress.port)"
        let anonymous = ConsulClient(ConsulConfiguration(addresses: [try ConsulAddress(parsing: base)]))
        let wrong = ConsulClient(ConsulConfiguration(addresses: [try ConsulAddress(parsing: base)], token: Secret("nope")))
        let right = ConsulClient(ConsulConfiguration(addresses: [try ConsulAddress(parsing: base)], token: Secret("s3cret")))
        for client in [anonymous, wrong] {
            do {
                try await client.put("k", "v")
                Issue.record("a write without the token must be refused")
            } catch let error as ConsulError {
                #expect(error.code == .permissionDenied)
                #expect(!error.message.contains("s3cret") && !error.message.contains("nope"), "a token never appears in an error")
            }
        }
        #expect(try await right.get("k").value == nil)
        try await right.put("k", "v")
        #expect(try await right.get("k").value?.stringValue == "v")
        await server.shutdown()
    }

    @Test("kill -9 of `baton consul serve` under load loses no acknowledged write")
    func crashUnderLoad() async throws {
        let directory = Harness.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let port = try FreePort.pick()
        var process = try BatonProcess.start(["consul", "serve", "--listen", "127.0.0.1:\(port)", "--data-dir", directory])
        defer { process.kill() }
        let client = ConsulClient(ConsulConfiguration(addresses: [try ConsulAddress(parsing: "127.0.0.1:\(port)")], requestTimeout: .seconds(2)))
        #expect(await eventually { (try? await client.leader()) != nil })

        let acknowledgedCount = Counter()
        let acknowledged = try await withThrowingTaskGroup(of: [String].self) { group in
            for writer in 0..<4 {
                group.addTask {
                    var acked: [String] = []
                    for i in 0..<10_000 {
                        let key = "crash/\(writer)/\(i)"
                        do { try await client.put(key, "v") } catch { break }
                        acked.append(key)
                        acknowledgedCount.increment()
                    }
                    return acked
                }
            }
            // Kill mid-stream, once the writers are well under way (however loaded the machine is).
            _ = await eventually(timeout: .seconds(30)) { acknowledgedCount.value >= 100 }
            process.kill()
            var all: [String] = []
            for try await keys in group { all += keys }
            return all
        }
        #expect(acknowledged.count > 20, "the writers acknowledged only \(acknowledged.count) writes before the kill")

        process = try BatonProcess.start(["consul", "serve", "--listen", "127.0.0.1:\(port)", "--data-dir", directory])
        #expect(await eventually { (try? await client.leader()) != nil })
        let stored = Set(try await client.keys("crash/").value)
        let lost = acknowledged.filter { !stored.contains($0) }
        #expect(lost.isEmpty, "\(lost.count) acknowledged writes lost, e.g. \(lost.prefix(3))")
    }
}

/// A count shared by concurrent tasks.
final class Counter: Sendable {
    private let count = Mutex(0)
    func increment() { count.withLock { $0 += 1 } }
    var value: Int { count.withLock { $0 } }
}

/// Issue 23, finding 11: tombstones were kept forever (one per pruned event); now reaped
/// `tombstoneTTL` after the delete, as Consul's tombstone GC does, durably.
@Suite("Embedded server tombstones")
struct TombstoneTests {
    @Test("a tombstone is reaped a TTL after its delete, with the listing index never below the KV table's; the reap is logged like any write")
    func tombstonesAreReaped() throws {
        let start = ContinuousClock.now
        var state = State()
        state.apply([.kvPut(KVPair(key: "events/1", value: Array("x".utf8), flags: 0, session: nil, lockIndex: 0, createIndex: 10, modifyIndex: 10))], index: 10, now: start)
        state.apply([.kvDelete(key: "events/1")], index: 11, now: start)
        state.apply([.kvPut(KVPair(key: "events/2", value: Array("y".utf8), flags: 0, session: nil, lockIndex: 0, createIndex: 12, modifyIndex: 12))], index: 12, now: start + .seconds(600))
        state.apply([.kvDelete(key: "events/2")], index: 13, now: start + .seconds(600))
        #expect(state.tombstones.count == 2)
        #expect(state.reapableTombstones(at: start + State.tombstoneTTL - .seconds(1)) == nil)
        #expect(state.nextDeadline() == start + State.tombstoneTTL, "the timer wakes for it")
        let upTo = try #require(state.reapableTombstones(at: start + State.tombstoneTTL))
        #expect(upTo == 11, "only the first delete is old enough")
        state.apply([.tombstonesReaped(upTo: upTo)], index: 14, now: start + State.tombstoneTTL)
        #expect(Array(state.tombstones.keys) == ["events/2"])
        #expect(state.kvListIndex(prefix: "events/") == 13)
        state.apply([.tombstonesReaped(upTo: try #require(state.reapableTombstones(at: start + .seconds(600) + State.tombstoneTTL)))], index: 15, now: start + .seconds(1600))
        #expect(state.tombstones.isEmpty && state.tombstoneMarks.isEmpty)
        #expect(state.kvListIndex(prefix: "events/") == state.kvIndex, "an empty prefix answers the KV table's index")
        // The reap is a logged change like any other.
        let record = ChangeCoding.encode([.tombstonesReaped(upTo: 11)], index: 14)
        guard case .tombstonesReaped(let decoded)? = try ChangeCoding.decode(record).changes.first else {
            Issue.record("the reap did not decode")
            return
        }
        #expect(decoded == 11)
    }
}
