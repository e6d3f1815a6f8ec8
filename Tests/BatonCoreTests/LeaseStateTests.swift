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
    func run(
        _ lease: inout LeaseState, session: String? = "s1", known: KVPair? = nil, mayAskMembers: Bool = true, at time: UInt64? = nil,
        _ answers: [LeaseState.Event]
    ) -> (steps: [LeaseState.Step], notices: [LeaseState.Notice]) {
        let at = time ?? now
        var beat = lease.heartbeat(session: session, mayAskMembers: mayAskMembers)
        var steps = [lease.next(&beat, after: .start(known: known), now: at)]
        for answer in answers {
            steps.append(lease.next(&beat, after: answer, now: at))
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

    // MARK: Member rounds

    let pg2 = try! NodeName("pg2")
    let pg3 = try! NodeName("pg3")
    let config = ClusterConfig()
    var roundPromise: UInt64 { UInt64(config.roundPromise.nanoseconds) }
    func fenceFlags(after flags: UInt64 = 0) -> UInt64 { LeaderFlags.nextBeat(after: flags, promise: config.fenceAfter) }
    func roundsFlags(after flags: UInt64 = 0) -> UInt64 { LeaderFlags.nextBeat(after: flags, promise: config.roundsKeyPromise) }

    /// A failsafe leader with two members that wrote its key (index 42) at `now` and whose members all
    /// confirmed a round 1 s later.
    func renewingByRounds() -> LeaseState {
        var lease = leading(failsafe: true)
        lease.setMembers([me, pg2, pg3])
        _ = run(&lease, [.keyRead(key("pg1", session: "s1", index: 41)), .written(committed: true, index: 42), .armed(true)])
        _ = run(&lease, at: now + second, [.members(confirmed: true), .armed(true)])
        return lease
    }

    @Test("rounds renew the lease between writes: a write each third of the TTL, covered by a round right after it")
    func roundsRenewBetweenWrites() {
        var lease = leading(failsafe: true)
        lease.setMembers([me, pg2, pg3])
        // The first beat of a term writes the key, promising fence_timeout (no round was confirmed yet).
        let first = run(&lease, [.keyRead(key("pg1", session: "s1", index: 41)), .written(committed: true, index: 42), .armed(true)])
        #expect(first.steps == [.readKey, .writeKey(index: 41, flags: fenceFlags()), .arm(deadline: fence), .done(.beat)])
        #expect(lease.lastKeyIndex == 42 && !lease.roundsHealthy)
        #expect(lease.pauseBeforeNextBeat(elapsed: .zero, now: now) == config.loopWait.swiftDuration)
        // A second later, a round: the members promise as long as the watchdog may already reach (2 s
        // left of the write's fence), naming the write's index; only then is the round's promise armed.
        let round = run(&lease, at: now + second, [.members(confirmed: true), .armed(true)])
        #expect(round.steps == [
            .askMembers(deadline: now + second + roundPromise, promise: .seconds(2), members: [pg2, pg3], keyIndex: 42, wait: config.roundTimeout),
            .arm(deadline: now + second + roundPromise), .done(.beat),
        ])
        #expect(lease.roundsHealthy && lease.deadline == now + second + roundPromise)
        #expect(lease.pauseBeforeNextBeat(elapsed: .zero, now: now + second) == config.roundInterval)
        // The next round asks for the round's promise itself.
        let next = run(&lease, at: now + second + 300_000_000, [.members(confirmed: true), .armed(true)])
        #expect(next.steps.first == .askMembers(deadline: now + 1_300_000_000 + roundPromise, promise: config.roundPromise, members: [pg2, pg3], keyIndex: 42, wait: config.roundTimeout))
        // Once the write interval has passed the key is written, arming only the round's promise and
        // promising the others the rounds' reach, and a round names the new index at once.
        let later = now + 4 * second
        #expect(lease.keyWriteDue(now: later))
        let write = run(
            &lease, known: key("pg1", session: "s1", index: 42), at: later,
            [.written(committed: true, index: 43), .armed(true), .members(confirmed: true), .armed(true)])
        #expect(write.steps == [
            .writeKey(index: 42, flags: roundsFlags()), .arm(deadline: later + roundPromise),
            .askMembers(deadline: later + roundPromise, promise: config.roundPromise, members: [pg2, pg3], keyIndex: 43, wait: config.roundTimeout),
            .arm(deadline: later + roundPromise), .done(.beat),
        ])
        #expect(lease.lastKeyIndex == 43 && lease.deadline == later + roundPromise && !lease.failsafeActive)
    }

    @Test("a round not every member confirms is followed at once by a write promising fence_timeout; beats every loop again")
    func aRefusedRoundFallsBackToAWrite() {
        var lease = renewingByRounds()
        let at = now + 1_300_000_000
        let refused = run(&lease, at: at, [.members(confirmed: false), .keyRead(key("pg1", session: "s1", index: 42)), .written(committed: true, index: 44), .armed(true)])
        #expect(refused.steps.dropFirst() == [.readKey, .writeKey(index: 42, flags: fenceFlags()), .arm(deadline: at + UInt64(config.fenceAfter.nanoseconds)), .done(.beat)])
        #expect(!lease.roundsHealthy && lease.pauseBeforeNextBeat(elapsed: .zero, now: at) == config.loopWait.swiftDuration)
        // A write under rounds whose round is refused is followed by a second write, with fence_timeout.
        var marked = renewingByRounds()
        let later = now + 4 * second
        let twice = run(
            &marked, known: key("pg1", session: "s1", index: 42), at: later,
            [.written(committed: true, index: 43), .armed(true), .members(confirmed: false), .written(committed: true, index: 44), .armed(true)])
        #expect(twice.steps == [
            .writeKey(index: 42, flags: roundsFlags()), .arm(deadline: later + roundPromise),
            .askMembers(deadline: later + roundPromise, promise: config.roundPromise, members: [pg2, pg3], keyIndex: 43, wait: config.roundTimeout),
            .writeKey(index: 43, flags: fenceFlags(after: roundsFlags())), .arm(deadline: later + UInt64(config.fenceAfter.nanoseconds)), .done(.beat),
        ])
        #expect(marked.lastKeyIndex == 44)
    }

    @Test("a write that fails leaves the lease to a round every member confirms (failsafe); the next write ends it")
    func aFailedWriteIsRiddenOutByARound() {
        var lease = renewingByRounds()
        let later = now + 4 * second
        let (steps, notices) = run(&lease, at: later, [.readFailed, .members(confirmed: true), .armed(true)])
        #expect(steps == [
            .readKey, .askMembers(deadline: later + roundPromise, promise: config.roundPromise, members: [pg2, pg3], keyIndex: 42, wait: config.roundTimeout),
            .arm(deadline: later + roundPromise), .done(.failed),
        ])
        #expect(notices == [.failsafeEntered] && lease.failsafeActive && lease.deadline == later + roundPromise)
        #expect(lease.keyWriteDue(now: later + 300_000_000), "every beat tries the write again")
        let back = run(&lease, known: key("pg1", session: "s1", index: 42), at: later + 300_000_000, [.written(committed: true, index: 45), .armed(true), .members(confirmed: true), .armed(true)])
        #expect(back.steps.last == .done(.beat) && back.notices == [.failsafeOver] && !lease.failsafeActive)
        // Cut from Consul and refused by a member: nothing renews it; the watchdog fences at the deadline.
        var cut = renewingByRounds()
        let lost = run(&cut, at: later, [.readFailed, .members(confirmed: false)])
        #expect(lost.steps.last == .done(.failed) && cut.deadline == now + second + roundPromise && cut.deadlinePassed(now: later))
    }

    @Test("members that left are asked until a write gets through")
    func membersThatLeftAreAskedUntilAWrite() {
        var lease = renewingByRounds()
        lease.setMembers([me, pg2])
        let at = now + 1_300_000_000
        #expect(lease.keyWriteDue(now: at), "only a write lets the rounds stop asking pg3")
        let failed = run(&lease, at: at, [.readFailed, .members(confirmed: true), .armed(true)])
        // After a failed write the round waits as long as the lease lasts (0.9 s left, less 0.1 s).
        #expect(failed.steps[1] == .askMembers(deadline: at + roundPromise, promise: config.roundPromise, members: [pg2, pg3], keyIndex: 42, wait: .milliseconds(800)))
        let written = run(&lease, known: key("pg1", session: "s1", index: 42), at: at + 300_000_000, [.written(committed: true, index: 46), .armed(true)])
        #expect(written.steps[2] == .askMembers(deadline: at + 300_000_000 + roundPromise, promise: config.roundPromise, members: [pg2], keyIndex: 46, wait: config.roundTimeout))
    }

    @Test("rounds only for a writable primary in a heartbeat round; a proof and failsafe off never ask")
    func roundsOnlyForAWritablePrimary() {
        var dead = renewingByRounds()
        dead.setLocal(writablePrimary: false, vacant: false)
        let (asked, said) = run(&dead, at: now + 1_300_000_000, [.readFailed])
        #expect(asked == [.readKey, .done(.failed)] && said == [.failsafeNotWritable])

        var proof = renewingByRounds()
        #expect(run(&proof, mayAskMembers: false, at: now + 1_300_000_000, [.readFailed]).steps == [.readKey, .done(.failed)], "a proof never asks")
        var off = leading()
        off.setMembers([me, pg2])
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
        // Renewing by rounds, a write leaves the next round its time: 1.2 s left after the last round.
        var rounds = renewingByRounds()
        let at = now + second
        #expect(
            rounds.callBudget(configured: .seconds(5), now: at) == config.roundPromise.swiftDuration - config.roundInterval - config.roundTimeout - .milliseconds(100),
            "the next round's time kept")
        // When no round will renew it — the last one was refused, or PostgreSQL is not writable here —
        // the write has all the time there is.
        _ = run(&rounds, at: at, [.members(confirmed: false), .readFailed])
        #expect(rounds.callBudget(configured: .seconds(5), now: at) == config.roundPromise.swiftDuration, "a refused round: the write has it all")
        var recovering = renewingByRounds()
        recovering.setLocal(writablePrimary: false, vacant: false)
        #expect(recovering.callBudget(configured: .seconds(5), now: at) == config.roundPromise.swiftDuration, "not writable: the write has it all")
        #expect(LeaseState(node: me).callBudget(configured: .seconds(5), now: now) == .seconds(5))
        // A term no round was asked in yet (just acquired: its first beat writes the key) keeps a
        // round's time too — a Consul that hangs right after the lock was taken (the primary cut off
        // from Consul, an election) is ridden out by the members as later in the term. Found in CI:
        // three leaders fenced 3 s after acquiring while their first write hung.
        var fresh = leading(failsafe: true)
        fresh.setMembers([me, pg2])
        #expect(
            fresh.callBudget(configured: .seconds(5), now: now) == .seconds(2) - config.roundInterval - config.roundTimeout - .milliseconds(100),
            "no round yet: the write leaves a round its time")
    }

    @Test func beatsStartEveryLoopAndNoLaterThanTheDeadline() {
        let lease = leading()
        #expect(lease.pauseBeforeNextBeat(elapsed: .milliseconds(300), now: now) == .milliseconds(700))
        #expect(lease.pauseBeforeNextBeat(elapsed: .seconds(4), now: now) == .milliseconds(20))
        #expect(lease.pauseBeforeNextBeat(elapsed: .zero, now: now + 2 * second - 500_000_000) == .milliseconds(501))
        // With failsafe, a write and a round still fit before the deadline: after a round nobody
        // confirmed, a write that failed leaves 0.9 s — the next beat comes in 0.2 s, not a loop.
        var failsafe = renewingByRounds()
        let at = now + second + 300_000_000
        let beat = run(&failsafe, at: at, [.members(confirmed: false), .readFailed])
        #expect(beat.steps.last == .done(.failed) && !failsafe.roundsHealthy && failsafe.deadline == now + second + roundPromise)
        #expect(failsafe.pauseBeforeNextBeat(elapsed: .zero, now: at) == .milliseconds(200))
        #expect(failsafe.pauseBeforeNextBeat(elapsed: .zero, now: at + 800_000_000) == .milliseconds(20), "past the point: at once")
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
