import BatonCore
import ConsulAPI
import Testing

/// The rules issue 23 added, as tables: the fencing promise in the leader key, the primary's last
/// position surviving its crash, a configuration that cannot be fully read, a lock freed under a live
/// leader, and a leader key that came back with a restore of Consul.
@Suite("safety rules")
struct SafetyRulesTests {
    static let me = try! NodeName("pg2")
    static let other = try! NodeName("pg1")
    static let third = try! NodeName("pg3")

    func observe(
        _ local: LocalPostgres, leader: LeaderState, silentFor: GoDuration = .zero, promise: GoDuration? = nil,
        previous: PreviousLeader? = nil, primaryReport: PrimaryReport = .down(SafetyRulesTests.other), restored: Bool = false,
        claimedTimeline: Int? = nil, lastPrimaryPosition: LSN? = LSN(200), request: TakeoverRequest? = nil, consulRestoredFor: GoDuration? = nil,
        config: (inout ClusterConfig) -> Void = { _ in }
    ) -> MonitorObservation {
        var c = ClusterConfig()
        config(&c)
        return MonitorObservation(
            node: Self.me, config: c, local: local, leader: leader, leaderSilentFor: silentFor, leaderEndpoint: "198.18.0.1:5432",
            candidates: [
                CandidateState(name: Self.me, failoverPriority: 100, healthy: true, walPosition: LSN(200), timeline: 1),
                CandidateState(name: Self.third, failoverPriority: 100, healthy: true, walPosition: LSN(100), timeline: 1),
            ], lastPrimaryPosition: lastPrimaryPosition, synchronous: nil, paused: false, primaryReport: primaryReport, request: request,
            leaderPromise: promise, claimedTimeline: claimedTimeline, previousLeader: previous, leaderKeyRestored: restored,
            consulRestoredFor: consulRestoredFor)
    }

    let standby = LocalPostgres.standby(position: LSN(200), timeline: 1, upstream: "198.18.0.1:5432", streaming: true)

    // MARK: The fencing promise (finding 2)

    @Test("leader flags carry the beat count and the fencing promise; an earlier Baton's count is no promise")
    func leaderFlags() {
        let raw = LeaderFlags(beats: 41, promise: .seconds(8)).raw
        #expect(LeaderFlags(raw: raw) == LeaderFlags(beats: 41, promise: .seconds(8)))
        #expect(LeaderFlags(raw: LeaderFlags.nextBeat(after: raw, promise: .seconds(2))) == LeaderFlags(beats: 42, promise: .seconds(2)))
        #expect(LeaderFlags(raw: 41) == LeaderFlags(beats: 41, promise: nil), "flags an earlier Baton wrote")
        #expect(LeaderFlags(raw: LeaderFlags(beats: .max, promise: .seconds(3)).raw).beats == .max)
        #expect(LeaderFlags(raw: LeaderFlags.nextBeat(after: LeaderFlags(beats: .max, promise: nil).raw, promise: .seconds(3))).beats == 0, "wraps")
        // A promise is never read shorter than it was made.
        #expect(LeaderFlags(raw: LeaderFlags(beats: 0, promise: GoDuration(nanoseconds: 2_500_000_001)).raw).promise == .milliseconds(2501))
    }

    @Test(
        "a silent leader is taken over after the longer of its promise and this node's fence, plus the margin",
        arguments: [
            // (this node's fence_timeout, the leader's promise, silent for, takes over)
            (3, nil, 3400, false), (3, nil, 3500, true),
            (2, 8, 3000, false), (2, 8, 8400, false), (2, 8, 8500, true),  // lowered here, the leader armed 8 s
            (8, 2, 3000, false), (8, 2, 8500, true),  // a shorter promise never shortens this node's own fence
        ] as [(Int, Int?, Int, Bool)])
    func takeoverAfterThePromise(fence: Int, promise: Int?, silentMilliseconds: Int, takesOver: Bool) {
        let o = observe(
            standby, leader: .held(by: Self.other, mine: false), silentFor: .milliseconds(Int64(silentMilliseconds)),
            promise: promise.map { .seconds(Int64($0)) }, primaryReport: .live(Self.other), config: { $0.fenceTimeout = .seconds(Int64(fence)) })
        let action = MonitorDecision.next(o)
        if case .takeOver = action { #expect(takesOver, "\(action)") } else { #expect(!takesOver, "\(action)") }
    }

    @Test(
        "a member's own promise times the takeover only when made to that leader with the key at the index it reads now, or later",
        arguments: [
            // (promised to, the key index the promise names, the key's index read now, decides by the promise)
            ("pg1", 42, 42, true), ("pg1", 43, 42, true),  // a write this node has not seen yet: its check-and-set would fail
            ("pg1", 41, 42, false),  // a write since the promise: the key's promise decides
            ("pg1", nil, 42, false),  // a leader from before rounds named no index
            ("pg3", 42, 42, false),  // promised another leader
        ] as [(String, UInt64?, UInt64, Bool)])
    func promisesTimeTheTakeover(promisedTo: String, covered: UInt64?, index: UInt64, byPromise: Bool) throws {
        let config = ClusterConfig()
        let grant = LeaseGrant.Seen(
            leader: try NodeName(promisedTo), age: .milliseconds(300), left: .milliseconds(1400), period: .milliseconds(1700), keyIndex: covered)
        let silence = MonitorState.leaderSilence(
            holder: try NodeName("pg1"), index: index, quiet: .seconds(2), promise: config.roundsKeyPromise, grant: grant, config: config)
        if byPromise {
            #expect(silence == (.milliseconds(300), .milliseconds(1700)))
        } else {
            #expect(silence == (.seconds(2), config.roundsKeyPromise.swiftDuration + ClusterConfig.fenceMargin.swiftDuration))
        }
    }

    // MARK: The primary's last position (finding 1)

    @Test("a down report keeps the primary's last position, and the newest timeline's counts")
    func lastPrimaryPosition() throws {
        var down = MemberStatus(local: .down(standbySignal: false), decision: "release", time: 1)
        down.lastPrimary = PrimaryPosition(position: LSN(5000), timeline: 3)
        let parsed = try #require(MemberStatus(bytes: down.json.serializedBytes()))
        #expect(parsed.lastPrimary == PrimaryPosition(position: LSN(5000), timeline: 3))
        // A standby's report never carries one.
        var standby = MemberStatus(local: self.standby, decision: "", time: 1)
        standby.lastPrimary = PrimaryPosition(position: LSN(9), timeline: 1)
        #expect(MemberStatus(bytes: standby.json.serializedBytes())?.lastPrimary == nil)

        let keys = ClusterKeys(cluster: try ClusterName("c"))
        func snapshot(_ reports: [(String, MemberStatus)]) -> ClusterSnapshot {
            ClusterSnapshot(pairs: reports.map { KVPair(key: keys.status(try! NodeName($0.0)), value: $0.1.json.serializedBytes(), modifyIndex: 1) }, keys: keys)
        }
        #expect(snapshot([("pg1", down)]).lastPrimaryPosition == LSN(5000), "the crashed primary's position")
        let newer = MemberStatus(local: .primary(position: LSN(4000), timeline: 4), decision: "", time: 1)
        #expect(snapshot([("pg1", down), ("pg2", newer)]).lastPrimaryPosition == LSN(4000), "a newer timeline's primary wins")
        #expect(snapshot([("pg1", MemberStatus(local: .down(standbySignal: false), decision: "", time: 1))]).lastPrimaryPosition == nil)
    }

    @Test("a local PostgreSQL that just stopped answering is looked at again within 100 ms for 2 s, then every loop_wait")
    func unresponsiveLookedAtSoon() {
        let start = ContinuousClock.now
        let config = ClusterConfig()
        var memory = MonitorState()
        #expect(memory.nextInterval(config: config, at: start) == config.loopWait.swiftDuration, "answering: every loop_wait")
        memory.noteLocal(.unresponsive(standbySignal: false, postmaster: true), at: start)
        for (after, expected) in [(0, 100), (500, 100), (1999, 100), (2000, 1000), (30_000, 1000)] {
            #expect(memory.nextInterval(config: config, at: start + .milliseconds(after)) == .milliseconds(expected), "\(after) ms after it stopped answering")
        }
        memory.noteLocal(.down(standbySignal: false), at: start + .milliseconds(300))
        #expect(memory.nextInterval(config: config, at: start + .milliseconds(300)) == config.loopWait.swiftDuration, "down is not unresponsive")
    }

    @Test("the monitor remembers the primary's position through a crash and a restart of its own")
    func monitorRemembersThePrimary() throws {
        let start = ContinuousClock.now
        var memory = MonitorState()
        _ = memory.report(.primary(position: LSN(7000), timeline: 2), decision: "", time: 0)
        #expect(memory.report(.down(standbySignal: false), decision: "", time: 0).lastPrimary == PrimaryPosition(position: LSN(7000), timeline: 2))
        memory.noteLocal(standby, at: start)
        #expect(memory.report(.down(standbySignal: true), decision: "", time: 0).lastPrimary == nil, "a standby forgets it")

        // A restarted monitor reads its predecessor's report first.
        let keys = ClusterKeys(cluster: try ClusterName("c"))
        var down = MemberStatus(local: .down(standbySignal: false), decision: "", time: 1)
        down.lastPrimary = PrimaryPosition(position: LSN(7000), timeline: 2)
        let snapshot = ClusterSnapshot(pairs: [KVPair(key: keys.status(Self.me), value: down.json.serializedBytes(), modifyIndex: 3)], keys: keys)
        var restarted = MonitorState()
        restarted.recall(snapshot, node: Self.me)
        #expect(restarted.report(.down(standbySignal: false), decision: "", time: 0).lastPrimary == PrimaryPosition(position: LSN(7000), timeline: 2))
    }

    // MARK: A configuration that cannot be fully read (finding 3)

    @Test("unknown settings are kept aside, never applied, written back; a bad known value fails the whole")
    func configurationReadLeniently() throws {
        let bytes = Array(#"{"synchronous_mode":"on","a_newer_setting":"x","ttl":"20s"}"#.utf8)
        let config = try ClusterConfig(bytes: bytes, key: "config")
        #expect(config.synchronousMode == .on && config.ttl == .seconds(20))
        #expect(config.unknownSettings.map(\.name) == ["a_newer_setting"])
        #expect(try ClusterConfig(bytes: config.json.serializedBytes(), key: "config") == config, "kept when written back")
        #expect(throws: ValidationProblem.self) { try ClusterConfig(bytes: Array(#"{"synchronous_mode":"maybe"}"#.utf8), key: "config") }
        var set = ClusterConfig()
        #expect(throws: ValidationProblem.self) { try set.set("a_newer_setting", "x") }
        try set.set("vip_policy", "priority")
        #expect(set.vipPolicy == .priority)
        #expect(throws: ValidationProblem.self) { try set.set("vip_policy", "fastest") }
        #expect(set.vipPolicy == .priority, "a refused value changes nothing")
        #expect(try ClusterConfig(bytes: Array(#"{"vip_policy":"priority"}"#.utf8), key: "config").vipPolicy == .priority)
        #expect(ClusterConfig().vipPolicy == .primary, "the VIP follows the primary unless told otherwise")
    }

    @Test("a monitor runs on the last configuration it read when the key turns unreadable, never on defaults")
    func lastGoodConfiguration() throws {
        let keys = ClusterKeys(cluster: try ClusterName("c"))
        func snapshot(_ text: String) -> ClusterSnapshot {
            ClusterSnapshot(pairs: [KVPair(key: keys.config, value: Array(text.utf8), modifyIndex: 1)], keys: keys)
        }
        var memory = MonitorState()
        #expect(memory.configuration(from: snapshot(#"{"synchronous_mode":"maybe"}"#), current: ClusterConfig()) == nil, "none read yet: none to run on")
        let first = memory.configuration(from: snapshot(#"{"synchronous_mode":"on","later":1}"#), current: ClusterConfig())
        let good = try #require(first)
        #expect(good.synchronousMode == .on)
        let unknown = snapshot(#"{"synchronous_mode":"on","later":1}"#)
        #expect(unknown.problems.contains { $0.contains("later") }, "shown in status: \(unknown.problems)")
        #expect(memory.configuration(from: snapshot(#"{"synchronous_mode":"maybe"}"#), current: good) == good)
    }

    // MARK: A lock freed under a live leader (an agent restart)

    @Test(
        "a lock freed without the leader's PostgreSQL reported down is not taken before its fence ran out",
        arguments: [(nil, false), (1000, false), (3400, false), (3500, true)] as [(Int?, Bool)])
    func freedLock(goneMilliseconds: Int?, acquires: Bool) {
        let previous = goneMilliseconds.map {
            PreviousLeader(name: Self.other, goneFor: .milliseconds(Int64($0)), promise: .seconds(3), reportedDown: false)
        }
        let action = MonitorDecision.next(observe(standby, leader: .free(since: .seconds(5)), previous: previous))
        if case .acquireLeader = action { #expect(acquires || goneMilliseconds == nil, "\(action)") } else { #expect(!acquires && goneMilliseconds != nil, "\(action)") }
    }

    /// Found by the simulator (`switchover-then-death` with `agent-restart`, seed 120): a request naming
    /// this node made it take a lock freed under a live leader at once — two writable primaries until
    /// that leader's fence. `baton failover --to` typed while an agent restart has freed the lock does
    /// the same. Only the leader that handed the lock over lets its target skip its fence.
    @Test("a request does not let its target take a lock freed under a live leader before that leader's fence, unless that leader handed it over")
    func requestWaitsOutTheFence() {
        let previous = PreviousLeader(name: Self.other, goneFor: .milliseconds(1000), promise: .seconds(3), reportedDown: false)
        for request in [TakeoverRequest(to: Self.me, from: nil, time: "t"), TakeoverRequest(to: Self.me, from: Self.third, time: "t", handedOver: true)] {
            let action = MonitorDecision.next(observe(standby, leader: .free(since: .seconds(1)), previous: previous, request: request))
            guard case .wait = action else {
                Issue.record("\(String(decoding: request.json.serializedBytes(), as: UTF8.self)): \(action)")
                continue
            }
        }
        let handedOver = TakeoverRequest(to: Self.me, from: Self.other, time: "t", handedOver: true)
        guard case .acquireLeader = MonitorDecision.next(observe(standby, leader: .free(since: .seconds(1)), previous: previous, request: handedOver)) else {
            Issue.record("the leader that handed over vouches for its own fence")
            return
        }
    }

    @Test("a free lock is not taken while another node's PostgreSQL answers it is a writable primary — through its API or, its monitor not running, by itself")
    func freeLockWithAnUnmonitoredPrimary() throws {
        // pg1 bootstrapped, its monitor never started: no report, the lock free past the TTL.
        var o = observe(standby, leader: .free(since: .seconds(15)), primaryReport: .unknown(Self.other))
        let acquire = MonitorDecision.next(o)
        #expect(acquire.acquiresFreeLock && acquire.takesLock, "\(acquire)")
        #expect(!MonitorAction.takeOver(from: Self.other, reason: "").acquiresFreeLock)
        // Its API answers nothing; its PostgreSQL, asked directly, says it is a writable primary.
        o.peerRunsPrimary = LivePosition.primary(among: [:], writablePostgres: [Self.other])
        #expect(MonitorDecision.next(o) == .wait(reason: "pg1 answers that it runs a writable primary; not taking the lock while it does"))
        // What the API answered wins for a node that answered; a node's PostgreSQL counts only when its API did not.
        let standbyAnswer = LivePosition(standby: true, position: LSN(100), timeline: 1)
        let primaryAnswer = LivePosition(standby: false, position: LSN(300), timeline: 1, primary: true)
        #expect(LivePosition.primary(among: [Self.other: standbyAnswer], writablePostgres: [Self.other]) == nil)
        #expect(LivePosition.primary(among: [Self.third: primaryAnswer], writablePostgres: [Self.other]) == Self.other, "by name, the first")
        #expect(LivePosition.primary(among: [Self.third: standbyAnswer], writablePostgres: []) == nil)
    }

    /// A leader whose monitor and watchdog were killed together runs a writable primary nobody fences:
    /// before taking over, a candidate asks that PostgreSQL, a quarter-second before the deadline (past
    /// the leader's fence), and a writable answer holds the takeover off.
    @Test("a silent leader's PostgreSQL is asked a quarter-second before the takeover deadline, once it falls before the next loop; a writable answer holds the takeover off")
    func silentLeaderAskedBeforeTakeover() throws {
        let keys = ClusterKeys(cluster: try ClusterName("c"))
        let start = ContinuousClock.now
        let config = ClusterConfig()  // fence_timeout 3 s: a takeover after 3.5 s of silence
        func memory(holder: String) -> MonitorState {
            var memory = MonitorState()
            let snapshot = ClusterSnapshot(pairs: [KVPair(key: keys.leader, value: Array(holder.utf8), session: "a", modifyIndex: 50)], keys: keys)
            memory.absorb(snapshot, node: Self.me, session: "s", leading: false, firstSeen: { _ in nil }, at: start)
            return memory
        }
        let silent = memory(holder: "pg1")
        // Silent for (ms) → asked after (ms), or not yet / no more.
        let rows: [(Int64, Int64?)] = [(0, nil), (2_000, nil), (2_499, nil), (2_600, 650), (3_000, 250), (3_300, 0), (3_500, nil), (4_000, nil)]
        for (ms, after) in rows {
            let ask = silent.silentLeaderAsk(node: Self.me, config: config, at: start + .milliseconds(ms))
            #expect(ask?.after == after.map { .milliseconds($0) }, "\(ms) ms silent: \(String(describing: ask))")
            if let ask { #expect(ask.holder == Self.other && ask.index == 50) }
        }
        // A lock of an earlier session of this very node is not another's silence.
        #expect(memory(holder: "pg2").silentLeaderAsk(node: Self.me, config: config, at: start + .milliseconds(3_000)) == nil)
        // The takeover, then what the leader's PostgreSQL answered.
        var o = observe(standby, leader: .held(by: Self.other, mine: false), silentFor: .seconds(10))
        let takeover = MonitorDecision.next(o)
        #expect(takeover.takesLock && !takeover.acquiresFreeLock, "\(takeover)")
        o.peerRunsPrimary = LivePosition.primary(among: [:], writablePostgres: [Self.other])
        #expect(MonitorDecision.next(o) == .wait(reason: "pg1 answers that it runs a writable primary; not taking the lock while it does"))
    }

    @Test("a leader that reported its PostgreSQL down is replaced at once; one that is starting is waited for")
    func reportedDownOrStarting() {
        let down = PreviousLeader(name: Self.other, goneFor: .milliseconds(100), promise: .seconds(3), reportedDown: true)
        guard case .acquireLeader = MonitorDecision.next(observe(standby, leader: .free(since: .seconds(5)), previous: down)) else {
            Issue.record("the fast path of a dead postmaster is kept")
            return
        }
        guard case .wait = MonitorDecision.next(observe(standby, leader: .free(since: .seconds(5)), primaryReport: .starting(Self.other))) else {
            Issue.record("a primary whose PostgreSQL runs but does not answer yet may become writable")
            return
        }
    }

    // MARK: A leader key that came back with a restore of Consul (finding 9)

    @Test("a standby never leads on a leader key that came back with a restore, nor on an older timeline claim")
    func restoredLeaderKey() {
        guard case .releaseLeader = MonitorDecision.next(observe(standby, leader: .held(by: Self.me, mine: true), restored: true)) else {
            Issue.record("a restored key naming this node's session")
            return
        }
        guard case .wait = MonitorDecision.next(observe(standby, leader: .held(by: Self.me, mine: false), restored: true)) else {
            Issue.record("a restored key naming an earlier session of this node")
            return
        }
        let newer = LocalPostgres.standby(position: LSN(200), timeline: 3, upstream: "198.18.0.1:5432", streaming: true)
        guard case .releaseLeader = MonitorDecision.next(observe(newer, leader: .held(by: Self.me, mine: true), claimedTimeline: 2)) else {
            Issue.record("Consul's timeline claim is older than this node's timeline")
            return
        }
        #expect(MonitorDecision.next(observe(standby, leader: .held(by: Self.me, mine: true), claimedTimeline: 1)) == .promote, "the usual case")
        guard case .releaseLeader = MonitorDecision.next(observe(standby, leader: .held(by: Self.me, mine: true), lastPrimaryPosition: LSN(5 << 20))) else {
            Issue.record("a held lock does not skip the lag limit")
            return
        }
    }

    @Test("the monitor sees Consul's index go backwards and marks the keys that came back")
    func restoreDetected() throws {
        let keys = ClusterKeys(cluster: try ClusterName("c"))
        let start = ContinuousClock.now
        func read(leaderIndex: UInt64, newest: UInt64) -> ClusterSnapshot {
            ClusterSnapshot(
                pairs: [
                    KVPair(key: keys.leader, value: Array("pg2".utf8), session: "s", modifyIndex: leaderIndex),
                    KVPair(key: keys.status(Self.other), value: MemberStatus(local: standby, decision: "", time: 1).json.serializedBytes(), modifyIndex: newest),
                ], keys: keys)
        }
        var memory = MonitorState()
        func restored(_ s: ClusterSnapshot) -> Bool {
            memory.absorb(s, node: Self.me, session: "s", leading: false, firstSeen: { _ in nil }, at: start)
            return memory.observation(
                node: Self.me, config: ClusterConfig(), local: standby, snapshot: s, session: "s", sinceLastHeartbeat: .zero, guarded: true,
                grant: nil, at: start
            ).leaderKeyRestored
        }
        #expect(!restored(read(leaderIndex: 50, newest: 100)))
        #expect(restored(read(leaderIndex: 40, newest: 60)), "the index went back: the key is from before")
        #expect(!restored(read(leaderIndex: 70, newest: 70)), "written after the restore")
    }

    /// Found by the simulator (`consul-restore` with node deaths and monitor freezes, 19 of 3,000 seeds
    /// on main, first 69): a restore forgot a leader's whole tenure — its takeover and promotion — and a
    /// replica that never saw it took the free lock at once, or a node led on its own lock that came back.
    /// Nobody who noticed Consul going back takes a lock for a fence; a writable primary retaking a free
    /// lock adds no writable node.
    @Test(
        "after Consul went back to an older snapshot, no lock is taken for a fence, but by the writable primary",
        arguments: [(nil, true), (100, false), (3400, false), (3500, true)] as [(Int?, Bool)])
    func noLockRightAfterARestore(restoredMilliseconds: Int?, acquires: Bool) {
        let restored = restoredMilliseconds.map { GoDuration.milliseconds(Int64($0)) }
        let free = MonitorDecision.next(observe(standby, leader: .free(since: .seconds(5)), consulRestoredFor: restored))
        if case .acquireLeader = free { #expect(acquires, "\(free)") } else { #expect(!acquires, "\(free)") }
        let silent = MonitorDecision.next(observe(standby, leader: .held(by: Self.other, mine: false), silentFor: .seconds(10), consulRestoredFor: restored))
        if case .takeOver = silent { #expect(acquires, "\(silent)") } else { #expect(!acquires, "\(silent)") }
        let primary = LocalPostgres.primary(position: LSN(300), timeline: 1)
        let retake = MonitorDecision.next(observe(primary, leader: .free(since: .seconds(1)), primaryReport: .none, consulRestoredFor: restored))
        guard case .acquireLeader = retake else {
            Issue.record("the writable primary retakes a free lock: \(retake)")
            return
        }
    }

    @Test("the monitor notices Consul went back by the claimed timeline, the leader key's index, and its own released lock coming back")
    func restoreNoticedOtherwise() throws {
        let keys = ClusterKeys(cluster: try ClusterName("c"))
        let start = ContinuousClock.now
        func read(leader: (holder: String, session: String, index: UInt64)?, claim: Int?, newest: UInt64) throws -> ClusterSnapshot {
            var pairs = [KVPair(key: keys.status(Self.other), value: MemberStatus(local: standby, decision: "", time: 1).json.serializedBytes(), modifyIndex: newest)]
            if let leader { pairs.append(KVPair(key: keys.leader, value: Array(leader.holder.utf8), session: leader.session, modifyIndex: leader.index)) }
            if let claim { pairs.append(KVPair(key: keys.timeline, value: Array("{\"timeline\":\(claim)}".utf8), modifyIndex: 5)) }
            return ClusterSnapshot(pairs: pairs, keys: keys)
        }
        // The claimed timeline went back (or vanished), the index did not.
        var memory = MonitorState()
        memory.absorb(try read(leader: ("pg1", "a", 50), claim: 3, newest: 100), node: Self.me, session: "s", leading: false, firstSeen: { _ in nil }, at: start)
        #expect(memory.restoreNoticedAt == nil)
        memory.absorb(try read(leader: ("pg1", "a", 120), claim: 2, newest: 130), node: Self.me, session: "s", leading: false, firstSeen: { _ in nil }, at: start)
        #expect(memory.restoreNoticedAt == start, "the claim went from 3 back to 2")
        memory = MonitorState()
        memory.absorb(try read(leader: nil, claim: 2, newest: 100), node: Self.me, session: "s", leading: false, firstSeen: { _ in nil }, at: start)
        memory.absorb(try read(leader: nil, claim: nil, newest: 130), node: Self.me, session: "s", leading: false, firstSeen: { _ in nil }, at: start)
        #expect(memory.restoreNoticedAt == start, "the claim is never deleted: gone, it went back")
        // The leader key's own index went back, Consul's did not.
        memory = MonitorState()
        memory.absorb(try read(leader: ("pg1", "a", 90), claim: nil, newest: 100), node: Self.me, session: "s", leading: false, firstSeen: { _ in nil }, at: start)
        memory.absorb(try read(leader: ("pg1", "a", 80), claim: nil, newest: 130), node: Self.me, session: "s", leading: false, firstSeen: { _ in nil }, at: start)
        #expect(memory.restoreNoticedAt == start, "the leader key's index went back")
        // This node led, let the lock go, and the key names its session again: only a restore does that.
        memory = MonitorState()
        memory.absorb(try read(leader: ("pg2", "s", 90), claim: nil, newest: 100), node: Self.me, session: "s", leading: true, firstSeen: { _ in nil }, at: start)
        memory.absorb(try read(leader: nil, claim: nil, newest: 110), node: Self.me, session: "s", leading: false, firstSeen: { _ in nil }, at: start)
        #expect(memory.restoreNoticedAt == nil, "released")
        memory.absorb(try read(leader: ("pg2", "s", 120), claim: nil, newest: 130), node: Self.me, session: "s", leading: false, firstSeen: { _ in nil }, at: start)
        #expect(memory.restoreNoticedAt == start, "the released lock came back to this session")
        let observed = memory.observation(
            node: Self.me, config: ClusterConfig(), local: standby, snapshot: try read(leader: ("pg2", "s", 120), claim: nil, newest: 130), session: "s",
            sinceLastHeartbeat: .zero, guarded: true, grant: nil, at: start)
        #expect(observed.leaderKeyRestored, "and the key counts as one that came back")
    }

    @Test("after a restore the wait counts the longest fence the monitor ever read, not the configuration the restore brought back")
    func longestFenceAfterARestore() throws {
        let keys = ClusterKeys(cluster: try ClusterName("c"))
        func snapshot(fence: String) -> ClusterSnapshot {
            var config = ClusterConfig()
            config.fenceTimeout = try! GoDuration(parsing: fence)
            return ClusterSnapshot(pairs: [KVPair(key: keys.config, value: config.json.serializedBytes(), modifyIndex: 3)], keys: keys)
        }
        var memory = MonitorState()
        _ = memory.configuration(from: snapshot(fence: "8s"), current: ClusterConfig())
        let read = memory.configuration(from: snapshot(fence: "2s"), current: ClusterConfig())
        let lowered = try #require(read)
        #expect((memory.longestPromise ?? .zero) > lowered.fenceAfter, "8 s read once outlasts the 2 s read now")
        let waited = MonitorDecision.next(
            observe(standby, leader: .free(since: .seconds(5)), consulRestoredFor: .seconds(4)) { $0 = lowered })
        #expect(waited.takesLock, "without the memory: 4 s outlasts the lowered fence")
        var o = observe(standby, leader: .free(since: .seconds(5)), consulRestoredFor: .seconds(4)) { $0 = lowered }
        o.longestPromise = memory.longestPromise
        #expect(!MonitorDecision.next(o).takesLock, "with it: not before the 8 s fence")
    }
}
