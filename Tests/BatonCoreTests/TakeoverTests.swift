import BatonCore
import ConsulAPI
import Testing

@Suite("switchover and manual failover checks")
struct TakeoverTests {
    let pg1 = try! NodeName("pg1")
    let pg2 = try! NodeName("pg2")
    func registration(_ name: NodeName, _ role: NodeRole) -> NodeRegistration {
        NodeRegistration(name: name, address: try! HostAddress("127.0.0.1"), port: try! TCPPort(5432), role: role, upstream: nil, priority: 100, location: "default")
    }
    func target(healthy: Bool = true, position: UInt64? = 1000, role: NodeRole = .standby) -> TakeoverCheck.Target {
        TakeoverCheck.Target(name: pg2, registered: registration(pg2, role), healthy: healthy, position: position.map(LSN.init))
    }

    @Test func switchoverNeedsAHealthyCaughtUpStandbyAndALeader() {
        #expect(TakeoverCheck.switchover(leader: pg1, leaderPosition: LSN(1000), target: target(), maximumLag: 100) == nil)
        #expect(TakeoverCheck.switchover(leader: nil, leaderPosition: nil, target: target(), maximumLag: 100)?.contains("baton failover") == true)
        #expect(TakeoverCheck.switchover(leader: pg2, leaderPosition: nil, target: target(), maximumLag: 100)?.contains("already") == true)
        #expect(TakeoverCheck.switchover(leader: pg1, leaderPosition: LSN(1000), target: target(healthy: false), maximumLag: 100)?.contains("not healthy") == true)
        #expect(TakeoverCheck.switchover(leader: pg1, leaderPosition: LSN(5000), target: target(), maximumLag: 100)?.contains("behind") == true)
        #expect(TakeoverCheck.switchover(leader: pg1, leaderPosition: LSN(1000), target: target(role: .primary), maximumLag: 100) != nil)
        let unregistered = TakeoverCheck.Target(name: pg2, registered: nil, healthy: true, position: LSN(1))
        #expect(TakeoverCheck.switchover(leader: pg1, leaderPosition: nil, target: unregistered, maximumLag: 100)?.contains("not registered") == true)
    }

    /// Finding 8: no switchover to a node failover never promotes; in synchronous mode, only to the
    /// synchronous standby.
    @Test func switchoverTargetsOnlyANodeFailoverCouldPromote() {
        let pg3 = try! NodeName("pg3")
        let synchronous = FailoverChoice(ranked: [pg3], ineligible: [pg2: .notSynchronousStandby])
        let refusal = TakeoverCheck.switchover(leader: pg1, leaderPosition: LSN(1000), target: target(), maximumLag: 100, synchronousMode: .on, choice: synchronous)
        #expect(refusal?.contains("not the synchronous standby") == true && refusal?.contains("switch over to pg3") == true, "\(refusal ?? "")")
        let nobody = FailoverChoice(ranked: [], ineligible: [pg2: .notSynchronousStandby])
        #expect(TakeoverCheck.switchover(leader: pg1, leaderPosition: LSN(1000), target: target(), maximumLag: 100, synchronousMode: .strict, choice: nobody)?.contains("wait until the primary records") == true)
        #expect(TakeoverCheck.switchover(leader: pg1, leaderPosition: LSN(1000), target: target(), maximumLag: 100, synchronousMode: .on, choice: FailoverChoice(ranked: [pg2], ineligible: [:])) == nil)
        #expect(
            TakeoverCheck.switchover(leader: pg1, leaderPosition: LSN(1000), target: target(), maximumLag: 100, synchronousMode: .off, choice: synchronous) == nil,
            "asynchronous: the lag check alone")
        let noFailover = FailoverChoice(ranked: [], ineligible: [pg2: .noFailover])
        #expect(TakeoverCheck.switchover(leader: pg1, leaderPosition: LSN(1000), target: target(), maximumLag: 100, choice: noFailover)?.contains("no-failover") == true)
    }

    /// Finding 8: a request never makes a node lead that failover could not promote.
    @Test func aRequestNeverBypassesEligibility() {
        let switchover = TakeoverRequest(to: pg2, from: pg1, time: "t")
        func standing(_ r: TakeoverRequest, leader: NodeName?, lost: Bool, sync: Bool, eligible: Bool) -> RequestStanding {
            r.standing(age: .seconds(1), leader: leader, leaderLost: lost, synchronous: sync, targetHealthy: true, targetEligible: eligible)
        }
        #expect(standing(switchover, leader: pg1, lost: false, sync: false, eligible: false) == .standing, "asynchronous, the leader hands over: its own checks")
        #expect(standing(switchover, leader: pg1, lost: true, sync: false, eligible: false) != .standing, "the leader went silent first: a failover")
        #expect(standing(switchover, leader: nil, lost: true, sync: false, eligible: false) != .standing, "the lock went free without a handover")
        var handed = switchover
        handed.handedOver = true
        #expect(standing(handed, leader: nil, lost: true, sync: false, eligible: false) == .standing, "handed over: the leader saw it receive every record")
        #expect(standing(switchover, leader: pg1, lost: false, sync: true, eligible: false) != .standing, "synchronous: only to the synchronous standby")
        #expect(standing(handed, leader: nil, lost: true, sync: true, eligible: false) != .standing)
        #expect(standing(switchover, leader: pg1, lost: false, sync: true, eligible: true) == .standing)
        #expect(standing(switchover, leader: nil, lost: true, sync: true, eligible: true) == .standing)
        let failover = TakeoverRequest(to: pg2, from: nil, time: "t", allowDataLoss: true)
        #expect(standing(failover, leader: nil, lost: true, sync: true, eligible: false) == .standing, "data loss allowed by the operator")
        #expect(try! TakeoverRequest(bytes: handed.json.serializedBytes(), key: "k") == handed)
    }

    /// Found by the simulator (seed 207,052, asynchronous): the switchover handed over to a target whose
    /// monitor was frozen; the old primary led again meanwhile and wrote on, then died; the thawed target
    /// took the free lock by the old handover, 1.6 MB behind. A handover vouches for the history that
    /// ended where it was handed over, no further.
    @Test func aHandoverOutlivedByANewerPrimaryIsAFailover() {
        var handed = TakeoverRequest(to: pg2, from: pg1, time: "t", handedOver: true)
        handed.handedOverAt = LSN(0x340001)
        func standing(lastPrimary: LSN?, eligible: Bool) -> RequestStanding {
            handed.standing(age: .seconds(1), leader: nil, leaderLost: true, targetHealthy: true, targetEligible: eligible, lastPrimaryPosition: lastPrimary)
        }
        #expect(standing(lastPrimary: LSN(0x340000), eligible: false) == .standing, "the old primary's last report is within what was handed over")
        #expect(standing(lastPrimary: LSN(0x4D0000), eligible: false) != .standing, "a primary wrote past it: judged as a failover")
        #expect(standing(lastPrimary: LSN(0x4D0000), eligible: true) == .standing, "…which an eligible target still takes")
        #expect(try! TakeoverRequest(bytes: handed.json.serializedBytes(), key: "k") == handed)
        #expect(throws: ValidationProblem.self) { try TakeoverRequest(bytes: Array(#"{"to":"pg2","handed_over_at":"later"}"#.utf8), key: "k") }
        var earlier = handed
        earlier.handedOverAt = nil
        #expect(
            earlier.standing(age: .seconds(1), leader: nil, leaderLost: true, targetHealthy: true, targetEligible: false, lastPrimaryPosition: LSN(0x4D0000))
                == .standing, "a request from an earlier Baton, without the position, as before")
    }

    @Test func manualFailoverNeedsNoLeaderAndConsentToLoseData() {
        let best = FailoverChoice(ranked: [pg2], ineligible: [:])
        #expect(TakeoverCheck.failover(leader: nil, target: target(), choice: best, allowDataLoss: false) == nil)
        #expect(TakeoverCheck.failover(leader: pg1, target: target(), choice: best, allowDataLoss: true)?.contains("switchover") == true)
        let other = try! NodeName("pg3")
        let behind = FailoverChoice(ranked: [other, pg2], ineligible: [:])
        #expect(TakeoverCheck.failover(leader: nil, target: target(), choice: behind, allowDataLoss: false)?.contains("--allow-data-loss") == true)
        #expect(TakeoverCheck.failover(leader: nil, target: target(), choice: behind, allowDataLoss: true) == nil)
        let lagging = FailoverChoice(ranked: [], ineligible: [pg2: .lagOverLimit(bytes: 5, limit: 1)])
        #expect(TakeoverCheck.failover(leader: nil, target: target(), choice: lagging, allowDataLoss: false)?.contains("--allow-data-loss") == true)
        #expect(TakeoverCheck.failover(leader: nil, target: target(healthy: false), choice: best, allowDataLoss: true)?.contains("not healthy") == true)
    }

    @Test func requestsRoundTripAndRejectHostileNames() throws {
        let request = TakeoverRequest(to: pg2, from: pg1, time: "t")
        #expect(try TakeoverRequest(bytes: request.json.serializedBytes(), key: "k") == request)
        #expect(throws: ValidationProblem.self) { try TakeoverRequest(bytes: Array(#"{"to":"pg2\n"}"#.utf8), key: "k") }
        #expect(throws: ValidationProblem.self) { try TakeoverRequest(bytes: Array("[]".utf8), key: "k") }
    }
}
