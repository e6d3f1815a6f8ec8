import BatonCore
import ConsulAPI
import Testing

/// `baton explain` (issue 25): what would happen if the primary died now, by the monitors' own ranking.
@Suite("failover explanation")
struct FailoverExplanationTests {
    let keys = ClusterKeys(cluster: try! ClusterName("c"))

    struct Node {
        var name: String
        var position: UInt64
        var timeline = 1
        var role = "standby"
        var priority = 100
        var noFailover = false
    }

    /// A cluster whose primary `p` has just died (reported down, lock free) with these standbys.
    func snapshot(_ standbys: [Node], mode: SynchronousMode = .off, sync: String? = nil, syncPosition: UInt64 = 0, lastPrimary: UInt64 = 1000,
                  paused: Bool = false, maximumLag: UInt64 = 1 << 20) -> ClusterSnapshot {
        var pairs: [KVPair] = []
        var config = ClusterConfig()
        config.synchronousMode = mode
        config.maximumLagOnFailover = maximumLag
        pairs.append(KVPair(key: keys.config, value: config.json.serializedBytes()))
        func register(_ name: String, _ role: NodeRole, priority: Int) {
            let registration = NodeRegistration(
                name: try! NodeName(name), address: try! HostAddress("10.0.0.1"), port: try! TCPPort(5432), role: role, upstream: nil,
                priority: priority, location: "default")
            pairs.append(KVPair(key: keys.node(try! NodeName(name)), value: registration.json.serializedBytes()))
        }
        register("p", .primary, priority: 100)
        var primary = MemberStatus(local: .down(standbySignal: false), decision: "", time: 0)
        primary.lastPrimary = PrimaryPosition(position: LSN(lastPrimary), timeline: 1)
        pairs.append(KVPair(key: keys.status(try! NodeName("p")), value: primary.json.serializedBytes()))
        for n in standbys {
            register(n.name, .standby, priority: n.priority)
            let local: LocalPostgres = n.role == "standby"
                ? .standby(position: LSN(n.position), timeline: n.timeline, upstream: nil, streaming: false) : .down(standbySignal: true)
            pairs.append(KVPair(key: keys.status(try! NodeName(n.name)), value: MemberStatus(local: local, decision: "", time: 0).json.serializedBytes()))
            if n.noFailover { pairs.append(KVPair(key: keys.tags(try! NodeName(n.name)), value: NodeTags(noFailover: true).json.serializedBytes())) }
        }
        if let sync {
            pairs.append(KVPair(key: keys.sync, value: SyncRecord(standby: try! NodeName(sync), leader: try! NodeName("p"), position: LSN(syncPosition)).json.serializedBytes()))
        }
        if paused { pairs.append(KVPair(key: keys.pause, value: Array("maintenance".utf8))) }
        return ClusterSnapshot(pairs: pairs, keys: keys)
    }

    @Test("the winner, the order and every other node's reason")
    func explains() throws {
        let s = snapshot([Node(name: "a", position: 900), Node(name: "b", position: 990), Node(name: "c", position: 10), Node(name: "d", position: 995, noFailover: true), Node(name: "e", position: 0, role: "down")], maximumLag: 100)
        let e = FailoverExplanation(snapshot: s, live: Set(["a", "b", "c", "d", "e", "p"].map { try! NodeName($0) }))
        #expect(e.winner == (try NodeName("b")))
        #expect(e.ranked.map(\.name.value) == ["b", "a"] && e.ranked[0].lag == 10 && e.ranked[1].waits == .seconds(3))
        let reasons = Dictionary(uniqueKeysWithValues: e.ineligible.map { ($0.node.value, $0.reason) })
        #expect(reasons["c"]?.contains("over the limit") == true, "\(reasons)")
        #expect(reasons["d"]?.contains("no-failover") == true)
        #expect(reasons["e"]?.contains("not a standby") == true)
        #expect(e.text.contains("b would take over") && e.text.contains("Not eligible"), "\(e.text)")
        #expect(e.json.member("winner")?.stringValue == "b")

        let stopped = FailoverExplanation(snapshot: s, live: Set(["a", "p"].map { try! NodeName($0) }))
        #expect(stopped.winner == (try NodeName("a")))
        #expect(stopped.ineligible.contains { $0.node.value == "b" && $0.reason.contains("monitor is not running") })

        let paused = FailoverExplanation(snapshot: snapshot([Node(name: "a", position: 1000)], paused: true), live: [try NodeName("a")])
        #expect(paused.winner == nil && paused.text.contains("paused"))
        let synchronous = FailoverExplanation(
            snapshot: snapshot([Node(name: "a", position: 1000), Node(name: "b", position: 990)], mode: .on, sync: "b", syncPosition: 900),
            live: [try NodeName("a"), try NodeName("b")])
        #expect(synchronous.winner == (try NodeName("b")) && synchronous.ineligible.first?.reason == "not the synchronous standby")
    }

    /// The explanation and the monitors cannot disagree: over random clusters, the node the explanation
    /// names is the one node whose monitor takes the free lock at once, and when it names nobody, no
    /// monitor does.
    @Test("over 500 random clusters, explain's winner is the one node whose monitor would take the lock at once")
    func agreesWithTheMonitors() throws {
        var random = SplitMix(seed: 2026)
        var named = 0
        for round in 0..<500 {
            let count = 1 + random.next(4)
            var standbys: [Node] = []
            for i in 0..<count {
                standbys.append(
                    Node(
                        name: "n\(i)", position: 500 + random.wide(600), timeline: 1 + random.next(2), role: random.next(8) == 0 ? "down" : "standby",
                        priority: [0, 50, 100][random.next(3)], noFailover: random.next(6) == 0))
            }
            let mode = [SynchronousMode.off, .on, .strict][random.next(3)]
            let sync = random.next(3) == 0 ? nil : standbys[random.next(count)]
            let s = snapshot(
                standbys, mode: mode, sync: sync?.name, syncPosition: sync.map { $0.position - random.wide(50) } ?? 0, lastPrimary: 1000,
                paused: random.next(10) == 0, maximumLag: random.wide(400))
            let live = Set(standbys.filter { _ in random.next(8) != 0 }.map { try! NodeName($0.name) })
            let explained = FailoverExplanation(snapshot: s, live: live).winner
            var acquiring: [NodeName] = []
            for n in standbys where n.role == "standby" {
                let me = try NodeName(n.name)
                let local = LocalPostgres.standby(position: LSN(n.position), timeline: n.timeline, upstream: nil, streaming: false)
                let candidates = FailoverCandidates.candidates(s, fresh: { live.contains($0) || $0 == me }, me: me, local: local)
                let observation = MonitorObservation(
                    node: me, config: s.config, local: local, leader: .free(since: .zero), leaderEndpoint: nil, candidates: candidates,
                    lastPrimaryPosition: s.lastPrimaryPosition, synchronous: s.sync, paused: s.pause != nil, primaryReport: .down(try NodeName("p")))
                if live.contains(me), case .acquireLeader = MonitorDecision.next(observation) { acquiring.append(me) }
            }
            #expect(acquiring == explained.map { [$0] } ?? [], "round \(round): explain says \(explained?.value ?? "nobody"), monitors acquiring \(acquiring)")
            if explained != nil { named += 1 }
        }
        #expect(named > 100 && named < 450, "both outcomes come up: \(named) of 500 name a winner")
    }
}

/// A seeded generator for the table above (SplitMix64).
struct SplitMix {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next(_ bound: Int) -> Int {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return Int((z ^ (z >> 31)) % UInt64(bound))
    }
    mutating func wide(_ bound: Int) -> UInt64 { UInt64(next(bound)) }
}
