import BatonAgent
import BatonBootstrap
import BatonSettings
import BatonConsul
import BatonCore
import BatonFence
import BatonPostgres
import BatonTestSupport
import ConsulAPI
import Foundation
import Testing

extension MonitorLiveTests {
    /// The node the `sync` key names, once the primary recorded one.
    func recordedSynchronousStandby(_ c: LiveCluster, timeout: Duration = .seconds(30)) async -> String? {
        let deadline = ContinuousClock.now + timeout
        repeat {
            let pair = (try? await c.client.get("baton/live/sync").value).flatMap { $0 }
            if let standby = (try? JSONValue.parse(pair?.value ?? []))?.member("standby")?.stringValue { return standby }
            try? await Task.sleep(for: .milliseconds(50))
        } while ContinuousClock.now < deadline
        return nil
    }

    /// Kills every process of a node at once: its monitor, the monitor's watchdog, PostgreSQL.
    func killNode(_ c: LiveCluster, _ node: String) throws {
        var victims: [Int32] = []
        if let monitor = monitorProcess(c, node) { victims += [monitor.pid] + childPIDs(monitor.pid) }
        if let watchdog = watchdogPID(c, node) { victims.append(watchdog) }
        if let postmaster = try? postmasterPID(c, node) { victims += [postmaster] + childPIDs(postmaster) }
        for pid in victims { kill(pid, SIGKILL) }
        monitorProcess(c, node)?.kill()
    }

    /// Waits until every node but `leader` streams from it.
    func allFollow(_ c: LiveCluster, _ nodes: [(String, Int)], leader: String, timeout: Duration = .seconds(60)) async -> Bool {
        let leaderPort = nodes.first { $0.0 == leader }?.1 ?? 0
        for (name, port) in nodes where name != leader {
            guard await eventually(timeout: timeout, { await streamingFrom(c, port: port, upstreamPort: leaderPort) }) else { return false }
        }
        return true
    }

    @Test("strict synchronous mode: the synchronous standby crash-restarts, then the primary node dies: the standby is promoted once it is back, with every acknowledged commit")
    func crashingSynchronousStandbyThenPrimaryLoss() async throws {
        try await LiveCluster.with { c in
            // pg3 is never promoted (priority 0), so pg2 is the only synchronous standby there can be; strict,
            // so that the primary waits for it while it restarts (`on` would go asynchronous meanwhile, and
            // then nobody may be promoted automatically).
            let nodes = try await threeNodes(c, settings: ["synchronous_mode=strict"], options: ["pg3": ["priority": .int(0)]])
            try await createAcknowledgedTable(c, port: nodes[0].1)
            let standby = try #require(await recordedSynchronousStandby(c))
            #expect(standby == "pg2")
            let writer = AcknowledgedWriter()
            writer.start(nodes: nodes, cluster: c)
            let probe = WriteProbe()
            probe.start(nodes: nodes, cluster: c)
            try await Task.sleep(for: .seconds(1))
            for round in 0..<4 {
                // SIGKILL of its WAL receiver: the standby's postmaster resets and runs crash recovery.
                _ = await eventually(timeout: .seconds(10)) { (try? postgresChild(c, standby, "walreceiver")) != nil }
                if let receiver = try? postgresChild(c, standby, "walreceiver") { kill(receiver, SIGKILL) }
                if round < 3 { try await Task.sleep(for: .seconds(1)) }
            }
            try killNode(c, "pg1")
            let promoted = await newWritableLeader(c, nodes, replacing: "pg1")
            await writer.stop()
            await probe.stop()
            let digest = promoted == standby ? "" : await c.digest()
            #expect(promoted == standby, "the synchronous standby \(standby) was promoted within 30 s (got \(promoted ?? "nobody")): \(digest)")
            let acknowledged = writer.acknowledged
            #expect(acknowledged.count > 20)
            if let promoted, let port = nodes.first(where: { $0.0 == promoted })?.1 {
                let present = try await acknowledgedPresent(c, port: port, ids: acknowledged)
                #expect(present == acknowledged.count, "acknowledged \(acknowledged.count) commits, \(present) on \(promoted)")
            }
            #expect(probe.splitBrainRounds.isEmpty, "rounds with two writable nodes: \(probe.splitBrainRounds.prefix(5))")
        }
    }

    @Test("synchronous mode: the synchronous standby's link flaps, then the primary node dies at once; no acknowledged commit is lost (3 times; BATON_FLAP_REPETITIONS=N for more)")
    func flappingSynchronousStandby() async throws {
        let repetitions = Int(ProcessInfo.processInfo.environment["BATON_FLAP_REPETITIONS"] ?? "") ?? 3
        try await LiveCluster.with { c in
            let nodes = try await threeNodes(c, settings: ["synchronous_mode=on"])
            try await createAcknowledgedTable(c, port: nodes[0].1)
            var lost: [String] = []
            var windows: [String] = []
            for repetition in 0..<repetitions {
                let leader = try #require(try await c.leader())
                #expect(await allFollow(c, nodes, leader: leader), "repetition \(repetition): the replicas follow \(leader)")
                let standby = try #require(await recordedSynchronousStandby(c))
                let writer = AcknowledgedWriter()
                writer.start(nodes: nodes, cluster: c)
                try await Task.sleep(for: .milliseconds(500))
                // The standby's link drops again and again (SIGTERM ends its WAL receiver cleanly; the
                // startup process starts another after wal_retrieve_retry_interval), and the primary dies
                // the moment PostgreSQL stops waiting for the standby the `sync` key still names — or
                // after 5 s if that moment never comes.
                let leaderPort = try #require(nodes.first { $0.0 == leader }?.1)
                let flapping = ContinuousClock.now + .seconds(5)
                var killed = false
                while ContinuousClock.now < flapping {
                    if let receiver = try? postgresChild(c, standby, "walreceiver") { kill(receiver, SIGTERM) }
                    let names = try? await c.connect(port: leaderPort)
                    let waitsFor = try? await names?.scalar("SHOW synchronous_standby_names")
                    names?.close()
                    let recorded = await recordedSynchronousStandby(c, timeout: .zero)
                    if recorded == standby, let waitsFor, waitsFor != "\"\(standby)\"" {
                        windows.append("repetition \(repetition): \(standby) recorded while PostgreSQL waits for \(waitsFor)")
                        // Keep the standby from receiving anything more (its startup process, which starts
                        // WAL receivers, held), long enough for commits to be acknowledged without it.
                        let startup = try? postgresChild(c, standby, "startup")
                        if let startup { kill(startup, SIGSTOP) }
                        if let receiver = try? postgresChild(c, standby, "walreceiver") { kill(receiver, SIGTERM) }
                        try await Task.sleep(for: .milliseconds(300))
                        try killNode(c, leader)
                        killed = true
                        if let startup { kill(startup, SIGCONT) }
                        break
                    }
                    try await Task.sleep(for: .milliseconds(50))
                }
                if !killed { try killNode(c, leader) }
                var promoted = await newWritableLeader(c, nodes, replacing: leader)
                // Nobody eligible (the safe outcome while no standby is recorded): the old node comes back.
                c.track(try BatonProcess.start(["monitor", "--config", c.directory(leader) + "/baton.yaml"]))
                if promoted == nil { promoted = await newWritableLeader(c, nodes, replacing: "") }
                await writer.stop()
                if promoted == nil { Issue.record("repetition \(repetition): no primary again: \(await c.digest())") }
                let current = try #require(promoted)
                let port = try #require(nodes.first { $0.0 == current }?.1)
                let acknowledged = writer.acknowledged
                let present = try await acknowledgedPresent(c, port: port, ids: acknowledged)
                if present != acknowledged.count {
                    lost.append("repetition \(repetition): \(acknowledged.count - present) of \(acknowledged.count) lost; standby was \(standby), promoted \(current)")
                }
            }
            #expect(lost.isEmpty, "\(lost)")
            #expect(windows.isEmpty, "the sync key named a standby PostgreSQL no longer waited for: \(windows)")
        }
    }

    @Test("a failover request left behind naming a dead node never blocks failover; the new leader deletes it")
    func staleRequestNamingADeadNode() async throws {
        try await LiveCluster.with { c in
            let nodes = try await threeNodes(c)
            try killNode(c, "pg3")
            // A `baton failover --to pg3` killed mid-way left its request behind.
            let request = TakeoverRequest(to: try NodeName("pg3"), from: nil, time: "2026-11-28T00:00:00Z")
            try await c.client.put("baton/live/switchover", request.json.serializedBytes())
            try killNode(c, "pg1")
            let promoted = await newWritableLeader(c, nodes, replacing: "pg1")
            let digest = promoted == "pg2" ? "" : await c.digest()
            #expect(promoted == "pg2", "pg2 took over despite the request for dead pg3: \(digest)")
            let gone = await eventually(timeout: .seconds(10)) { (try? await c.client.get("baton/live/switchover").value) == nil }
            #expect(gone, "the new leader deleted the stale request")
        }
    }

    @Test("synchronous mode, paused, no leader: `baton failover --to` the recorded synchronous standby works without --allow-data-loss; another node needs it")
    func manualFailoverToTheSynchronousStandby() async throws {
        try await LiveCluster.with { c in
            let nodes = try await threeNodes(c, settings: ["synchronous_mode=on", "ttl=3s", "loop_wait=500ms", "fence_timeout=1500ms"])
            let standby = try #require(await recordedSynchronousStandby(c))
            let other = try #require(nodes.map(\.0).first { $0 != "pg1" && $0 != standby })
            let config = c.directory(standby) + "/baton.yaml"
            #expect(try await runCommand(BatonProcess.executable, ["pause", "--config", config]).status == 0)
            try killNode(c, "pg1")
            #expect(await eventually(timeout: .seconds(20)) { (try? await c.leader()) == nil }, "pg1's session lapsed")
            let refused = try await runCommand(BatonProcess.executable, ["failover", "--config", config, "--to", other, "--timeout", "10"])
            #expect(refused.status != 0 && refused.output.contains("--allow-data-loss"), "\(refused.output)")
            let accepted = try await runCommand(BatonProcess.executable, ["failover", "--config", config, "--to", standby, "--timeout", "30"])
            let digest = accepted.status == 0 ? "" : await c.digest()
            #expect(accepted.status == 0, "\(accepted.output)\n\(digest)")
            #expect(try await c.leader() == standby)
            #expect(try await runCommand(BatonProcess.executable, ["resume", "--config", config]).status == 0)
        }
    }

    @Test("the primary's monitor frozen (its watchdog fences): at no moment do two nodes pass keepalived's check (the state ages by the lease)")
    func checkNeverPassesTwice() async throws {
        try await LiveCluster.with { c in
            // A loop of 1.5 s: a state file three loops old is 4.5 s old, older than a takeover (3.5 s).
            let nodes = try await threeNodes(c, settings: ["loop_wait=1500ms"])
            #expect(await eventually(timeout: .seconds(10)) { passing(c, nodes) == ["pg1"] })
            let monitor = try #require(monitorProcess(c, "pg1"))
            kill(monitor.pid, SIGSTOP)
            var overlaps: [[String]] = []
            var seen: Set<String> = []
            let deadline = ContinuousClock.now + .seconds(12)
            while ContinuousClock.now < deadline {
                let now = passing(c, nodes)
                if now.count > 1 { overlaps.append(now) }
                seen.formUnion(now)
                try await Task.sleep(for: .milliseconds(10))
            }
            kill(monitor.pid, SIGCONT)
            #expect(seen.count > 1, "another node took over and passed the check: \(seen)")
            #expect(overlaps.isEmpty, "moments when two nodes passed the check: \(overlaps.count), e.g. \(overlaps.prefix(3))")
        }
    }

    /// The nodes whose state file `baton check` would pass now.
    func passing(_ c: LiveCluster, _ nodes: [(String, Int)]) -> [String] {
        nodes.map(\.0).filter { name in
            let text = try? String(contentsOfFile: CheckState.path(stateDirectory: c.directory(name) + "/state"), encoding: .utf8)
            return CheckState.verdict(text, now: MonotonicClock.nanoseconds(), boot: MonotonicClock.bootID()) == .primary
        }
    }

    @Test("strict synchronous mode: with the only standby gone, writes wait (none acknowledged) and none is lost when it returns")
    func strictModeBlocksWithoutStandby() async throws {
        try await LiveCluster.with { c in
            let nodes = try ["pg1", "pg2"].map { ($0, try FreePort.pick()) }
            _ = try await c.bootstrap(.master, "pg1", port: nodes[0].1)
            _ = try await c.bootstrap(.join([c.consulAddress]), "pg2", port: nodes[1].1)
            try await createAcknowledgedTable(c, port: nodes[0].1)
            let set = try await runCommand(BatonProcess.executable, ["config", "set", "--config", c.directory("pg1") + "/baton.yaml", "synchronous_mode=strict"])
            #expect(set.status == 0, "\(set.output)")
            for (name, _) in nodes { c.track(try BatonProcess.start(["monitor", "--config", c.directory(name) + "/baton.yaml"])) }
            #expect(await eventually(timeout: .seconds(30)) { (try? await c.leader()) == "pg1" })
            #expect(await recordedSynchronousStandby(c) == "pg2")
            let writer = AcknowledgedWriter()
            writer.start(nodes: [nodes[0]], cluster: c)
            try await Task.sleep(for: .seconds(1))
            try killNode(c, "pg2")
            try await Task.sleep(for: .milliseconds(200))
            let before = writer.acknowledged.count
            try await Task.sleep(for: .seconds(5))
            #expect(writer.acknowledged.count == before, "no commit is acknowledged without the synchronous standby")
            #expect(try await c.leader() == "pg1", "the primary keeps its lock")
            c.track(try BatonProcess.start(["monitor", "--config", c.directory("pg2") + "/baton.yaml"]))
            let resumed = await eventually(timeout: .seconds(30)) { writer.acknowledged.count > before + 10 }
            #expect(resumed, "writes resume once the standby is back")
            await writer.stop()
            let acknowledged = writer.acknowledged
            #expect(try await acknowledgedPresent(c, port: nodes[0].1, ids: acknowledged) == acknowledged.count)
        }
    }

    @Test("synchronous mode: a dead synchronous standby is replaced by the other, and failover then goes to the replacement with every commit")
    func synchronousStandbyReplaced() async throws {
        try await LiveCluster.with { c in
            let nodes = try await threeNodes(c, settings: ["synchronous_mode=on"])
            try await createAcknowledgedTable(c, port: nodes[0].1)
            let first = try #require(await recordedSynchronousStandby(c))
            let replacement = try #require(nodes.map(\.0).first { $0 != "pg1" && $0 != first })
            let writer = AcknowledgedWriter()
            writer.start(nodes: nodes, cluster: c)
            try killNode(c, first)
            let replaced = await eventually(timeout: .seconds(30)) { await recordedSynchronousStandby(c, timeout: .zero) == replacement }
            #expect(replaced, "the sync key names \(replacement) after \(first) died")
            try await Task.sleep(for: .seconds(1))
            kill(try postmasterPID(c, "pg1"), SIGKILL)
            let promoted = await newWritableLeader(c, nodes, replacing: "pg1")
            await writer.stop()
            #expect(promoted == replacement)
            let acknowledged = writer.acknowledged
            let port = try #require(nodes.first { $0.0 == replacement }?.1)
            #expect(try await acknowledgedPresent(c, port: port, ids: acknowledged) == acknowledged.count)
        }
    }
}
