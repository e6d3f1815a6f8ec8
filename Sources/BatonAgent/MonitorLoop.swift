import BatonSettings
import BatonConsul
import BatonCore
import BatonFence
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
    /// What the node API answers from.
    let state: NodeState
    let metrics = MonitorMetrics()
    /// The other candidates' node APIs, asked before this node takes the lock.
    let peerPositions: PeerPositions
    /// A silent leader's PostgreSQL, asked a moment before this node may take over.
    let silentLeaderProbe = SilentLeaderProbe()
    /// The role this node's service is registered in Consul with, and when.
    var service: (tag: String, at: ContinuousClock.Instant)?

    var keys: ClusterKeys { settings.keys }
    var me: NodeName { settings.node }

    var config = ClusterConfig()
    /// What the monitor remembers between loops (trackers, start grace, sightings): BatonCore's.
    var memory = MonitorState()
    /// The values of the cluster's prefix parsed at earlier loops (unchanged ones are not parsed again).
    var parseCache = ClusterSnapshot.ParseCache()
    /// When the leader watch first saw each heartbeat (sooner than the loop's read): the lease's.
    var leaderSightings: LeaderSightings { lease.sightings }
    var lastAction = ""
    /// This node's report as last written to Consul, and when (see ``MemberStatus/due(after:writtenAgo:loopWait:)``).
    var statusWritten: (status: MemberStatus, at: ContinuousClock.Instant)?
    /// Malformed values in Consul already logged (each is logged once while it stays).
    var loggedProblems: Set<String> = []
    /// Warnings that repeat every loop while Consul is out of reach, logged once per 30 s.
    var consulWarnings = RepeatedWarnings()
    /// The watchdog that does not see the postmaster, logged once per 30 s.
    var watchdogWarnings = RepeatedWarnings()
    /// The postmaster the watchdog last said it would fence, as this monitor sees it too: asked again
    /// only when PostgreSQL was started anew (or the answer differed), not every loop.
    var watchdogSeesPostmaster: Int32?
    /// This node's unicast VRRP peers in keepalived.conf (with `vrrp-unicast`).
    var keepalivedPeers: KeepalivedPeers
    /// The switchover pause whose end is being awaited in the background.
    var finishingPause: String?
    /// The cluster-wide parameters last written to this node's parameters file, and whether the file
    /// is known to hold them (a clone brings the primary's).
    var appliedParameters: PostgresParameters?
    var parametersWritten = false
    /// Settings PostgreSQL applies only at a restart, and when that was last asked.
    var pendingRestart: [String] = []
    var pendingRestartCheckedAt: ContinuousClock.Instant?
    /// After a change of the parameters file, `pending_restart` is asked every loop until then: the
    /// monitor's backend reads the file only once the postmaster has passed SIGHUP on to it, which a
    /// loaded machine may do after the first loop's look.
    var pendingRestartWatchedUntil: ContinuousClock.Instant?
    /// The leader's replication slots as last seen, and what it knows of their nodes.
    var slots: [SlotReport] = []
    var slotsRegisteredBefore: Set<String> = []
    /// On the leader: what has disagreed about who serves past the patience (``RoutingAgreement``).
    var disagreements: [String] = []
    var orphanSlotsSince: [String: ContinuousClock.Instant] = [:]
    /// The pending command's id, when this monitor first saw it, and whether it was asked while this
    /// monitor ran (not already there at its first look).
    var commandSeen: (id: String, since: ContinuousClock.Instant, whileRunning: Bool)?
    /// This monitor has read the cluster once.
    var startedUp = false
    /// A background checkpoint after promotion is running.
    let checkpointing = CancellationFlag()
    /// On the leader, with backups: how the WAL archive fares (nil elsewhere).
    var archive: ArchiveHealth?
    /// The newest backup's end, read from pgBackRest in the background (``refreshArchiveHealth()``).
    let newestBackup = NewestBackup()
    /// The leader's scheduled backups (`backup_every`).
    let scheduledBackup = ScheduledBackup()

    init(
        settings: BootstrapSettings, client: ConsulClient, logger: Logger, observeOnly: Bool, lease: Lease, database: any LocalDatabase,
        makeDatabase: @escaping @Sendable (BootstrapSettings) -> any LocalDatabase, events: EventCommand?,
        background: AsyncStream<@Sendable () async -> Void>.Continuation, wake: AsyncStream<MonitorWake>.Continuation, state: NodeState,
        apiTLS: TLSFiles
    ) {
        self.state = state
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
        self.keepalivedPeers = KeepalivedPeers(logger: logger)
        self.peerPositions = PeerPositions(tls: apiTLS)
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

    /// The next loop comes after `loop_wait`, or when a silent leader's takeover deadline falls.
    func nextInterval() -> Duration {
        memory.nextInterval(config: config, grant: grantSeen(), at: .now)
    }

    /// The latest promise this node's API made a leader (member rounds), as of now.
    func grantSeen() -> LeaseGrant.Seen? {
        state.current.failsafeGrant?.seen(now: MonotonicClock.nanoseconds())
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
        memory.noteLocal(observed, at: now)
        let local = memory.judged(observed, at: now)
        // Nothing of PostgreSQL runs here: keepalived may keep the VIP here (lowest priority) while no
        // node leads — told before the decision, so a leader releasing the lock goes straight to vacant.
        if !observeOnly, case .down = local { await lease.setLocal(writablePrimary: false, vacant: true) }
        let snapshot = await readSnapshot(at: now)
        if let snapshot {
            await lease.update(config, members: snapshot.registrations.mapValues(\.api))
            state.publish(snapshot, reporting: Set(snapshot.registrations.keys.filter { memory.isFresh($0, config: config, at: now) }))
            // A lock this node's session holds from before a monitor restart: adopt it (prove it first).
            if let leader = snapshot.leader, leader.holder == me, leader.session == (await lease.currentSession), !(await lease.isLeading) {
                _ = await lease.prove()
            }
        }
        var observation = await observe(local: local, snapshot: snapshot, at: now)
        var action = MonitorDecision.next(observation)
        if !observeOnly, case .standby = local, action.takesLock, let snapshot {
            // Before taking the lock: the other candidates' own answers in place of their reports, and
            // whether any node runs a writable primary (one Consul may have forgotten, or one whose
            // monitor is not running).
            let now = ContinuousClock.now
            let peers = observation.candidates.filter { $0.name != me && ($0.healthy || memory.isFresh($0.name, config: config, at: now)) }
                .compactMap { c in snapshot.registrations[c.name]?.api.map { (c.name, $0) } }
            let timeout = min(.milliseconds(500), config.loopWait.swiftDuration / 2)
            // Before taking a free lock, every other node's PostgreSQL asked directly at the same time:
            // a primary whose monitor does not run (it never started, or exited before it took the lock)
            // answers nothing through its API, has no watchdog, and takes writes nobody fences.
            var others = action.acquiresFreeLock ? snapshot.registrations.values.filter { $0.name != me }.map { ($0.name, sourceConninfo($0)) } : []
            // Taking over a silent leader: its PostgreSQL, asked a moment before the deadline (past its
            // fence: a watchdog killed with its monitor leaves it writable, and nobody fences it).
            var answeredWritable: Set<NodeName> = []
            if case .takeOver(let holder, _) = action, holder != me, let index = snapshot.leader?.modifyIndex, let registration = snapshot.registrations[holder] {
                switch silentLeaderProbe.take(holder, index: index) {
                case true?: answeredWritable.insert(holder)
                case false?: break
                case nil: others.append((holder, sourceConninfo(registration)))  // not asked in time (a loop that came late): asked now
                }
            }
            async let writable = PeerPositions.writablePostgres(others, timeout: timeout)
            let live = peers.isEmpty ? [:] : await peerPositions.ask(peers, timeout: timeout)
            let writablePostgres = (await writable).union(answeredWritable)
            if !live.isEmpty || !writablePostgres.isEmpty {
                observation.candidates = FailoverCandidates.confirmed(observation.candidates, live: live)
                observation.peerRunsPrimary = LivePosition.primary(among: live, writablePostgres: writablePostgres)
                let confirmed = MonitorDecision.next(observation)
                if confirmed != action {
                    logger.notice(
                        observation.peerRunsPrimary.map { "\($0) answers that it runs a writable primary; not taking the lock" }
                            ?? "Another candidate is further ahead than its report said; not taking the lock",
                        metadata: ["monitor.positions": "\(live.mapValues(\.position.description))", "monitor.action": "\(confirmed)"])
                }
                action = confirmed
            }
        }
        if !observeOnly, case .standby = local, let snapshot { askSilentLeader(snapshot) }
        metrics.decided(action)
        if snapshot != nil { metrics.decision(observation, leader: snapshot?.leader?.holder) }
        if action.description != lastAction {
            var about: Logger.Metadata = ["event": "decision: \(action.kind)", "monitor.action": "\(action)", "monitor.observe_only": "\(observeOnly)"]
            if let reason = action.reason { about["reason"] = "\(reason)" }
            logger.info("Decision", metadata: about)
            lastAction = action.description
        }
        var commanded = false
        if !observeOnly {
            await carryOut(action, snapshot: snapshot, local: local, request: observation.request)
            metrics.acted(action)
            if let snapshot {
                await applyParameters(snapshot, local: local)
                commanded = await runCommand(snapshot, local: local, action: action)
                startedUp = true
            }
        }
        // Look again only if the action may have changed the local PostgreSQL.
        var after = local
        switch action {
        case .keepLeading, .wait: if commanded { after = memory.judged(await database.observe(), at: .now) }
        default: after = memory.judged(await database.observe(), at: .now)
        }
        let leading = await lease.isLeading
        switch after {
        case .primary where leading: await lease.setLocal(writablePrimary: true, vacant: false)
        case .down: await lease.setLocal(writablePrimary: false, vacant: !observeOnly)
        default: await lease.setLocal(writablePrimary: false, vacant: false)
        }
        if !leading {
            slots = []
            archive = nil
            disagreements = []
            memory.routing = DisagreementMemory()
        }
        await refreshPendingRestart(local: after)
        await publishStatus(local: after, action: action)
        publishView(local: after, snapshot: snapshot)
        await observeMetrics(local: after, snapshot: snapshot, leading: leading, took: .now - now)
        if !observeOnly, let snapshot {
            await refreshRegistration(snapshot)
            await registerService(local: after, leading: leading)
            keepalivedPeers.reconcile(settings: settings, registrations: snapshot.registrations)
            await redeliverVRRPNotification(snapshot)
        }
    }

    /// Asks the silent leader's PostgreSQL in the background whether it still takes writes, a moment
    /// before this node may take over (``MonitorState/silentLeaderAsk(node:config:grant:at:)``), so that
    /// the answer is in when the deadline falls — also from a dead machine, which answers nothing.
    func askSilentLeader(_ snapshot: ClusterSnapshot) {
        guard let ask = memory.silentLeaderAsk(node: me, config: config, grant: grantSeen(), at: .now),
            snapshot.leader?.holder == ask.holder, let registration = snapshot.registrations[ask.holder],
            silentLeaderProbe.begin(ask.holder, index: ask.index)
        else { return }
        let conninfo = sourceConninfo(registration)
        let askAt = ContinuousClock.now + ask.after
        let timeout = min(MonitorState.silentLeaderAsked, config.loopWait.swiftDuration / 2) - .milliseconds(20)
        background.yield { [probe = silentLeaderProbe] in
            do { try await Task.sleep(until: askAt, clock: .continuous) } catch { return }  // the monitor stops: nothing to ask
            let writable = await PeerPositions.writablePostgres([(ask.holder, conninfo)], timeout: timeout)
            probe.finish(ask.holder, index: ask.index, writable: writable.contains(ask.holder))
        }
    }

    /// Keeps this node's registration in step with its settings (a reloaded API address, priority or
    /// location; a registration from before the API or the backup server existed), keeping the role
    /// and upstream it has.
    func refreshRegistration(_ snapshot: ClusterSnapshot) async {
        guard let seen = snapshot.registrations[me], seen != settings.registration(role: seen.role, upstream: seen.upstream) else { return }
        do {
            // Check-and-set: the leader may change this node's role at the same time.
            guard let pair = try await client.get(keys.node(me), .consistent).value else { return }
            let current = try NodeRegistration(bytes: pair.value, key: pair.key)
            let wanted = settings.registration(role: current.role, upstream: current.upstream)
            guard wanted != current else { return }
            _ = try await client.put(keys.node(me), wanted.json.serializedBytes(), mode: .cas(pair.modifyIndex))
        } catch {
            logger.warning("Cannot update this node's registration", metadata: ["error": "\(error)"])
        }
    }

    /// What the node API answers from.
    func publishView(local: LocalPostgres, snapshot: ClusterSnapshot?) {
        let config = self.config
        state.update { v in
            // Whether it leads and until when, the lease tells the view itself (``Lease/published``).
            v.local = local
            v.loopRanAt = MonotonicClock.nanoseconds()
            v.loopWait = config.loopWait
            v.fenceAfter = config.fenceAfter
            v.failsafeMode = config.failsafeMode
            v.priority = settings.priority
            v.consulReachable = snapshot != nil
            if let snapshot {
                v.leader = snapshot.leader?.holder
                v.synchronousStandby = snapshot.sync?.standby
                v.leaderPosition = snapshot.leader.flatMap { snapshot.reports[$0.holder]?.status.position }
            }
        }
    }

    func observeMetrics(local: LocalPostgres, snapshot: ClusterSnapshot?, leading: Bool, took: Duration) async {
        metrics.role(local)
        metrics.lockHeld.record(leading ? 1 : 0)
        metrics.consulReachable.record(snapshot != nil ? 1 : 0)
        metrics.routingDisagreement.record(Double(disagreements.count))
        metrics.failsafe.record(await lease.failsafeActive ? 1 : 0)
        metrics.loopDuration.record(Double(took.components.seconds) + Double(took.components.attoseconds) / 1e18)
        if leading {
            metrics.heartbeatAge.record(Double((await lease.sinceLastBeat).nanoseconds) / 1e9)
        }
        switch local {
        case .primary(let position, let timeline), .standby(let position, let timeline, _, _):
            metrics.timeline.record(timeline)
            metrics.walPosition.record(Double(position.value))
        default: break
        }
        if case .primary = local, let lags = try? await database.replicationLag() {  // ignored: metrics are best effort; the next loop tries again
            metrics.replication(lags)
        }
        if let snapshot { metrics.bouncers(snapshot.bouncers) }
        if leading { metrics.slots(slots) }
        if leading, let archive { metrics.archive(archive) }
        metrics.pendingRestart.record(pendingRestart.count)
    }

    /// This node as a Consul service named after the cluster: its PostgreSQL's address and port, tagged
    /// `primary` or `replica`, with an HTTP check on its own API (`/primary` or `/replica`), so that
    /// Consul's health view and DNS (`primary.<cluster>.service.consul`) name only the primary under
    /// `primary`. Registered again when the role changes, and every 30 s (a Consul agent that restarted).
    mutating func registerService(local: LocalPostgres, leading: Bool) async {
        var tag = "replica"
        if case .primary = local, leading { tag = "primary" }
        if let service, service.tag == tag, ContinuousClock.now - service.at < .seconds(30) { return }
        let api = settings.apiAddress
        let check = CheckDefinition(
            name: "baton \(tag)", kind: .http(url: api.url + "/" + tag, interval: .seconds(1), timeout: .seconds(1)))
        let registration = ServiceRegistration(
            id: serviceID, name: settings.cluster.value, tags: [tag], address: settings.address.value, port: settings.pgPort.value,
            meta: ["node": me.value, "api": api.url], checks: [check])
        do {
            try await client.registerService(registration)
            service = (tag, .now)
        } catch {
            logger.warning("Cannot register the node's service in Consul", metadata: ["error": "\(error)"])
        }
    }

    var serviceID: String { "baton-\(settings.cluster)-\(me)" }

    /// keepalived's last notification on this node, delivered again when Consul records an older state
    /// for it (`baton notify` could not reach Consul: the node was cut off as keepalived changed state).
    func redeliverVRRPNotification(_ snapshot: ClusterSnapshot) async {
        let path = KeepalivedSettings.lastNotificationPath(stateDirectory: settings.stateDirectory.value)
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return }  // ignored: none kept yet (no keepalived, or no transition)
        let kept: VRRPNotification
        do { kept = try VRRPNotification(spool: text) } catch {
            logger.warning("Ignoring a malformed kept VRRP notification", metadata: ["path": "\(path)", "error": "\(error.message)"])
            return
        }
        guard let recorded = snapshot.keepalived.node(me), (recorded.stateSequence ?? 0) < kept.sequence else { return }
        do {
            let config = NodeConfig(cluster: settings.cluster, node: me, consul: settings.consulAddresses)
            if try await Notify(config: config, client: client).record(kept) {
                logger.notice("Delivered keepalived's last notification that Consul had missed", metadata: ["vrrp.state": "\(kept.state)"])
            }
        } catch {
            logger.warning("Cannot deliver keepalived's last notification", metadata: ["error": "\(error)"])
        }
    }

    /// The whole cluster prefix, read once, and what the trackers learn from it; nil when Consul does
    /// not answer.
    mutating func readSnapshot(at now: ContinuousClock.Instant) async -> ClusterSnapshot? {
        let pairs: [KVPair]
        do { pairs = try await client.list(keys.prefix, .consistent).value } catch {
            consulWarnings.warning(logger, "Cannot read the cluster from Consul", metadata: ["error": "\(error)"])
            return nil
        }
        consulWarnings.clear()
        let snapshot = ClusterSnapshot(pairs: pairs, keys: keys, cache: &parseCache)
        for problem in snapshot.problems where !loggedProblems.contains(problem) {
            logger.error("Ignoring a malformed value in Consul", metadata: ["problem": "\(problem)"])
        }
        loggedProblems = Set(snapshot.problems)
        memory.recall(snapshot, node: me)
        guard let usable = memory.configuration(from: snapshot, current: config) else {
            consulWarnings.warning(
                logger, "The cluster's config key cannot be read and this monitor has read none before: acting as if Consul did not answer",
                metadata: ["problem": "\(snapshot.configProblem ?? "")"])
            return nil
        }
        config = usable
        let session = await lease.currentSession
        let sightings = leaderSightings
        memory.absorb(snapshot, node: me, session: session, leading: await lease.isLeading, firstSeen: { sightings.firstSeen($0) }, at: now)
        return snapshot
    }

    mutating func observe(local: LocalPostgres, snapshot: ClusterSnapshot?, at now: ContinuousClock.Instant) async -> MonitorObservation {
        let guarded = await guardianAnswers()
        metrics.watchdog.record(guarded ? 1 : 0)
        return memory.observation(
            node: me, config: config, local: local, snapshot: snapshot, session: await lease.currentSession, sinceLastHeartbeat: await lease.sinceLastBeat,
            guarded: guarded, grant: grantSeen(), at: now)
    }

    /// Whether a watchdog answers (checked each loop) and sees the postmaster this monitor sees (asked
    /// once per start of PostgreSQL; the monitor never leads without one): a watchdog that resolves the data directory or the binaries
    /// elsewhere — a bindir link re-pointed, a data directory mounted since it started — could not
    /// fence it (issue 23, finding 10). A watchdog from before it could say is trusted as it was.
    mutating func guardianAnswers() async -> Bool {
        if observeOnly { return false }
        guard await lease.guardianAnswers() else { return false }
        guard let mine = database.postmasterPID() else { return true }
        if mine == watchdogSeesPostmaster { return true }
        guard let seen = await lease.guardianPostmaster() else {
            watchdogSeesPostmaster = mine  // an earlier watchdog cannot say: asked again at the next start only
            return true
        }
        guard seen != mine else {
            watchdogSeesPostmaster = mine
            watchdogWarnings.clear()
            return true
        }
        watchdogWarnings.warning(
            logger, "The watchdog does not see this node's postmaster, so it could not fence it: not taking the lock (check pg_bindir and pgdata, or restart the watchdog on a standby)",
            metadata: ["postgres.pid": "\(mine)", "watchdog.sees": "\(seen == 0 ? "none" : String(seen))"])
        return false
    }

    mutating func publishStatus(local: LocalPostgres, action: MonitorAction) async {
        var status = memory.report(local, decision: action.description, time: Date().timeIntervalSince1970)
        status.pendingRestart = local.isUp ? pendingRestart : []
        if case .primary = local {
            status.slots = slots
            status.archive = archive?.reported
        }
        status.disagreements = disagreements
        let now = ContinuousClock.now
        guard status.due(after: statusWritten?.status, writtenAgo: statusWritten.map { now - $0.at }, loopWait: config.loopWait) else { return }
        do {
            try await client.put(keys.status(me), status.json.serializedBytes())
            statusWritten = (status, now)
        } catch {
            consulWarnings.warning(logger, "Cannot publish this node's status", metadata: ["error": "\(error)"])
        }
    }

    func event(_ kind: String, _ detail: String) async { await eventRecorder()(kind, detail) }

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
        if !observeOnly {
            do { try await client.deregisterService(serviceID) } catch {
                logger.warning("Cannot deregister the node's service from Consul", metadata: ["error": "\(error)"])
            }
        }
        await lease.close()
        database.close()
    }
}
