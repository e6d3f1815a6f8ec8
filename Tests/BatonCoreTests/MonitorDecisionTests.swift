import BatonCore
import ConsulAPI
import Testing

@Suite("monitor decisions")
struct MonitorDecisionTests {
    static let me = try! NodeName("pg2")
    static let other = try! NodeName("pg1")
    static let third = try! NodeName("pg3")

    func observe(
        _ local: LocalPostgres, leader: LeaderState, unresponsiveFor: GoDuration = .zero, sinceRenewal: GoDuration = .zero,
        silentFor: GoDuration = .zero, requested: NodeName? = nil, from: NodeName? = nil,
        endpoint: String? = "198.18.0.1:5432", candidates: [CandidateState]? = nil, paused: Bool = false,
        primaryReport: PrimaryReport = .down(MonitorDecisionTests.other), guarded: Bool = true,
        config: (inout ClusterConfig) -> Void = { _ in }
    ) -> MonitorObservation {
        var c = ClusterConfig()
        config(&c)
        let defaultCandidates = [
            CandidateState(name: Self.me, failoverPriority: 100, healthy: true, walPosition: LSN(200), timeline: 1),
            CandidateState(name: Self.third, failoverPriority: 100, healthy: true, walPosition: LSN(100), timeline: 1),
        ]
        return MonitorObservation(
            node: Self.me, config: c, local: local, localUnresponsiveFor: unresponsiveFor, leader: leader, sinceLastHeartbeat: sinceRenewal,
            leaderSilentFor: silentFor, leaderEndpoint: endpoint, candidates: candidates ?? defaultCandidates, lastPrimaryPosition: LSN(200),
            synchronous: nil, paused: paused, primaryReport: primaryReport, request: requested.map { TakeoverRequest(to: $0, from: from, time: "t") },
            guarded: guarded)
    }

    let primary = LocalPostgres.primary(position: LSN(500), timeline: 2)
    func standby(upstream: String? = "198.18.0.1:5432") -> LocalPostgres { .standby(position: LSN(200), timeline: 1, upstream: upstream, streaming: true) }

    // MARK: A writable primary

    @Test func aPrimaryHoldingTheLockKeepsLeading() {
        #expect(MonitorDecision.next(observe(primary, leader: .held(by: Self.me, mine: true), sinceRenewal: .seconds(1))) == .keepLeading)
    }

    @Test func aPrimaryWithoutTheLockIsFenced() {
        guard case .fence = MonitorDecision.next(observe(primary, leader: .held(by: Self.other, mine: false))) else {
            Issue.record("a writable primary must stop when another node holds the lock")
            return
        }
    }

    @Test func aPrimaryWhoseHeartbeatStopsFencesAtFenceTimeoutAndBeforeTheSessionCanLapse() {
        // fence_timeout 3 s (default): fence from 3 s after the last heartbeat, whether Consul answers or not.
        for leader in [LeaderState.unknown, .held(by: Self.me, mine: true)] {
            guard case .fence = MonitorDecision.next(observe(primary, leader: leader, sinceRenewal: .seconds(3))) else {
                Issue.record("\(leader): must fence at fence_timeout")
                continue
            }
        }
        guard case .wait = MonitorDecision.next(observe(primary, leader: .unknown, sinceRenewal: .milliseconds(2900))) else {
            Issue.record("a short Consul outage must not fence at once")
            return
        }
        // A long fence_timeout is capped at 80 % of the TTL: 8 s with ttl 10 s.
        let long: (inout ClusterConfig) -> Void = { $0.fenceTimeout = .seconds(60) }
        #expect(MonitorDecision.next(observe(primary, leader: .held(by: Self.me, mine: true), sinceRenewal: .milliseconds(7900), config: long)) == .keepLeading)
        guard case .fence = MonitorDecision.next(observe(primary, leader: .held(by: Self.me, mine: true), sinceRenewal: .seconds(8), config: long)) else {
            Issue.record("fence_timeout beyond 80 % of the TTL must not let the session lapse first")
            return
        }
    }

    // MARK: A silent leader (a dead node, or one cut off from Consul)

    @Test func theBestCandidateTakesOverASilentLeaderOnlyAfterItsWatchdogFenced() {
        let held = LeaderState.held(by: Self.other, mine: false)
        // fence_timeout 3 s + 500 ms margin.
        #expect(MonitorDecision.next(observe(standby(), leader: held, silentFor: .milliseconds(3499))) == .wait(reason: "following pg1"))
        guard case .takeOver(let from, _) = MonitorDecision.next(observe(standby(), leader: held, silentFor: .milliseconds(3500))) else {
            Issue.record("the best candidate takes over a leader silent past fence_timeout + margin")
            return
        }
        #expect(from == Self.other)
        // The next best waits out the grace period on top, the ineligible never act, a request decides.
        let behind = [
            CandidateState(name: Self.me, failoverPriority: 100, healthy: true, walPosition: LSN(100), timeline: 1),
            CandidateState(name: Self.third, failoverPriority: 100, healthy: true, walPosition: LSN(200), timeline: 1),
        ]
        guard case .wait = MonitorDecision.next(observe(standby(), leader: held, silentFor: .seconds(5), candidates: behind)) else {
            Issue.record("the second best must wait for the best")
            return
        }
        guard case .takeOver = MonitorDecision.next(observe(standby(), leader: held, silentFor: .milliseconds(6500), candidates: behind)) else {
            Issue.record("the second best acts after failover_grace")
            return
        }
        let noFailover = [CandidateState(name: Self.me, failoverPriority: 0, healthy: true, walPosition: LSN(200), timeline: 1)]
        guard case .wait = MonitorDecision.next(observe(standby(), leader: held, silentFor: .seconds(60), candidates: noFailover)) else {
            Issue.record("a no-failover node never takes over")
            return
        }
        guard case .wait = MonitorDecision.next(observe(standby(), leader: held, silentFor: .seconds(60), requested: Self.third)) else {
            Issue.record("a request naming another node wins")
            return
        }
        guard case .takeOver = MonitorDecision.next(observe(standby(), leader: held, silentFor: .seconds(4), requested: Self.me, candidates: behind)) else {
            Issue.record("a request naming this node acts at once")
            return
        }
        // Down, paused or primary nodes never take over.
        #expect(MonitorDecision.next(observe(.down(standbySignal: true), leader: held, silentFor: .seconds(60))) == .startStandby)
        guard case .wait = MonitorDecision.next(observe(standby(), leader: held, silentFor: .seconds(60), paused: true)) else {
            Issue.record("paused: no takeover")
            return
        }
    }

    @Test func aStandbyFinishesATakeoverItsOwnEarlierSessionStarted() {
        guard case .takeOver(let from, _) = MonitorDecision.next(observe(standby(), leader: .held(by: Self.me, mine: false))) else {
            Issue.record("the lock held under this node's name by another of its sessions: take it with this session")
            return
        }
        #expect(from == Self.me)
    }

    @Test func aPrimaryRetakesAFreeLock() {
        guard case .acquireLeader = MonitorDecision.next(observe(primary, leader: .free(since: .seconds(1)))) else {
            Issue.record("a writable primary takes a free lock")
            return
        }
    }

    // MARK: PostgreSQL not answering, or gone

    @Test func aLeaderReleasesTheLockOnlyOnceNoProcessOfPostgresIsLeft() {
        let held = LeaderState.held(by: Self.me, mine: true)
        guard case .releaseLeader = MonitorDecision.next(observe(.down(standbySignal: false), leader: held)) else {
            Issue.record("nothing of PostgreSQL is left: release at once (the fast failover)")
            return
        }
        // The postmaster lives (crash recovery after a backend died, an I/O stall): recover in place.
        let recovering = LocalPostgres.unresponsive(standbySignal: false, postmaster: true)
        guard case .wait = MonitorDecision.next(observe(recovering, leader: held, unresponsiveFor: .seconds(59))) else {
            Issue.record("within primary_start_timeout (60 s by default) the leader keeps its lock and waits")
            return
        }
        guard case .fence = MonitorDecision.next(observe(recovering, leader: held, unresponsiveFor: .seconds(60))) else {
            Issue.record("past primary_start_timeout it is fenced first (the release comes once nothing is left)")
            return
        }
        // A dead postmaster's leftovers (a backend still committing) are killed before anything else.
        for leader in [held, .held(by: Self.other, mine: false), .free(since: .zero), .unknown] {
            guard case .fence = MonitorDecision.next(observe(.unresponsive(standbySignal: false, postmaster: false), leader: leader)) else {
                Issue.record("\(leader): the leftovers of a dead postmaster are killed")
                continue
            }
        }
    }

    @Test func aStartingPrimaryDirectoryWithoutTheLockIsFenced() {
        let starting = LocalPostgres.unresponsive(standbySignal: false, postmaster: true)
        for leader in [LeaderState.held(by: Self.other, mine: false), .unknown] {
            guard case .fence = MonitorDecision.next(observe(starting, leader: leader)) else {
                Issue.record("\(leader): a primary's data directory coming up without the lock must never become writable")
                continue
            }
        }
        var registered = observe(starting, leader: .free(since: .zero), primaryReport: .none)
        registered.registeredPrimary = true
        guard case .acquireLeader = MonitorDecision.next(registered) else {
            Issue.record("the registered primary coming up takes the free lock")
            return
        }
    }

    @Test func aStandbyThatDoesNotAnswerIsWaitedForNeverRewound() {
        let recovering = LocalPostgres.unresponsive(standbySignal: true, postmaster: true)
        guard case .wait = MonitorDecision.next(observe(recovering, leader: .held(by: Self.other, mine: false), unresponsiveFor: .seconds(20))) else {
            Issue.record("a crash-restarting standby is waited for")
            return
        }
        guard case .fence = MonitorDecision.next(observe(recovering, leader: .held(by: Self.other, mine: false), unresponsiveFor: .seconds(60))) else {
            Issue.record("past primary_start_timeout it is restarted (killed first)")
            return
        }
    }

    @Test func aDownStandbyIsStartedButADownPrimaryNeverStartsWithoutTheLock() {
        #expect(MonitorDecision.next(observe(.down(standbySignal: true), leader: .held(by: Self.other, mine: false))) == .startStandby)
        var refusing = observe(.down(standbySignal: true), leader: .held(by: Self.other, mine: false), primaryReport: .live(Self.other))
        refusing.failedStarts = 2
        #expect(MonitorDecision.next(refusing) == .rejoin(leader: Self.other), "a standby that will not start has diverged: rewind it")
        refusing.primaryReport = .unknown(Self.other)
        #expect(MonitorDecision.next(refusing) == .startStandby, "with the leader's reports gone, keep trying to start")
        refusing.primaryReport = .live(Self.other)
        refusing.leaderSilentFor = .seconds(3)
        #expect(MonitorDecision.next(refusing) == .startStandby, "never rewind against a silent leader")
        #expect(
            MonitorDecision.next(observe(.down(standbySignal: false), leader: .held(by: Self.other, mine: false), primaryReport: .live(Self.other)))
                == .rejoin(leader: Self.other))
        guard case .wait = MonitorDecision.next(observe(.down(standbySignal: false), leader: .held(by: Self.other, mine: false), primaryReport: .down(Self.other))) else {
            Issue.record("never rewind against a leader that is down")
            return
        }
        guard case .wait = MonitorDecision.next(
            observe(.down(standbySignal: false), leader: .held(by: Self.other, mine: false), silentFor: .seconds(3), primaryReport: .live(Self.other)))
        else {
            Issue.record("never rewind against a silent leader")
            return
        }
        for leader in [LeaderState.free(since: .seconds(60)), .unknown] {
            guard case .wait = MonitorDecision.next(observe(.down(standbySignal: false), leader: leader)) else {
                Issue.record("\(leader): a primary data directory must not start")
                continue
            }
        }
    }

    @Test("a primary whose PostgreSQL died and who released the lock leaves it to the replicas for failover_grace, then restarts in place")
    func aReleasedPrimaryGivesTheReplicasFailoverGrace() {
        var released = observe(.down(standbySignal: false), leader: .free(since: .zero), primaryReport: .none)
        released.registeredPrimary = true
        released.releasedFor = .milliseconds(40)
        guard case .wait = MonitorDecision.next(released) else {
            Issue.record("just released: a replica takes over first (the old primary took the lock back within 40 ms: 5 s failovers)")
            return
        }
        released.releasedFor = released.config.failoverGrace
        guard case .acquireLeader = MonitorDecision.next(released) else {
            Issue.record("no replica took over within failover_grace: the old primary restarts in place")
            return
        }
        released.releasedFor = nil
        guard case .acquireLeader = MonitorDecision.next(released) else {
            Issue.record("a monitor that did not release it (a node or cluster restart) takes it at once")
            return
        }
    }

    @Test func theRegisteredPrimaryRestartsOnlyAfterTakingTheLock() {
        var restart = observe(.down(standbySignal: false), leader: .free(since: .zero), primaryReport: .none)
        restart.registeredPrimary = true
        guard case .acquireLeader = MonitorDecision.next(restart) else {
            Issue.record("the registered primary takes the free lock before it starts")
            return
        }
        restart.registeredPrimary = false
        guard case .wait = MonitorDecision.next(restart) else {
            Issue.record("a former primary that is no longer registered as primary must not")
            return
        }
        var other = observe(.down(standbySignal: false), leader: .free(since: .zero), primaryReport: .unknown(Self.other))
        other.registeredPrimary = true
        guard case .wait = MonitorDecision.next(other) else {
            Issue.record("with another registered primary, wait")
            return
        }
        var named = observe(.down(standbySignal: false), leader: .free(since: .zero), requested: Self.third, primaryReport: .none)
        named.registeredPrimary = true
        guard case .wait = MonitorDecision.next(named) else {
            Issue.record("a request names another node (a switchover that released the lock): the old primary does not race it")
            return
        }
        restart.registeredPrimary = true
        restart.guarded = false
        guard case .wait = MonitorDecision.next(restart) else {
            Issue.record("without a watchdog, never lead")
            return
        }
    }

    // MARK: A standby

    @Test func aStandbyFollowsTheLeader() {
        #expect(
            MonitorDecision.next(observe(standby(upstream: "198.18.0.9:5432"), leader: .held(by: Self.other, mine: false)))
                == .follow(leader: Self.other, endpoint: "198.18.0.1:5432"))
        guard case .wait = MonitorDecision.next(observe(standby(), leader: .held(by: Self.other, mine: false))) else {
            Issue.record("already following")
            return
        }
        var stuck = observe(standby(), leader: .held(by: Self.other, mine: false), primaryReport: .live(Self.other))
        stuck.notStreamingFor = .seconds(5)
        #expect(MonitorDecision.next(stuck) == .rejoin(leader: Self.other), "pointed at a live leader but never streaming: diverged")
        var leaderDown = stuck
        leaderDown.primaryReport = .unknown(Self.other)
        guard case .wait = MonitorDecision.next(leaderDown) else {
            Issue.record("a replica whose leader is down must never be rewound or re-cloned")
            return
        }
        stuck.notStreamingFor = .seconds(2)
        guard case .wait = MonitorDecision.next(stuck) else {
            Issue.record("a short reconnect is not a divergence")
            return
        }
        guard case .wait = MonitorDecision.next(observe(standby(), leader: .held(by: Self.other, mine: false), endpoint: nil)) else {
            Issue.record("an unregistered leader is not followed")
            return
        }
    }

    @Test func aStandbyHoldingTheLockPromotes() {
        #expect(MonitorDecision.next(observe(standby(), leader: .held(by: Self.me, mine: true))) == .promote)
    }

    @Test func onlyTheBestCandidateTakesAFreeLockAtOnce() {
        guard case .acquireLeader = MonitorDecision.next(observe(standby(), leader: .free(since: .zero))) else {
            Issue.record("the best candidate acquires at once")
            return
        }
        let behind = [
            CandidateState(name: Self.me, failoverPriority: 100, healthy: true, walPosition: LSN(100), timeline: 1),
            CandidateState(name: Self.third, failoverPriority: 100, healthy: true, walPosition: LSN(200), timeline: 1),
        ]
        guard case .wait = MonitorDecision.next(observe(standby(), leader: .free(since: .seconds(1)), candidates: behind)) else {
            Issue.record("a worse candidate waits")
            return
        }
        guard case .acquireLeader = MonitorDecision.next(observe(standby(), leader: .free(since: .seconds(3)), candidates: behind)) else {
            Issue.record("after the grace period the next best may act")
            return
        }
    }

    @Test func aStandbyNeverTakesTheLockFromALiveOrPossiblyLivePrimary() {
        guard case .wait = MonitorDecision.next(observe(standby(), leader: .free(since: .seconds(60)), primaryReport: .live(Self.other))) else {
            Issue.record("a primary that reports itself writable keeps the baton")
            return
        }
        guard case .wait = MonitorDecision.next(observe(standby(), leader: .free(since: .seconds(9)), primaryReport: .unknown(Self.other))) else {
            Issue.record("a silent primary gets one TTL to take the lock")
            return
        }
        guard case .acquireLeader = MonitorDecision.next(observe(standby(), leader: .free(since: .seconds(10)), primaryReport: .unknown(Self.other))) else {
            Issue.record("after one TTL without lock or report, fail over")
            return
        }
        for report in [PrimaryReport.down(Self.other), .none] {
            guard case .acquireLeader = MonitorDecision.next(observe(standby(), leader: .free(since: .zero), primaryReport: report)) else {
                Issue.record("\(report): a primary that reported itself down is replaced at once")
                continue
            }
        }
    }

    @Test func pausedMonitorsOnlyKeepTheLockAndNeverAllowTwoWriters() {
        #expect(MonitorDecision.next(observe(primary, leader: .held(by: Self.me, mine: true), paused: true)) == .keepLeading)
        for o in [
            observe(primary, leader: .held(by: Self.other, mine: false), paused: true),
            observe(primary, leader: .unknown, sinceRenewal: .seconds(60), paused: true),
            observe(primary, leader: .held(by: Self.me, mine: true), sinceRenewal: .seconds(60), paused: true),
        ] {
            guard case .fence = MonitorDecision.next(o) else {
                Issue.record("even paused, a writable primary that cannot prove the lock stops: \(o.leader)")
                continue
            }
        }
        for o in [
            observe(.down(standbySignal: true), leader: .held(by: Self.other, mine: false), paused: true),
            observe(standby(upstream: "x:1"), leader: .held(by: Self.other, mine: false), paused: true),
            observe(standby(), leader: .held(by: Self.other, mine: false), silentFor: .seconds(60), paused: true),
            observe(.down(standbySignal: false), leader: .held(by: Self.me, mine: true), paused: true),
            observe(.unresponsive(standbySignal: false, postmaster: true), leader: .held(by: Self.me, mine: true), unresponsiveFor: .seconds(600), paused: true),
        ] {
            guard case .wait = MonitorDecision.next(o) else {
                Issue.record("paused: \(o.local) must wait")
                continue
            }
        }
        var manual = observe(standby(), leader: .free(since: .seconds(60)), requested: Self.me, paused: true)
        guard case .acquireLeader = MonitorDecision.next(manual) else {
            Issue.record("paused: a manual failover to this node still happens")
            return
        }
        manual.guarded = false
        guard case .wait = MonitorDecision.next(manual) else {
            Issue.record("not without a watchdog")
            return
        }
    }

    @Test func noPromotionWhilePausedUnknownOrIneligible() {
        for o in [
            observe(standby(), leader: .free(since: .seconds(60)), paused: true), observe(standby(), leader: .unknown),
            observe(standby(), leader: .free(since: .seconds(60)), candidates: [
                CandidateState(name: Self.me, failoverPriority: 0, healthy: true, walPosition: LSN(1), timeline: 1)
            ]),
        ] {
            guard case .wait(let reason) = MonitorDecision.next(o) else {
                Issue.record("expected wait for \(o.leader)")
                continue
            }
            #expect(!reason.isEmpty)
        }
    }

    @Test func aSwitchoverNamesWhoStepsDownAndWhoTakesOver() {
        #expect(MonitorDecision.next(observe(primary, leader: .held(by: Self.me, mine: true), requested: Self.third, from: Self.me)) == .stepDown(to: Self.third))
        #expect(
            MonitorDecision.next(observe(primary, leader: .held(by: Self.me, mine: true), requested: Self.me, from: Self.me)) == .keepLeading,
            "a request naming the leader itself changes nothing")
        #expect(
            MonitorDecision.next(observe(primary, leader: .held(by: Self.me, mine: true), requested: Self.third)) == .keepLeading,
            "a manual failover request never makes a live leader step down")
        let candidates = [
            CandidateState(name: Self.me, failoverPriority: 100, healthy: true, walPosition: LSN(1), timeline: 1),
            CandidateState(name: Self.third, failoverPriority: 100, healthy: true, walPosition: LSN(999), timeline: 1),
        ]
        guard case .acquireLeader = MonitorDecision.next(observe(standby(), leader: .free(since: .zero), requested: Self.me, candidates: candidates)) else {
            Issue.record("the named node takes the lock even if another ranks higher")
            return
        }
        guard case .wait = MonitorDecision.next(observe(standby(), leader: .free(since: .zero), requested: Self.third, candidates: candidates)) else {
            Issue.record("the others stand aside")
            return
        }
    }

    @Test func withoutAWatchdogANodeNeverTakesTheLock() {
        for o in [
            observe(standby(), leader: .free(since: .seconds(60)), guarded: false),
            observe(standby(), leader: .held(by: Self.other, mine: false), silentFor: .seconds(60), guarded: false),
        ] {
            guard case .wait = MonitorDecision.next(o) else {
                Issue.record("unguarded: \(o.leader) must wait")
                continue
            }
        }
        guard case .fence = MonitorDecision.next(observe(primary, leader: .free(since: .zero), guarded: false)) else {
            Issue.record("a writable primary with a free lock and no watchdog stops")
            return
        }
    }

    @Test func aFailsafePromiseHoldsBackEveryTakeover() {
        var promised = observe(standby(), leader: .held(by: Self.other, mine: false), silentFor: .seconds(60))
        promised.failsafeGrantedTo = Self.other
        guard case .wait(let reason) = MonitorDecision.next(promised) else {
            Issue.record("a node that promised the silent leader (cut off from Consul) not to take over keeps its word")
            return
        }
        #expect(reason.contains("failsafe"))
        var free = observe(standby(), leader: .free(since: .seconds(60)))
        free.failsafeGrantedTo = Self.other
        guard case .wait = MonitorDecision.next(free) else {
            Issue.record("not even a free lock")
            return
        }
        // That leader let the lock go itself, its PostgreSQL reported down during its tenure (a
        // postmaster killed): the promise holds nobody off any more.
        free.previousLeader = PreviousLeader(name: Self.other, goneFor: .milliseconds(200), promise: .seconds(3), reportedDown: true)
        guard case .acquireLeader = MonitorDecision.next(free) else {
            Issue.record("a promise to a leader that released the lock, its PostgreSQL down, holds nobody off")
            return
        }
        free.previousLeader?.reportedDown = false
        guard case .wait = MonitorDecision.next(free) else {
            Issue.record("a lock that went free without a report (a session invalidated) is not let go")
            return
        }
        free.previousLeader = nil
        free.failsafeGrantedTo = nil
        guard case .acquireLeader = MonitorDecision.next(free) else {
            Issue.record("once the promise ran out, failover as usual")
            return
        }
    }

    @Test func everyActionDescribesItself() {
        let actions: [MonitorAction] = [
            .keepLeading, .stepDown(to: Self.other), .acquireLeader(reason: "r"), .takeOver(from: Self.other, reason: "r"), .promote, .releaseLeader(reason: "r"), .fence(reason: "r"),
            .follow(leader: Self.other, endpoint: "e"), .startStandby, .rejoin(leader: Self.other), .wait(reason: "r"),
        ]
        #expect(Set(actions.map(\.description)).count == actions.count)
    }
}

@Suite("member status reports")
struct MemberStatusTests {
    @Test func roundTrips() throws {
        for local in [
            LocalPostgres.down(standbySignal: true), .unresponsive(standbySignal: false, postmaster: true), .primary(position: LSN(0x3000060), timeline: 2),
            .standby(position: LSN(42), timeline: 3, upstream: "10.0.0.1:5432", streaming: true),
        ] {
            var status = MemberStatus(local: local, decision: "wait: x", time: 1000.5)
            #expect(MemberStatus(bytes: status.json.serializedBytes()) == status)
            status.time = 5
            #expect(MemberStatus(bytes: status.json.serializedBytes())?.role == status.role)
        }
        #expect(MemberStatus.freshness(loopWait: .seconds(1)) == .seconds(4))
        for bad in ["", "[]", #"{"role":"leader","time":1}"#, #"{"role":"down"}"#] {
            #expect(MemberStatus(bytes: Array(bad.utf8)) == nil)
        }
    }

    @Test("a report is written when it says something new, else every other loop — always within the freshness window")
    func writtenWhenDue() {
        let standby = LocalPostgres.standby(position: LSN(42), timeline: 3, upstream: "10.0.0.1:5432", streaming: true)
        let last = MemberStatus(local: standby, decision: "follow pg1", time: 1000)
        for loop in [GoDuration.milliseconds(100), .seconds(1), .seconds(5)] {
            let loopWait = loop.swiftDuration
            var resting = last
            resting.time = 1001
            #expect(resting.due(after: nil, writtenAgo: nil, loopWait: loop), "the first report")
            #expect(!resting.due(after: last, writtenAgo: loopWait, loopWait: loop), "nothing new a loop later: skipped")
            #expect(resting.due(after: last, writtenAgo: loopWait * 2, loopWait: loop), "the other loop")
            #expect(resting.due(after: last, writtenAgo: loopWait * 3 / 2, loopWait: loop))
            // Loops run every loop_wait; the second after a write is due even if it ran a little early,
            // and the index then moves well within the window readers allow.
            #expect(resting.due(after: last, writtenAgo: loopWait * 2 - loopWait / 4, loopWait: loop))
            #expect(loopWait * 2 + loopWait < MemberStatus.freshness(loopWait: loop), "a late loop still within freshness")
            var moved = resting
            moved.position = LSN(43)
            var decided = resting
            decided.decision = "wait: the leader is silent"
            var stopped = resting
            stopped.role = "down"
            var pending = resting
            pending.pendingRestart = ["shared_buffers"]
            for changed in [moved, decided, stopped, pending] {
                #expect(changed.due(after: last, writtenAgo: .milliseconds(1), loopWait: loop), "\(changed.json)")
            }
        }
    }
}
