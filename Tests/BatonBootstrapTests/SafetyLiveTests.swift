import BatonBootstrap
import BatonSettings
import BatonConsul
import BatonCore
import BatonPostgres
import BatonTestSupport
import ConsulAPI
import Foundation
import Testing

/// Writes unique ids back to back through one libpq connection string (multi-host with
/// `target_session_attrs=read-write`, as an application fails over) and records every id the server
/// acknowledged — the writer of ../shared/research/failover-anchors.md.
final class AcknowledgedWriter: @unchecked Sendable {
    // @unchecked: `ids` and `times` are guarded by `lock` (one task appends); `task` is set by start() and
    // read by stop(), both called by the one test that owns the writer, which awaits the task in stop().
    private let lock = NSLock()
    private var ids: [String] = []
    private var times: [ContinuousClock.Instant] = []
    private var task: Task<Void, Never>?
    private let prefix = UUID().uuidString.prefix(8).lowercased()

    /// Every id a COMMIT was acknowledged for, in order.
    var acknowledged: [String] { lock.withLock { ids } }

    /// Waits until `count` writes were acknowledged (at most `within`).
    func waitFor(count: Int, within: Duration) async -> Bool {
        let deadline = ContinuousClock.now + within
        while ContinuousClock.now < deadline {
            if acknowledged.count >= count { return true }
            try? await Task.sleep(for: .milliseconds(50))
        }
        return acknowledged.count >= count
    }

    /// The longest time between two acknowledgements within `from...to`.
    func longestGap(from: ContinuousClock.Instant, to: ContinuousClock.Instant) -> Duration {
        let inside = lock.withLock { times }.filter { $0 >= from && $0 <= to }
        var longest = Duration.zero
        var previous = from
        for t in inside + [to] {
            longest = max(longest, t - previous)
            previous = t
        }
        return longest
    }

    /// The live cluster's nodes over their Unix sockets, the first writable one.
    func start(nodes: [(String, Int)], cluster: LiveCluster) {
        start(
            conninfo: ConnInfo.make([
                ("host", nodes.map { _ in cluster.socketDirectory }.joined(separator: ",")), ("port", nodes.map { String($0.1) }.joined(separator: ",")),
                ("user", "postgres"), ("dbname", "postgres"), ("connect_timeout", "2"), ("target_session_attrs", "read-write"),
            ]))
    }

    func start(conninfo: String) {
        task = Task {
            var connection: PostgresConnection? = nil
            var next = 0
            while !Task.isCancelled {
                let id = "\(prefix)-\(next)"
                do {
                    if connection == nil { connection = try await PostgresConnection.connect(conninfo) }
                    try await connection!.query("INSERT INTO baton_acked (id) VALUES ($1)", [id], timeout: .seconds(5))
                    lock.withLock {
                        ids.append(id)
                        times.append(.now)
                    }
                    next += 1
                    try? await Task.sleep(for: .milliseconds(2))
                } catch {
                    connection?.close()
                    connection = nil
                    next += 1
                    try? await Task.sleep(for: .milliseconds(50))
                }
            }
            connection?.close()
        }
    }

    func stop() async {
        task?.cancel()
        await task?.value
    }
}

extension MonitorLiveTests {
    /// The table the acknowledged writer fills, created on the primary.
    func createAcknowledgedTable(_ c: LiveCluster, port: Int) async throws {
        let primary = try await c.connect(port: port)
        defer { primary.close() }
        try await primary.query("CREATE TABLE IF NOT EXISTS baton_acked (id text PRIMARY KEY, at timestamptz DEFAULT now())")
    }

    /// How many of `ids` a node holds in `baton_acked`.
    func acknowledgedPresent(_ c: LiveCluster, port: Int, ids: [String]) async throws -> Int {
        let conn = try await c.connect(port: port)
        defer { conn.close() }
        let count = try await conn.scalar("SELECT count(*) FROM baton_acked WHERE id = ANY($1::text[])", ["{" + ids.joined(separator: ",") + "}"])
        return Int(count ?? "") ?? -1
    }

    /// The postmaster of `node` and every process it started.
    func postgresProcesses(_ c: LiveCluster, _ node: String) throws -> [Int32] {
        let postmaster = try postmasterPID(c, node)
        return [postmaster] + childPIDs(postmaster)
    }

    /// The PostgreSQL child process of `node` whose title names `role` (checkpointer, startup, walreceiver…).
    func postgresChild(_ c: LiveCluster, _ node: String, _ role: String) throws -> Int32? {
        childPIDs(try postmasterPID(c, node)).first { commandLine($0).hasPrefix("postgres: \(role)") }
    }

    /// Whether `node`'s monitor reports its standby streaming.
    func reportsStreaming(_ c: LiveCluster, _ node: String, within timeout: Duration) async -> Bool {
        let deadline = ContinuousClock.now + timeout
        repeat {
            let report = try? await c.client.get("baton/live/status/" + node).value
            if report?.stringValue.contains("streaming\":true") == true { return true }
            try? await Task.sleep(for: .milliseconds(50))
        } while ContinuousClock.now < deadline
        return false
    }

    /// A process's state letter from /proc (R, S, T for stopped, Z…).
    func processState(_ pid: Int32) -> String {
        let stat = (try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8)) ?? ""
        guard let close = stat.lastIndex(of: ")") else { return "" }
        return String(stat[stat.index(close, offsetBy: 2)...].prefix(1))
    }

    func commandLine(_ pid: Int32) -> String {
        ((try? String(contentsOfFile: "/proc/\(pid)/cmdline", encoding: .utf8)) ?? "").replacingOccurrences(of: "\0", with: " ")
    }

    /// The running watchdog that guards `node`'s PostgreSQL (any process named so with its data directory).
    func watchdogPID(_ c: LiveCluster, _ node: String) -> Int32? {
        let data = c.directory(node) + "/data"
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
        return entries.compactMap { Int32($0) }.first { pid in
            let line = commandLine(pid)
            return line.contains("watchdog") && line.contains(data) && !line.hasPrefix("/bin/") && !line.contains("runuser")
        }
    }

    /// A process's nice value, from /proc/PID/stat (the 19th field, counted after the parenthesised name).
    func niceness(of pid: Int32) -> Int32? {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8), let close = stat.lastIndex(of: ")") else { return nil }
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        return fields.count > 16 ? Int32(fields[16]) : nil
    }

    func monitorProcess(_ c: LiveCluster, _ node: String) -> BatonProcess? {
        c.trackedProcesses.last {
            $0.process.arguments?.first == "monitor" && $0.process.arguments?.contains(c.directory(node) + "/baton.yaml") == true && $0.isRunning
        }
    }

    /// What a node's watchdog logged (it says when it stopped PostgreSQL).
    func watchdogLog(_ c: LiveCluster, _ node: String) -> String {
        (try? String(contentsOfFile: c.directory(node) + "/state/watchdog.log", encoding: .utf8)) ?? ""
    }

    /// The first node other than `old` seen holding the lock within `timeout`.
    func leader(_ c: LiveCluster, otherThan old: String, timeout: Duration) async -> String? {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if let holder = try? await c.leader(), holder != old { return holder }
            try? await Task.sleep(for: .milliseconds(20))
        }
        return nil
    }

    func events(_ c: LiveCluster) async throws -> [String] {
        try await c.client.list("baton/live.events/").value.map(\.stringValue)
    }

    @Test("kill -9 of one backend on the primary (the OOM killer's act): PostgreSQL recovers in place under the lock; never two writable")
    func backendKilled() async throws {
        try await LiveCluster.with { c in
            let nodes = try await threeNodes(c)
            let probe = WriteProbe()
            probe.start(nodes: nodes, cluster: c)
            try await Task.sleep(for: .seconds(1))
            for _ in 0..<3 {
                // Crash recovery after the last kill may still run on a loaded machine: wait until pg1
                // takes connections again rather than a fixed time (CI: refused 4 s after a kill).
                var connected: PostgresConnection? = nil
                _ = await eventually(timeout: .seconds(30)) {
                    connected = try? await c.connect(port: nodes[0].1)
                    return connected != nil
                }
                let victim = try #require(connected, "pg1 takes connections again after crash recovery")
                let pid = try #require(Int32(try await victim.scalar("SELECT pg_backend_pid()") ?? ""))
                kill(pid, SIGKILL)
                victim.close()
                try await Task.sleep(for: .seconds(4))
            }
            await probe.stop()
            let digest = await c.digest()
            #expect(probe.splitBrainRounds.isEmpty, "rounds with two writable nodes: \(probe.splitBrainRounds.prefix(5))\n\(digest)")
            #expect(try await c.leader() == "pg1", "a crashed backend is recovered in place, no failover: \(digest)")
            #expect(await writable(c, port: nodes[0].1), "pg1 takes writes again after crash recovery")
            #expect(probe.rounds.suffix(5).allSatisfy { $0 == ["pg1"] }, "writes go to pg1: \(probe.rounds.suffix(5))")
        }
    }

    @Test("an I/O stall of 3 s on the primary (every PostgreSQL process stopped, then continued): nobody fails over; never two writable")
    func ioStall() async throws {
        try await LiveCluster.with { c in
            let nodes = try await threeNodes(c)
            let probe = WriteProbe()
            probe.start(nodes: nodes, cluster: c)
            try await Task.sleep(for: .seconds(1))
            let stalled = try postgresProcesses(c, "pg1")
            for pid in stalled { kill(pid, SIGSTOP) }
            try await Task.sleep(for: .seconds(3))
            for pid in stalled { kill(pid, SIGCONT) }
            try await Task.sleep(for: .seconds(6))
            await probe.stop()
            let digest = await c.digest()
            #expect(probe.splitBrainRounds.isEmpty, "rounds with two writable nodes: \(probe.splitBrainRounds.prefix(5))\n\(digest)")
            #expect(try await c.leader() == "pg1", "a stall shorter than primary_start_timeout is ridden out: \(digest)")
            #expect(probe.rounds.suffix(5).allSatisfy { $0 == ["pg1"] }, "writes go to pg1: \(probe.rounds.suffix(5))")
        }
    }

    @Test("a slow promotion (replay on the candidates held up 6 s): the lease keeps beating, the new primary does not fence itself; never two writable")
    func slowPromotion() async throws {
        try await LiveCluster.with { c in
            let nodes = try await threeNodes(c)
            for (_, port) in nodes.dropFirst() { #expect(await eventually(timeout: .seconds(20)) { await streamingFrom(c, port: port, upstreamPort: nodes[0].1) }) }
            let probe = WriteProbe()
            probe.start(nodes: nodes, cluster: c)
            try await Task.sleep(for: .seconds(1))
            let startups = try nodes.dropFirst().map { try #require(try postgresChild(c, $0.0, "startup")) }
            for pid in startups { kill(pid, SIGSTOP) }
            let held = ContinuousClock.now
            kill(try postmasterPID(c, "pg1"), SIGKILL)
            let acquirer = await leader(c, otherThan: "pg1", timeout: .seconds(10))
            try await Task.sleep(until: held + .seconds(6), clock: .continuous)
            for pid in startups { kill(pid, SIGCONT) }
            let newLeader = await newWritableLeader(c, nodes, replacing: "pg1")
            try await Task.sleep(for: .seconds(2))
            await probe.stop()
            let digest = await c.digest()
            #expect(newLeader != nil && newLeader == acquirer, "the node that took the lock (\(acquirer ?? "none")) became the primary (\(newLeader ?? "none")): \(digest)")
            for (name, _) in nodes.dropFirst() {
                #expect(!watchdogLog(c, name).contains("deadline passed"), "\(name)'s watchdog fenced it: \(watchdogLog(c, name))")
            }
            #expect(probe.splitBrainRounds.isEmpty, "rounds with two writable nodes: \(probe.splitBrainRounds.prefix(5))")
        }
    }

    @Test("a switchover whose clean stop is held up 6 s (the checkpointer stopped): the lease keeps beating, nobody is fenced, no acknowledged write is lost")
    func slowSwitchoverStop() async throws {
        try await LiveCluster.with { c in
            let nodes = try await threeNodes(c)
            try await createAcknowledgedTable(c, port: nodes[0].1)
            #expect(await eventually(timeout: .seconds(20)) { await streamingFrom(c, port: nodes[1].1, upstreamPort: nodes[0].1) })
            #expect(await reportsStreaming(c, "pg2", within: .seconds(10)))
            let writer = AcknowledgedWriter()
            writer.start(nodes: nodes, cluster: c)
            let probe = WriteProbe()
            probe.start(nodes: nodes, cluster: c)
            try await Task.sleep(for: .seconds(1))
            let checkpointer = try #require(try postgresChild(c, "pg1", "checkpointer"))
            kill(checkpointer, SIGSTOP)
            // Continued 6 s from now by a process of its own, while the switchover runs.
            let resumer = try BatonProcess(executable: "/bin/sh", arguments: ["-c", "sleep 6; kill -CONT \(checkpointer)"])
            c.track(resumer)
            let result = try await runCommand(BatonProcess.executable, ["switchover", "--config", c.directory("pg2") + "/baton.yaml", "--to", "pg2"])
            kill(checkpointer, SIGCONT)
            try await Task.sleep(for: .seconds(2))
            await writer.stop()
            await probe.stop()
            let digest = await c.digest()
            #expect(result.status == 0, "\(result.output)\n\(digest)")
            #expect(try await c.leader() == "pg2")
            #expect(!watchdogLog(c, "pg1").contains("deadline passed"), "pg1's watchdog fenced it during the clean stop: \(watchdogLog(c, "pg1"))")
            let acknowledged = writer.acknowledged
            let present = try await acknowledgedPresent(c, port: nodes[1].1, ids: acknowledged)
            #expect(present == acknowledged.count, "acknowledged \(acknowledged.count) commits, \(present) on the new primary")
            #expect(probe.splitBrainRounds.isEmpty, "rounds with two writable nodes: \(probe.splitBrainRounds.prefix(5))")
        }
    }

    @Test("the primary's monitor killed and started again at once: it re-adopts its session and the lock; no fence, no failover")
    func monitorRestarted() async throws {
        try await LiveCluster.with { c in
            let nodes = try await threeNodes(c)
            let probe = WriteProbe()
            probe.start(nodes: nodes, cluster: c)
            try await Task.sleep(for: .seconds(2))
            try #require(monitorProcess(c, "pg1")).kill()
            c.track(try BatonProcess.start(["monitor", "--config", c.directory("pg1") + "/baton.yaml"]))
            try await Task.sleep(for: .seconds(8))
            await probe.stop()
            let digest = await c.digest()
            #expect(try await c.leader() == "pg1", "\(digest)")
            #expect(await writable(c, port: nodes[0].1), "pg1 still takes writes: \(digest)")
            #expect(!watchdogLog(c, "pg1").contains("deadline passed"), "pg1 was fenced: \(watchdogLog(c, "pg1"))")
            #expect(probe.splitBrainRounds.isEmpty, "rounds with two writable nodes: \(probe.splitBrainRounds.prefix(5))")
            #expect(probe.rounds.suffix(5).allSatisfy { $0 == ["pg1"] }, "writes go to pg1: \(probe.rounds.suffix(5))")
        }
    }

    @Test("the leader's watchdog killed: the monitor notices before its next beat and starts another, keeps leading; the new watchdog guards")
    func watchdogKilled() async throws {
        try await LiveCluster.with { c in
            let nodes = try await threeNodes(c)
            let probe = WriteProbe()
            probe.start(nodes: nodes, cluster: c)
            try await Task.sleep(for: .seconds(2))
            let first = try #require(watchdogPID(c, "pg1"), "pg1 has a watchdog")
            kill(first, SIGKILL)
            try await Task.sleep(for: .seconds(6))
            let monitor = monitorProcess(c, "pg1")
            #expect(monitor != nil, "pg1's monitor survived its watchdog's death")
            let second = watchdogPID(c, "pg1")
            #expect(second != nil && second != first, "a new watchdog guards pg1")
            // The monitor and its watchdog run before the database they guard; PostgreSQL at the default.
            let daemon = SchedulingPriority.daemonNice
            #expect(monitor.flatMap { niceness(of: $0.pid) } == daemon, "the monitor runs at nice \(daemon)")
            #expect(second.flatMap { niceness(of: $0) } == daemon, "the watchdog runs at nice \(daemon)")
            #expect(niceness(of: try postmasterPID(c, "pg1")) == 0, "PostgreSQL runs at the default priority")
            #expect(try await c.leader() == "pg1")
            #expect(await writable(c, port: nodes[0].1))
            // The new watchdog does its job: the monitor dies, PostgreSQL is stopped before a takeover.
            monitor?.kill()
            let fenced = await eventually(timeout: .seconds(10)) { !(await writable(c, port: nodes[0].1)) }
            #expect(fenced, "the new watchdog fenced pg1 after its monitor died")
            let replaced = await newWritableLeader(c, nodes, replacing: "pg1") != nil
            #expect(replaced)
            await probe.stop()
            #expect(probe.splitBrainRounds.isEmpty, "rounds with two writable nodes: \(probe.splitBrainRounds.prefix(5))")
        }
    }

    /// The leader's monitor and its watchdog killed together while its PostgreSQL runs on — what
    /// `pkill -9 baton` does (the pattern matches both), or the OOM killer taking one after the other:
    /// a writable primary nobody fences any more. Main: a replica took over once the leader's last
    /// promise had run out and promoted, and pg1 and pg2 both acknowledged writes from then on. A
    /// replica about to take over a silent leader now asks that leader's PostgreSQL itself.
    @Test("the leader's monitor and watchdog killed together, its PostgreSQL left running: no replica takes over while it answers writable; its monitor, started again, leads")
    func leaderMonitorAndWatchdogKilled() async throws {
        try await LiveCluster.with { c in
            let nodes = try await threeNodes(c)
            let probe = WriteProbe()
            probe.start(nodes: nodes, cluster: c)
            try await Task.sleep(for: .seconds(2))
            let watchdog = try #require(watchdogPID(c, "pg1"), "pg1 has a watchdog")
            let monitor = try #require(monitorProcess(c, "pg1"))
            kill(watchdog, SIGKILL)
            monitor.kill()
            let killed = ContinuousClock.now
            // The replicas may take over once pg1's last promise has run out (≈ 2 s), and take its lock
            // once its session's TTL (10 s) has: wait past both.
            let waited = await eventually(timeout: .seconds(15)) {
                c.trackedProcesses.contains { $0.output.contains("pg1 answers that it runs a writable primary") }
            }
            let digest = waited ? "" : await c.digest()
            #expect(waited, "no replica said why it does not take over: \(digest)")
            try await Task.sleep(until: killed + .seconds(14), clock: .continuous)
            #expect(probe.splitBrainRounds.isEmpty, "rounds with two writable nodes: \(probe.splitBrainRounds.prefix(5))")
            #expect(probe.rounds.suffix(5).allSatisfy { $0 == ["pg1"] }, "pg1 alone takes writes: \(probe.rounds.suffix(5))")
            // Its monitor, started again, leads the primary it runs (its session adopted, or the free lock).
            c.track(try BatonProcess.start(["monitor", "--config", c.directory("pg1") + "/baton.yaml"]))
            #expect(await eventually(timeout: .seconds(30)) { (try? await c.leader()) == "pg1" }, "pg1's monitor leads again")
            try await Task.sleep(for: .seconds(1))
            await probe.stop()
            #expect(probe.splitBrainRounds.isEmpty, "rounds with two writable nodes: \(probe.splitBrainRounds.prefix(5))")
            #expect(probe.rounds.suffix(5).allSatisfy { $0 == ["pg1"] }, "writes go to pg1 at the end: \(probe.rounds.suffix(5))")
        }
    }
}
