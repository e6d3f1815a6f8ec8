import BatonBootstrap
import BatonConsul
import BatonCore
import BatonPostgres
import ConsulAPI
import Foundation
import Logging

/// The monitor's loop and all its state, owned by the one task that runs it (no locks, no races): it
/// looks at the local PostgreSQL and at the cluster in Consul, builds a ``MonitorObservation``, lets
/// ``MonitorDecision`` decide and carries the decision out.
struct MonitorLoop {
    var settings: BootstrapSettings
    let client: ConsulClient
    let logger: Logger
    let observeOnly: Bool
    let lease: Lease
    var database: any LocalDatabase
    let makeDatabase: @Sendable (BootstrapSettings) -> any LocalDatabase
    let events: EventCommand?
    /// Work that runs beside the loop (a child task of the monitor): a checkpoint, a switchover's end.
    let background: AsyncStream<@Sendable () async -> Void>.Continuation
    let wake: AsyncStream<MonitorWake>.Continuation

    var keys: ClusterKeys { settings.keys }
    var me: NodeName { settings.node }

    var config = ClusterConfig()
    /// Whose monitor reports keep coming (on this process's clock, never another machine's).
    var reports = ChangeTracker<NodeName>()
    /// Whose pgbouncer agent reports keep coming.
    var bouncerReports = ChangeTracker<NodeName>()
    /// The leader key's index: a silent leader's heartbeat stops changing it.
    var leaderKey = ChangeTracker<String>()
    var leaderFreeSince: ContinuousClock.Instant?
    /// The pending request's modify index and when this monitor first saw it.
    var requestSeen: (index: UInt64, since: ContinuousClock.Instant)?
    var unresponsiveSince: ContinuousClock.Instant?
    var notStreamingSince: ContinuousClock.Instant?
    /// When PostgreSQL was last launched, until it answers: a postmaster that has not yet taken its data
    /// directory counts as starting, not down, for a while.
    var launchedAt: ContinuousClock.Instant?
    var failedStarts = 0
    var lastAction = ""
    /// Malformed values in Consul already logged (each is logged once while it stays).
    var loggedProblems: Set<String> = []
    /// The primary's WAL position when `synchronous_standby_names` last changed (see ``SynchronousReplication``).
    var waitingSince: LSN?
    /// The switchover pause whose end is being awaited in the background.
    var finishingPause: String?
    /// A background checkpoint after promotion is running.
    let checkpointing = CancellationFlag()

    init(
        settings: BootstrapSettings, client: ConsulClient, logger: Logger, observeOnly: Bool, lease: Lease, database: any LocalDatabase,
        makeDatabase: @escaping @Sendable (BootstrapSettings) -> any LocalDatabase, events: EventCommand?,
        background: AsyncStream<@Sendable () async -> Void>.Continuation, wake: AsyncStream<MonitorWake>.Continuation
    ) {
        self.settings = settings
        self.client = client
        self.logger = logger
        self.observeOnly = observeOnly
        self.lease = lease
        self.database = database
        self.makeDatabase = makeDatabase
        self.events = events
        self.background = background
        self.wake = wake
    }

    /// Iterates now, then each time something wakes it or the next tick comes, until asked to stop.
    mutating func run(_ wakes: AsyncStream<MonitorWake>) async {
        var iterator = wakes.makeAsyncIterator()
        while !Task.isCancelled {
            await iterate()
            let pause = nextInterval()
            var woken: MonitorWake? = nil
            await withTaskGroup(of: Void.self) { group in
                group.addTask { [wake] in
                    do {
                        try await Task.sleep(for: pause)
                        wake.yield(.look)
                    } catch {}
                }
                woken = await iterator.next()
                group.cancelAll()
            }
            switch woken {
            case .stop?, nil: return
            case .reload(let new)?: apply(new)
            case .look?: break
            }
        }
    }

    /// The next loop comes after `loop_wait` — or sooner, exactly when a silent leader's takeover
    /// deadline falls, so that a dead node is replaced without waiting for the next tick.
    func nextInterval() -> Duration {
        let loop = config.loopWait.swiftDuration
        guard let quiet = leaderKey.quietFor("leader", at: .now), quiet < config.takeoverAfter.swiftDuration else { return loop }
        return min(loop, config.takeoverAfter.swiftDuration - quiet + .milliseconds(5))
    }

    /// New node settings (SIGHUP), from the next iteration. The node's identity and cluster cannot
    /// change under a running monitor.
    mutating func apply(_ new: BootstrapSettings) {
        guard new.node == settings.node, new.cluster == settings.cluster else {
            logger.error("SIGHUP: reload refused", metadata: ["error": "the node name and cluster cannot change while the monitor runs; restart it"])
            return
        }
        settings = new
        database.close()
        database = makeDatabase(new)
        logger.notice("Reloaded the node's settings")
    }

    // MARK: One iteration

    mutating func iterate() async {
        // Decide only with this node's session known (adopted after a restart, or new): otherwise its own
        // lock would look like another's.
        if await lease.currentSession == nil { await lease.ensureSession() }
        let now = ContinuousClock.now
        let observed = await database.observe()
        noteLocal(observed, at: now)
        let local = judged(observed, at: now)
        let snapshot = await readSnapshot(at: now)
        if let snapshot {
            config = snapshot.config
            await lease.update(config)
            // A lock this node's session holds from before a monitor restart: adopt it (prove it first).
            if let leader = snapshot.leader, leader.holder == me, leader.session == (await lease.currentSession), !(await lease.isLeading) {
                _ = await lease.prove()
            }
        }
        let observation = await observe(local: local, snapshot: snapshot, at: now)
        let action = MonitorDecision.next(observation)
        if action.description != lastAction {
            logger.info("Decision", metadata: ["monitor.action": "\(action)", "monitor.observe_only": "\(observeOnly)"])
            lastAction = action.description
        }
        if !observeOnly { await carryOut(action, snapshot: snapshot, local: local, request: observation.request) }
        // Look again only if the action may have changed the local PostgreSQL.
        var after = local
        switch action {
        case .keepLeading, .wait: break
        default: after = judged(await database.observe(), at: .now)
        }
        if case .primary = after, await lease.isLeading { await lease.setWritablePrimary(true) } else { await lease.setWritablePrimary(false) }
        await publishStatus(local: after, action: action)
    }

    mutating func noteLocal(_ local: LocalPostgres, at now: ContinuousClock.Instant) {
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
        // A start that ended down without ever answering counts as failed (a diverged history).
        if local.isUp {
            launchedAt = nil
            failedStarts = 0
        } else if case .down = local, let launched = launchedAt, now - launched >= Self.startGrace {
            launchedAt = nil
            failedStarts += 1
        }
    }

    /// How long a launched postmaster may take to show up in its data directory.
    static let startGrace: Duration = .seconds(5)

    /// What the monitor decides from: a postmaster launched moments ago that is not visible yet is starting.
    func judged(_ observed: LocalPostgres, at now: ContinuousClock.Instant) -> LocalPostgres {
        if case .down(let standbySignal) = observed, let launched = launchedAt, now - launched < Self.startGrace {
            return .unresponsive(standbySignal: standbySignal, postmaster: true)
        }
        return observed
    }

    /// The whole cluster prefix, read once, and what the trackers learn from it; nil when Consul does
    /// not answer.
    mutating func readSnapshot(at now: ContinuousClock.Instant) async -> ClusterSnapshot? {
        let pairs: [KVPair]
        do { pairs = try await client.list(keys.prefix, .consistent).value } catch {
            logger.warning("Cannot read the cluster from Consul", metadata: ["error": "\(error)"])
            return nil
        }
        let snapshot = ClusterSnapshot(pairs: pairs, keys: keys)
        for problem in snapshot.problems where !loggedProblems.contains(problem) {
            logger.error("Ignoring a malformed value in Consul", metadata: ["problem": "\(problem)"])
        }
        loggedProblems = Set(snapshot.problems)
        for (name, report) in snapshot.reports { reports.observe(name, index: report.modifyIndex, at: now) }
        reports.keep(only: Set(snapshot.reports.keys))
        for (name, index) in snapshot.bouncerIndexes { bouncerReports.observe(name, index: index, at: now) }
        bouncerReports.keep(only: Set(snapshot.bouncerIndexes.keys))
        if let leader = snapshot.leader, leader.session != (await lease.currentSession) {
            leaderKey.observe("leader", index: leader.modifyIndex, at: now)
        } else {
            leaderKey.keep(only: [])
        }
        if snapshot.leader == nil {
            if leaderFreeSince == nil { leaderFreeSince = now }
        } else {
            leaderFreeSince = nil
        }
        if let request = snapshot.request {
            if requestSeen?.index != request.modifyIndex { requestSeen = (request.modifyIndex, now) }
        } else {
            requestSeen = nil
        }
        return snapshot
    }

    /// Whether a node's monitor keeps reporting (its report's index changed recently, on this clock).
    func isFresh(_ node: NodeName, at now: ContinuousClock.Instant) -> Bool {
        reports.isFresh(node, within: MemberStatus.freshness(loopWait: config.loopWait), at: now)
    }

    func observe(local: LocalPostgres, snapshot: ClusterSnapshot?, at now: ContinuousClock.Instant) async -> MonitorObservation {
        let session = await lease.currentSession
        var leader = LeaderState.unknown
        var silentFor = GoDuration.zero
        var endpoint: String? = nil
        var candidates: [CandidateState] = []
        var primaryReport = PrimaryReport.none
        var request: TakeoverRequest? = nil
        if let snapshot {
            if let held = snapshot.leader {
                leader = .held(by: held.holder, mine: held.session == session && held.holder == me)
                if held.session != session {
                    silentFor = GoDuration(leaderKey.quietFor("leader", at: now) ?? .zero)
                    endpoint = snapshot.endpoint(of: held.holder)
                }
            } else {
                leader = .free(since: GoDuration(leaderFreeSince.map { now - $0 } ?? .zero))
            }
            candidates = FailoverCandidates.candidates(snapshot, fresh: { isFresh($0, at: now) }, me: me, local: local)
            if let primary = snapshot.registeredPrimary(otherThan: me) {
                if isFresh(primary.name, at: now), let report = snapshot.reports[primary.name] {
                    primaryReport = report.status.role == "primary" ? .live(primary.name) : .down(primary.name)
                } else {
                    primaryReport = .unknown(primary.name)
                }
            }
            request = standingRequest(snapshot, candidates: candidates, at: now)
        }
        return MonitorObservation(
            node: me, config: config, local: local, localUnresponsiveFor: GoDuration(unresponsiveSince.map { now - $0 } ?? .zero), leader: leader,
            sinceLastHeartbeat: await lease.sinceLastBeat, leaderSilentFor: silentFor, leaderEndpoint: endpoint, candidates: candidates,
            lastPrimaryPosition: snapshot?.lastPrimaryPosition, synchronous: snapshot?.sync, paused: snapshot?.pause != nil,
            primaryReport: primaryReport, notStreamingFor: GoDuration(notStreamingSince.map { now - $0 } ?? .zero), failedStarts: failedStarts,
            registeredPrimary: snapshot?.registrations[me]?.role == .primary, request: request, guarded: await guardianAnswers())
    }

    /// The pending request when it stands (``TakeoverRequest/standing(age:leader:targetHealthy:targetEligible:)``),
    /// judged with this monitor's view of the target's health.
    func standingRequest(_ snapshot: ClusterSnapshot, candidates: [CandidateState], at now: ContinuousClock.Instant) -> TakeoverRequest? {
        guard let pending = snapshot.request, let seen = requestSeen else { return nil }
        let choice = FailoverCandidates.choose(
            candidates, synchronousMode: config.synchronousMode, synchronous: snapshot.sync, lastPrimaryPosition: snapshot.lastPrimaryPosition,
            maximumLag: config.maximumLagOnFailover)
        let target = pending.request.to
        let standing = pending.request.standing(
            age: now - seen.since, leader: snapshot.leader?.holder, targetHealthy: candidates.contains { $0.name == target && $0.healthy },
            targetEligible: choice.ranked.contains(target))
        return standing == .standing ? pending.request : nil
    }

    /// Whether a watchdog answers (checked each loop; the monitor never leads without one).
    func guardianAnswers() async -> Bool {
        observeOnly ? false : await lease.guardianAnswers()
    }

    func publishStatus(local: LocalPostgres, action: MonitorAction) async {
        let status = MemberStatus(local: local, decision: action.description, time: Date().timeIntervalSince1970)
        do { try await client.put(keys.status(me), status.json.serializedBytes()) } catch {
            logger.warning("Cannot publish this node's status", metadata: ["error": "\(error)"])
        }
    }

    func event(_ kind: String, _ detail: String) async {
        let event = ClusterEvent(time: rfc3339Now(), node: me, kind: kind, detail: detail)
        events?.submit(event)
        do { try await recordEvent(event, keys: keys, client: client) } catch {
            logger.warning("Cannot record an event", metadata: ["event.kind": "\(kind)", "error": "\(error)"])
        }
    }

    /// Graceful stop: a leading primary stops PostgreSQL (while the lease still beats), then releases
    /// the lock; the session is destroyed and the watchdog told it may exit.
    mutating func shutdown() async {
        if !observeOnly, await lease.isLeading {
            await lease.setWritablePrimary(false)
            do {
                let outcome = try await database.stop()
                await lease.release()
                await event("stop", "monitor stopped: PostgreSQL stopped (\(outcome.rawValue)) and the leader lock released")
            } catch {
                logger.critical("Cannot stop PostgreSQL; keeping the lock until the watchdog fences", metadata: ["error": "\(error)"])
            }
        }
        await lease.close()
        database.close()
    }
}
