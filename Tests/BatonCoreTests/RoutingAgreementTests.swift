import BatonCore
import ConsulAPI
import Testing

@Suite("one truth about who serves")
struct RoutingAgreementTests {
    let keys = ClusterKeys(cluster: try! ClusterName("c"))

    func snapshot(
        leader: String?, vip: [String: String], bouncers: [String: BouncerStatus], pausing: Bool = false, policy: VIPPolicy = .primary
    ) throws -> ClusterSnapshot {
        var pairs = try [("a", NodeRole.primary), ("b", .standby), ("c", .standby)].map { try DayTwoTests.registration($0.0, $0.1, keys: keys) }
        if let leader { pairs.append(KVPair(key: keys.leader, value: Array(leader.utf8), session: "s")) }
        let nodes = KeepalivedNodes(nodes: try ["a", "b", "c"].enumerated().map { i, n in
            KeepalivedNode(name: try NodeName(n), priority: 200 - 10 * i, state: vip[n])
        })
        pairs.append(KVPair(key: keys.keepalivedNodes, value: nodes.json.serializedBytes()))
        for (node, status) in bouncers { pairs.append(KVPair(key: keys.pgbouncerAgent(try NodeName(node)), value: status.json.serializedBytes())) }
        if pausing {
            let request = PauseRequest(id: "p1", from: try NodeName("a"), to: try NodeName("b"), timeout: .seconds(10))
            pairs.append(KVPair(key: keys.pgbouncerPause, value: request.json.serializedBytes()))
        }
        if policy != .primary {
            var config = ClusterConfig()
            config.vipPolicy = policy
            pairs.append(KVPair(key: keys.config, value: config.json.serializedBytes()))
        }
        return ClusterSnapshot(pairs: pairs, keys: keys)
    }

    func bouncer(_ target: String, paused: Bool = false) -> BouncerStatus { BouncerStatus(target: target, paused: paused, acknowledged: nil, problem: nil, time: 0) }

    @Test("agreement is silence; the VIP elsewhere or on two nodes, a pgbouncer routing elsewhere or holding, each said once")
    func disagreements() throws {
        let all: Set<NodeName> = [try NodeName("a"), try NodeName("b"), try NodeName("c")]
        let agreed = try snapshot(leader: "a", vip: ["a": "MASTER", "b": "BACKUP", "c": "BACKUP"], bouncers: ["a": bouncer("10.0.0.1:5432"), "b": bouncer("10.0.0.1:5432")])
        #expect(RoutingAgreement.disagreements(agreed, liveBouncers: all).isEmpty)
        let wrong = try snapshot(
            leader: "a", vip: ["a": "BACKUP", "b": "MASTER", "c": "MASTER"],
            bouncers: ["a": bouncer("10.0.0.1:5432"), "b": bouncer("10.0.0.9:5432"), "c": bouncer("10.0.0.1:5432", paused: true)])
        #expect(
            RoutingAgreement.disagreements(wrong, liveBouncers: all) == [
                "the virtual IP is on b and c while a leads", "b's pgbouncer routes to 10.0.0.9:5432 while a leads at 10.0.0.1:5432",
                "c's pgbouncer holds its clients (paused) while a leads",
            ])
        #expect(RoutingAgreement.disagreements(wrong, liveBouncers: [try NodeName("a")]) == ["the virtual IP is on b and c while a leads"], "a dead agent is not counted")
        let noVIP = try snapshot(leader: "a", vip: ["a": "FAULT", "b": "FAULT"], bouncers: [:])
        #expect(RoutingAgreement.disagreements(noVIP, liveBouncers: all) == ["no keepalived holds the virtual IP while a leads"])
        #expect(RoutingAgreement.disagreements(try snapshot(leader: "a", vip: [:], bouncers: [:]), liveBouncers: all).isEmpty, "no keepalived at all")
        #expect(RoutingAgreement.disagreements(try snapshot(leader: nil, vip: ["b": "MASTER"], bouncers: [:]), liveBouncers: all).isEmpty, "nobody leads: in transit")
        #expect(RoutingAgreement.disagreements(try snapshot(leader: "b", vip: ["a": "MASTER"], bouncers: [:]), liveBouncers: all).isEmpty, "b not registered primary yet")
        #expect(RoutingAgreement.disagreements(try snapshot(leader: "a", vip: ["b": "MASTER"], bouncers: [:], pausing: true), liveBouncers: all).isEmpty, "a switchover pauses")
    }

    @Test("vip_policy priority: the VIP on any one node agrees; on none or on two it does not; pgbouncers are held to the lock as before")
    func priorityPolicy() throws {
        let all: Set<NodeName> = [try NodeName("a"), try NodeName("b"), try NodeName("c")]
        let elsewhere = try snapshot(
            leader: "a", vip: ["a": "BACKUP", "b": "MASTER", "c": "BACKUP"], bouncers: ["b": bouncer("10.0.0.1:5432")], policy: .priority)
        #expect(RoutingAgreement.disagreements(elsewhere, liveBouncers: all).isEmpty, "the VIP on b while a leads is the policy")
        let two = try snapshot(leader: "a", vip: ["b": "MASTER", "c": "MASTER"], bouncers: ["b": bouncer("10.0.0.9:5432")], policy: .priority)
        #expect(
            RoutingAgreement.disagreements(two, liveBouncers: all) == [
                "the virtual IP is on b and c at once (vip_policy priority)", "b's pgbouncer routes to 10.0.0.9:5432 while a leads at 10.0.0.1:5432",
            ])
        let none = try snapshot(leader: "a", vip: ["a": "FAULT", "b": "BACKUP"], bouncers: [:], policy: .priority)
        #expect(RoutingAgreement.disagreements(none, liveBouncers: all) == ["no keepalived holds the virtual IP while a leads"])
        // c died holding the address: its last notification still says MASTER; b took it over.
        let died = try snapshot(leader: "a", vip: ["a": "BACKUP", "b": "MASTER", "c": "MASTER"], bouncers: [:], policy: .priority)
        let alive: Set<NodeName> = [try NodeName("a"), try NodeName("b")]
        #expect(RoutingAgreement.disagreements(died, liveBouncers: all, liveMonitors: alive).isEmpty, "a dead node's last VRRP state is not counted")
        #expect(RoutingAgreement.disagreements(died, liveBouncers: all).count == 1)
    }

    @Test("a disagreement counts once it lasts the patience; its event comes once; it ends when it goes away")
    func memory() {
        var memory = DisagreementMemory()
        let t0 = ContinuousClock.now
        #expect(memory.observe(["vip"], at: t0) == ([], []))
        #expect(memory.observe(["vip"], at: t0 + .seconds(4)) == ([], []))
        #expect(memory.observe(["vip", "b"], at: t0 + .seconds(5)) == (["vip"], ["vip"]))
        #expect(memory.observe(["vip", "b"], at: t0 + .seconds(9)) == (["vip"], []))
        #expect(memory.observe(["vip", "b"], at: t0 + .seconds(10)) == (["vip", "b"], ["b"]))
        #expect(memory.observe([], at: t0 + .seconds(11)) == ([], []))
        #expect(memory.observe(["vip"], at: t0 + .seconds(12)) == ([], []), "it starts afresh")
    }
}
