import BatonAgent
import BatonBootstrap
import BatonProxy
import BatonSettings
import BatonConsul
import BatonCore
import BatonTestSupport
import ConsulAPI
import Foundation
import Logging
import Synchronization
import Testing

/// The monitor's shell — its loop, the lease, the actions — driven against the embedded Consul server in
/// this process (over HTTP where a test cuts the link with a proxy), with a fake PostgreSQL whose steps
/// take as long as a test says, and a fake watchdog that records its deadlines: what happens around a
/// fault, without a live cluster (the live tests stay).
@Suite("monitor shell, with a fake PostgreSQL", .serialized)
struct MonitorShellTests {
    static let pg1 = try! NodeName("pg1")
    static let pg2 = try! NodeName("pg2")

    func settings(_ f: Fixture, _ node: NodeName, consul: String? = nil) throws -> BootstrapSettings {
        let directory = f.directory + "/" + node.value
        try FileManager.default.createDirectory(atPath: directory + "/state", withIntermediateDirectories: true)
        try "secret\n".write(toFile: directory + "/password", atomically: true, encoding: .utf8)
        return try BootstrapSettings.validate(
            mode: .master,
            options: [
                "cluster": .string("main"), "node-name": .string(node.value), "address": .string("198.18.0.2"), "consul": .string(consul ?? f.address),
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
        _ f: Fixture, database: FakeDatabase, guardian: FakeGuard, consul: String? = nil, _ body: () async throws -> Void
    ) async throws {
        var logger = Logger(label: "test.monitor")
        logger.logLevel = .critical
        let monitor = Monitor(
            settings: try settings(f, Self.pg2, consul: consul), client: consul.map { Self.client($0) } ?? f.client, logger: logger,
            observeOnly: false, guardian: guardian,
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

    /// A client as the monitor daemon makes one: requests give up after 2 s.
    static func client(_ address: String) -> ConsulClient {
        var configuration = ConsulConfiguration(addresses: [try! ConsulAddress(parsing: address)])
        configuration.requestTimeout = .seconds(2)
        return ConsulClient(configuration)
    }

    func leader(_ f: Fixture) async throws -> String? {
        let pair = try await f.client.get(f.keys.leader).value
        return pair?.session == nil ? nil : pair?.stringValue
    }

    @Test("a promotion that takes 6 s: the lease keeps the watchdog's deadline ahead all along; nobody is fenced")
    func slowPromotion() async throws {
        try await withFixture(inProcess: true) { f in
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

    @Test("a restarted Consul agent destroys the leader's session: the leader takes its own lock back with a new session; no fence, no lapse, no other holder")
    func agentRestartUnderTheLeader() async throws {
        try await withFixture(inProcess: true) { f in
            try await register(f, primary: Self.pg2)
            let consul = try #require(f.inProcess)
            let database = FakeDatabase(.primary(position: LSN(0x1000), timeline: 1))
            let guardian = FakeGuard()
            try await withMonitor(f, database: database, guardian: guardian) {
                #expect(await eventually(timeout: .seconds(10)) { (try? await leader(f)) == "pg2" })
                let before = try #require(try await f.client.get(f.keys.leader).value?.session)
                let invalidated = try await consul.faults.agentRestart(node: consul.settings.nodeName, name: nil)
                #expect(invalidated.contains(before), "the leader's session was among those the restart ended: \(invalidated)")
                // Every holder the key has from the restart on, read every 20 ms (bounded).
                var holders: [String?] = []
                let end = ContinuousClock.now + .seconds(6)
                while ContinuousClock.now < end {
                    let pair = try await f.client.get(f.keys.leader).value
                    let holder = pair?.session == nil ? nil : pair?.stringValue
                    if holders.isEmpty || holders.last! != holder { holders.append(holder) }
                    try await Task.sleep(for: .milliseconds(20))
                }
                #expect(holders.allSatisfy { $0 == nil || $0 == "pg2" }, "only pg2 ever held the lock: \(holders)")
                #expect(holders.last == "pg2", "pg2 holds it again: \(holders)")
                let after = try #require(try await f.client.get(f.keys.leader).value?.session)
                #expect(after != before, "held with a new session")
            }
            #expect(!database.actions.contains("fence"), "PostgreSQL was never fenced: \(database.actions)")
            #expect(guardian.lapses().isEmpty, "the deadline ran out before the next beat: \(guardian.lapses())")
            #expect(guardian.fences == 0)
        }
    }

    @Test("the registered primary restarting with 6 s of crash recovery under the lock: the lease beats through it, then it leads")
    func slowCrashRecoveryUnderTheLock() async throws {
        try await withFixture(inProcess: true) { f in
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
        try await withFixture(inProcess: true) { f in
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
        try await withFixture(inProcess: true) { f in
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

    @Test("""
        keepalived's tracked file: a leader whose PostgreSQL is gone goes from leading straight to vacant (it keeps \
        the VIP), says barred before it starts PostgreSQL again, and leads again once it is the writable primary
        """)
    func trackedFileAroundACrash() async throws {
        try await withFixture(inProcess: true) { f in
            try await register(f, primary: Self.pg2)
            let database = FakeDatabase(.primary(position: LSN(0x1000), timeline: 1))
            let tracked = f.directory + "/pg2/state/" + "vrrp-priority"
            #expect(tracked == KeepalivedSettings.trackFilePath(stateDirectory: f.directory + "/pg2/state"))
            @Sendable func read() -> String { (try? String(contentsOfFile: tracked, encoding: .utf8)) ?? "" }
            let atLaunch = Mutex<[String]>([])
            database.onLaunch = { atLaunch.withLock { $0.append(read()) } }
            try await withMonitor(f, database: database, guardian: FakeGuard()) {
                #expect(await eventually(timeout: .seconds(10)) { read() == "0\n" }, "pg2 leads: full priority")
                // Every value the file takes from the crash on (looked at every millisecond, bounded).
                async let seen: [String] = {
                    var values: [String] = []
                    let end = ContinuousClock.now + .seconds(20)
                    while ContinuousClock.now < end {
                        let value = read()
                        if !value.isEmpty, value != values.last { values.append(value) }
                        if values.count >= 2, value == "0\n" { break }
                        try? await Task.sleep(for: .milliseconds(1))  // ignored: bounded by `end`
                    }
                    return values
                }()
                database.set(.down(standbySignal: false))
                let values = await seen
                // Nobody could take over (pg1 has no monitor): after failover_grace pg2 takes the lock back
                // and starts PostgreSQL in place.
                #expect(values.first == "0\n" && values.dropFirst().first == "-253\n", "from leading straight to vacant: \(values)")
                #expect(values.last == "0\n" && values.contains("-254\n"), "barred before the start, leading after: \(values)")
                let legacy = (try? String(contentsOfFile: f.directory + "/pg2/state/vrrp-leading", encoding: .utf8)) ?? ""
                #expect(legacy == "0\n", "an earlier keepalived.conf's file says leading too")
            }
            #expect(database.actions.contains("launch"))
            #expect(atLaunch.withLock { $0 }.allSatisfy { $0 == "-254\n" } && !atLaunch.withLock { $0 }.isEmpty, "at each launch the file said barred: \(atLaunch.withLock { $0 })")
        }
    }

    @Test("keepalived's tracked file: a leader fenced because its lease ran out (Consul out of reach) is barred, and stays barred once its PostgreSQL is gone — never vacant")
    func fencedByTheLeaseNeverVacant() async throws {
        try await withFixture { f in
            try await register(f, primary: Self.pg2)
            let proxy = try SeverableProxy(upstreamPort: try #require(f.port))
            defer { proxy.stop() }
            let database = FakeDatabase(.primary(position: LSN(0x1000), timeline: 1))
            let tracked = KeepalivedSettings.trackFilePath(stateDirectory: f.directory + "/pg2/state")
            @Sendable func read() -> String { (try? String(contentsOfFile: tracked, encoding: .utf8)) ?? "" }
            try await withMonitor(f, database: database, guardian: FakeGuard(), consul: proxy.address) {
                #expect(await eventually(timeout: .seconds(10)) { read() == "0\n" }, "pg2 leads: full priority")
                proxy.sever()
                // Every value the file takes from the cut on, until well after the fence (bounded).
                var values: [String] = []
                let end = ContinuousClock.now + .seconds(8)
                while ContinuousClock.now < end {
                    let value = read()
                    if !value.isEmpty, value != values.last { values.append(value) }
                    try await Task.sleep(for: .milliseconds(2))
                }
                #expect(database.actions.contains("fence"), "the monitor fenced its PostgreSQL when the lease ran out: \(database.actions)")
                #expect(values == ["0\n", "-254\n"], "leading, then barred for good: \(values)")
            }
        }
    }

    /// The watch on the leader key sees each heartbeat the moment Consul applies it; the loop reads the
    /// cluster only every so often. A silent leader's takeover counts from the watch's sighting: never
    /// sooner than fence_timeout plus the margin after the leader *sent* its last heartbeat (the lease
    /// counts from there), and not a loop later either.
    @Test("a silent leader is taken over fence_timeout + margin after its last heartbeat — never sooner, and counted from when the watch saw it, not from the loop's next read")
    func takeoverCountsFromTheWatch() async throws {
        try await withFixture(inProcess: true) { f in
            try await register(f, primary: Self.pg1)
            // A long loop: the loop reads the cluster as it starts and then every 5 s, so a heartbeat the
            // loop alone sees (the last one, ~2.2 s in) is seen ~2.8 s late.
            let settings = #"{"ttl":"60s","loop_wait":"5s","fence_timeout":"10s"}"#
            try await f.client.put(f.keys.config, Array(settings.utf8))
            let config = try ClusterConfig(bytes: Array(settings.utf8), key: "test")
            // pg1 leads: the test holds the lock for it and beats every 200 ms for 2.2 s, then stops.
            let session = try await f.client.createSession(SessionRequest(name: "pg1", ttl: .seconds(60), lockDelay: .zero, behavior: .release, nodeChecks: []))
            #expect(try await f.client.put(f.keys.leader, "pg1", mode: .acquire(session: session)))
            let database = FakeDatabase(.standby(position: LSN(0x1000), timeline: 1, upstream: nil, streaming: true))
            var lastSent = ContinuousClock.now
            var took: ContinuousClock.Instant?
            try await withMonitor(f, database: database, guardian: FakeGuard()) {
                let beatsEnd = ContinuousClock.now + .milliseconds(2200)
                while ContinuousClock.now < beatsEnd {
                    try await Task.sleep(for: .milliseconds(200))
                    // A heartbeat as the lease writes it: the flags bumped, check-and-set.
                    let pair = try #require(try await f.client.get(f.keys.leader).value)
                    lastSent = .now
                    #expect(try await f.client.put(f.keys.leader, "pg1", flags: pair.flags &+ 1, mode: .cas(pair.modifyIndex)))
                }
                let end = ContinuousClock.now + .seconds(25)
                while took == nil, ContinuousClock.now < end {
                    if (try? await leader(f)) == "pg2" { took = .now }
                    try await Task.sleep(for: .milliseconds(10))
                }
            }
            let after = try #require(took.map { $0 - lastSent }, "pg2 took the lock over")
            #expect(after >= config.takeoverAfter.swiftDuration, "taken \(after) after the last heartbeat was sent: before the leader's lease ran out")
            #expect(after < config.takeoverAfter.swiftDuration + .milliseconds(1500), "taken \(after) after the last heartbeat: counted from a late sighting")
        }
    }

    @Test("the event history lives beside the cluster's prefix: the leader moves an earlier Baton's events out of it, and status and events still show them")
    func eventsMoveOutOfThePrefix() async throws {
        try await withFixture(inProcess: true) { f in
            try await register(f, primary: Self.pg2)
            #expect(!f.keys.eventsPrefix.hasPrefix(f.keys.prefix), "the monitors' read of the prefix carries no events")
            // 120 events as an earlier Baton wrote them (under the prefix), oldest first.
            for i in 0..<120 {
                let event = ClusterEvent(time: "2026-11-01T00:00:\(String(format: "%02d", i % 60)).\(i)Z", node: Self.pg1, kind: "old", detail: "event \(i)")
                let key = ClusterEvent.key(prefix: f.keys.legacyEventsPrefix, nanoseconds: 1_000_000_000 + UInt64(i), node: Self.pg1)
                try await f.client.put(key, event.json.serializedBytes())
            }
            let reader = StatusReader(config: f.config, client: f.client)
            #expect(try await reader.read(events: 200).events.count == 120, "before the move, status shows the events under the prefix")
            let database = FakeDatabase(.primary(position: LSN(0x1000), timeline: 1))
            try await withMonitor(f, database: database, guardian: FakeGuard()) {
                let moved = await eventually(timeout: .seconds(20)) { (try? await f.client.list(f.keys.legacyEventsPrefix).value)?.isEmpty == true }
                #expect(moved, "the leader moved every event out of the prefix")
            }
            let history = try await f.client.list(f.keys.eventsPrefix).value.map(\.key)
            let old = history.filter { $0.hasPrefix(f.keys.eventsPrefix + "0000000000100000") }
            #expect(old.count == 120, "each moved under its own time: \(old.count)")
            let read = try await EventHistory(config: f.config, client: f.client).read(sinceNanoseconds: 0, node: Self.pg1, kind: "old")
            #expect(read.events.map(\.event.detail) == (0..<120).map { "event \($0)" }, "baton events lists them in order")
            let status = try await reader.read(events: 500)
            #expect(status.events.filter { $0.kind == "old" }.count == 120, "status shows them from beside the prefix")
        }
    }

    @Test("without a watchdog, a node never takes the lock")
    func noWatchdogNoLock() async throws {
        try await withFixture(inProcess: true) { f in
            try await register(f, primary: nil)
            let database = FakeDatabase(.standby(position: LSN(0x1000), timeline: 1, upstream: nil, streaming: true))
            try await withMonitor(f, database: database, guardian: FakeGuard(available: false)) {
                try await Task.sleep(for: .seconds(4))
                #expect(try await leader(f) == nil)
                #expect(!database.actions.contains("promote"))
            }
        }
    }

    /// Issue 23, finding 10: a watchdog that would fence another postmaster than the one this monitor
    /// sees (paths resolved elsewhere) cannot guard it: the node does not take the lock. One that sees
    /// the same one (or an earlier watchdog that cannot say) guards as before.
    @Test("a watchdog that does not see this node's postmaster does not guard it: the node never takes the lock")
    func watchdogMustSeeThePostmaster() async throws {
        for (seen, leads) in [(Int32(4321), false), (0, false), (1234, true), (nil, true)] as [(Int32?, Bool)] {
            try await withFixture(inProcess: true) { f in
                try await register(f, primary: nil)
                let database = FakeDatabase(.standby(position: LSN(0x1000), timeline: 1, upstream: nil, streaming: true), postmaster: 1234)
                try await withMonitor(f, database: database, guardian: FakeGuard(seen: seen)) {
                    let led = await eventually(timeout: .seconds(4)) { (try? await leader(f)) == "pg2" }
                    #expect(led == leads, "the watchdog sees \(seen.map(String.init) ?? "(cannot say)")")
                }
            }
        }
    }

    /// Freshness is judged by a report's modify index moving on the observer's own clock: a peer whose
    /// clock is 30 s ahead does not look alive once it stopped, nor one 30 s behind look dead.
    @Test("clock skew: a dead peer whose clock runs 30 s ahead is not a candidate; a live one 30 s behind is")
    func skewedClocksDoNotDecide() async throws {
        for alive in [false, true] {
            try await withFixture(inProcess: true) { f in
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
        try await withFixture(inProcess: true) { f in
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
        try await withFixture(inProcess: true) { f in
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
