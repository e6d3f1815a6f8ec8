import ConsulAPI

/// What the monitor remembers from one loop to the next, and how it turns one loop's raw reads — the
/// local PostgreSQL, one read of the cluster's prefix, the lease — into the ``MonitorObservation`` that
/// ``MonitorDecision`` decides from. Pure: the live monitor and the simulator feed it the same way, on
/// the clock each of them has (the live one `ContinuousClock.now`, the simulator its virtual time).
public struct MonitorState: Sendable {
    /// When the monitor first saw the pending request (by its modify index).
    public struct Sighting: Sendable, Equatable {
        public var index: UInt64
        public var since: ContinuousClock.Instant
    }

    /// How long a launched postmaster may take to show up in its data directory.
    public static let startGrace: Duration = .seconds(5)

    /// Whose monitor reports keep coming (on this process's clock, never another machine's).
    public var reports = ChangeTracker<NodeName>()
    /// Whose pgbouncer agent reports keep coming.
    public var bouncerReports = ChangeTracker<NodeName>()
    /// The leader key's index: a silent leader's heartbeat stops changing it.
    public var leaderKey = ChangeTracker<String>()
    public var leaderFreeSince: ContinuousClock.Instant?
    /// The pending request's modify index and when this monitor first saw it.
    public var requestSeen: Sighting?
    public var unresponsiveSince: ContinuousClock.Instant?
    public var notStreamingSince: ContinuousClock.Instant?
    /// When PostgreSQL was last launched, until it answers: a postmaster that has not yet taken its data
    /// directory counts as starting, not down, for a while.
    public var launchedAt: ContinuousClock.Instant?
    /// Starts of the local standby that ended down without ever answering, in a row.
    public var failedStarts = 0
    /// The fencing promise of the other node holding the lock, as last read (``LeaderFlags``).
    public var leaderPromise: GoDuration?
    /// The leader key's modify index while another node holds the lock, as last read.
    public var heldIndex: UInt64?
    /// The highest modify index read so far (reset to the restored one when Consul went back).
    public var highestIndex: UInt64 = 0
    /// When Consul's history went backwards (restored from a snapshot): the newest index of the first
    /// read after it. Keys no newer than this came back with the snapshot.
    public var restoredAt: UInt64?
    /// When this monitor last found Consul's history gone backwards (on its clock). A restore forgets
    /// writes: a leader's last heartbeats — even a whole leader's tenure — may be gone from it, while
    /// that leader's watchdog still counts on them. Nobody takes the lock until a fence has passed
    /// since (``MonitorDecision/next(_:)``).
    public var restoreNoticedAt: ContinuousClock.Instant?
    /// The newest timeline claim and the highest index of the leader key read (since the last restore).
    public var newestClaim: Int?
    /// The longest fence a leader may have counted on, as far as this monitor read: the longest promise
    /// in another leader's key, or `fence_timeout` in the configuration (``MonitorObservation/longestPromise``).
    public var longestPromise: GoDuration?
    public var highestLeaderIndex: UInt64 = 0
    /// The session the lease last held the lock with, and whether it let go of it since.
    public var ledWithSession: String?
    public var letGoOfLock = false
    /// The other node last seen holding the lock, when its last heartbeat was first seen, its promise
    /// then, and the key's index when this monitor first saw it lead. Kept when this node holds the lock itself: a lock that came back to it with a
    /// restore of Consul does not make the last real leader's fence any shorter.
    public var lastHolder: (name: NodeName, seen: ContinuousClock.Instant, promise: GoDuration?, firstIndex: UInt64)?
    /// When this monitor released the lock because its PostgreSQL died (until it leads again).
    public var releasedAt: ContinuousClock.Instant?
    /// How far the local PostgreSQL's WAL reached when it last ran as a writable primary (nil once it
    /// runs as a standby): reported while it is down (``MemberStatus/lastPrimary``).
    public var lastPrimary: PrimaryPosition?

    /// As the primary in synchronous mode: where PostgreSQL began waiting for its standby, and how long
    /// the recorded one has been absent.
    public var synchronous = SynchronousMemory()
    /// What has disagreed about who serves, and since when (on the leader).
    public var routing = DisagreementMemory()

    /// Whether a read of the cluster was absorbed yet (since this monitor started).
    public var startedReading = false
    /// Whether a readable `config` key was read yet (since this monitor started).
    public private(set) var readConfig = false

    public init() {}

    // MARK: The local PostgreSQL

    /// Remembers what the local PostgreSQL looked like at `now`.
    public mutating func noteLocal(_ local: LocalPostgres, at now: ContinuousClock.Instant) {
        if case .unresponsive = local {
            if unresponsiveSince == nil { unresponsiveSince = now }
        } else {
            unresponsiveSince = nil
        }
        if case .standby(_, _, _, false) = local {
            if notStreamingSince == nil { notStreamingSince = now }
        } else {
            notStreamingSince = nil
        }
        noteRole(local)
        // A start that ended down without ever answering counts as failed (a diverged history).
        if local.isUp {
            launchedAt = nil
            failedStarts = 0
        } else if case .down = local, let launched = launchedAt, now - launched >= Self.startGrace {
            launchedAt = nil
            failedStarts += 1
        }
    }

    /// What the monitor decides from: a postmaster launched moments ago that is not visible yet is starting.
    public func judged(_ observed: LocalPostgres, at now: ContinuousClock.Instant) -> LocalPostgres {
        if case .down(let standbySignal) = observed, let launched = launchedAt, now - launched < Self.startGrace {
            return .unresponsive(standbySignal: standbySignal, postmaster: true)
        }
        return observed
    }

    /// PostgreSQL was just launched here.
    public mutating func launched(at now: ContinuousClock.Instant) {
        launchedAt = now
    }

    /// The data directory was rewound or cloned: its history starts afresh.
    public mutating func rejoined() {
        notStreamingSince = nil
        failedStarts = 0
    }

    // MARK: The cluster

    /// What one read of the cluster's prefix teaches: whose reports move, whether the leader beats, since
    /// when the lock is free, since when a request is pending.
    /// - Parameters:
    ///   - session: this node's session (its own beats are not a leader's it watches).
    ///   - firstSeen: when the leader watch first saw a modify index of the leader key, if it did (sooner
    ///     than this read).
    ///   - leading: the lease holds the lock now.
    public mutating func absorb(
        _ snapshot: ClusterSnapshot, node: NodeName, session: String?, leading: Bool, firstSeen: (UInt64) -> ContinuousClock.Instant?,
        at now: ContinuousClock.Instant
    ) {
        if leading { ledWithSession = session } else if ledWithSession != nil && ledWithSession == session { letGoOfLock = true }
        if leading { letGoOfLock = false }
        // A lock this lease let go of (released, lost) can come back to its session only with a restore.
        let ownLockCameBack = !leading && letGoOfLock && session != nil && snapshot.leader?.session == session
        // Consul's index never goes backwards, except when it was restored from an older snapshot.
        // Consul's index never goes backwards, nor does the leader key's, nor the claimed timeline — except
        // when Consul was restored from an older snapshot. (The embedded server reuses indexes after a
        // restore, so the index alone can miss one: a snapshot from before an earlier restore.)
        let leaderIndex = snapshot.leader?.modifyIndex ?? 0
        if snapshot.newestIndex < highestIndex || leaderIndex < highestLeaderIndex && leaderIndex > 0 || ownLockCameBack
            || (snapshot.claimedTimeline ?? 0) < (newestClaim ?? 0)  // never deleted: a missing claim went back too
        {
            restoredAt = snapshot.newestIndex
            restoreNoticedAt = now
            highestLeaderIndex = 0
            newestClaim = nil
        }
        highestIndex = snapshot.newestIndex
        highestLeaderIndex = max(highestLeaderIndex, leaderIndex)
        if let claim = snapshot.claimedTimeline { newestClaim = max(newestClaim ?? claim, claim) }
        for (name, report) in snapshot.reports { reports.observe(name, index: report.modifyIndex, at: now) }
        reports.keep(only: Set(snapshot.reports.keys))
        for (name, index) in snapshot.bouncerIndexes { bouncerReports.observe(name, index: index, at: now) }
        bouncerReports.keep(only: Set(snapshot.bouncerIndexes.keys))
        if let leader = snapshot.leader, leader.session != session {
            leaderKey.observe("leader", index: leader.modifyIndex, at: min(now, firstSeen(leader.modifyIndex) ?? now))
            leaderPromise = leader.promise
            heldIndex = leader.modifyIndex
            if let promise = leader.promise { longestPromise = max(longestPromise ?? promise, promise) }
            // Its fence runs from its last heartbeat: when this monitor first saw the key's current index.
            if leader.holder != node {
                // The index it was first seen leading at: a report of it written since is from its tenure.
                // (A new tenure when the lock was free at the last read: `leaderFreeSince` is still the last read's.)
                let continuing = leaderFreeSince == nil ? lastHolder.flatMap { $0.name == leader.holder ? $0.firstIndex : nil } : nil
                let first = continuing ?? leader.modifyIndex
                lastHolder = (leader.holder, now - (leaderKey.quietFor("leader", at: now) ?? .zero), leader.promise, first)
            }
        } else {
            leaderKey.keep(only: [])
            leaderPromise = nil
            heldIndex = nil
        }
        if snapshot.leader == nil {
            if leaderFreeSince == nil { leaderFreeSince = now }
        } else {
            leaderFreeSince = nil
        }
        if let request = snapshot.request {
            if requestSeen?.index != request.modifyIndex { requestSeen = Sighting(index: request.modifyIndex, since: now) }
        } else {
            requestSeen = nil
        }
    }

    /// A monitor that starts while its PostgreSQL is down carries on what its predecessor reported of
    /// the primary this node last ran (``lastPrimary``), from the first read of the cluster on — before
    /// it writes a report of its own.
    public mutating func recall(_ snapshot: ClusterSnapshot, node: NodeName) {
        defer { startedReading = true }
        guard !startedReading, lastPrimary == nil, let own = snapshot.reports[node]?.status else { return }
        if own.role == "primary", let position = own.position {
            lastPrimary = PrimaryPosition(position: position, timeline: own.timeline)
        } else {
            lastPrimary = own.lastPrimary
        }
    }

    /// The configuration to run with after this read: the `config` key's when it could be read (unknown
    /// settings left aside), else the one this monitor last read — never the defaults. Nil when there
    /// is none yet (the key was unreadable since this monitor started): the monitor then acts as if
    /// Consul did not answer.
    public mutating func configuration(from snapshot: ClusterSnapshot, current: ClusterConfig) -> ClusterConfig? {
        if snapshot.configProblem == nil {
            readConfig = true
            longestPromise = max(longestPromise ?? snapshot.config.fenceAfter, snapshot.config.fenceAfter)
            return snapshot.config
        }
        return readConfig ? current : nil
    }

    /// Whether a node's monitor keeps reporting (its report's index changed recently, on this clock).
    public func isFresh(_ node: NodeName, config: ClusterConfig, at now: ContinuousClock.Instant) -> Bool {
        reports.isFresh(node, within: MemberStatus.freshness(loopWait: config.loopWait), at: now)
    }

    /// The next loop comes after `loop_wait` — or sooner, exactly when a silent leader's takeover
    /// deadline falls, so that a dead node is replaced without waiting for the next tick; and every
    /// ``unresponsiveRecheck`` while the local PostgreSQL has stopped answering for under
    /// ``unresponsiveWindow``: a killed postmaster's backends take a few milliseconds to exit, and a
    /// monitor woken by its death may find them still there and wait — a full loop, before this, with
    /// the lock held and writes stopped (a postmaster kill's failover took 1.2 s instead of 0.2 s).
    public func nextInterval(config: ClusterConfig, grant: LeaseGrant.Seen? = nil, at now: ContinuousClock.Instant) -> Duration {
        let loop = config.loopWait.swiftDuration
        var next = loop
        if let since = unresponsiveSince, now - since < Self.unresponsiveWindow { next = min(next, Self.unresponsiveRecheck) }
        guard let quiet = leaderKey.quietFor("leader", at: now), let holder = lastHolder?.name, let index = heldIndex else { return next }
        let silence = Self.leaderSilence(holder: holder, index: index, quiet: quiet, promise: leaderPromise, grant: grant, config: config)
        guard silence.silentFor < silence.takeoverAfter else { return next }
        return min(next, silence.takeoverAfter - silence.silentFor + .milliseconds(5))
    }

    /// How long before a silent leader's takeover deadline a candidate asks that leader's PostgreSQL
    /// itself whether it still takes writes (``silentLeaderAsk(node:config:grant:at:)``): its fence
    /// deadline has passed by then (a takeover waits ``ClusterConfig/fenceMargin`` more), so a watchdog
    /// that runs has stopped it — and one killed with its monitor (`pkill -9 baton` matches both) has
    /// not. Early enough that a dead machine, which answers nothing, costs the takeover no wait.
    public static let silentLeaderAsked = Duration.milliseconds(250)

    /// When this node asks the silent leader's PostgreSQL (``silentLeaderAsked`` before the takeover
    /// deadline): the leader, the key index it went silent at, and how long from now — nil unless that
    /// deadline falls before the next loop (``nextInterval(config:grant:at:)`` wakes the loop at it),
    /// or when it has already passed (the takeover then asks at once).
    public func silentLeaderAsk(node: NodeName, config: ClusterConfig, grant: LeaseGrant.Seen? = nil, at now: ContinuousClock.Instant)
        -> (holder: NodeName, index: UInt64, after: Duration)?
    {
        guard let quiet = leaderKey.quietFor("leader", at: now), let holder = lastHolder?.name, holder != node, let index = heldIndex else { return nil }
        let silence = Self.leaderSilence(holder: holder, index: index, quiet: quiet, promise: leaderPromise, grant: grant, config: config)
        let left = silence.takeoverAfter - silence.silentFor
        guard left > .zero, left < nextInterval(config: config, grant: grant, at: now) else { return nil }
        return (holder, index, max(.zero, left - Self.silentLeaderAsked))
    }

    /// How long the other node holding the lock has been silent, and how long it must be before this
    /// node may take over (invariant 12):
    /// - when this node's latest promise (a member round, ``LeaseState``) was made to that leader with
    ///   the key at the index this node reads now, or later: every renewal since needed a newer promise
    ///   of this node's (a round asks every member it asked since its last write) or a write (which
    ///   moves the index: seen, it ends this case; unseen, the takeover's check-and-set at the index
    ///   read fails). So the leader is silent since that promise, and gone once its period — how far
    ///   the leader said it might stay writable, plus the margin — has passed;
    /// - else since the key's index last moved, by the longer of its promise and this node's fence, plus
    ///   the margin (``ClusterConfig/takeoverAfter(promise:config:)``).
    /// A promise still holding keeps this node off in any case (``MonitorDecision/next(_:)``).
    public static func leaderSilence(
        holder: NodeName, index: UInt64, quiet: Duration, promise: GoDuration?, grant: LeaseGrant.Seen?, config: ClusterConfig
    ) -> (silentFor: Duration, takeoverAfter: Duration) {
        if let grant, grant.leader == holder, let covered = grant.keyIndex, covered >= index {
            return (grant.age, grant.period)
        }
        return (quiet, ClusterConfig.takeoverAfter(promise: promise, config: config).swiftDuration)
    }

    /// How soon a monitor looks again at a local PostgreSQL that just stopped answering, and for how long.
    public static let unresponsiveRecheck = Duration.milliseconds(100)
    public static let unresponsiveWindow = Duration.seconds(2)

    /// Remembers how far a writable primary's WAL reached here (forgotten once it runs as a standby).
    mutating func noteRole(_ local: LocalPostgres) {
        switch local {
        case .primary(let position, let timeline): lastPrimary = PrimaryPosition(position: position, timeline: timeline)
        case .standby: lastPrimary = nil
        case .down, .unresponsive: break
        }
    }

    /// This node's report of its local PostgreSQL as observed (and remembered: a primary's position is
    /// what its report says once it is down).
    public mutating func report(_ local: LocalPostgres, decision: String, time: Double) -> MemberStatus {
        noteRole(local)
        var status = MemberStatus(local: local, decision: decision, time: time)
        if !local.isUp { status.lastPrimary = lastPrimary }
        return status
    }

    /// What this loop decides from.
    /// - Parameters:
    ///   - snapshot: the cluster as read this loop; nil when Consul did not answer.
    ///   - session: this node's session.
    ///   - sinceLastHeartbeat: while leading, the time since the last heartbeat that reached Consul was sent.
    ///   - guarded: a watchdog answers.
    ///   - grant: the latest promise this node made a leader not to take over from it (member rounds).
    public func observation(
        node: NodeName, config: ClusterConfig, local: LocalPostgres, snapshot: ClusterSnapshot?, session: String?, sinceLastHeartbeat: GoDuration,
        guarded: Bool, grant: LeaseGrant.Seen?, at now: ContinuousClock.Instant
    ) -> MonitorObservation {
        var leader = LeaderState.unknown
        var silentFor = GoDuration.zero
        var takeoverAfter: GoDuration? = nil
        var endpoint: String? = nil
        var candidates: [CandidateState] = []
        var primaryReport = PrimaryReport.none
        var request: TakeoverRequest? = nil
        var promise: GoDuration? = nil
        var previous: PreviousLeader? = nil
        if let snapshot {
            if let held = snapshot.leader {
                leader = .held(by: held.holder, mine: held.session == session && held.holder == node)
                if held.session != session {
                    let silence = Self.leaderSilence(
                        holder: held.holder, index: held.modifyIndex, quiet: leaderKey.quietFor("leader", at: now) ?? .zero, promise: held.promise,
                        grant: grant, config: config)
                    silentFor = GoDuration(silence.silentFor)
                    takeoverAfter = GoDuration(silence.takeoverAfter)
                    endpoint = snapshot.endpoint(of: held.holder)
                    promise = held.promise
                }
            } else {
                leader = .free(since: GoDuration(leaderFreeSince.map { now - $0 } ?? .zero))
            }
            candidates = FailoverCandidates.candidates(snapshot, fresh: { isFresh($0, config: config, at: now) }, me: node, local: local)
            if let primary = snapshot.registeredPrimary(otherThan: node) {
                if isFresh(primary.name, config: config, at: now), let report = snapshot.reports[primary.name] {
                    switch report.status.role {
                    case "primary": primaryReport = .live(primary.name)
                    case "unresponsive": primaryReport = .starting(primary.name)
                    default: primaryReport = .down(primary.name)
                    }
                } else {
                    primaryReport = .unknown(primary.name)
                }
            }
            let leaderLost: Bool
            switch leader {
            case .held(_, mine: false): leaderLost = silentFor >= (takeoverAfter ?? ClusterConfig.takeoverAfter(promise: promise, config: config))
            case .held(_, mine: true): leaderLost = false
            default: leaderLost = true
            }
            request = standingRequest(snapshot, config: config, candidates: candidates, leaderLost: leaderLost, at: now)
            if snapshot.leader == nil, let holder = lastHolder {
                let report = snapshot.reports[holder.name]
                previous = PreviousLeader(
                    name: holder.name, goneFor: GoDuration(now - holder.seen), promise: holder.promise,
                    // Only a report written while it led (not one from before, nor one a restore brought back).
                    reportedDown: report?.status.role == "down" && (report?.modifyIndex ?? 0) > holder.firstIndex
                        && isFresh(holder.name, config: config, at: now))
            }
        }
        return MonitorObservation(
            node: node, config: config, local: local, localUnresponsiveFor: GoDuration(unresponsiveSince.map { now - $0 } ?? .zero), leader: leader,
            sinceLastHeartbeat: sinceLastHeartbeat, leaderSilentFor: silentFor, leaderEndpoint: endpoint, candidates: candidates,
            lastPrimaryPosition: snapshot?.lastPrimaryPosition, synchronous: snapshot?.sync, paused: snapshot?.pause != nil,
            primaryReport: primaryReport, notStreamingFor: GoDuration(notStreamingSince.map { now - $0 } ?? .zero), failedStarts: failedStarts,
            registeredPrimary: snapshot?.registrations[node]?.role == .primary, request: request, guarded: guarded,
            failsafeGrantedTo: grant?.holding, releasedFor: releasedAt.map { GoDuration(now - $0) }, leaderPromise: promise,
            leaderTakeoverAfter: takeoverAfter,
            claimedTimeline: snapshot?.claimedTimeline, previousLeader: previous,
            leaderKeyRestored: snapshot?.leader.map { held in restoredAt.map { held.modifyIndex <= $0 } ?? false } ?? false,
            consulRestoredFor: restoreNoticedAt.map { GoDuration(now - $0) }, longestPromise: longestPromise)
    }

    /// The pending request, when it can never be acted on again (expired, fulfilled, made for another
    /// leader): the leader deletes it (check-and-set at `index`), and says why.
    public func finishedRequest(_ snapshot: ClusterSnapshot, at now: ContinuousClock.Instant) -> (index: UInt64, standing: RequestStanding)? {
        guard let pending = snapshot.request, let seen = requestSeen else { return nil }
        let standing = pending.request.standing(age: now - seen.since, leader: snapshot.leader?.holder, targetHealthy: true, targetEligible: true)
        return standing.isDone ? (pending.modifyIndex, standing) : nil
    }

    /// The pending request when it stands (``TakeoverRequest/standing(age:leader:targetHealthy:targetEligible:)``),
    /// judged with this monitor's view of the target's health.
    public func standingRequest(
        _ snapshot: ClusterSnapshot, config: ClusterConfig, candidates: [CandidateState], leaderLost: Bool, at now: ContinuousClock.Instant
    ) -> TakeoverRequest? {
        guard let pending = snapshot.request, let seen = requestSeen else { return nil }
        let choice = FailoverCandidates.choose(
            candidates, synchronousMode: config.synchronousMode, synchronous: snapshot.sync, lastPrimaryPosition: snapshot.lastPrimaryPosition,
            maximumLag: config.maximumLagOnFailover)
        let target = pending.request.to
        let standing = pending.request.standing(
            age: now - seen.since, leader: snapshot.leader?.holder, leaderLost: leaderLost, synchronous: config.synchronousMode != .off,
            targetHealthy: candidates.contains { $0.name == target && $0.healthy }, targetEligible: choice.ranked.contains(target),
            lastPrimaryPosition: snapshot.lastPrimaryPosition)
        return standing == .standing ? pending.request : nil
    }
}
