import BatonAgent
import BatonBootstrap
import BatonConsul
import BatonCore
import BatonTestSupport
import ConsulAPI
import Foundation
import Logging
import Testing

/// The monitor's shell — its loop, the lease, the actions — driven against the embedded Consul server
/// with a fake PostgreSQL whose steps take as long as a test says, and a fake watchdog that records its
/// deadlines: what happens around a fault, without a live cluster (the live tests stay).
@Suite("monitor shell, with a fake PostgreSQL", .serialized)
struct MonitorShellTests {
    static let pg1 = try! NodeName("pg1")
    static let pg2 = try! NodeName("pg2")

    func settings(_ f: Fixture, _ node: NodeName) throws -> BootstrapSettings {
        let directory = f.directory + "/" + node.value
        try FileManager.default.createDirectory(atPath: directory + "/state", withIntermediateDirectories: true)
        try "secret\n".write(toFile: directory + "/password", atomically: true, encoding: .utf8)
        return try BootstrapSettings.validate(
            mode: .master,
            options: [
                "cluster": .string("main"), "node-name": .string(node.value), "address": .string("198.18.0.2"), "consul": .string(f.address),
                "pgdata": .string(directory + "/data"), "replication-password-file": .string(directory + "/password"),
                "state-dir": .string(directory + "/state"), "pg-socket-dir": .string(directory),
            ], environment: [:], hostname: "test")
    }

    /// Registers both nodes with the given roles (pg1 has no monitor in these tests).
    func register(_ f: Fixture, primary: NodeName?) async throws {
        for (i, name) in [Self.pg1, Self.pg2].enumerated() {
            let registration = NodeRegistration(
                name: name, address: try HostAddress("198.18.0.\(i + 1)"), port: try TCPPort(5432), role: name == primary ? .primary : .standby,
                upstream: nil, priority: 100, location: "default")
            try await f.client.put(f.keys.node(name), registration.json.serializedBytes())
        }
    }

    /// Runs pg2's monitor with `database` and `guardian` while `body` runs, then stops it (SIGTERM's path).
    func withMonitor(
        _ f: Fixture, database: FakeDatabase, guardian: FakeGuard, _ body: () async throws -> Void
    ) async throws {
        var logger = Logger(label: "test.monitor")
        logger.logLevel = .critical
        let monitor = Monitor(
            settings: try settings(f, Self.pg2), client: f.client, logger: logger, observeOnly: false, guardian: guardian,
            makeDatabase: { _ in database }, serveAPI: false)
        let running = Task { try await monitor.run() }
        do { try await body() } catch {
            running.cancel()
            _ = await running.result
            throw error
        }
        running.cancel()
        _ = await running.result
    }

    func leader(_ f: Fixture) async throws -> String? {
        let pair = try await f.client.get(f.keys.leader).value
        return pair?.session == nil ? nil : pair?.stringValue
    }

    @Test("a promotion that takes 6 s: the lease keeps the watchdog's deadline ahead all along; nobody is fenced")
    func slowPromotion() async throws {
        try await withFixture { f in
            try await register(f, primary: nil)
            let database = FakeDatabase(.standby(position: LSN(0x1000), timeline: 1, upstream: nil, streaming: true))
            database.delays.promote = .seconds(6)
            let guardian = FakeGuard()
            try await withMonitor(f, database: database, guardian: guardian) {
                #expect(await eventually(timeout: .seconds(10)) { database.actions.contains("promote") }, "pg2 took the free lock and promotes")
                #expect(await eventually(timeout: .seconds(15)) { if case .primary = database.current { return true } else { return false } })
                try await Task.sleep(for: .seconds(2))
                #expect(try await leader(f) == "pg2")
                #expect(try NodeRegistration(bytes: try await f.client.get(f.keys.node(Self.pg2)).value?.value, key: f.keys.node(Self.pg2)).role == .primary)
            }
            #expect(guardian.armings.count >= 6, "armed at every beat: \(guardian.armings.count)")
            #expect(guardian.lapses().isEmpty, "the deadline ran out before the next beat: \(guardian.lapses())")
            #expect(guardian.fences == 0)
        }
    }

    @Test("the registered primary restarting with 6 s of crash recovery under the lock: the lease beats through it, then it leads")
    func slowCrashRecoveryUnderTheLock() async throws {
        try await withFixture { f in
            try await register(f, primary: Self.pg2)
            let database = FakeDatabase(.down(standbySignal: false))
            database.delays.recovery = .seconds(6)
            let guardian = FakeGuard()
            try await withMonitor(f, database: database, guardian: guardian) {
                #expect(await eventually(timeout: .seconds(10)) { database.actions.contains("launch") }, "started once it held the lock")
                #expect(try await leader(f) == "pg2")
                #expect(await eventually(timeout: .seconds(15)) { if case .primary = database.current { return true } else { return false } })
                try await Task.sleep(for: .seconds(1))
                #expect(try await leader(f) == "pg2")
            }
            #expect(guardian.lapses().isEmpty, "the deadline ran out before the next beat: \(guardian.lapses())")
            #expect(guardian.fences == 0 && !database.actions.contains("fence"))
        }
    }

    @Test("a switchover whose clean stop takes 6 s: the lease beats through it; called off (the target never answers), the lock is proven again")
    func slowSwitchoverStop() async throws {
        try await withFixture { f in
            try await register(f, primary: Self.pg2)
            let database = FakeDatabase(.primary(position: LSN(0x1000), timeline: 1))
            database.delays.stop = .seconds(6)
            let guardian = FakeGuard()
            try await withMonitor(f, database: database, guardian: guardian) {
                #expect(await eventually(timeout: .seconds(10)) { (try? await leader(f)) == "pg2" })
                // pg1 keeps reporting a streaming standby (its monitor is alive), then is asked for.
                let peer = Task {
                    while !Task.isCancelled {
                        let status = MemberStatus(
                            local: .standby(position: LSN(0x1000), timeline: 1, upstream: "198.18.0.2:5432", streaming: true), decision: "x", time: 0)
                        _ = try? await f.client.put(f.keys.status(Self.pg1), status.json.serializedBytes())
                        try? await Task.sleep(for: .milliseconds(300))
                    }
                }
                defer { peer.cancel() }
                try await Task.sleep(for: .seconds(2))
                let request = TakeoverRequest(to: Self.pg1, from: Self.pg2, time: "now")
                try await f.client.put(f.keys.switchover, request.json.serializedBytes())
                #expect(await eventually(timeout: .seconds(15)) { database.actions.contains("stop") })
                let events = { try await f.client.list(f.keys.eventsPrefix).value.map(\.stringValue) }
                #expect(await eventually(timeout: .seconds(20)) { (try? await events())?.contains { $0.contains("called off") } == true })
                #expect(try await leader(f) == "pg2", "still the leader")
                #expect(database.actions.filter { $0 == "launch" }.count == 1, "started again under the proven lock")
            }
            #expect(guardian.lapses().isEmpty, "the deadline ran out before the next beat: \(guardian.lapses())")
            #expect(guardian.fences == 0)
        }
    }

    @Test("a leader whose key is taken (a takeover) fences at once (the watch wakes its loop; its next beat would too), without waiting for the deadline")
    func lostLockFencesAtOnce() async throws {
        try await withFixture { f in
            try await register(f, primary: Self.pg2)
            let database = FakeDatabase(.primary(position: LSN(0x1000), timeline: 1))
            let guardian = FakeGuard()
            try await withMonitor(f, database: database, guardian: guardian) {
                #expect(await eventually(timeout: .seconds(10)) { (try? await leader(f)) == "pg2" })
                let pair = try #require(try await f.client.get(f.keys.leader).value)
                #expect(try await f.client.put(f.keys.leader, "pg1", flags: pair.flags, mode: .cas(pair.modifyIndex)))
                #expect(await eventually(timeout: .seconds(3)) { guardian.fences > 0 || database.actions.contains("fence") })
            }
        }
    }

    @Test("without a watchdog, a node never takes the lock")
    func noWatchdogNoLock() async throws {
        try await withFixture { f in
            try await register(f, primary: nil)
            let database = FakeDatabase(.standby(position: LSN(0x1000), timeline: 1, upstream: nil, streaming: true))
            try await withMonitor(f, database: database, guardian: FakeGuard(available: false)) {
                try await Task.sleep(for: .seconds(4))
                #expect(try await leader(f) == nil)
                #expect(!database.actions.contains("promote"))
            }
        }
    }

    /// Freshness is judged by a report's modify index moving on the observer's own clock: a peer whose
    /// clock is 30 s ahead does not look alive once it stopped, nor one 30 s behind look dead.
    @Test("clock skew: a dead peer whose clock runs 30 s ahead is not a candidate; a live one 30 s behind is")
    func skewedClocksDoNotDecide() async throws {
        for alive in [false, true] {
            try await withFixture { f in
                try await register(f, primary: nil)
                // pg1 ranks above pg2 (more WAL): while it looks alive, pg2 waits failover_grace (60 s).
                let settings = #"{"failover_grace":"60s"}"#
                try await f.client.put(f.keys.config, Array(settings.utf8))
                let skew: Double = alive ? -30 : 30
                func report() async {
                    let status = MemberStatus(
                        local: .standby(position: LSN(0x9000), timeline: 1, upstream: nil, streaming: true), decision: "wait",
                        time: Date().timeIntervalSince1970 + skew)
                    _ = try? await f.client.put(f.keys.status(Self.pg1), status.json.serializedBytes())
                }
                await report()
                let peer = Task {
                    while alive && !Task.isCancelled {
                        try? await Task.sleep(for: .milliseconds(300))
                        await report()
                    }
                }
                defer { peer.cancel() }
                let database = FakeDatabase(.standby(position: LSN(0x1000), timeline: 1, upstream: nil, streaming: true))
                try await withMonitor(f, database: database, guardian: FakeGuard()) {
                    if alive {
                        try await Task.sleep(for: .seconds(6))
                        #expect(try await leader(f) == nil, "pg1 reports all along (its clock 30 s behind): pg2 leaves it the lock")
                    } else {
                        let took = await eventually(timeout: .seconds(10)) { (try? await leader(f)) == "pg2" }
                        #expect(took, "pg1's last report (stamped 30 s ahead) stopped changing: it is not a candidate")
                    }
                }
            }
        }
    }

    @Test("baton restart of the leader whose stop takes 6 s: the lease beats through it, the lock is kept, clients are paused and resumed")
    func restartKeepsTheLock() async throws {
        try await withFixture { f in
            try await register(f, primary: Self.pg2)
            let database = FakeDatabase(.primary(position: LSN(0x1000), timeline: 1))
            database.delays.stop = .seconds(6)
            let guardian = FakeGuard()
            try await withMonitor(f, database: database, guardian: guardian) {
                #expect(await eventually(timeout: .seconds(10)) { (try? await leader(f)) == "pg2" })
                let command = NodeCommand(id: "c1", kind: .restart, by: "test", time: "t")
                try await f.client.put(f.keys.command(Self.pg2), command.json.serializedBytes())
                #expect(await eventually(timeout: .seconds(5)) { (try? await f.client.get(f.keys.pgbouncerPause).value) != nil }, "clients paused")
                var outcome: NodeCommand? = nil
                let finished = await eventually(timeout: .seconds(20)) {
                    outcome = (try? await f.client.get(f.keys.command(Self.pg2)).value).flatMap { $0.flatMap { try? NodeCommand(bytes: $0.value, key: $0.key) } }
                    return outcome?.state.isFinished ?? false
                }
                #expect(finished && outcome?.state == .done && outcome?.detail.contains("leader lock was kept") == true, "\(String(describing: outcome))")
                #expect(try await leader(f) == "pg2")
                let actions = database.actions
                #expect(actions.firstIndex(of: "stop").map { stop in actions[stop...].contains("launch") } == true, "\(actions)")
                #expect(await eventually(timeout: .seconds(5)) { (try? await f.client.get(f.keys.pgbouncerPause).value) == nil }, "clients resumed")
            }
            #expect(guardian.lapses().isEmpty, "the deadline ran out before the next beat: \(guardian.lapses())")
            #expect(guardian.fences == 0 && !database.actions.contains("fence"))
        }
    }

    @Test("the cluster's PostgreSQL parameters are written and reloaded when they change, not every loop; a re-clone with no leader to copy is refused, nothing touched")
    func parametersAndWaitingCommands() async throws {
        try await withFixture { f in
            try await register(f, primary: Self.pg1)
            let database = FakeDatabase(.standby(position: LSN(0x1000), timeline: 1, upstream: "198.18.0.1:5432", streaming: true))
            let guardian = FakeGuard()
            try await withMonitor(f, database: database, guardian: guardian) {
                let parameters = try PostgresParameters().setting("work_mem", to: "64MB")
                try await f.client.put(f.keys.postgresql, parameters.json.serializedBytes())
                #expect(await eventually(timeout: .seconds(5)) { database.actions.contains("parameters work_mem = '64MB'") }, "\(database.actions)")
                let written = database.actions.filter { $0.hasPrefix("parameters") }.count
                try await Task.sleep(for: .seconds(2))
                #expect(database.actions.filter { $0.hasPrefix("parameters") }.count == written, "written on change only: \(database.actions)")
                #expect(database.actions.last { $0.hasPrefix("parameters") || $0 == "reload" } == "reload", "then reloaded: \(database.actions)")
                // Nobody leads (pg1, the registered primary, has no monitor): a re-clone has no source.
                let command = NodeCommand(id: "c2", kind: .reinit, by: "test", time: "t")
                try await f.client.put(f.keys.command(Self.pg2), command.json.serializedBytes())
                let outcome = await eventually(timeout: .seconds(10)) {
                    let stored = (try? await f.client.get(f.keys.command(Self.pg2)).value).flatMap { $0.flatMap { try? NodeCommand(bytes: $0.value, key: $0.key) } }
                    return stored?.state.isFinished ?? false
                }
                #expect(outcome, "the command was answered")
                let stored = try NodeCommand(bytes: try await f.client.get(f.keys.command(Self.pg2)).value?.value, key: "k")
                #expect(stored.state == .failed && stored.detail.contains("no other node leads"), "\(stored)")
                #expect(!database.actions.contains("clone"))
            }
        }
    }
}
