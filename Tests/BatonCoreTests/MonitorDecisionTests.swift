import BatonCore
import ConsulAPI
import Testing

@Suite("monitor decisions")
struct MonitorDecisionTests {
    static let me = try! NodeName("pg2")
    static let other = try! NodeName("pg1")
    static let third = try! NodeName("pg3")

    func observe(
        _ local: LocalPostgres, leader: LeaderState, downFor: GoDuration = .zero, sinceRenewal: GoDuration = .zero,
        silentFor: GoDuration = .zero, requested: NodeName? = nil,
        endpoint: String? = "198.18.0.1:5432", candidates: [CandidateState]? = nil, paused: Bool = false,
        primaryReport: PrimaryReport = .down(MonitorDecisionTests.other),
        config: (inout ClusterConfig) -> Void = { _ in }
    ) -> MonitorObservation {
        var c = ClusterConfig()
        config(&c)
        let defaultCandidates = [
            CandidateState(name: Self.me, failoverPriority: 100, healthy: true, walPosition: LSN(200), timeline: 1),
            CandidateState(name: Self.third, failoverPriority: 100, healthy: true, walPosition: LSN(100), timeline: 1),
        ]
        return MonitorObservation(
            node: Self.me, config: c, local: local, localDownFor: downFor, leader: leader, sinceLastHeartbeat: sinceRenewal,
            leaderSilentFor: silentFor, leaderEndpoint: endpoint, candidates: candidates ?? defaultCandidates, lastPrimaryPosition: LSN(200), synchronousStandby: nil,
            paused: paused, primaryReport: primaryReport, requestedLeader: requested)
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

    // MARK: PostgreSQL down

    @Test func aLeaderWhosePostgresFailedReleasesTheLock() {
        guard case .releaseLeader = MonitorDecision.next(observe(.down(standbySignal: false), leader: .held(by: Self.me, mine: true))) else {
            Issue.record("primary_start_timeout 0: release at once")
            return
        }
        let patient = observe(.down(standbySignal: false), leader: .held(by: Self.me, mine: true), downFor: .seconds(5)) { $0.primaryStartTimeout = .seconds(30) }
        guard case .wait = MonitorDecision.next(patient) else {
            Issue.record("within primary_start_timeout: keep the lock")
            return
        }
    }

    @Test func aDownStandbyIsStartedButADownPrimaryNeverStartsWithoutTheLock() {
        #expect(MonitorDecision.next(observe(.down(standbySignal: true), leader: .held(by: Self.other, mine: false))) == .startStandby)
        var refusing = observe(.down(standbySignal: true), leader: .held(by: Self.other, mine: false), primaryReport: .live(Self.other))
        refusing.failedStarts = 2
        #expect(MonitorDecision.next(refusing) == .rejoin(leader: Self.other), "a standby that will not start has diverged: rewind it")
        refusing.primaryReport = .unknown(Self.other)
        #expect(MonitorDecision.next(refusing) == .startStandby, "with the leader silent, keep trying to start")
        #expect(
            MonitorDecision.next(observe(.down(standbySignal: false), leader: .held(by: Self.other, mine: false), primaryReport: .live(Self.other)))
                == .rejoin(leader: Self.other))
        guard case .wait = MonitorDecision.next(observe(.down(standbySignal: false), leader: .held(by: Self.other, mine: false), primaryReport: .down(Self.other))) else {
            Issue.record("never rewind against a leader that is down")
            return
        }
        for leader in [LeaderState.free(since: .seconds(60)), .unknown] {
            guard case .wait = MonitorDecision.next(observe(.down(standbySignal: false), leader: leader)) else {
                Issue.record("\(leader): a primary data directory must not start")
                continue
            }
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
        guard case .fence = MonitorDecision.next(observe(primary, leader: .held(by: Self.other, mine: false), paused: true)) else {
            Issue.record("even paused, a writable primary without the lock stops")
            return
        }
        for o in [
            observe(primary, leader: .unknown, sinceRenewal: .seconds(60), paused: true),
            observe(.down(standbySignal: true), leader: .held(by: Self.other, mine: false), paused: true),
            observe(standby(upstream: "x:1"), leader: .held(by: Self.other, mine: false), paused: true),
            observe(.down(standbySignal: false), leader: .held(by: Self.me, mine: true), paused: true),
        ] {
            guard case .wait = MonitorDecision.next(o) else {
                Issue.record("paused: \(o.local) must wait")
                continue
            }
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
        var leading = observe(primary, leader: .held(by: Self.me, mine: true))
        leading.requestedLeader = Self.third
        #expect(MonitorDecision.next(leading) == .stepDown(to: Self.third))
        leading.requestedLeader = Self.me
        #expect(MonitorDecision.next(leading) == .keepLeading, "a request naming the leader itself changes nothing")

        var target = observe(standby(), leader: .free(since: .zero), candidates: [
            CandidateState(name: Self.me, failoverPriority: 100, healthy: true, walPosition: LSN(1), timeline: 1),
            CandidateState(name: Self.third, failoverPriority: 100, healthy: true, walPosition: LSN(999), timeline: 1),
        ])
        target.requestedLeader = Self.me
        guard case .acquireLeader = MonitorDecision.next(target) else {
            Issue.record("the named node takes the lock even if another ranks higher")
            return
        }
        target.requestedLeader = Self.third
        guard case .wait = MonitorDecision.next(target) else {
            Issue.record("the others stand aside")
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
    @Test func roundTripsAndAges() throws {
        for local in [
            LocalPostgres.down(standbySignal: true), .primary(position: LSN(0x3000060), timeline: 2),
            .standby(position: LSN(42), timeline: 3, upstream: "10.0.0.1:5432", streaming: true),
        ] {
            let status = MemberStatus(local: local, decision: "wait: x", time: 1000.5)
            #expect(MemberStatus(bytes: status.json.serializedBytes()) == status)
        }
        let status = MemberStatus(local: .down(standbySignal: false), decision: "d", time: 1000)
        #expect(status.isFresh(now: 1003.9, loopWait: .seconds(1)))
        #expect(!status.isFresh(now: 1004.1, loopWait: .seconds(1)))
        for bad in ["", "[]", #"{"role":"leader","time":1}"#, #"{"role":"down"}"#] {
            #expect(MemberStatus(bytes: Array(bad.utf8)) == nil)
        }
    }
}
