import BatonBootstrap
import BatonConsul
import BatonCore
import BatonPostgres
import ConsulAPI
import Foundation
import Logging

#if canImport(Glibc)
    import Glibc
#endif

/// `baton monitor`: one loop per node that observes its PostgreSQL and the cluster in Consul, decides
/// with ``MonitorDecision`` and carries the decision out (or only logs it with `--observe`).
public final class Monitor: @unchecked Sendable {
    // @unchecked: the loop runs on one task; `wake` is an AsyncStream continuation (thread-safe).
    private(set) var settings: BootstrapSettings
    let client: ConsulClient
    let logger: Logger
    let observeOnly: Bool
    private(set) var probe: LocalPostgresProbe
    private(set) var control: PostgresControl
    /// Settings read on SIGHUP, applied at the start of the next iteration.
    private let pendingSettings = NSLock()
    private var reloaded: BootstrapSettings?
    let watchdog: Watchdog?
    /// The node's `event-command`, run with each event (fixed at start: a SIGHUP does not change it).
    let eventCommand: EventCommand?
    var keys: ClusterKeys { settings.keys }
    var me: NodeName { settings.node }

    private var session: String?
    private var sessionTTL: GoDuration?
    /// When the last heartbeat that reached Consul was sent (the watchdog's deadline counts from it).
    private var lastHeartbeat: ContinuousClock.Instant = .now - .seconds(3600)
    /// The leader key's modify index as last read, and since when (this monitor's clock) it has not changed.
    private var leaderIndexSeen: (index: UInt64, since: ContinuousClock.Instant)?
    private var leaderFreeSince: ContinuousClock.Instant?
    private var localDownSince: ContinuousClock.Instant?
    private var notStreamingSince: ContinuousClock.Instant?
    private var failedStarts = 0
    private var lastAction: String = ""
    private var config = ClusterConfig()
    /// Whether the last read of the leader key showed this monitor's session holding it.
    private var holdsLock = false

    public init(settings: BootstrapSettings, client: ConsulClient, logger: Logger, observeOnly: Bool, watchdog: Watchdog?) {
        self.settings = settings
        self.client = client
        self.logger = logger
        self.observeOnly = observeOnly
        self.watchdog = watchdog
        eventCommand = settings.eventCommand.map { EventCommand(program: $0.value, cluster: settings.cluster, logger: logger) }
        probe = LocalPostgresProbe(socketDirectory: settings.pgSocketDirectory.value, port: settings.pgPort.value, dataDirectory: settings.pgdata.value)
        control = PostgresControl(binDirectory: settings.pgBindir.value, dataDirectory: settings.pgdata.value, osUser: settings.pgOSUser)
    }

    /// Runs until the task is cancelled (SIGTERM), then stops gracefully: a leading primary stops its
    /// PostgreSQL before it gives up the lock, so that no replica promotes while it still takes writes.
    public func run() async {
        let (wakes, wake) = AsyncStream<Void>.makeStream(bufferingPolicy: .bufferingNewest(1))
        // Wake the loop the moment the lock changes hands, instead of at the next tick.
        let watcher = Task { [client, keys] in await watchLeaderHolder(client: client, key: keys.leader, wake: wake) }
        // And the moment the local PostgreSQL goes away: an idle connection of its own that the server
        // closes when it stops or crashes, so a dead primary is released without waiting for a tick.
        let deathWatch = Task { [probe] in
            let conninfo = probe.conninfo
            while !Task.isCancelled {
                guard let connection = try? await PostgresConnection.connect(conninfo) else {
                    try? await Task.sleep(for: .seconds(1))
                    continue
                }
                let cancelled = CancellationFlag()
                await withTaskCancellationHandler {
                    await connection.waitUntilServerSpeaks { cancelled.isSet }
                } onCancel: {
                    cancelled.set()
                }
                connection.close()
                if !Task.isCancelled { wake.yield() }
                try? await Task.sleep(for: .milliseconds(200))
            }
        }
        defer {
            watcher.cancel()
            deathWatch.cancel()
        }
        await runLoop(wakes: wakes, wake: wake, interval: { nextInterval() }) { await iterate() }
        await shutdown()
    }

    /// The next loop comes after `loop_wait` — or sooner, exactly when a silent leader's takeover
    /// deadline falls, so that a dead node is replaced without waiting for the next tick.
    func nextInterval() -> Duration {
        let loop = config.loopWait.swiftDuration
        guard let seen = leaderIndexSeen else { return loop }
        let due = seen.since + config.takeoverAfter.swiftDuration + .milliseconds(5) - ContinuousClock.now
        return due > .zero ? min(loop, due) : loop
    }

    // MARK: One iteration

    struct ClusterView {
        var leader: LeaderState
        var registrations: [NodeName: NodeRegistration]
        var candidates: [CandidateState]
        var lastPrimaryPosition: LSN?
        var primaryReport: PrimaryReport
        var paused: Bool
        var requestedLeader: NodeName?
        var synchronousStandby: NodeName?
        var syncKeyIndex: UInt64
        /// The leader key as read (its index and flags carry the heartbeat).
        var leaderPair: KVPair?
        var leaderSilentFor: GoDuration
    }

    /// Takes new node settings (SIGHUP): they apply from the next iteration. The node's identity and
    /// cluster cannot change under a running monitor.
    public func reload(_ new: BootstrapSettings) -> String? {
        guard new.node == settings.node, new.cluster == settings.cluster else {
            return "the node name and cluster cannot change while the monitor runs; restart it"
        }
        pendingSettings.withLock { reloaded = new }
        return nil
    }

    private func applyReload() {
        guard let new = pendingSettings.withLock({ () -> BootstrapSettings? in
            defer { reloaded = nil }
            return reloaded
        }) else { return }
        settings = new
        probe.close()
        probe = LocalPostgresProbe(socketDirectory: new.pgSocketDirectory.value, port: new.pgPort.value, dataDirectory: new.pgdata.value)
        control = PostgresControl(binDirectory: new.pgBindir.value, dataDirectory: new.pgdata.value, osUser: new.pgOSUser)
        logger.notice("Reloaded the node's settings")
    }

    func iterate() async {
        applyReload()
        let local = await probe.observe()
        if local.isUp { localDownSince = nil } else if localDownSince == nil { localDownSince = .now }
        if case .standby(_, _, _, false) = local {
            if notStreamingSince == nil { notStreamingSince = .now }
        } else {
            notStreamingSince = nil
        }
        var view = await readCluster(local: local)
        let hadSession = session != nil
        await ensureSession()
        if !hadSession, session != nil { view = await readCluster(local: local) }
        let since = ContinuousClock.now - lastHeartbeat
        let observation = MonitorObservation(
            node: me, config: config, local: local, localDownFor: GoDuration(localDownSince.map { ContinuousClock.now - $0 } ?? .zero),
            leader: view?.leader ?? .unknown, sinceLastHeartbeat: GoDuration(since), leaderSilentFor: view?.leaderSilentFor ?? .zero,
            leaderEndpoint: leaderEndpoint(view), candidates: view?.candidates ?? [], lastPrimaryPosition: view?.lastPrimaryPosition,
            synchronousStandby: view?.synchronousStandby, paused: view?.paused ?? false, primaryReport: view?.primaryReport ?? .none,
            notStreamingFor: GoDuration(notStreamingSince.map { ContinuousClock.now - $0 } ?? .zero),
            failedStarts: failedStarts, registeredPrimary: view?.registrations[me]?.role == .primary, requestedLeader: view?.requestedLeader)
        if case .held(_, true)? = view?.leader { holdsLock = true } else { holdsLock = false }
        let action = MonitorDecision.next(observation)
        if action.description != lastAction {
            logger.info("Decision", metadata: ["monitor.action": "\(action)", "monitor.observe_only": "\(observeOnly)"])
            lastAction = action.description
        }
        if !observeOnly { await carryOut(action, view: view, local: local) }
        // Look again only if the action may have changed the local PostgreSQL.
        var after = local
        switch action {
        case .keepLeading, .wait: break
        default: after = await probe.observe()
        }
        await publishStatus(local: after, action: action)
        writeCheckState(local: after)
    }

    func leaderEndpoint(_ view: ClusterView?) -> String? {
        guard case .held(let holder, false)? = view?.leader, let r = view?.registrations[holder] else { return nil }
        return "\(r.address.value):\(r.port.value)"
    }

    /// Keeps one session alive (renewed every iteration); a lost session is replaced.
    func ensureSession() async {
        // A changed TTL takes effect with a new session, while this node does not hold the lock.
        if let current = session, let ttl = sessionTTL, ttl != config.ttl,
            (try? await client.get(keys.leader).value?.session) != current
        {
            try? await client.destroySession(current)
            session = nil
        }
        do {
            if let session {
                try await client.renewSession(session)
                return
            }
        } catch let error as ConsulError where error.code == .sessionNotFound {
            logger.warning("Session lost", metadata: ["monitor.session": "\(session ?? "")"])
            session = nil
        } catch {
            logger.warning("Cannot renew the session", metadata: ["error": "\(error)"])
            return
        }
        do {
            session = try await client.createSession(
                SessionRequest(name: "baton-\(settings.cluster)-\(me)", ttl: config.ttl, lockDelay: config.lockDelay, behavior: .release, nodeChecks: []))
            sessionTTL = config.ttl
        } catch {
            logger.warning("Cannot create a session", metadata: ["error": "\(error)"])
        }
    }

    var fenceAfter: Duration { config.fenceAfter.swiftDuration }

    /// The leader proves it is alive and still holds the lock: a check-and-set write of the leader key
    /// at the index this iteration read (flags count the beats, so every beat changes the key). A
    /// replica taking over a silent leader writes the key at the same index, so exactly one of the two
    /// wins. Only a beat that got through moves the watchdog's deadline, counted from when it was sent.
    func heartbeat(_ pair: KVPair?) async throws {
        guard let pair else { return }
        if try await !beat({ try await client.put(keys.leader, me.value, flags: pair.flags &+ 1, mode: .cas(pair.modifyIndex)) }) {
            logger.warning("The leader key changed under the heartbeat; looking again")
        }
    }

    /// Runs a write of the leader key that proves this node holds the lock (a heartbeat, or taking the
    /// lock); when it got through, the watchdog's deadline moves, counted from when it was sent.
    func beat(_ write: () async throws -> Bool) async throws -> Bool {
        let sent = (ContinuousClock.now, Watchdog.monotonicNanoseconds())
        guard try await write() else { return false }
        holdsLock = true
        lastHeartbeat = sent.0
        watchdog?.renewed(fenceAfter: fenceAfter, sentAt: sent.1)
        return true
    }

    func readCluster(local: LocalPostgres) async -> ClusterView? {
        let pairs: [KVPair]
        do { pairs = try await client.list(keys.prefix, .consistent).value } catch {
            logger.warning("Cannot read the cluster from Consul", metadata: ["error": "\(error)"])
            return nil
        }
        var registrations: [NodeName: NodeRegistration] = [:]
        var statuses: [NodeName: MemberStatus] = [:]
        var leader: LeaderState = .free(since: .zero)
        for pair in pairs {
            if pair.key == keys.config, let c = try? ClusterConfig(bytes: pair.value, key: pair.key) { config = c }
            if pair.key.hasPrefix(keys.nodesPrefix), let r = try? NodeRegistration(bytes: pair.value, key: pair.key) { registrations[r.name] = r }
            if pair.key.hasPrefix(keys.statusPrefix), let status = MemberStatus(bytes: pair.value),
                let name = try? NodeName(String(pair.key.dropFirst(keys.statusPrefix.count)))
            {
                statuses[name] = status
            }
            if pair.key == keys.leader, let holderSession = pair.session, let holder = try? NodeName(pair.stringValue, field: "leader") {
                // Ours only while it also names this node: a replica taking over renames it first.
                leader = .held(by: holder, mine: holderSession == session && holder == me)
            }
        }
        if case .free = leader {
            if leaderFreeSince == nil { leaderFreeSince = .now }
            leader = .free(since: GoDuration(ContinuousClock.now - leaderFreeSince!))
        } else {
            leaderFreeSince = nil
        }
        let leaderPair = pairs.first { $0.key == keys.leader }
        var silentFor = GoDuration.zero
        if case .held(_, false) = leader, let index = leaderPair?.modifyIndex {
            if leaderIndexSeen?.index != index { leaderIndexSeen = (index, .now) }
            silentFor = GoDuration(ContinuousClock.now - leaderIndexSeen!.since)
        } else {
            leaderIndexSeen = nil
        }
        var candidates: [CandidateState] = []
        var lastPrimary: LSN? = nil
        let now = Date().timeIntervalSince1970
        for (name, registration) in registrations {
            let status = statuses[name]
            let position = status?.position ?? LSN(0)
            if status?.role == "primary" { lastPrimary = max(lastPrimary ?? position, position) }
            var healthy = status.map { $0.role == "standby" && $0.isFresh(now: now, loopWait: config.loopWait) } ?? false
            if name == me, case .standby = local { healthy = true }
            var candidatePosition = position
            if name == me, case .standby(let p, _, _, _) = local { candidatePosition = p }
            candidates.append(
                CandidateState(
                    name: name, failoverPriority: registration.priority, healthy: healthy && name != leaderName(leader),
                    walPosition: candidatePosition, timeline: status?.timeline ?? 1))
        }
        var report = PrimaryReport.none
        if let primary = registrations.values.first(where: { $0.role == .primary && $0.name != me })?.name {
            if let status = statuses[primary], status.isFresh(now: now, loopWait: config.loopWait) {
                report = status.role == "primary" ? .live(primary) : .down(primary)
            } else {
                report = .unknown(primary)
            }
        }
        return ClusterView(
            leader: leader, registrations: registrations, candidates: candidates, lastPrimaryPosition: lastPrimary,
            primaryReport: report, paused: pairs.contains { $0.key == keys.pause },
            requestedLeader: pairs.first { $0.key == keys.switchover }.flatMap { try? TakeoverRequest(bytes: $0.value, key: $0.key).to },
            synchronousStandby: SynchronousReplication.recordedStandby(pairs.first { $0.key == keys.sync }?.value),
            syncKeyIndex: pairs.first { $0.key == keys.sync }?.modifyIndex ?? 0, leaderPair: leaderPair, leaderSilentFor: silentFor)
    }

    func leaderName(_ state: LeaderState) -> NodeName? { if case .held(let n, _) = state { return n } else { return nil } }

    // MARK: Actions

    func carryOut(_ action: MonitorAction, view: ClusterView?, local: LocalPostgres) async {
        do {
            switch action {
            case .keepLeading:
                try await heartbeat(view?.leaderPair)
                try await manageSynchronousReplication(view: view)
            case .wait:
                break
            case .acquireLeader(let reason):
                guard let session else { return }
                if try await beat({ try await client.put(keys.leader, me.value, mode: .acquire(session: session)) }) {
                    logger.notice("Acquired the leader lock", metadata: ["monitor.reason": "\(reason)"])
                    switch local {
                    case .standby:
                        try await promote(view: view)
                    case .down(standbySignal: false):
                        // The registered primary restarting, now that it holds the lock.
                        try await control.start(logFile: settings.postgresLog)
                        try await register(role: .primary, upstream: nil)
                        try await event("start", "restarted the primary while holding the leader lock")
                    default:
                        try await register(role: .primary, upstream: nil)
                    }
                }
            case .takeOver(let from, let reason):
                try await takeOver(from: from, reason: reason, view: view)
            case .promote:
                try await promote(view: view)
            case .stepDown(let target):
                try await stepDown(for: target, view: view, local: local)
            case .releaseLeader(let reason):
                holdsLock = false
                // Say "down" first, so the replicas that wake on the release fail over at once.
                await publishStatus(local: local, action: action)
                if let session { _ = try await client.put(keys.leader, me.value, mode: .release(session: session)) }
                watchdog?.notLeading()
                try await event("release", "released the leader lock: \(reason)")
            case .fence(let reason):
                holdsLock = false
                writeCheckState(local: .down(standbySignal: false))
                watchdog?.notLeading()
                await control.fence()
                probe.close()
                logger.critical("Fenced PostgreSQL", metadata: ["monitor.reason": "\(reason)"])
                try? await event("fence", "stopped PostgreSQL: \(reason)")
            case .follow(let leader, _):
                try await follow(leader, view: view)
            case .rejoin(let leader):
                try await rejoin(leader, view: view)
            case .startStandby:
                do {
                    try await control.start(logFile: settings.postgresLog)
                    failedStarts = 0
                } catch {
                    failedStarts += 1
                    throw error
                }
                try? await event("start", "started PostgreSQL as a standby")
            }
        } catch {
            logger.error("Action failed", metadata: ["monitor.action": "\(action)", "error": "\(error)"])
        }
    }

    /// The primary keeps one synchronous standby in synchronous mode (see ``SynchronousReplication``).
    func manageSynchronousReplication(view: ClusterView?) async throws {
        guard let view else { return }
        let standbyNames = try await probe.query("SHOW synchronous_standby_names").first?.first??.trimmingCharacters(in: .whitespaces) ?? ""
        if config.synchronousMode == .off && standbyNames.isEmpty && view.synchronousStandby == nil { return }
        var peers: [ReplicationPeer] = []
        for row in try await probe.query("SELECT application_name, state, flush_lsn::text FROM pg_stat_replication") {
            guard let name = row[0].flatMap({ try? NodeName($0) }) else { continue }
            peers.append(ReplicationPeer(name: name, streaming: row[1] == "streaming", flushPosition: row[2].flatMap { try? LSN(parsing: $0) } ?? LSN(0)))
        }
        let eligible = Set(view.registrations.values.filter { $0.priority > 0 && $0.name != me }.map(\.name))
        let candidates = peers.filter { eligible.contains($0.name) }.sorted {
            $0.flushPosition != $1.flushPosition ? $0.flushPosition > $1.flushPosition : $0.name < $1.name
        }.map(\.name)
        if syncStartPosition == nil, !standbyNames.isEmpty { syncStartPosition = try await currentPosition() }
        let action = SynchronousReplication.next(
            mode: config.synchronousMode, recorded: view.synchronousStandby, standbyNames: standbyNames, peers: peers, candidates: candidates,
            startPosition: syncStartPosition)
        switch action {
        case .none:
            return
        case .setStandbyNames(let names):
            try writeSettings(upstream: nil, synchronousStandbyNames: names)
            try await control.reload()
            syncStartPosition = try await currentPosition()
            logger.info("synchronous_standby_names set", metadata: ["sync.names": "\(names)"])
        case .record(let standby):
            let value = JSONValue.object([("standby", standby.map { .string($0.value) } ?? .null), ("leader", .string(me.value))])
            if try await client.put(keys.sync, value.serializedBytes(), mode: .cas(view.syncKeyIndex)) {
                try await event("sync", standby.map { "\($0) is the synchronous standby" } ?? "no synchronous standby: automatic failover needs one")
            }
        }
    }

    private var syncStartPosition: LSN?

    func currentPosition() async throws -> LSN? {
        try await probe.query("SELECT pg_current_wal_lsn()::text").first?.first?.flatMap { try? LSN(parsing: $0) }
    }

    /// Rewrites baton.conf for this node.
    func writeSettings(upstream: PostgresFiles.Upstream?, synchronousStandbyNames: String = "") throws {
        let text = PostgresFiles.settings(
            port: settings.pgPort, listen: settings.pgListen, socketDirectory: settings.pgSocketDirectory, upstream: upstream,
            synchronousStandbyNames: synchronousStandbyNames)
        try AtomicFile.write(text, to: settings.pgdata.value + "/" + PostgresFiles.settingsFile, mode: 0o600, owner: settings.pgOSUser)
    }

    func promote(view: ClusterView?) async throws {
        let start = ContinuousClock.now
        if config.synchronousMode != .off {
            // From the first commit on, wait for some standby: none is acknowledged on this node alone.
            var upstream: PostgresFiles.Upstream? = nil
            if let leader = view?.registrations.values.first(where: { $0.role == .primary }) {
                upstream = PostgresFiles.Upstream(host: leader.address, port: leader.port, slot: me.slotName, passfile: settings.passfile, applicationName: me)
            }
            try writeSettings(upstream: upstream, synchronousStandbyNames: "*")
            try await control.reload()
            syncStartPosition = nil
        }
        let timeline = try await claimTimeline()
        _ = try await probe.query("SELECT pg_promote(true, 60)")
        // Write the new timeline into the control file now: pg_rewind reads it from there, and a
        // rejoining old primary must see the fork at once.
        _ = try? await probe.query("CHECKPOINT")
        logger.notice("Promoted", metadata: ["monitor.seconds": "\((ContinuousClock.now - start).millisecondCount) ms", "monitor.timeline": "\(timeline)"])
        // The slots the other nodes stream from must exist here before they reconnect.
        for name in (view?.registrations.keys.map { $0 } ?? []) where name != me {
            _ = try? await probe.query(
                "SELECT pg_create_physical_replication_slot($1, true) WHERE NOT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = $1)",
                [name.slotName])
        }
        try await register(role: .primary, upstream: nil)
        if let view {
            for (name, registration) in view.registrations where name != me && registration.role == .primary {
                var demoted = registration
                demoted.role = .standby
                demoted.upstream = me
                try await client.put(keys.node(name), demoted.json.serializedBytes())
            }
        }
        try await event("promote", "promoted to primary")
        finishBouncerPause()
    }

    /// Takes the lock from a leader that has been silent past its fencing deadline: rename the key at
    /// the silent index (a late heartbeat wins instead), end the old session, take the lock, promote.
    func takeOver(from holder: NodeName, reason: String, view: ClusterView?) async throws {
        guard let session, let pair = view?.leaderPair, let old = pair.session else { return }
        if holder != me {
            guard try await client.put(keys.leader, me.value, flags: pair.flags, mode: .cas(pair.modifyIndex)) else {
                logger.notice("The silent leader's heartbeat came through after all; no takeover", metadata: ["monitor.leader": "\(holder)"])
                return
            }
        }
        try await client.destroySession(old)
        guard try await beat({ try await client.put(keys.leader, me.value, mode: .acquire(session: session)) }) else {
            throw AgentError("took the lock from \(holder) but could not acquire it (another node was quicker); looking again")
        }
        logger.notice("Took the leader lock over", metadata: ["monitor.from": "\(holder)", "monitor.reason": "\(reason)"])
        try await event("takeover", "took the leader lock from \(holder): \(reason)")
        try await promote(view: view)
    }

    /// Claims a timeline above every one used before, in Consul, and makes PostgreSQL choose it
    /// (``TimelineClaim``). Returns it.
    func claimTimeline() async throws -> Int {
        let wal = settings.pgdata.value + "/pg_wal/"
        let histories = ((try? FileManager.default.contentsOfDirectory(atPath: wal)) ?? []).compactMap { name -> Int? in
            name.count == 16 && name.hasSuffix(".history") ? Int(name.prefix(8), radix: 16) : nil
        }
        let current = try await probe.query("SELECT timeline_id FROM pg_control_checkpoint()").first?.first?.flatMap { Int($0) } ?? 1
        let pair = try await client.get(keys.timeline, .consistent).value
        let claim = TimelineClaim(localNewest: max(current, histories.max() ?? 1), claimed: try TimelineClaim.claimed(pair?.value, key: keys.timeline))
        if !claim.placeholders.isEmpty {
            let parentHistory = (try? String(contentsOfFile: wal + TimelineClaim.historyFileName(current), encoding: .utf8)) ?? ""
            let replayed = try await probe.query("SELECT pg_last_wal_replay_lsn()::text").first?.first?.flatMap { try? LSN(parsing: $0) } ?? LSN(0)
            for placeholder in claim.placeholders {
                let text = TimelineClaim.placeholderHistory(parentHistory: parentHistory, parent: current, switchpoint: replayed, timeline: placeholder)
                try AtomicFile.write(text, to: wal + TimelineClaim.historyFileName(placeholder), mode: 0o600, owner: settings.pgOSUser)
            }
            logger.notice("Skipping timelines used elsewhere", metadata: ["monitor.timelines": "\(claim.placeholders)"])
        }
        guard try await client.put(keys.timeline, TimelineClaim.record(claim.timeline, node: me).serializedBytes(), mode: .cas(pair?.modifyIndex ?? 0)) else {
            throw AgentError("the timeline key changed while this node claimed timeline \(claim.timeline); not promoting now")
        }
        return claim.timeline
    }

    func follow(_ leader: NodeName, view: ClusterView?) async throws {
        guard let target = view?.registrations[leader] else { return }
        let upstream = PostgresFiles.Upstream(
            host: target.address, port: target.port, slot: me.slotName, passfile: settings.passfile, applicationName: me)
        try writeSettings(upstream: upstream)
        try await control.reload()
        try await register(role: .standby, upstream: leader)
        try await event("follow", "following \(leader)")
    }

    /// A planned switchover: stop cleanly (the walsenders ship every record, the shutdown checkpoint
    /// included, to the standbys), check that `target` received it all, then release the lock for it.
    /// If the target did not receive everything, the primary is started again (it still holds the lock)
    /// and the switchover is called off: nothing acknowledged is left behind.
    func stepDown(for target: NodeName, view: ClusterView?, local: LocalPostgres) async throws {
        guard let registration = view?.registrations[target] else { throw AgentError("the switchover target \(target) is not registered") }
        // The checkpoint first, while clients still run: it makes the clean stop below short.
        _ = try? await probe.query("CHECKPOINT")
        let started = ContinuousClock.now
        // Every pgbouncer holds its clients before PostgreSQL stops: they wait instead of failing.
        let request = PauseRequest(
            id: UUID().uuidString.lowercased(), from: me, to: target,
            until: Date().timeIntervalSince1970 + Double(config.pgbouncerTimeout.nanoseconds) / 1e9 + 60)
        try await client.put(keys.pgbouncerPause, request.json.serializedBytes())
        let pausing = await awaitBouncers(request, phase: .paused)
        try await control.stop(mode: "fast")
        probe.close()
        let controlData = try await control.runner.check(
            settings.pgBindir.value + "/pg_controldata", ["-D", settings.pgdata.value], what: "pg_controldata")
        guard let line = controlData.split(separator: "\n").first(where: { $0.hasPrefix("Latest checkpoint location:") }),
            let final = try? LSN(parsing: line.split(separator: ":").last!.trimmingCharacters(in: .whitespaces))
        else { throw AgentError("cannot read the final WAL position of the stopped primary") }
        let conninfo = ConnInfo.make([
            ("host", registration.address.value), ("port", String(registration.port.value)), ("user", PostgresFiles.replicationUser),
            ("dbname", "postgres"), ("passfile", settings.passfile.value), ("connect_timeout", "2"),
        ])
        var received: LSN? = nil
        for attempt in 0..<50 {
            // Still the leader until the release: keep beating, or the watchdog counts this as silence.
            if attempt % 5 == 4 { await keepLeading() }
            if let conn = try? await PostgresConnection.connect(conninfo) {
                received = (try? await conn.scalar("SELECT pg_last_wal_receive_lsn()")).flatMap { $0.flatMap { try? LSN(parsing: $0) } }
                conn.close()
            }
            if let received, received > final { break }
            try await Task.sleep(for: .milliseconds(100))
        }
        guard let received, received > final else {
            try await control.start(logFile: settings.postgresLog)
            _ = try? await client.delete(keys.switchover)
            _ = try? await client.delete(keys.pgbouncerPause)
            try await event("switchover", "called off: \(target) did not receive WAL up to \(final) (it has \(received?.description ?? "nothing")); this node stays primary")
            return
        }
        watchdog?.notLeading()
        holdsLock = false
        await publishStatus(local: .down(standbySignal: false), action: .stepDown(to: target))
        if let session { _ = try await client.put(keys.leader, me.value, mode: .release(session: session)) }
        let pause = ContinuousClock.now - started
        try await event("switchover", "stepped down for \(target) after \(pause.millisecondCount) ms; it has WAL up to \(received); \(pausing)")
    }

    /// Waits, at most `pgbouncer_timeout`, until every live pgbouncer agent acknowledged `phase` of the
    /// request; returns what happened, for the event.
    func awaitBouncers(_ request: PauseRequest, phase: PauseAcknowledgement.Phase) async -> String {
        let started = ContinuousClock.now
        let deadline = started + config.pgbouncerTimeout.swiftDuration
        var index: UInt64 = 0
        var last: (acknowledged: [NodeName], awaited: [NodeName]) = ([], [])
        var lastBeat = ContinuousClock.now
        while ContinuousClock.now < deadline {
            if ContinuousClock.now - lastBeat >= .milliseconds(500) {
                await keepLeading()
                lastBeat = .now
            }
            let wait = max(Duration.milliseconds(10), min(deadline - ContinuousClock.now, .milliseconds(500)))
            guard let result = try? await client.list(keys.pgbouncerAgentsPrefix, QueryOptions(index: index, wait: wait)) else {
                try? await Task.sleep(for: .milliseconds(50))
                continue
            }
            index = result.index
            var agents: [NodeName: BouncerStatus] = [:]
            for pair in result.value {
                guard let name = try? NodeName(String(pair.key.dropFirst(keys.pgbouncerAgentsPrefix.count))), let status = BouncerStatus(bytes: pair.value)
                else { continue }
                agents[name] = status
            }
            last = request.acknowledgements(agents, phase: phase, now: Date().timeIntervalSince1970)
            if last.awaited.isEmpty { break }
        }
        let took = (ContinuousClock.now - started).millisecondCount
        if last.awaited.isEmpty {
            return "\(last.acknowledged.count) pgbouncer(s) \(phase.rawValue) in \(took) ms"
        }
        let message = "pgbouncer on \(last.awaited.map(\.value).joined(separator: ", ")) did not acknowledge \(phase.rawValue) within \(config.pgbouncerTimeout)"
        logger.warning("A pgbouncer did not acknowledge", metadata: ["switchover.phase": "\(phase.rawValue)", "switchover.awaited": "\(last.awaited)"])
        return message + " (\(last.acknowledged.count) did)"
    }

    /// A heartbeat from inside a long action (a switchover's waits), so the watchdog does not fence a
    /// primary that is only busy: renew the session, and beat if the lock is still this node's.
    func keepLeading() async {
        guard let session, (try? await client.renewSession(session)) != nil,
            let pair = try? await client.get(keys.leader, .consistent).value, pair.session == session, pair.stringValue == me.value
        else { return }
        try? await heartbeat(pair)
    }

    /// After a promotion: ends a switchover's pause request once the pgbouncers resumed on this node
    /// (bounded), in the background, and records the outcome.
    func finishBouncerPause() {
        Task { [self] in
            guard let pair = try? await client.get(keys.pgbouncerPause).value, let request = try? PauseRequest(bytes: pair.value, key: pair.key)
            else { return }
            let outcome = await awaitBouncers(request, phase: .resumed)
            _ = try? await client.delete(keys.pgbouncerPause, cas: pair.modifyIndex)
            try? await event("switchover", "clients resumed on \(me): \(outcome)")
        }
    }

    /// Turns the old primary's data directory into a standby of `leader`: pg_rewind, or when that cannot
    /// work, a fresh clone with the old directory moved aside (never deleted).
    func rejoin(_ leader: NodeName, view: ClusterView?) async throws {
        guard let target = view?.registrations[leader] else { return }
        let source = ConnInfo.make([
            ("host", target.address.value), ("port", String(target.port.value)), ("user", PostgresFiles.replicationUser),
            ("dbname", "postgres"), ("passfile", settings.passfile.value), ("connect_timeout", "5"),
        ])
        // Never touch the data directory unless the leader answers: a rewind or clone needs it, and a
        // leader that is down explains why this node cannot follow.
        guard let reachable = try? await PostgresConnection.connect(source) else {
            throw AgentError("the leader \(leader) does not answer at \(target.address):\(target.port); not rewinding")
        }
        _ = try? await reachable.query("CHECKPOINT")
        reachable.close()
        var how = "rewound with pg_rewind"
        if try await control.isRunning() {
            try await control.stop(mode: "fast")
            probe.close()
        }
        notStreamingSince = nil
        failedStarts = 0
        let empty = ((try? FileManager.default.contentsOfDirectory(atPath: settings.pgdata.value)) ?? []).isEmpty
        do {
            if empty { throw AgentError("the data directory is empty") }
            try await control.rewind(source: source)
        } catch {
            logger.warning("pg_rewind cannot do it; cloning afresh", metadata: ["error": "\(error)"])
            var moved = "nothing (it was empty)"
            if !empty {
                let stamp = ISO8601DateFormatter().string(from: Date()).replacingOccurrences(of: ":", with: "")
                moved = settings.pgdata.value + ".baton-moved-" + stamp + "-" + UUID().uuidString.prefix(4).lowercased()
                try FileManager.default.moveItem(atPath: settings.pgdata.value, toPath: moved)
            }
            try AtomicFile.ensureDirectory(settings.pgdata.value, mode: 0o700, owner: settings.pgOSUser)
            let clone = ConnInfo.make([
                ("host", target.address.value), ("port", String(target.port.value)), ("user", PostgresFiles.replicationUser),
                ("passfile", settings.passfile.value), ("application_name", me.value), ("connect_timeout", "5"),
            ])
            try await control.basebackup(conninfo: clone, slot: me.slotName)
            how = "cloned afresh (pg_rewind failed; the old directory is \(moved))"
        }
        let upstream = PostgresFiles.Upstream(host: target.address, port: target.port, slot: me.slotName, passfile: settings.passfile, applicationName: me)
        try writeSettings(upstream: upstream)
        let conf = (try? String(contentsOfFile: settings.pgdata.value + "/postgresql.conf", encoding: .utf8)) ?? ""
        try AtomicFile.write(PostgresFiles.withInclude(conf), to: settings.pgdata.value + "/postgresql.conf", mode: 0o600, owner: settings.pgOSUser)
        try AtomicFile.write("", to: settings.pgdata.value + "/standby.signal", mode: 0o600, owner: settings.pgOSUser)
        try await control.start(logFile: settings.postgresLog)
        try await register(role: .standby, upstream: leader)
        try await event("rejoin", "\(how); following \(leader)")
    }

    func register(role: NodeRole, upstream: NodeName?) async throws {
        let registration = NodeRegistration(
            name: me, address: settings.address, port: settings.pgPort, role: role, upstream: upstream, priority: settings.priority,
            location: settings.location)
        let bytes = registration.json.serializedBytes()
        if try await client.get(keys.node(me)).value?.value != bytes { try await client.put(keys.node(me), bytes) }
    }

    func event(_ kind: String, _ detail: String) async throws {
        let event = ClusterEvent(time: rfc3339Now(), node: me, kind: kind, detail: detail)
        eventCommand?.submit(event)
        try await recordEvent(event, keys: keys, client: client)
    }

    func publishStatus(local: LocalPostgres, action: MonitorAction) async {
        let status = MemberStatus(local: local, decision: action.description, time: Date().timeIntervalSince1970)
        _ = try? await client.put(keys.status(me), status.json.serializedBytes())
    }

    /// The file `baton check` reads: whether this node holds the lock and runs a writable primary, as of
    /// this iteration. keepalived calls the check every second and it must answer within 100 ms, so it
    /// reads this file instead of asking Consul and PostgreSQL itself.
    func writeCheckState(local: LocalPostgres) {
        var leading = false
        if case .primary = local, session != nil, ContinuousClock.now - lastHeartbeat < fenceAfter { leading = holdsLock }
        let line = "\(leading ? "primary" : "not-primary") \(Watchdog.monotonicNanoseconds()) \(config.loopWait.nanoseconds)\n"
        _ = try? AtomicFile.write(line, to: CheckState.path(stateDirectory: settings.stateDirectory.value), mode: 0o644)
        // keepalived watches this one with inotify: rewritten only when it changes, so it reacts at once.
        _ = try? AtomicFile.write(
            leading ? "0\n" : "1\n", to: KeepalivedSettings.trackFilePath(stateDirectory: settings.stateDirectory.value), mode: 0o644)
    }

    func shutdown() async {
        guard !observeOnly else { return }
        if case .primary = await probe.observe(), let session,
            let pair = try? await client.get(keys.leader).value, pair.session == session
        {
            // Stop taking writes first, then let the replicas take over.
            try? await control.stop(mode: "fast")
            watchdog?.notLeading()
            _ = try? await client.put(keys.leader, me.value, mode: .release(session: session))
            try? await event("stop", "monitor stopped: PostgreSQL stopped and the leader lock released")
        }
        if let session { try? await client.destroySession(session) }
        holdsLock = false
        writeCheckState(local: .down(standbySignal: false))
        watchdog?.close()
        probe.close()
        await eventCommand?.finish()
    }
}

/// A flag one task sets and a blocking thread reads.
final class CancellationFlag: @unchecked Sendable {
    // @unchecked: `value` is guarded by `lock`.
    private let lock = NSLock()
    private var value = false
    var isSet: Bool { lock.withLock { value } }
    func set() { lock.withLock { value = true } }
}
