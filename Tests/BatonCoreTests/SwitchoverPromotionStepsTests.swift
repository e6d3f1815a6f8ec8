import BatonCore
import ConsulAPI
import Testing

/// A switchover's step-down, a promotion and a rejoin as tables: each case feeds the machine what PostgreSQL,
/// the target and Consul answered and checks the steps it asks for, in order — the steps the live
/// monitor and the simulator both carry out.
@Suite("switchover, promotion and rejoin steps")
struct SwitchoverPromotionStepsTests {
    let me = try! NodeName("pg1")
    let pg2 = try! NodeName("pg2")
    let keys = ClusterKeys(cluster: try! ClusterName("c"))
    let final = LSN(0x300_0000)

    var request: TakeoverRequest { TakeoverRequest(to: pg2, from: me, time: "") }

    func stepDown(index: UInt64? = 42, _ answers: [StepDown.Event]) -> [StepDown.Step] {
        var machine = StepDown(target: pg2, request: request, requestIndex: index)
        return [machine.next(after: .start)] + answers.map { machine.next(after: $0) }
    }

    var handed: TakeoverRequest {
        var handed = request
        handed.handedOver = true
        handed.handedOverAt = final
        return handed
    }

    @Test func aCleanStopThatTheTargetReceivedIsHandedOver() {
        let steps = stepDown([
            .checkpointed, .bouncersAnswered("2 pgbouncer(s) paused"), .stopped(clean: true, checkpoint: final, detail: "fast"),
            .targetReceived(LSN(final.value + 0x28)), .marked(true), .followed,
        ])
        #expect(
            steps == [
                .checkpoint, .pauseBouncers, .stopCleanly, .readTargetPosition(beyond: final), .markHandedOver(handed, index: 42), .followTarget,
                .done(.handedOver(received: LSN(final.value + 0x28), pausing: "2 pgbouncer(s) paused")),
            ])
    }

    @Test func aTargetThatDidNotReceiveTheShutdownCheckpointCallsItOff() {
        // Exactly at the checkpoint's start is not past it: the checkpoint record itself is missing.
        for received in [nil, LSN(final.value - 1), final] {
            let steps = stepDown([.checkpointed, .bouncersAnswered(""), .stopped(clean: true, checkpoint: final, detail: "fast"), .targetReceived(received), .proven(true), .startedAgain])
            #expect(steps.dropFirst(4).first == .proveLock, "received \(String(describing: received))")
            #expect(steps.last == .done(.calledOff(reason: "pg2 did not receive WAL up to \(final) (it has \(received?.description ?? "nothing"))")))
            #expect(!steps.contains { if case .markHandedOver = $0 { return true } else { return false } }, "never handed over")
        }
    }

    @Test func aStopThatWasNotCleanNeverReadsTheTarget() {
        let steps = stepDown([.checkpointed, .bouncersAnswered(""), .stopped(clean: false, checkpoint: final, detail: "immediate"), .proven(true), .startedAgain])
        #expect(steps[3] == .proveLock)
        #expect(steps.last == .done(.calledOff(reason: "PostgreSQL did not shut down cleanly (immediate)")))
    }

    @Test func aRequestThatCannotBeMarkedCallsItOff() {
        let received = LSN(final.value + 1)
        let refused = stepDown([.checkpointed, .bouncersAnswered(""), .stopped(clean: true, checkpoint: final, detail: ""), .targetReceived(received), .marked(false), .proven(true), .startedAgain])
        #expect(refused[5] == .proveLock)
        #expect(refused.last == .done(.calledOff(reason: "the request could not be marked handed over (withdrawn, changed, or Consul did not answer)")))
        let gone = stepDown(index: nil, [.checkpointed, .bouncersAnswered(""), .stopped(clean: true, checkpoint: final, detail: ""), .targetReceived(received), .proven(true), .startedAgain])
        #expect(gone[4] == .proveLock, "no request read: nothing to mark")
        #expect(gone.last == .done(.calledOff(reason: "the request could not be marked handed over (it is gone)")))
    }

    @Test func calledOffWithoutTheLockPostgreSQLStaysStopped() {
        let steps = stepDown([.checkpointed, .bouncersAnswered(""), .stopped(clean: false, checkpoint: nil, detail: "x"), .proven(false)])
        #expect(steps.last == .done(.stoppedUnproven(reason: "PostgreSQL did not shut down cleanly (x)")))
        #expect(!steps.contains(.startAgain))
    }

    // MARK: Promotion

    func promotion(_ mode: SynchronousMode, _ answers: [Promotion.Event]) -> [Promotion.Step] {
        var machine = Promotion(keys: keys, node: me, synchronousMode: mode)
        return [machine.next(after: .start)] + answers.map { machine.next(after: $0) }
    }

    func timelineKey(_ timeline: Int, index: UInt64) -> KVPair {
        KVPair(key: keys.timeline, value: TimelineClaim.record(timeline, node: pg2).serializedBytes(), modifyIndex: index)
    }

    @Test func asynchronousPromotionClaimsProvesThenPromotes() {
        let steps = promotion(.off, [
            .claimRead(localNewest: 3, timelineKey: timelineKey(4, index: 9), syncKey: nil, session: "s1"), .claimCommitted(true), .proven(true), .promoted,
        ])
        let claim = TimelineClaim(localNewest: 3, claimed: 4)
        #expect(
            steps == [
                .readClaim(synchronous: false),
                .commitClaim(claim, operations: PromotionClaim.operations(keys: keys, node: me, session: "s1", timeline: claim.timeline, timelineIndex: 9, synchronous: nil)),
                .proveLock, .promote, .done(.promoted(timeline: 5)),
            ])
    }

    @Test func synchronousPromotionWaitsForAStandbyFirstAndRewritesTheRecord() {
        let record = SyncRecord(standby: me, leader: pg2, position: LSN(16))
        let syncKey = KVPair(key: keys.sync, value: record.json.serializedBytes(), modifyIndex: 11)
        let steps = promotion(.on, [.synchronousRequired, .claimRead(localNewest: 1, timelineKey: nil, syncKey: syncKey, session: "s1")])
        #expect(steps[0] == .requireSynchronousCommits, "synchronous_standby_names before anything can commit")
        #expect(steps[1] == .readClaim(synchronous: true))
        let expected = PromotionClaim.operations(keys: keys, node: me, session: "s1", timeline: 2, timelineIndex: 0, synchronous: (11, record))
        #expect(steps[2] == .commitClaim(TimelineClaim(localNewest: 1, claimed: nil), operations: expected))
    }

    @Test func aClaimThatDoesNotCommitOrALockNotProvenNeverPromotes() {
        let read = Promotion.Event.claimRead(localNewest: 1, timelineKey: nil, syncKey: nil, session: "s1")
        let refused = promotion(.off, [read, .claimCommitted(false)])
        #expect(refused.last == .done(.abandoned("the lock, the timeline or the synchronous standby record changed while this node claimed timeline 2; not promoting now")))
        let unproven = promotion(.off, [read, .claimCommitted(true), .proven(false)])
        #expect(unproven.last == .done(.abandoned("the leader lock could not be proven right before promotion; not promoting")))
        for steps in [refused, unproven] { #expect(!steps.contains(.promote)) }
    }

    @Test func noSessionOrABadTimelineKeyAbandonsBeforeAnyWrite() {
        let noSession = promotion(.off, [.claimRead(localNewest: 1, timelineKey: nil, syncKey: nil, session: nil)])
        #expect(noSession.last == .done(.abandoned("this node has no session; not promoting now")))
        let bad = KVPair(key: keys.timeline, value: Array("tuesday".utf8), modifyIndex: 3)
        let malformed = promotion(.off, [.claimRead(localNewest: 1, timelineKey: bad, syncKey: nil, session: "s1")])
        guard case .done(.abandoned(let why))? = malformed.last else { Issue.record("\(malformed)"); return }
        #expect(why.hasPrefix("the timeline key does not parse"))
    }

    // MARK: Rejoin

    func rejoin(_ answers: [Rejoin.Event]) -> [Rejoin.Step] {
        var machine = Rejoin(leader: pg2)
        return [machine.next(after: .start)] + answers.map { machine.next(after: $0) }
    }

    @Test func aLeaderThatDoesNotAnswerLeavesTheDataDirectoryAlone() {
        let steps = rejoin([.leaderAnswered(failure: "connection refused")])
        #expect(steps == [.checkLeader, .done(.refused("not rejoining pg2: connection refused"))])
    }

    @Test func rewoundWhenPgRewindCanClonedWhenItCannotOrTheDirectoryIsEmpty() {
        #expect(
            rejoin([.leaderAnswered(failure: nil), .stopped(how: "fast", empty: false), .rewound(failure: nil), .following]) == [
                .checkLeader, .stopLocal, .rewind, .follow, .done(.rejoined(how: "rewound with pg_rewind (PostgreSQL was stopped: fast); following pg2")),
            ])
        #expect(
            rejoin([.leaderAnswered(failure: nil), .stopped(how: "fast", empty: false), .rewound(failure: "no common ancestor"), .cloned(movedTo: "/d.moved"), .following])
                == [
                    .checkLeader, .stopLocal, .rewind, .clone, .follow,
                    .done(.rejoined(how: "cloned afresh (pg_rewind failed: no common ancestor; the old directory is /d.moved) (PostgreSQL was stopped: fast); following pg2")),
                ])
        #expect(
            rejoin([.leaderAnswered(failure: nil), .stopped(how: "not running", empty: true), .cloned(movedTo: nil), .following]) == [
                .checkLeader, .stopLocal, .clone, .follow,
                .done(.rejoined(how: "cloned afresh (the data directory is empty; the old directory is nothing (it was empty)) (PostgreSQL was stopped: not running); following pg2")),
            ])
    }
}
