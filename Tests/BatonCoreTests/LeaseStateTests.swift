import BatonCore
import ConsulAPI
import Testing

/// The lease's rules as tables: each case feeds ``LeaseState`` what Consul and the watchdog answered and
/// checks the steps it asks for, in order — the same steps the live `Lease` and the simulator carry out.
@Suite("lease rules")
struct LeaseStateTests {
    let me = try! NodeName("pg1")
    let second: UInt64 = 1_000_000_000
    let now: UInt64 = 100_000_000_000

    func key(_ holder: String, session: String?, index: UInt64 = 7, flags: UInt64 = 0) -> KVPair {
        KVPair(key: "baton/c/leader", value: Array(holder.utf8), flags: flags, session: session, modifyIndex: index)
    }

    /// A lease that leads under session "s1" with its watchdog armed until `now + 3 s`.
    func leading(failsafe: Bool = false, writable: Bool = true) -> LeaseState {
        var lease = LeaseState(node: me)
        lease.config.failsafeMode = failsafe
        lease.setLocal(writablePrimary: writable, vacant: false)
        lease.startLeading(sent: now - second, deadline: now + 2 * second)
        return lease
    }

    /// Drives one heartbeat with `answers` (one per step after the first) and returns the steps asked for.
    func run(_ lease: inout LeaseState, session: String? = "s1", known: KVPair? = nil, mayAskMembers: Bool = true, _ answers: [LeaseState.Event])
        -> (steps: [LeaseState.Step], notices: [LeaseState.Notice])
    {
        var beat = lease.heartbeat(session: session, mayAskMembers: mayAskMembers)
        var steps = [lease.next(&beat, after: .start(known: known), now: now)]
        for answer in answers {
            steps.append(lease.next(&beat, after: answer, now: now))
        }
        return (steps, beat.notices)
    }

    var fence: UInt64 { now + UInt64(ClusterConfig().fenceAfter.nanoseconds) }

    @Test func aBeatReadsWritesAtTheReadIndexThenArms() {
        var lease = leading()
        let (steps, _) = run(&lease, [.keyRead(key("pg1", session: "s1", index: 41, flags: 5)), .written(committed: true), .armed(true)])
        let flags = LeaderFlags.nextBeat(after: 5, promise: ClusterConfig().fenceAfter)
        #expect(steps == [.readKey, .writeKey(index: 41, flags: flags), .arm(deadline: fence), .done(.beat)])
        #expect(lease.leading && lease.deadline == fence && lease.sinceLastBeat(now: now) == .zero)
    }

    @Test func theKeyLastWrittenStandsInForTheFirstRead() {
        var lease = leading()
        let (steps, _) = run(&lease, known: key("pg1", session: "s1", index: 50), [.written(committed: true), .armed(true)])
        #expect(steps.first == .writeKey(index: 50, flags: LeaderFlags.nextBeat(after: 0, promise: ClusterConfig().fenceAfter)))
        #expect(steps.last == .done(.beat))
        var other = leading()
        let (stale, _) = run(&other, known: key("pg1", session: "s0"), [])
        #expect(stale == [.readKey], "a key under another session is read, not trusted")
    }

    @Test func aKeyHeldByAnotherFencesALeaderAndOnlyALeader() {
        var lease = leading()
        let (steps, _) = run(&lease, [.keyRead(key("pg2", session: "s2")), .fenced])
        #expect(steps == [.readKey, .fence(why: "the leader key is held by pg2"), .done(.lost)])
        #expect(!lease.leading && lease.leaseDeadline == 0)
        var gone = leading()
        #expect(run(&gone, [.keyRead(nil), .fenced]).steps == [.readKey, .fence(why: "the leader key is gone"), .done(.lost)])
        var follower = LeaseState(node: me)
        #expect(run(&follower, [.keyRead(key("pg2", session: "s2"))]).steps == [.readKey, .done(.failed)])
    }

    @Test func aVanishedSessionIsRenewedAndTheLockTakenAgain() {
        var lease = leading()
        let free = key("pg1", session: nil)
        #expect(run(&lease, [.keyRead(free), .renewed(session: "s9")]).steps == [.readKey, .renewSession, .done(.beat)])
        var unrenewed = leading()
        #expect(run(&unrenewed, [.keyRead(free), .renewed(session: "s1")]).steps.last == .done(.failed))
        var follower = LeaseState(node: me)
        #expect(run(&follower, [.keyRead(free)]).steps == [.readKey, .done(.failed)], "only a leader takes its own key back")
    }

    @Test func aShorterFenceIsArmedBeforeTheKeyPromisesItALongerOneAfter() {
        var lowered = leading()
        lowered.config.fenceTimeout = .seconds(1)
        let short = now + second
        let (steps, _) = run(&lowered, [.keyRead(key("pg1", session: "s1")), .armed(true), .written(committed: true), .armed(true)])
        let flags = LeaderFlags.nextBeat(after: 0, promise: .seconds(1))
        #expect(steps == [.readKey, .arm(deadline: short), .writeKey(index: 7, flags: flags), .arm(deadline: short), .done(.beat)])
        var raised = leading()
        raised.config.fenceTimeout = .seconds(10)
        raised.config.ttl = .seconds(30)
        let (longer, _) = run(&raised, [.keyRead(key("pg1", session: "s1")), .written(committed: true), .armed(true)])
        #expect(longer.dropFirst().first == .writeKey(index: 7, flags: LeaderFlags.nextBeat(after: 0, promise: .seconds(10))))
        #expect(raised.deadline == now + 10 * second)
    }

    @Test func aBeatThatDoesNotGetThroughNeverMovesTheDeadline() {
        var lease = leading()
        let mine = key("pg1", session: "s1")
        let (steps, _) = run(&lease, [
            .keyRead(mine), .written(committed: false), .keyRead(mine), .written(committed: false), .keyRead(mine), .written(committed: false),
        ])
        #expect(steps.filter { $0 == .readKey }.count == LeaseState.beatAttempts)
        #expect(steps.last == .done(.failed) && lease.deadline == now + 2 * second)
        var unanswered = leading()
        #expect(run(&unanswered, [.readFailed]).steps == [.readKey, .done(.failed)])
        #expect(unanswered.deadline == now + 2 * second && unanswered.deadlinePassed(now: now + 2 * second))
    }

    @Test func aLeaseWithoutAWatchdogFences() {
        var lease = leading()
        let (steps, _) = run(&lease, [.keyRead(key("pg1", session: "s1")), .written(committed: true), .armed(false), .fenced])
        #expect(steps.suffix(2) == [.fenceUnguarded, .done(.failed)] && !lease.leading)
    }

    @Test func aStepOfAnEndedTermChangesNothing() {
        var lease = leading()
        var beat = lease.heartbeat(session: "s1", mayAskMembers: false)
        #expect(lease.next(&beat, after: .start(known: nil), now: now) == .readKey)
        #expect(lease.next(&beat, after: .keyRead(key("pg1", session: "s1")), now: now) == .writeKey(index: 7, flags: LeaderFlags.nextBeat(after: 0, promise: ClusterConfig().fenceAfter)))
        lease.stopLeading()  // released meanwhile (the actor is reentrant at its awaits)
        #expect(lease.next(&beat, after: .written(committed: true), now: now) == .done(.failed))
        #expect(!lease.leading, "a beat begun under the last term does not lead again")
    }

    @Test func failsafeAsksTheMembersOnlyForAWritablePrimaryInAHeartbeatRound() {
        var lease = leading(failsafe: true)
        let (steps, notices) = run(&lease, [.readFailed, .members(confirmed: true), .armed(true)])
        #expect(steps == [.readKey, .askMembers(deadline: fence), .arm(deadline: fence), .done(.failed)])
        #expect(notices == [.failsafeEntered] && lease.failsafeActive && lease.deadline == fence)
        let (back, over) = run(&lease, [.keyRead(key("pg1", session: "s1")), .written(committed: true), .armed(true)])
        #expect(back.last == .done(.beat) && over == [.failsafeOver] && !lease.failsafeActive)

        var refused = leading(failsafe: true)
        #expect(run(&refused, [.readFailed, .members(confirmed: false)]).steps.last == .done(.failed))
        #expect(refused.deadline == now + 2 * second, "one member that does not confirm: the deadline stands")

        var dead = leading(failsafe: true, writable: false)
        let (asked, said) = run(&dead, [.readFailed])
        #expect(asked == [.readKey, .done(.failed)] && said == [.failsafeNotWritable])

        var proof = leading(failsafe: true)
        #expect(run(&proof, mayAskMembers: false, [.readFailed]).steps == [.readKey, .done(.failed)], "a proof never asks")
        var off = leading()
        #expect(run(&off, [.readFailed]).steps == [.readKey, .done(.failed)])
    }

    @Test func noSessionNoBeat() {
        var lease = leading()
        #expect(run(&lease, session: nil, []).steps == [.done(.failed)])
    }

    @Test func callsAreSizedFromTheDeadlineLeft() {
        let lease = leading()
        #expect(lease.callBudget(configured: .seconds(5), now: now) == .seconds(2))
        #expect(lease.callBudget(configured: .seconds(1), now: now) == .seconds(1))
        #expect(lease.callBudget(configured: .seconds(5), now: now + 2 * second) == .milliseconds(100), "at least 100 ms")
        let failsafe = leading(failsafe: true)
        #expect(failsafe.callBudget(configured: .seconds(5), now: now) == .seconds(2) - .seconds(1) - .milliseconds(100), "a failsafe round's time kept")
        #expect(LeaseState(node: me).callBudget(configured: .seconds(5), now: now) == .seconds(5))
    }

    @Test func beatsStartEveryLoopAndNoLaterThanTheDeadline() {
        let lease = leading()
        #expect(lease.pauseBeforeNextBeat(elapsed: .milliseconds(300), now: now) == .milliseconds(700))
        #expect(lease.pauseBeforeNextBeat(elapsed: .seconds(4), now: now) == .milliseconds(20))
        #expect(lease.pauseBeforeNextBeat(elapsed: .zero, now: now + 2 * second - 500_000_000) == .milliseconds(501))
    }

    @Test func keepalivedHearsVacantOnlyStraightFromLeading() {
        var lease = leading()
        #expect(lease.standings(now: now).following == .leading)
        lease.setLocal(writablePrimary: false, vacant: true)
        #expect(lease.standings(now: now).following == .vacant, "the old primary whose PostgreSQL died keeps the address")
        #expect(lease.standings(now: now + 2 * second).following == .barred, "the lease ran out: the watchdog fences")
        lease.stopLeading()
        #expect(lease.standings(now: now + 3 * second).following == .barred, "and it stays off until it leads again")
        var standby = LeaseState(node: me)
        standby.setLocal(writablePrimary: false, vacant: true)
        #expect(standby.standings(now: now).following == .barred)
        standby.config.vipPolicy = .priority
        #expect(standby.standings(now: now).standing == .routing)
    }

    // MARK: The session

    func upkeep(_ lease: LeaseState, session: String?, ttl: GoDuration? = nil, _ answers: [LeaseState.SessionEvent]) -> [LeaseState.SessionStep] {
        var upkeep = LeaseState.SessionUpkeep()
        return [lease.next(&upkeep, after: .start(session: session, ttl: ttl ?? lease.config.ttl))] + answers.map { lease.next(&upkeep, after: $0) }
    }

    @Test func aSessionIsRenewedOrKeptWhenConsulDoesNotAnswer() {
        let follower = LeaseState(node: me)
        #expect(upkeep(follower, session: "s1", [.renewed]) == [.renew("s1"), .done("s1")])
        #expect(upkeep(follower, session: "s1", [.renewalFailed]) == [.renew("s1"), .done("s1")], "its TTL decides, not one failed call")
    }

    @Test func withoutASessionTheSavedOneIsAdoptedElseOneIsMade() {
        let follower = LeaseState(node: me)
        #expect(upkeep(follower, session: nil, [.adopted("s0")]) == [.adoptSaved, .done("s0")])
        #expect(upkeep(follower, session: nil, [.adopted(nil), .created("s2")]) == [.adoptSaved, .create, .done("s2")])
        #expect(upkeep(follower, session: nil, [.adopted(nil), .created(nil)]) == [.adoptSaved, .create, .done(nil)])
    }

    @Test func aChangedTTLTakesANewSessionOnlyWhileNotLeading() {
        let follower = LeaseState(node: me)
        #expect(upkeep(follower, session: "s1", ttl: .seconds(99), [.destroyed, .created("s2")]) == [.destroy("s1"), .create, .done("s2")])
        #expect(upkeep(leading(), session: "s1", ttl: .seconds(99), [.renewed]) == [.renew("s1"), .done("s1")], "a leader keeps its lock's session")
    }

    @Test func aSessionGoneUnderALeaderTakesTheLockAgainElseTheLossFences() {
        #expect(upkeep(leading(), session: "s1", [.notFound, .reacquired("s2")]) == [.renew("s1"), .reacquire, .done("s2")])
        #expect(
            upkeep(leading(), session: "s1", [.notFound, .reacquired(nil), .lossHandled, .adopted(nil), .created("s3")]) == [
                .renew("s1"), .reacquire, .lose(why: "the session expired in Consul"), .adoptSaved, .create, .done("s3"),
            ])
        #expect(upkeep(LeaseState(node: me), session: "s1", [.notFound, .adopted(nil), .created("s2")]) == [.renew("s1"), .adoptSaved, .create, .done("s2")], "a follower just makes another")
    }
}
