import BatonConsul
import BatonCore
import BatonPostgres
import BatonTestSupport
import ConsulAPI
import Foundation
import Testing

extension MonitorLiveTests {
    /// Issue 24's table, each row played by the embedded server on the same healthy cluster with the
    /// shipped defaults: a Consul election of 5 s, every answer 2 s late for 10 s, calls held for 5 s,
    /// the leader's session invalidated as a restarted agent does, an election of 15 s. None of them is
    /// the database's fault, so none may move the primary: pg1 leads throughout, nobody is fenced or
    /// promoted, no round of the probe finds two writable nodes, and every write a client had
    /// acknowledged is on pg1 at the end. The longest wait of a writer through HAProxy during each
    /// fault is printed (a figure, not an assertion).
    @Test("Consul's everyday trouble (election 5 s and 15 s, 2 s late answers for 10 s, a 5 s hang, the leader's session destroyed) moves nothing with the shipped defaults")
    func consulTroubleIsANonEvent() async throws {
        guard Self.haproxyAvailable else { return }
        try await LiveCluster.with { c in
            let nodes = try await threeNodes(c)
            let writer = try await writerThroughHAProxy(c, nodes)
            let probe = WriteProbe()
            probe.start(nodes: nodes, cluster: c)
            #expect(await writer.waitFor(count: 30, within: .seconds(20)), "writes through HAProxy")
            // Which node Consul names leader, sampled all along (a failed read is not an observation).
            let holders = LeaderHolders()
            let sampler = Task {
                while !Task.isCancelled {
                    if let leader = try? await c.leader() { holders.add(leader) }
                    try? await Task.sleep(for: .milliseconds(200))
                }
            }
            var figures: [String] = []
            func play(_ name: String, lasting: Duration, _ fault: () async throws -> Void) async throws {
                let started = ContinuousClock.now
                try await fault()
                try await Task.sleep(for: lasting + .seconds(3))
                figures.append("\(name): longest write gap \(writer.longestGap(from: started, to: .now))")
            }
            try await play("election 5 s", lasting: .seconds(5)) { try await c.faults.election(for: .seconds(5)) }
            try await play("answers 2 s late for 10 s", lasting: .seconds(10)) { try await c.faults.slow(by: .seconds(2), for: .seconds(10)) }
            try await play("hang 5 s", lasting: .seconds(5)) { try await c.faults.hang(for: .seconds(5)) }
            try await play("agent restart (leader's session destroyed)", lasting: .seconds(1)) {
                let invalidated = try await c.faults.agentRestart(node: "node1", name: "baton-live-pg1")
                #expect(invalidated.count == 1, "pg1's session: \(invalidated)")
            }
            try await play("election 15 s", lasting: .seconds(15)) { try await c.faults.election(for: .seconds(15)) }
            sampler.cancel()
            await sampler.value
            await writer.stop()
            await probe.stop()
            print("Consul trouble, shipped defaults:\n  " + figures.joined(separator: "\n  "))
            let events = try await events(c)
            #expect(holders.seen == ["pg1"], "the leader key named only pg1 (free or another holder is a failover): \(holders.seen); events: \(events.suffix(12))")
            #expect(!events.contains { $0.contains("\"fence\"") || $0.contains("\"promote\"") || $0.contains("\"take_over\"") }, "nobody fenced, took over or promoted: \(events.suffix(12))")
            #expect(probe.splitBrainRounds.isEmpty, "rounds with two writable nodes: \(probe.splitBrainRounds.prefix(3))")
            for (name, port) in nodes.dropFirst() {
                #expect(!(await writable(c, port: port)), "\(name) stayed a standby")
            }
            let acknowledged = writer.acknowledged
            let present = try await acknowledgedPresent(c, port: nodes[0].1, ids: acknowledged)
            #expect(present == acknowledged.count, "every acknowledged write on pg1 (\(acknowledged.count - present) of \(acknowledged.count) missing)")
        }
    }
}

/// The distinct leader-key holders seen, in order of first sighting ("" for a free lock).
final class LeaderHolders: @unchecked Sendable {
    // @unchecked: guarded by `lock`.
    private let lock = NSLock()
    private var holders: [String] = []
    func add(_ holder: String) { lock.withLock { if !holders.contains(holder) { holders.append(holder) } } }
    var seen: [String] { lock.withLock { holders } }
}
