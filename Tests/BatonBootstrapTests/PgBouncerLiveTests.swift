import BatonBootstrap
import BatonSettings
import BatonConsul
import BatonCore
import BatonPostgres
import BatonProxy
import BatonTestSupport
import ConsulAPI
import Foundation
import Testing

/// A client of the application: short write transactions through one pgbouncer, as fast as they go
/// (or every `interval`), reconnecting after an error like an application's pool would.
final class BouncerClient: @unchecked Sendable {
    // @unchecked: the counters are guarded by `lock`; one task writes them.
    private let lock = NSLock()
    private var stats = (committed: [String](), failures: 0, brokenSessions: 0, longestGap: Duration.zero, ports: [String](), errors: [String]())
    private var task: Task<Void, Never>?
    private let started = ContinuousClock.now

    var committed: [String] { lock.withLock { stats.committed } }
    var failures: Int { lock.withLock { stats.failures } }
    /// How many times an established session broke (the application had to reconnect).
    var brokenSessions: Int { lock.withLock { stats.brokenSessions } }
    var longestGap: Duration { lock.withLock { stats.longestGap } }
    /// Where each write committed, in order (the PostgreSQL port, or what the statement returns).
    var ports: [String] { lock.withLock { stats.ports } }
    /// Each failure: milliseconds since the client was made, whether a session broke, and what it said.
    var errors: [String] { lock.withLock { stats.errors } }

    func start(bouncerPort: Int, interval: Duration = .zero) {
        let conninfo = ConnInfo.make([
            ("host", "127.0.0.1"), ("port", String(bouncerPort)), ("user", "app"), ("password", "app-secret"), ("dbname", "postgres"),
            ("connect_timeout", "10"),
        ])
        start(conninfo: conninfo, statement: "INSERT INTO baton_writes (node) VALUES ('app') RETURNING id::text, current_setting('port')", interval: interval)
    }

    /// Writes in a loop through `conninfo`; `statement` returns the write's id and where it committed.
    func start(conninfo: String, statement: String, interval: Duration = .zero) {
        task = Task {
            var connection: PostgresConnection? = nil
            var last = ContinuousClock.now
            while !Task.isCancelled {
                do {
                    if connection == nil { connection = try await PostgresConnection.connect(conninfo) }
                    let row = try await connection!.query(statement)
                    let now = ContinuousClock.now
                    lock.withLock {
                        stats.committed.append(row[0][0] ?? "")
                        stats.ports.append(row[0][1] ?? "")
                        stats.longestGap = max(stats.longestGap, now - last)
                    }
                    last = now
                } catch {
                    let at = (ContinuousClock.now - started).millisecondCount
                    lock.withLock {
                        stats.failures += 1
                        if connection != nil { stats.brokenSessions += 1 }
                        stats.errors.append("\(at) ms \(connection == nil ? "connecting" : "in session"): \(String(describing: error).prefix(160))")
                    }
                    connection?.close()
                    connection = nil
                    try? await Task.sleep(for: .milliseconds(20))
                }
                if interval > .zero { try? await Task.sleep(for: interval) }
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
    /// Three nodes, each with PostgreSQL, pgbouncer (as the postgres OS user), `baton monitor` and
    /// `baton pgbouncer-agent`, all set up by bootstrap; an application role `app`. Returns the nodes
    /// as (name, PostgreSQL port, pgbouncer port).
    func bouncedNodes(_ c: LiveCluster, settings: [String] = [], options: [String: RawValue] = [:]) async throws -> [(String, Int, Int)] {
        let nodes = try ["pg1", "pg2", "pg3"].map { ($0, try FreePort.pick(), try FreePort.pick()) }
        for (i, (name, port, bouncer)) in nodes.enumerated() {
            _ = try await c.bootstrap(
                i == 0 ? .master : .join([c.consulAddress]), name, port: port, extra: options.merging(["pgbouncer-port": .int(bouncer)]) { $1 })
        }
        let primary = try await c.connect(port: nodes[0].1)
        try await primary.query("CREATE TABLE baton_writes (id bigserial PRIMARY KEY, node text, at timestamptz DEFAULT now())")
        try await primary.query("CREATE ROLE app LOGIN PASSWORD 'app-secret'")
        try await primary.query("GRANT ALL ON baton_writes, baton_writes_id_seq TO app")
        primary.close()
        try "\"app\" \"app-secret\"\n".write(toFile: c.root + "/userlist.txt", atomically: true, encoding: .utf8)
        _ = try await runCommand("/bin/chown", ["postgres:postgres", c.root + "/userlist.txt"])
        if !settings.isEmpty {
            let set = try await runCommand(BatonProcess.executable, ["config", "set", "--config", c.directory("pg1") + "/baton.yaml"] + settings)
            #expect(set.status == 0, "\(set.output)")
        }
        for (name, _, _) in nodes {
            _ = try await runCommand("/bin/chown", ["-R", "postgres:postgres", c.directory(name) + "/pgbouncer"])
            c.track(try startPgBouncer(c, name))
            c.track(try BatonProcess.start(["monitor", "--config", c.directory(name) + "/baton.yaml"]))
            c.track(try BatonProcess.start(["pgbouncer-agent", "--config", c.directory(name) + "/baton.yaml"]))
        }
        #expect(await eventually(timeout: .seconds(30)) { (try? await c.leader()) == "pg1" }, "pg1 never took the leader lock")
        return nodes
    }

    func startPgBouncer(_ c: LiveCluster, _ node: String) throws -> BatonProcess {
        let ini = c.directory(node) + "/pgbouncer/pgbouncer.ini"
        return try BatonProcess(executable: "/usr/sbin/runuser", arguments: ["-u", "postgres", "--", "/usr/sbin/pgbouncer", ini])
    }

    func bouncerProcess(_ c: LiveCluster, _ node: String) -> BatonProcess? {
        c.trackedProcesses.last { $0.process.arguments?.contains(c.directory(node) + "/pgbouncer/pgbouncer.ini") == true && $0.isRunning }
    }

    /// Where a node's pgbouncer routes `database`, by asking through it: "port:in recovery".
    func routedPort(bouncerPort: Int, database: String = "postgres") async -> String? {
        let conninfo = ConnInfo.make([
            ("host", "127.0.0.1"), ("port", String(bouncerPort)), ("user", "app"), ("password", "app-secret"), ("dbname", database),
            ("connect_timeout", "2"),
        ])
        guard let conn = try? await PostgresConnection.connect(conninfo) else { return nil }
        defer { conn.close() }
        return try? await conn.scalar("SELECT current_setting('port') || ':' || pg_is_in_recovery()::text")
    }

    @Test("pgbouncer follows a failover: a client through it reconnects at most once and its writes land on the new primary")
    func pgbouncerFollowsFailover() async throws {
        guard getuid() == 0 else { return }
        try await LiveCluster.with { c in
            let nodes = try await bouncedNodes(c)
            #expect(await eventually(timeout: .seconds(20)) { await routedPort(bouncerPort: nodes[2].2) == "\(nodes[0].1):false" })
            let client = BouncerClient()
            client.start(bouncerPort: nodes[1].2, interval: .milliseconds(20))
            try await Task.sleep(for: .seconds(1))
            kill(try postmasterPID(c, "pg1"), SIGKILL)
            let newLeader = await newWritableLeader(c, nodes.map { ($0.0, $0.1) }, replacing: "pg1")
            let leaderPort = String(nodes.first { $0.0 == newLeader }?.1 ?? 0)
            let landed = await eventually(timeout: .seconds(30)) { client.ports.suffix(5) == Array(repeating: leaderPort, count: 5) }
            await client.stop()
            let digest = landed ? "" : await c.digest()
            #expect(landed, "the client's writes reach the new primary \(newLeader ?? "?") through pgbouncer: \(client.ports.suffix(5)) \(digest)")
            #expect(client.brokenSessions <= 1, "the client reconnected \(client.brokenSessions) times")
            for (name, _, bouncer) in nodes {
                let routed = await eventually(timeout: .seconds(10)) { await routedPort(bouncerPort: bouncer) == "\(leaderPort):false" }
                #expect(routed, "\(name)'s pgbouncer routes to the new primary")
            }
        }
    }

    @Test("switchover under load through pgbouncer: zero failed queries, every acknowledged write on the new primary")
    func pgbouncerSwitchoverWithoutErrors() async throws {
        guard getuid() == 0 else { return }
        try await LiveCluster.with { c in
            let nodes = try await bouncedNodes(c)
            for (_, _, bouncer) in nodes {
                #expect(await eventually(timeout: .seconds(20)) { await routedPort(bouncerPort: bouncer) == "\(nodes[0].1):false" })
            }
            let clients = nodes.map { _ in BouncerClient() }
            for (client, node) in zip(clients, nodes) { client.start(bouncerPort: node.2) }
            try await Task.sleep(for: .seconds(2))
            let switchover = try await runCommand(BatonProcess.executable, ["switchover", "--config", c.directory("pg2") + "/baton.yaml", "--to", "pg2"])
            #expect(switchover.status == 0, "\(switchover.output)")
            let moved = await eventually(timeout: .seconds(30)) { clients.allSatisfy { $0.ports.suffix(3) == Array(repeating: String(nodes[1].1), count: 3) } }
            try await Task.sleep(for: .seconds(1))
            for client in clients { await client.stop() }
            let digest = moved ? "" : await c.digest()
            #expect(moved, "every client ends on pg2: \(clients.map { $0.ports.suffix(3) }) \(digest)")
            let failures = clients.map(\.failures).reduce(0, +)
            #expect(failures == 0, "failed queries during the switchover: \(failures)")
            let acknowledged = clients.flatMap(\.committed)
            let newPrimary = try await c.connect(port: nodes[1].1)
            let present = Set(try await newPrimary.query("SELECT id::text FROM baton_writes").compactMap { $0[0] })
            newPrimary.close()
            #expect(acknowledged.allSatisfy { present.contains($0) }, "acknowledged writes missing on the new primary: \(acknowledged.filter { !present.contains($0) }.prefix(5))")
            let pause = clients.map(\.longestGap).max() ?? .zero
            print("pgbouncer switchover: \(acknowledged.count) writes by \(clients.count) clients, longest pause \(pause.millisecondCount) ms, failures \(failures)")
            let events = try await c.client.list("baton/live.events/").value.map(\.stringValue).filter { $0.contains("switchover") }
            #expect(events.contains { $0.contains("paused in") }, "the switchover waited for every pgbouncer's pause: \(events)")
        }
    }

    @Test("baton restart of the primary under load through pgbouncer: clients wait instead of failing, the same primary takes every write")
    func pgbouncerPrimaryRestartWithoutErrors() async throws {
        guard getuid() == 0 else { return }
        try await LiveCluster.with { c in
            let nodes = try await bouncedNodes(c)
            for (_, _, bouncer) in nodes {
                #expect(await eventually(timeout: .seconds(20)) { await routedPort(bouncerPort: bouncer) == "\(nodes[0].1):false" })
            }
            let clients = nodes.map { _ in BouncerClient() }
            for (client, node) in zip(clients, nodes) { client.start(bouncerPort: node.2) }
            try await Task.sleep(for: .seconds(2))
            let restart = try await runCommand(BatonProcess.executable, ["restart", "pg1", "--config", c.directory("pg3") + "/baton.yaml"])
            #expect(restart.status == 0 && restart.output.contains("pgbouncer(s) paused"), "\(restart.output)")
            try await Task.sleep(for: .seconds(2))
            for client in clients { await client.stop() }
            let failures = clients.map(\.failures).reduce(0, +)
            #expect(failures == 0, "failed queries during the restart: \(failures)")
            #expect(Set(clients.flatMap(\.ports)) == [String(nodes[0].1)], "every write on pg1")
            #expect(try await c.leader() == "pg1")
            let pause = clients.map(\.longestGap).max() ?? .zero
            let acknowledged = clients.flatMap(\.committed)
            print("pgbouncer primary restart: \(acknowledged.count) writes by \(clients.count) clients, longest pause \(pause.millisecondCount) ms, failures \(failures)")
        }
    }

    @Test("pgbouncer killed during a leader change and started again: it ends routing to the new leader")
    func pgbouncerRestartedDuringFailover() async throws {
        guard getuid() == 0 else { return }
        try await LiveCluster.with { c in
            let nodes = try await bouncedNodes(c)
            #expect(await eventually(timeout: .seconds(20)) { await routedPort(bouncerPort: nodes[2].2) == "\(nodes[0].1):false" })
            let bouncer = try #require(bouncerProcess(c, "pg3"))
            // runuser's child is pgbouncer itself: kill the whole group the test started.
            kill(-bouncer.pid, SIGKILL)
            bouncer.kill()
            kill(try postmasterPID(c, "pg1"), SIGKILL)
            let newLeader = await newWritableLeader(c, nodes.map { ($0.0, $0.1) }, replacing: "pg1")
            let leaderPort = nodes.first { $0.0 == newLeader }?.1 ?? 0
            try? FileManager.default.removeItem(atPath: c.directory("pg3") + "/pgbouncer/pgbouncer.pid")
            c.track(try startPgBouncer(c, "pg3"))
            let routed = await eventually(timeout: .seconds(30)) { await routedPort(bouncerPort: nodes[2].2) == "\(leaderPort):false" }
            let digest = routed ? "" : await c.digest()
            #expect(routed, "pg3's restarted pgbouncer routes to \(newLeader ?? "?"): \(digest)")
            let ini = try String(contentsOfFile: c.directory("pg3") + "/pgbouncer/pgbouncer.ini", encoding: .utf8)
            #expect(ini.contains("host=127.0.0.1 port=\(leaderPort)"))
            #expect(ini.contains("pool_mode = transaction"), "the rest of the file is kept")
        }
    }
}

extension MonitorLiveTests {
    /// Whether pgbouncer holds its clients (PAUSE): a query through it does not come back (within 1.5 s)
    /// although PostgreSQL behind it answers. Nil when pgbouncer cannot be reached at all.
    func bouncerPaused(_ c: LiveCluster, bouncerPort: Int) async -> Bool? {
        let conninfo = ConnInfo.make([
            ("host", "127.0.0.1"), ("port", String(bouncerPort)), ("user", "app"), ("password", "app-secret"), ("dbname", "postgres"),
            ("connect_timeout", "2"),
        ])
        guard let conn = try? await PostgresConnection.connect(conninfo) else { return nil }
        defer { conn.close() }
        do {
            _ = try await conn.query("SELECT 1", timeout: .milliseconds(1500))
            return false
        } catch let error as PostgresError where error.sqlState == "57014" {
            return true
        } catch {
            return nil
        }
    }

    @Test("a pgbouncer agent cut off from Consul past the leader's fence deadline: routing stays while the primary itself confirms it leads; once it does not, clients wait (PAUSE); healed, it routes to whoever leads")
    func agentWithoutConsulPauses() async throws {
        guard getuid() == 0 else { return }
        try await LiveCluster.with { c in
            let nodes = try await bouncedNodes(c)
            #expect(await eventually(timeout: .seconds(20)) { await routedPort(bouncerPort: nodes[1].2) == "\(nodes[0].1):false" })
            let proxy = try SeverableProxy(upstreamPort: Int(c.consulAddress.split(separator: ":").last!)!)
            defer { proxy.stop() }
            // pg2's agent reaches Consul only through the proxy.
            let agent = try #require(c.trackedProcesses.last { $0.process.arguments?.first == "pgbouncer-agent" && $0.process.arguments?.contains(c.directory("pg2") + "/baton.yaml") == true })
            agent.kill()
            let file = c.directory("pg2") + "/agent.yaml"
            let yaml = try String(contentsOfFile: c.directory("pg2") + "/baton.yaml", encoding: .utf8)
            try yaml.replacingOccurrences(of: c.consulAddress, with: proxy.address).write(toFile: file, atomically: true, encoding: .utf8)
            c.track(try BatonProcess.start(["pgbouncer-agent", "--config", file]))
            let agentLog = { c.trackedProcesses.last { $0.process.arguments?.contains(file) == true }?.output ?? "" }
            // The new agent has read the cluster once (it knows who leads) before it is cut off: severed
            // earlier, it never learns a leader and holds at once (seen in CI: which of the two it met
            // depended on the machine's speed).
            #expect(await eventually(timeout: .seconds(10)) { agentLog().contains("msg=Routing") }, "pg2's agent decided: \(agentLog())")
            proxy.sever()
            // Past the fence deadline (3 s) only the primary itself can say it leads; pg1, healthy and
            // holding the lock, confirms: clients go on being served.
            let confirmed = await eventually(timeout: .seconds(10)) { agentLog().contains("the primary confirms it leads") }
            #expect(confirmed, "pg2's agent asked the primary: \(String(agentLog().suffix(3000)))")
            #expect(await bouncerPaused(c, bouncerPort: nodes[1].2) == false, "routing stays while the primary confirms it leads")
            // The primary no longer answers (its monitor, and with it the node API, frozen; its watchdog
            // fences it): the agent cannot tell who leads, and its clients wait.
            let frozen = try #require(monitorProcess(c, "pg1"))
            kill(frozen.pid, SIGSTOP)
            let paused = await eventually(timeout: .seconds(10)) { await bouncerPaused(c, bouncerPort: nodes[1].2) == true }
            kill(frozen.pid, SIGCONT)
            #expect(paused, "pg2's pgbouncer paused while its agent cannot tell who leads: \(String(agentLog().suffix(3000)))")
            proxy.heal()
            // Healed, it routes to whoever leads by then (pg1 again, or a replica that took over).
            let routed = await eventually(timeout: .seconds(40)) {
                guard let leader = try? await c.leader(), let port = nodes.first(where: { $0.0 == leader })?.1 else { return false }
                return await routedPort(bouncerPort: nodes[1].2) == "\(port):false"
            }
            let digest = routed ? "" : await c.digest()
            #expect(routed, "pg2's pgbouncer resumed, routing to the leader, once its agent reached Consul again: \(digest)")
        }
    }
}

extension MonitorLiveTests {
    @Test(
        "an unplanned failover under eight clients writing through a replica's pgbouncer — the primary's whole node dies, or its postmaster: clients wait for the new primary instead of failing: a few failed transactions each at most, not one per 20 ms until the new leader (issue 26)",
        arguments: ["node", "postmaster"])
    func unplannedFailoverIsAPause(_ fault: String) async throws {
        guard getuid() == 0 else { return }
        try await LiveCluster.with { c in
            let nodes = try await bouncedNodes(c)
            #expect(await eventually(timeout: .seconds(20)) { await routedPort(bouncerPort: nodes[1].2) == "\(nodes[0].1):false" })
            let clients = (0..<8).map { _ in BouncerClient() }
            for client in clients { client.start(bouncerPort: nodes[1].2) }
            try await Task.sleep(for: .seconds(2))
            if fault == "node" { try killNode(c, "pg1") } else { kill(try postmasterPID(c, "pg1"), SIGKILL) }
            let newLeader = await newWritableLeader(c, nodes.map { ($0.0, $0.1) }, replacing: "pg1")
            let leaderPort = String(nodes.first { $0.0 == newLeader }?.1 ?? 0)
            let moved = await eventually(timeout: .seconds(30)) { clients.allSatisfy { $0.ports.suffix(3) == Array(repeating: leaderPort, count: 3) } }
            try await Task.sleep(for: .seconds(1))
            for client in clients { await client.stop() }
            let digest = moved ? "" : await c.digest()
            #expect(moved, "every client ends on the new primary \(newLeader ?? "?"): \(clients.map { $0.ports.suffix(3) }) \(digest)")
            let failures = clients.map(\.failures)
            let pause = clients.map(\.longestGap).max() ?? .zero
            print("\(fault) killed, 8 clients through a replica's pgbouncer: failed transactions per client \(failures), longest pause \(pause.millisecondCount) ms")
            for client in clients where client.failures > 1 { print("  a client failing twice: \(client.errors)") }
            // The transaction in flight fails; nothing else should: the agents PAUSE the moment the
            // leader's API or PostgreSQL connection closes and it does not answer (main: 43–54 failures per
            // client for a node, 1–2 for a postmaster). At most 1 in 62 of 66 cases on 2026-12-07 (every
            // postmaster kill); in four node deaths some clients lost a second transaction: a retry that
            // reaches pgbouncer before the PAUSE meets its failed login to the dead node's refusing port
            // ("server login has been failing"). Narrowed (a console kept ready for the PAUSE), not
            // closed: docs/figures.md. Hence 2, not 1.
            #expect(failures.allSatisfy { $0 <= 2 }, "failed transactions per client: \(failures)")
        }
    }
}

extension MonitorLiveTests {
    @Test("reads on replicas: each node's postgres_ro alias is served by its own standby while it streams, by the primary on the primary's node, and follows a failover and a rejoin (issue 26)")
    func readOnlyAliasesFollowTheNodesState() async throws {
        guard getuid() == 0 else { return }
        try await LiveCluster.with { c in
            let nodes = try await bouncedNodes(c, options: ["read-only-databases": .list(["postgres"])])
            let ini = try String(contentsOfFile: c.directory("pg2") + "/pgbouncer/pgbouncer.ini", encoding: .utf8)
            #expect(ini.contains("postgres_ro = host="), "bootstrap wrote the alias: \(ini)")
            func reads(_ i: Int) async -> String? { await routedPort(bouncerPort: nodes[i].2, database: "postgres_ro") }
            #expect(await eventually(timeout: .seconds(30)) { await reads(1) == "\(nodes[1].1):true" }, "pg2's reads on pg2")
            #expect(await eventually(timeout: .seconds(30)) { await reads(2) == "\(nodes[2].1):true" }, "pg3's reads on pg3")
            #expect(await eventually(timeout: .seconds(30)) { await reads(0) == "\(nodes[0].1):false" }, "pg1's reads on the primary, pg1")
            #expect(await routedPort(bouncerPort: nodes[1].2) == "\(nodes[0].1):false", "writes still go to the primary")

            kill(try postmasterPID(c, "pg1"), SIGKILL)
            let newLeader = try #require(await newWritableLeader(c, nodes.map { ($0.0, $0.1) }, replacing: "pg1"))
            let leaderIndex = try #require(nodes.firstIndex { $0.0 == newLeader })
            let other = [1, 2].first { $0 != leaderIndex }!
            #expect(await eventually(timeout: .seconds(30)) { await reads(leaderIndex) == "\(nodes[leaderIndex].1):false" }, "the new primary's reads on itself")
            #expect(await eventually(timeout: .seconds(40)) { await reads(other) == "\(nodes[other].1):true" }, "the other standby's reads on itself, following \(newLeader)")
            #expect(await eventually(timeout: .seconds(60)) { await reads(0) == "\(nodes[0].1):true" }, "pg1 rejoined: its reads on its own standby")
        }
    }
}

extension MonitorLiveTests {
    /// Whether `baton status` prints what `matches` within `timeout`.
    static func statusWithin(_ timeout: Duration, _ config: String, _ matches: @escaping @Sendable (String) -> Bool) async -> Bool {
        let deadline = ContinuousClock.now + timeout
        repeat {
            if matches(await statusText(config)) { return true }
            try? await Task.sleep(for: .milliseconds(300))
        } while ContinuousClock.now < deadline
        return false
    }

    /// `baton status` as printed, or "" when it failed.
    static func statusText(_ config: String) async -> String {
        guard let result = try? await runCommand(BatonProcess.executable, ["status", "--config", config]), result.status == 0 else { return "" }
        return result.output
    }

    @Test("one truth about who serves: a pgbouncer reported routing elsewhere than the lock holder for over 5 s is an event, a status warning and a metric on the leader, until it agrees again (issue 26)")
    func routingDisagreementIsReported() async throws {
        guard getuid() == 0 else { return }
        try await LiveCluster.with { c in
            let nodes = try await bouncedNodes(c)
            #expect(await eventually(timeout: .seconds(20)) { await routedPort(bouncerPort: nodes[2].2) == "\(nodes[0].1):false" })
            let config = c.directory("pg2") + "/baton.yaml"
            let agreed = try await runCommand(BatonProcess.executable, ["status", "--config", config])
            #expect(!agreed.output.contains("who serves is not agreed"), "\(agreed.output)")
            // pg3's agent is made to say it routes elsewhere: frozen, so that its own report (every 10 s
            // while nothing changes) cannot put the truth back before the leader's patience ran out — an
            // unfrozen agent's refresh made this test pass or fail by the phase it started in.
            let agent = try #require(c.trackedProcesses.last {
                $0.process.arguments?.first == "pgbouncer-agent" && $0.process.arguments?.contains(c.directory("pg3") + "/baton.yaml") == true
            })
            kill(agent.process.processIdentifier, SIGSTOP)
            defer { kill(agent.process.processIdentifier, SIGCONT) }  // also when a step below throws
            let stuck = BouncerStatus(target: "127.0.0.1:1", paused: false, acknowledged: nil, problem: nil, time: Date().timeIntervalSince1970)
            try await c.client.put("baton/live/pgbouncer/agents/pg3", stuck.json.serializedBytes())
            let warned = await Self.statusWithin(.seconds(9), config) {
                $0.contains("who serves is not agreed (for over 5 s, as pg1 sees it): pg3's pgbouncer routes to 127.0.0.1:1 while pg1 leads")
            }
            #expect(warned, "the leader warns of pg3's pgbouncer")
            #expect(await api(c, "pg1", "/metrics")?.text.contains("baton_routing_disagreement 1") == true, "the leader's metric")
            let events = try await runCommand(BatonProcess.executable, ["events", "--config", config, "--kind", "routing"])
            #expect(events.output.contains("pg3's pgbouncer routes to 127.0.0.1:1"), "\(events.output)")
            kill(agent.process.processIdentifier, SIGCONT)
            let healed = await Self.statusWithin(.seconds(20), config) { !$0.isEmpty && !$0.contains("who serves is not agreed") }
            #expect(healed, "pg3's agent reported its real target again and the warning went")
        }
    }
}

extension MonitorLiveTests {
    /// pgbouncer's own setting, as its admin console shows it (`SHOW CONFIG`).
    func bouncerSetting(_ c: LiveCluster, bouncerPort: Int, _ name: String) async throws -> String? {
        let shown = try await runCommand(
            "/usr/sbin/runuser", ["-u", "postgres", "--", "/usr/bin/psql", "-At", "-h", c.root + "/sockets", "-p", String(bouncerPort), "-U", "pgbouncer", "pgbouncer", "-c", "SHOW CONFIG"])
        return shown.output.split(separator: "\n").first { $0.hasPrefix(name + "|") }.map { String($0.split(separator: "|")[1]) }
    }

    @Test("a failover that does not come (the cluster paused, the primary's node dead): a client held by pgbouncer fails after pgbouncer_timeout with query_wait_timeout instead of waiting pgbouncer's two minutes; resumed, the next primary serves and pgbouncer's own query_wait_timeout is back (issue 26)")
    func heldClientsWaitAtMostPgbouncerTimeout() async throws {
        guard getuid() == 0 else { return }
        try await LiveCluster.with { c in
            let nodes = try await bouncedNodes(c, settings: ["pgbouncer_timeout=2s"])
            #expect(await eventually(timeout: .seconds(20)) { await routedPort(bouncerPort: nodes[1].2) == "\(nodes[0].1):false" })
            #expect(try await bouncerSetting(c, bouncerPort: nodes[1].2, "query_wait_timeout") == "120", "pgbouncer's default while it routes")
            let config = c.directory("pg2") + "/baton.yaml"
            #expect(try await runCommand(BatonProcess.executable, ["pause", "--config", config, "--reason", "no failover"]).status == 0)
            try killNode(c, "pg1")
            // Held: pgbouncer_timeout is pgbouncer's query_wait_timeout from its PAUSE on.
            let held = await eventually(timeout: .seconds(20)) { (try? await bouncerSetting(c, bouncerPort: nodes[1].2, "query_wait_timeout")) == "2" }
            #expect(held, "pg2's agent holds its clients for the failover, waiting at most pgbouncer_timeout")
            let conninfo = ConnInfo.make([
                ("host", "127.0.0.1"), ("port", String(nodes[1].2)), ("user", "app"), ("password", "app-secret"), ("dbname", "postgres"),
                ("connect_timeout", "40"),
            ])
            var failure = "none: the query was answered"
            do {
                let connection = try await PostgresConnection.connect(conninfo)
                defer { connection.close() }
                // Far past pgbouncer_timeout, far short of pgbouncer's own 120 s.
                try await connection.query("INSERT INTO baton_writes (node) VALUES ('held')", timeout: .seconds(40))
            } catch {
                failure = "\(error)"
            }
            #expect(failure.contains("query_wait_timeout"), "a held client fails with pgbouncer's query_wait_timeout: \(failure)")

            #expect(try await runCommand(BatonProcess.executable, ["resume", "--config", config]).status == 0)
            let newLeader = await newWritableLeader(c, nodes.map { ($0.0, $0.1) }, replacing: "pg1")
            let leaderPort = nodes.first { $0.0 == newLeader }?.1 ?? 0
            let routed = await eventually(timeout: .seconds(30)) { await routedPort(bouncerPort: nodes[1].2) == "\(leaderPort):false" }
            #expect(routed, "resumed: pg2's pgbouncer serves the new primary \(newLeader ?? "?")")
            #expect(try await bouncerSetting(c, bouncerPort: nodes[1].2, "query_wait_timeout") == "120", "pgbouncer's own value is back")
        }
    }
}
