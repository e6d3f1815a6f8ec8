import ConsulAPI

/// The leader lock held as a lease, as rules: what the lease remembers (leading, its term, the last
/// beat that got through, the watchdog's deadline, failsafe) and what a heartbeat, an acquisition, a
/// failsafe round and keepalived's standing do with it. Pure: the live `Lease` actor and the simulator
/// carry out the same steps — read the key, arm the watchdog, write the key, fence — against Consul and
/// a watchdog, or against the in-memory store and a simulated one, and feed back what happened.
///
/// Time is CLOCK_MONOTONIC nanoseconds (what the watchdog counts in; the simulator's virtual time).
///
/// The rules (invariants 10–12 of DESIGN.md):
/// - the watchdog is armed before the lock is taken; a node without one never leads;
/// - a heartbeat writes the key with check-and-set at the index it read, bumping the beat count and
///   promising its `fence_after` (``LeaderFlags``); only a beat that got through moves the watchdog's
///   deadline — to `fence_after` after the beat was *sent*;
/// - a shorter promise (fence_timeout lowered) is armed before the key says it, a longer one after;
/// - a beat that finds the key another's, or gone, while leading fences at once;
/// - a beat that finds the key free and still naming this node (its session vanished) renews the
///   session, which takes the lock again;
/// - with `failsafe_mode`, a writable primary renews its lease by member rounds: every
///   ``ClusterConfig/roundInterval`` it asks every other member to promise, over its node API, not to
///   take over while it may still be writable — ``ClusterConfig/roundPromise``, or longer when its
///   watchdog already reaches further — plus the margin, naming the index of its last write of the
///   key; only when all did is the watchdog armed for the round promise. While every member promises,
///   the key is written only every ``ClusterConfig/roundsKeyInterval``, promising the nodes that did
///   not ``ClusterConfig/roundsKeyPromise`` (how far rounds may reach before the next write) and arming
///   the round promise; a round right after each write covers it. A round that not every member
///   confirms is followed at once by a write promising `fence_timeout`, and beats go back to writing
///   the key every loop, as without failsafe; a write that fails leaves the lease to a round that
///   every member confirms (failsafe: Consul's trouble is not the database's). The members a round
///   asks only shrink with a write that got through.
public struct LeaseState: Sendable {
    public let node: NodeName
    public var config = ClusterConfig()
    public private(set) var leading = false
    /// Bumped whenever leading starts or stops: a step that began under another term changes nothing.
    public private(set) var term: UInt64 = 0
    /// When the last beat that got through was sent.
    public private(set) var lastBeat: UInt64?
    /// The watchdog's deadline while leading.
    public private(set) var deadline: UInt64 = 0
    /// Whether the last beats came from failsafe rounds instead of Consul.
    public private(set) var inFailsafe = false
    /// What the loop last saw of this node's PostgreSQL: a writable primary.
    public private(set) var writablePrimary = false
    /// No process of this node's PostgreSQL runs.
    public private(set) var vacant = false
    /// Whether keepalived may be told ``VRRPStanding/vacant``: only straight from leading with a live
    /// lease — the old primary whose PostgreSQL died keeps the address it holds. Once its lease ran out
    /// (the watchdog fences and says FAULT then) or it was barred (a standby, a start), the node stays
    /// off until it leads again: an address that came back to a node fenced a moment ago would deliver
    /// that node's last answers, sent before the fence, late — after the new primary's first.
    private var mayBeVacant = false
    /// The other members, as the loop last read them: whom a round asks.
    public private(set) var members: Set<NodeName> = []
    /// Members asked since the last write of the key got through: a round asks them too, so that the
    /// set it asks shrinks only with a write. A member whose latest promise named the key's current
    /// index counts on every renewal since having needed a promise of its own
    /// (``MonitorState/leaderSilence(holder:index:quiet:promise:grant:config:)``).
    private var askedSinceKeyWrite: Set<NodeName> = []
    /// When the last write of the key that got through was sent (nil: none in this term).
    public private(set) var lastKeyWrite: UInt64?
    /// The modify index of that write, when known: rounds name it.
    public private(set) var lastKeyIndex: UInt64?
    /// Whether the last round was confirmed by every member: beats come every round interval then,
    /// else every loop.
    public private(set) var roundsHealthy = false
    /// Whether the last round in this term was refused (not every member promised): until one is
    /// confirmed again, no round is counted on to renew the lease. False in a term no round was asked
    /// in yet — its first write must leave the first round its time as well.
    public private(set) var lastRoundRefused = false

    public init(node: NodeName) { self.node = node }

    /// The watchdog's deadline (0 when not leading).
    public var leaseDeadline: UInt64 { leading ? deadline : 0 }
    public var failsafeActive: Bool { leading && inFailsafe }

    /// Time since the last heartbeat that got through was sent (forever when there was none).
    public func sinceLastBeat(now: UInt64) -> GoDuration {
        guard leading, let lastBeat else { return .seconds(86_400 * 365) }
        return GoDuration(nanoseconds: Int64(now &- lastBeat))
    }

    /// What the loop saw of this node's PostgreSQL; whether it changed.
    @discardableResult
    public mutating func setLocal(writablePrimary writable: Bool, vacant: Bool) -> Bool {
        guard writable != writablePrimary || vacant != self.vacant else { return false }
        writablePrimary = writable
        self.vacant = vacant
        return true
    }

    // MARK: Leading

    /// The deadline a watchdog is armed with for a beat (or acquisition) sent at `now`.
    public func fenceDeadline(sentAt now: UInt64) -> UInt64 { now + UInt64(max(0, config.fenceAfter.nanoseconds)) }

    /// Taking the free lock at `now`: the watchdog's deadline to arm first, and the flags the key is
    /// written with (they say what the watchdog was armed with).
    public func acquisition(now: UInt64) -> (deadline: UInt64, flags: UInt64) {
        (fenceDeadline(sentAt: now), LeaderFlags(beats: 0, promise: config.fenceAfter).raw)
    }

    /// The lock was taken (or a beat got through) with the watchdog armed until `deadline`.
    public mutating func startLeading(sent: UInt64, deadline: UInt64) {
        if !leading { term &+= 1 }
        leading = true
        lastBeat = sent
        self.deadline = deadline
    }

    public mutating func stopLeading() {
        if leading { term &+= 1 }
        leading = false
        inFailsafe = false
        lastBeat = nil
        deadline = 0
        lastKeyWrite = nil
        lastKeyIndex = nil
        askedSinceKeyWrite = []
        roundsHealthy = false
        lastRoundRefused = false
    }

    /// The other members as the loop read them (whom the next round asks, beside those asked since the
    /// last write).
    public mutating func setMembers(_ names: Set<NodeName>) {
        members = names.subtracting([node])
    }

    /// Whether the key is written in this heartbeat although the rounds renew the lease: none written
    /// in this term yet, the last one ``ClusterConfig/roundsKeyInterval`` ago, or a member asked since
    /// the last write has left the set (only a write lets the rounds stop asking it).
    public func keyWriteDue(now: UInt64) -> Bool {
        guard let lastKeyWrite else { return true }
        return Int64(now &- lastKeyWrite) >= GoDuration(config.roundsKeyInterval).nanoseconds || !askedSinceKeyWrite.isSubset(of: members)
    }

    /// The session vanished under this node. While it leads it tries to take the lock again with a
    /// new session (``MonitorDecision`` keeps the others off a lock freed without a report of the
    /// PostgreSQL gone until this node's promise ran out); else nothing depends on it.
    public var reacquiresAfterSessionLoss: Bool { leading }

    // MARK: The heartbeat

    /// How a heartbeat ended.
    public enum Beat: Sendable, Equatable { case beat, lost, failed }

    /// What the shell carries out next for a heartbeat, and then reports with ``Event``.
    public enum Step: Sendable, Equatable {
        /// Read the leader key (a consistent read): ``Event/keyRead(_:)`` or ``Event/readFailed``.
        case readKey
        /// Arm the watchdog with this deadline: ``Event/armed(_:)``.
        case arm(deadline: UInt64)
        /// Write the key as this node's, check-and-set at `index`: ``Event/written(committed:index:)`` or
        /// ``Event/writeFailed``.
        case writeKey(index: UInt64, flags: UInt64)
        /// The session vanished under this leader: renew it (which takes the lock again):
        /// ``Event/renewed(session:)``.
        case renewSession
        /// A member round: ask `members` to promise not to take over for `promise` (plus the margin),
        /// naming `keyIndex`, the index of this node's last write of the key, waiting at most `wait` for
        /// their answers; then the watchdog may be armed until `deadline`: ``Event/members(confirmed:)``
        /// (all of them promised).
        case askMembers(deadline: UInt64, promise: GoDuration, members: Set<NodeName>, keyIndex: UInt64?, wait: Duration)
        /// The key is not this node's any more while it led: fence PostgreSQL now and wake the loop;
        /// then ``Event/fenced``.
        case fence(why: String)
        /// No watchdog took a deadline: fence PostgreSQL, stand the watchdog down, release the lock and
        /// wake the loop; then ``Event/fenced``.
        case fenceUnguarded
        /// The heartbeat is over.
        case done(Beat)
    }

    /// What happened to the last ``Step``.
    public enum Event: Sendable, Equatable {
        /// The heartbeat starts, with the key as this node last knew it written (its last beat's
        /// answer, or the leader watch), which stands in for the first read while it says the key is
        /// this node's: a check-and-set at an index that moved on just fails, and the beat reads then.
        case start(known: KVPair?)
        case keyRead(KVPair?)
        case readFailed
        case armed(Bool)
        /// Whether the check-and-set got through, and the key's new modify index when known.
        case written(committed: Bool, index: UInt64? = nil)
        case writeFailed
        /// The session the renewal left this node with.
        case renewed(session: String?)
        case members(confirmed: Bool)
        case fenced
    }

    /// Things a heartbeat did that the operator hears of.
    public enum Notice: Sendable, Equatable {
        /// A beat got through while this node did not lead (a lock it holds from before a restart).
        case leadingAgain
        /// A write of the key got through after writes had failed while rounds renewed the lease.
        case failsafeOver
        /// The key could not be written, but every member promised: the lease goes on by rounds without
        /// Consul.
        case failsafeEntered
        /// Failsafe is on, but PostgreSQL is not a writable primary here: nobody is asked.
        case failsafeNotWritable
    }

    /// One heartbeat in progress, owned by whoever drives it (two may run at once: the loop's proof and
    /// the heartbeat task's beat).
    public struct Heartbeat: Sendable {
        public let session: String?
        /// A round of the heartbeat task: it renews by a member round when failsafe is on and PostgreSQL
        /// is a writable primary here (a proof before PostgreSQL becomes writable writes the key).
        public let mayAskMembers: Bool
        fileprivate var term: UInt64
        fileprivate var known: KVPair?
        /// The key as this heartbeat last read it (or took it as known).
        fileprivate var read: KVPair?
        fileprivate var attempt = 0
        fileprivate var phase = Phase.starting
        fileprivate var sent: UInt64 = 0
        fileprivate var deadline: UInt64 = 0
        fileprivate var write: (index: UInt64, flags: UInt64) = (0, 0)
        /// What this heartbeat did already: a write tried (and whether it promised only a round's reach,
        /// or failed), a round asked.
        fileprivate var keyTried = false
        fileprivate var wroteForRounds = false
        fileprivate var writeFailed = false
        fileprivate var roundTried = false
        public fileprivate(set) var notices: [Notice] = []
        public fileprivate(set) var outcome: Beat?

        fileprivate enum Phase { case starting, reading, armingShorter, writing, armingAfterWrite, renewing, asking, armingRound, fencing(Beat), done }
    }

    /// A heartbeat with `session` (nil: the beat fails at once).
    public func heartbeat(session: String?, mayAskMembers: Bool) -> Heartbeat {
        Heartbeat(session: session, mayAskMembers: mayAskMembers, term: term)
    }

    /// How many times a beat reads and writes again when its check-and-set did not get through.
    public static let beatAttempts = 3

    /// Whether this heartbeat may renew by a member round now.
    private func roundsPossible(_ beat: Heartbeat) -> Bool {
        beat.mayAskMembers && leading && term == beat.term && config.failsafeMode && writablePrimary
    }

    /// The next step of `beat` after `event`, at `now`.
    public mutating func next(_ beat: inout Heartbeat, after event: Event, now: UInt64) -> Step {
        switch (beat.phase, event) {
        case (.starting, .start(let known)):
            guard beat.session != nil else { return failed(&beat, now: now) }
            beat.known = known
            if roundsPossible(beat), !keyWriteDue(now: now) { return round(&beat, now: now) }
            return keyPath(&beat, now: now)
        case (.reading, .keyRead(let pair)):
            return keyRead(pair, &beat, now: now)
        case (.reading, .readFailed), (.writing, .writeFailed):
            return failed(&beat, now: now)
        case (.armingShorter, .armed(let ok)):
            guard ok else { return unguarded(&beat) }
            if term == beat.term { deadline = beat.deadline }
            beat.phase = .writing
            return .writeKey(index: beat.write.index, flags: beat.write.flags)
        case (.writing, .written(let committed, let index)):
            guard committed else {
                beat.attempt += 1
                guard beat.attempt < Self.beatAttempts else { return failed(&beat, now: now) }
                beat.phase = .reading
                return .readKey
            }
            guard term == beat.term else { return failed(&beat, now: now) }
            lastKeyIndex = index
            // The key as written stands in for a read if this heartbeat writes again.
            if let index, var written = beat.known ?? beat.read {
                written.flags = beat.write.flags
                written.modifyIndex = index
                beat.known = written
            }
            beat.phase = .armingAfterWrite
            return .arm(deadline: beat.deadline)
        case (.armingAfterWrite, .armed(let ok)):
            guard ok else { return unguarded(&beat) }
            if !leading { beat.notices.append(.leadingAgain) }
            if inFailsafe && leading { beat.notices.append(.failsafeOver) }
            inFailsafe = false
            startLeading(sent: beat.sent, deadline: beat.deadline)
            lastKeyWrite = beat.sent
            askedSinceKeyWrite = []
            // A write promising only a round's reach is covered by a round right after it.
            if beat.wroteForRounds, !beat.roundTried, roundsPossible(beat) { return round(&beat, now: now) }
            return finish(&beat, .beat)
        case (.renewing, .renewed(let session)):
            guard leading, term == beat.term, session != nil, session != beat.session else { return failed(&beat, now: now) }
            if inFailsafe { beat.notices.append(.failsafeOver) }
            inFailsafe = false
            return finish(&beat, .beat)
        case (.asking, .members(let confirmed)):
            guard term == beat.term, leading else { return finish(&beat, .failed) }
            roundsHealthy = confirmed
            lastRoundRefused = !confirmed
            guard confirmed else {
                // Not every member promised: the key is written now, promising fence_timeout — unless
                // a write failed in this heartbeat already (then the watchdog fences at the deadline
                // unless a later beat gets through).
                if beat.writeFailed { return finish(&beat, .failed) }
                beat.attempt = 0
                return keyPath(&beat, now: now)
            }
            beat.phase = .armingRound
            return .arm(deadline: beat.deadline)
        case (.armingRound, .armed(let ok)):
            guard ok else { return unguarded(&beat) }
            startLeading(sent: beat.sent, deadline: beat.deadline)
            guard beat.writeFailed else { return finish(&beat, .beat) }
            // The key could not be written, but every member promised: the lease goes on by rounds.
            if !inFailsafe { beat.notices.append(.failsafeEntered) }
            inFailsafe = true
            return finish(&beat, .failed)
        case (.fencing(let outcome), .fenced):
            return finish(&beat, outcome)
        case (.done, _):
            return .done(beat.outcome ?? .failed)
        default:
            preconditionFailure("LeaseState: \(event) does not answer the step of phase \(beat.phase)")
        }
    }

    /// A member round at `now`: the members the loop read and those asked since the last write are
    /// asked to promise for as long as this node may be writable on what it armed already or on what
    /// the round arms, whichever is longer.
    private mutating func round(_ beat: inout Heartbeat, now: UInt64) -> Step {
        beat.roundTried = true
        beat.sent = now
        beat.deadline = now + UInt64(max(0, config.roundPromise.nanoseconds))
        let reach = max(config.roundPromise, GoDuration(nanoseconds: Int64(deadline) - Int64(now)))
        askedSinceKeyWrite.formUnion(members)
        beat.phase = .asking
        // While Consul answers, a round that is not answered soon gives way to a write. After a write
        // that failed, the round is all that renews the lease: it waits for slow members as long as the
        // lease lasts (an answer that comes late still promises from when it was given, which is after
        // this round was sent).
        let left = Duration.nanoseconds(Int64(deadline) - Int64(now)) - .milliseconds(100)
        let wait = beat.writeFailed ? max(config.roundTimeout, left) : config.roundTimeout
        return .askMembers(deadline: beat.deadline, promise: reach, members: askedSinceKeyWrite, keyIndex: lastKeyIndex, wait: wait)
    }

    /// The key's part of a heartbeat: the key as last known stands in for the first read while it says
    /// the key is this node's.
    private mutating func keyPath(_ beat: inout Heartbeat, now: UInt64) -> Step {
        beat.keyTried = true
        if let known = beat.known, owns(known, session: beat.session) {
            beat.known = nil
            return keyRead(known, &beat, now: now)
        }
        beat.phase = .reading
        return .readKey
    }

    private func owns(_ pair: KVPair, session: String?) -> Bool {
        pair.session == session && pair.stringValue == node.value
    }

    private mutating func keyRead(_ pair: KVPair?, _ beat: inout Heartbeat, now: UInt64) -> Step {
        guard term == beat.term else { return failed(&beat, now: now) }
        guard let pair, owns(pair, session: beat.session) else {
            if pair?.session == nil, pair?.stringValue == node.value {
                // Free and still naming this node: its session vanished (a restarted Consul agent).
                // The renewal takes the lock again — the others wait out this node's promise for a
                // lock freed without a report of its PostgreSQL gone — or the watchdog fences at the
                // deadline.
                guard leading else { return failed(&beat, now: now) }
                beat.phase = .renewing
                return .renewSession
            }
            guard leading else { return failed(&beat, now: now) }
            stopLeading()
            beat.phase = .fencing(.lost)
            return .fence(why: "the leader key is \(pair.map { "held by \($0.stringValue)" } ?? "gone")")
        }
        beat.read = pair
        beat.sent = now
        // While every member promises, the write arms only a round's promise (the round right after it
        // covers it) and promises the nodes that did not how far rounds may reach before the next
        // write; else it arms and promises fence_timeout.
        beat.wroteForRounds = roundsHealthy && roundsPossible(beat)
        beat.deadline = beat.wroteForRounds ? now + UInt64(max(0, config.roundPromise.nanoseconds)) : fenceDeadline(sentAt: now)
        let promise = beat.wroteForRounds ? config.roundsKeyPromise : config.fenceAfter
        beat.write = (pair.modifyIndex, LeaderFlags.nextBeat(after: pair.flags, promise: promise))
        // A shorter fence (fence_timeout lowered, or a write under rounds) is armed before the key
        // promises it: until the new promise is written the replicas time a takeover by the old one,
        // and the watchdog must never be later than what the key says. A longer one is armed only
        // after it is written.
        if leading, beat.deadline < deadline {
            beat.phase = .armingShorter
            return .arm(deadline: beat.deadline)
        }
        beat.phase = .writing
        return .writeKey(index: beat.write.index, flags: beat.write.flags)
    }

    /// The beat did not get through. When a round may renew the lease and none was asked in this
    /// heartbeat, one is (failsafe: Consul out of reach, or slow); else the watchdog fences at the
    /// deadline unless a later beat gets through. A leader whose PostgreSQL is not a writable primary
    /// here asks nobody: a leader whose database died while it was cut from Consul must not hold the
    /// others off (issue 23, finding 5).
    private mutating func failed(_ beat: inout Heartbeat, now: UInt64) -> Step {
        if beat.keyTried { beat.writeFailed = true }
        if beat.keyTried, !beat.roundTried, roundsPossible(beat) { return round(&beat, now: now) }
        if beat.mayAskMembers, leading, config.failsafeMode, !writablePrimary { beat.notices.append(.failsafeNotWritable) }
        return finish(&beat, .failed)
    }

    private mutating func unguarded(_ beat: inout Heartbeat) -> Step {
        stopLeading()
        beat.phase = .fencing(.failed)
        return .fenceUnguarded
    }

    private func finish(_ beat: inout Heartbeat, _ outcome: Beat) -> Step {
        beat.phase = .done
        beat.outcome = outcome
        return .done(outcome)
    }

    // MARK: The session

    /// What the shell carries out next to keep the node's session, then reports with ``SessionEvent``.
    public enum SessionStep: Sendable, Equatable {
        /// The cluster's TTL changed and this node does not lead: destroy the session, so that the next
        /// one takes the new TTL: ``SessionEvent/destroyed``.
        case destroy(String)
        /// Renew the session: ``SessionEvent/renewed``, ``SessionEvent/notFound`` or ``SessionEvent/renewalFailed``.
        case renew(String)
        /// The session vanished under this leader: take the lock again with a new session (the key is
        /// still free and names this node): ``SessionEvent/reacquired(_:)``.
        case reacquire
        /// The lock is lost with the session: fence as a lease that ran out does: ``SessionEvent/lossHandled``.
        case lose(why: String)
        /// Adopt the session saved on disk if Consul still knows it as this node's (a restarted
        /// monitor): ``SessionEvent/adopted(_:)``.
        case adoptSaved
        /// Create a session with the configured TTL and lock-delay (and save it):
        /// ``SessionEvent/created(_:)``.
        case create
        /// The session the node has now (nil: none, Consul did not give one).
        case done(String?)
    }

    /// What happened to the last ``SessionStep``.
    public enum SessionEvent: Sendable, Equatable {
        /// The upkeep starts with the session the node has and the TTL it was made with (nil: unknown).
        case start(session: String?, ttl: GoDuration?)
        case destroyed
        case renewed
        /// Consul says the session does not exist (expired, invalidated by a restarted agent).
        case notFound
        /// Consul did not answer: the session is kept, its TTL decides.
        case renewalFailed
        /// The session the lock was taken again with; nil: not taken.
        case reacquired(String?)
        case lossHandled
        case adopted(String?)
        case created(String?)
    }

    /// One upkeep of the session in progress, owned by whoever drives it.
    public struct SessionUpkeep: Sendable {
        fileprivate var phase = Phase.starting
        fileprivate var session: String?
        fileprivate enum Phase { case starting, destroying, renewing, reacquiring, losing, adopting, creating, done }
        public init() {}
    }

    /// The next step of `upkeep` after `event`.
    public func next(_ upkeep: inout SessionUpkeep, after event: SessionEvent) -> SessionStep {
        switch (upkeep.phase, event) {
        case (.starting, .start(let session, let ttl)):
            guard let session else {
                upkeep.phase = .adopting
                return .adoptSaved
            }
            upkeep.session = session
            if let ttl, ttl != config.ttl, !leading {
                upkeep.phase = .destroying
                return .destroy(session)
            }
            upkeep.phase = .renewing
            return .renew(session)
        case (.destroying, .destroyed):
            // The saved session is the one just destroyed: a new one.
            upkeep.phase = .creating
            return .create
        case (.renewing, .renewed), (.renewing, .renewalFailed):
            return finish(&upkeep, upkeep.session)
        case (.renewing, .notFound):
            upkeep.session = nil
            guard reacquiresAfterSessionLoss else {
                upkeep.phase = .adopting
                return .adoptSaved
            }
            upkeep.phase = .reacquiring
            return .reacquire
        case (.reacquiring, .reacquired(let session)):
            if let session { return finish(&upkeep, session) }
            upkeep.phase = .losing
            return .lose(why: "the session expired in Consul")
        case (.losing, .lossHandled):
            upkeep.phase = .adopting
            return .adoptSaved
        case (.adopting, .adopted(let session)):
            if let session { return finish(&upkeep, session) }
            upkeep.phase = .creating
            return .create
        case (.creating, .created(let session)):
            return finish(&upkeep, session)
        case (.done, _):
            return .done(upkeep.session)
        default:
            preconditionFailure("LeaseState: \(event) does not answer the session step of phase \(upkeep.phase)")
        }
    }

    private func finish(_ upkeep: inout SessionUpkeep, _ session: String?) -> SessionStep {
        upkeep.phase = .done
        upkeep.session = session
        return .done(session)
    }

    // MARK: Timing

    /// How long one call of a heartbeat may wait for Consul at `now`: what is left before the
    /// watchdog's deadline, less the time the next member round needs to start and be answered when
    /// one may renew the lease (failsafe on, PostgreSQL a writable primary here, the last round in this
    /// term not refused — confirmed, or none asked yet) — an answer that comes later is of no use, and a
    /// Consul that holds calls (an election, an overloaded server) must leave the rounds time to renew
    /// the lease through the members; when no round will, the write has all the time there is (a
    /// member that refused, a primary in crash recovery or stopping for a switchover). At least 100 ms,
    /// at most `configured`.
    public func callBudget(configured: Duration, now: UInt64) -> Duration {
        guard leading else { return configured }
        let left = Duration.nanoseconds(Int64(deadline) - Int64(now))
        let roundsRenew = config.failsafeMode && writablePrimary && !lastRoundRefused
        let reserve = roundsRenew ? config.roundInterval + config.roundTimeout + .milliseconds(100) : .zero
        return min(configured, max(.milliseconds(100), left - reserve))
    }

    /// After a heartbeat round at `now`: whether the watchdog fences now (the loop must know at once).
    public func deadlinePassed(now: UInt64) -> Bool { leading && now >= deadline }

    /// How long the heartbeat task waits before its next round, one that started `elapsed` ago: beats
    /// start every round interval while every member confirms the rounds, else every loop_wait, however
    /// long the last one took (a slow Consul must not stretch the time between beats past the fencing
    /// deadline). With failsafe, soon enough that a write and a round still fit before the deadline (a
    /// round that was not confirmed after a failed write leaves less than a loop); else no later than
    /// just after it.
    public func pauseBeforeNextBeat(elapsed: Duration, now: UInt64) -> Duration {
        let interval = leading && roundsHealthy ? config.roundInterval : config.loopWait.swiftDuration
        var pause = max(.milliseconds(20), interval - elapsed)
        if leading {
            let untilDeadline = Duration.nanoseconds(Int64(deadline) - Int64(now))
            if untilDeadline > .zero { pause = min(pause, untilDeadline + .milliseconds(1)) }
            if config.failsafeMode && writablePrimary {
                let reserve = config.roundInterval + config.roundTimeout + .milliseconds(100)
                pause = min(pause, max(.milliseconds(20), untilDeadline - reserve))
            }
        }
        return pause
    }

    // MARK: What keepalived is told

    /// What the files keepalived tracks say at `now`: the standing under `vip_policy: primary` (the only
    /// one a keepalived.conf from an earlier Baton knows) and the one under this cluster's policy.
    public mutating func standings(now: UInt64) -> (leadingWritable: Bool, following: VRRPStanding, standing: VRRPStanding) {
        let leadingWritable = leading && writablePrimary && now < deadline
        if leading && now >= deadline { mayBeVacant = false }
        let following = VRRPStanding(leadingWritable: leadingWritable, vacant: vacant && mayBeVacant)
        switch following {
        case .leading: mayBeVacant = true
        case .barred: mayBeVacant = false
        case .vacant, .routing: break
        }
        let standing = VRRPStanding(policy: config.vipPolicy, leadingWritable: leadingWritable, vacant: vacant && mayBeVacant)
        return (leadingWritable, following, standing)
    }
}
