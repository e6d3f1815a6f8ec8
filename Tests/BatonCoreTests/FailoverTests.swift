import BatonCore
import ConsulAPI
import Testing

@Suite("failover candidates")
struct FailoverCandidateTests {
    func n(_ s: String) -> NodeName { try! NodeName(s) }
    func c(_ name: String, _ lsn: UInt64, priority: Int = 100, healthy: Bool = true, timeline: Int = 1) -> CandidateState {
        CandidateState(name: n(name), failoverPriority: priority, healthy: healthy, walPosition: LSN(lsn), timeline: timeline)
    }
    func choose(
        _ cs: [CandidateState], mode: SynchronousMode = .off, sync: String? = nil, syncPosition: UInt64 = 0, primary: UInt64? = nil, lag: UInt64 = 1 << 20
    ) -> FailoverChoice {
        FailoverCandidates.choose(
            cs, synchronousMode: mode, synchronous: sync.map { SyncRecord(standby: n($0), leader: n("p"), position: LSN(syncPosition)) },
            lastPrimaryPosition: primary.map(LSN.init), maximumLag: lag)
    }

    @Test func theMostAdvancedWinsThenPriorityThenName() {
        #expect(choose([c("a", 100), c("b", 200), c("c", 150)]).ranked == [n("b"), n("c"), n("a")])
        #expect(choose([c("a", 100, priority: 50), c("b", 100, priority: 90)]).ranked == [n("b"), n("a")])
        #expect(choose([c("b", 100), c("a", 100)]).ranked == [n("a"), n("b")])
        #expect(choose([c("a", 900, timeline: 1), c("b", 100, timeline: 2)]).best == n("b"), "a newer timeline wins")
    }

    @Test func theOrderDoesNotDependOnHowTheReportsArrive() {
        let cs = [c("a", 100), c("b", 200, priority: 10), c("c", 200, priority: 20), c("d", 50)]
        let expected = choose(cs).ranked
        for permutation in [cs.reversed(), [cs[2], cs[0], cs[3], cs[1]], [cs[1], cs[3], cs[0], cs[2]]] {
            #expect(choose(Array(permutation)).ranked == expected)
        }
    }

    @Test func ineligibleReplicasAreNamedWithTheirReason() {
        let choice = choose([c("sick", 500, healthy: false), c("never", 500, priority: 0), c("far", 10), c("ok", 2_000_000)], primary: 2_000_100)
        #expect(choice.ranked == [n("ok")])
        #expect(choice.ineligible[n("sick")] == .unhealthy)
        #expect(choice.ineligible[n("never")] == .noFailover)
        #expect(choice.ineligible[n("far")] == .lagOverLimit(bytes: 2_000_090, limit: 1 << 20))
    }

    @Test func synchronousModeOnlyPromotesTheSynchronousStandby() {
        for mode in [SynchronousMode.on, .strict] {
            let choice = choose([c("a", 900), c("s", 100)], mode: mode, sync: "s", primary: 10_000_000)
            #expect(choice.ranked == [n("s")], "lag does not matter: the sync standby has every acknowledged commit")
            #expect(choice.ineligible[n("a")] == .notSynchronousStandby)
            let none = choose([c("a", 900)], mode: mode, sync: nil)
            #expect(none.best == nil && none.noCandidateReason?.contains("not the synchronous standby") == true)
            let behind = choose([c("s", 100)], mode: mode, sync: "s", syncPosition: 500)
            #expect(behind.ineligible[n("s")] == .behindSynchronousPosition(position: LSN(100), recorded: LSN(500)), "it must report what it had when recorded")
            #expect(choose([c("s", 500)], mode: mode, sync: "s", syncPosition: 500).best == n("s"))
        }
    }

    @Test func candidatesAreBuiltFromOneSnapshotAndTheObserversFreshness() throws {
        let keys = ClusterKeys(cluster: try ClusterName("main"))
        func pair(_ key: String, _ json: String, index: UInt64 = 1, session: String? = nil) -> KVPair {
            KVPair(key: keys.prefix + key, value: Array(json.utf8), session: session, createIndex: 1, modifyIndex: index)
        }
        func registration(_ name: String) -> String {
            #"{"name":"\#(name)","address":"10.0.0.1","port":5432,"role":"standby","upstream":null,"priority":100,"location":"default"}"#
        }
        let snapshot = ClusterSnapshot(
            pairs: [
                pair("leader", "a", session: "s1"), pair("nodes/a", registration("a")), pair("nodes/b", registration("b")),
                pair("nodes/c", registration("c")),
                pair("status/b", #"{"time":99999999999,"role":"standby","position":"0/500","timeline":2,"upstream":null,"streaming":true}"#),
                pair("status/c", #"{"time":1,"role":"standby","position":"0/900","timeline":2,"upstream":null,"streaming":true}"#),
                pair("sync", #"{"standby":"b","leader":"a","position":"0/400"}"#),
            ], keys: keys)
        #expect(snapshot.problems.isEmpty, "\(snapshot.problems)")
        // Freshness is the observer's: a report stamped far in the future by a skewed clock is not fresh
        // when its index stopped moving, and one stamped long ago is fresh when it keeps changing.
        let candidates = FailoverCandidates.candidates(snapshot, fresh: { $0 == n("c") })
        #expect(candidates.map(\.name) == [n("a"), n("b"), n("c")])
        #expect(candidates.map(\.healthy) == [false, false, true], "the leader is never a candidate; only fresh reports count")
        #expect(candidates[1].walPosition == LSN(0x500) && candidates[1].timeline == 2)
        let mine = FailoverCandidates.candidates(
            snapshot, fresh: { _ in false }, me: n("b"), local: .standby(position: LSN(0x600), timeline: 2, upstream: nil, streaming: false))
        #expect(mine[1].healthy && mine[1].walPosition == LSN(0x600), "a monitor judges its own node by what it sees directly")
        let choice = FailoverCandidates.choose(
            mine, synchronousMode: .on, synchronous: snapshot.sync, lastPrimaryPosition: nil, maximumLag: 0)
        #expect(choice.best == n("b"), "the recorded synchronous standby, past its recorded position")
    }

    @Test func noCandidateReasons() {
        #expect(choose([]).noCandidateReason == "no replica is registered")
        #expect(choose([c("a", 1, healthy: false)]).noCandidateReason == "no eligible candidate: a unhealthy or not reporting")
        #expect(choose([c("a", 1)]).noCandidateReason == nil)
    }

    @Test func lowerRanksWaitOneGracePeriodPerRank() {
        let choice = choose([c("a", 300), c("b", 200), c("c", 100)])
        #expect(choice.waitBeforeAcquiring(n("a"), grace: .seconds(3)) == .zero)
        #expect(choice.waitBeforeAcquiring(n("b"), grace: .seconds(3)) == .seconds(3))
        #expect(choice.waitBeforeAcquiring(n("c"), grace: .seconds(3)) == .seconds(6))
        #expect(choice.waitBeforeAcquiring(n("x"), grace: .seconds(3)) == nil)
    }

    @Test(arguments: [("0/3000060", UInt64(0x3000060)), ("16/B374D848", UInt64(0x16_B374_D848)), ("0/0", 0)])
    func lsnParsing(text: String, value: UInt64) throws {
        let lsn = try LSN(parsing: text)
        #expect(lsn.value == value && lsn.description == text)
    }

    @Test(arguments: ["", "0", "0/", "/1", "G/1", "123456789/1", "0/123456789", "0/1/2", " 0/1", "0/1 ", "+1/2", "0/-1", "1//2"])
    func badLSNs(text: String) { #expect(throws: ValidationProblem.self) { try LSN(parsing: text) } }
}

@Suite("cluster config")
struct ClusterConfigTests {
    @Test func defaultsAndRoundTrip() throws {
        let config = ClusterConfig()
        #expect(config.ttl == .seconds(10) && config.synchronousMode == .off)
        #expect(try ClusterConfig(bytes: config.json.serializedBytes(), key: "config") == config)
        #expect(try ClusterConfig(bytes: nil, key: "config") == config)
        var changed = config
        try changed.set("synchronous_mode", "strict")
        try changed.set("ttl", "15s")
        try changed.set("maximum_lag_on_failover", "0")
        #expect(try ClusterConfig(bytes: changed.json.serializedBytes(), key: "config") == changed)
    }

    @Test(arguments: [
        ("ttl", "ten"), ("synchronous_mode", "maybe"), ("maximum_lag_on_failover", "-1"), ("bogus", "1"), ("loop_wait", "1"),
    ])
    func badSettingsAreRefused(name: String, value: String) {
        var config = ClusterConfig()
        #expect(throws: ValidationProblem.self) { try config.set(name, value) }
        #expect(config == ClusterConfig(), "a refused setting changes nothing")
    }

    @Test func unsafeCombinationsAreRefused() throws {
        var config = ClusterConfig()
        try config.set("loop_wait", "5s")
        #expect(throws: ValidationProblem.self) { try config.validate() }
        #expect(throws: ValidationProblem.self) { try ClusterConfig(bytes: Array(#"{"ttl":"10s","loop_wait":"9s"}"#.utf8), key: "config") }
        #expect(throws: ValidationProblem.self) { try ClusterConfig(bytes: Array(#"{"ttl":true}"#.utf8), key: "config") }
        // fence_timeout must leave room for a slow heartbeat: at least twice loop_wait.
        #expect(throws: ValidationProblem.self) { try ClusterConfig(bytes: Array(#"{"fence_timeout":"1500ms"}"#.utf8), key: "config") }
        let tight = try ClusterConfig(bytes: Array(#"{"ttl":"3s","loop_wait":"500ms"}"#.utf8), key: "config")
        #expect(tight.fenceAfter == .milliseconds(2400), "80 % of the TTL caps the default 3 s")
        #expect(tight.takeoverAfter == .milliseconds(2900))
    }
}
