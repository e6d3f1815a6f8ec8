import BatonSettings
import BatonConsul
import BatonCore
import BatonPostgres
import ConsulAPI
import Foundation
import Logging

extension MonitorLoop {
    mutating func carryOut(_ action: MonitorAction, snapshot: ClusterSnapshot?, local: LocalPostgres, request: TakeoverRequest?) async {
        do {
            switch action {
            case .keepLeading:
                if let snapshot { try await leaderDuties(snapshot) }
            case .wait:
                break
            case .acquireLeader(let reason):
                guard await lease.acquire() else { return }
                memory.releasedAt = nil
                logger.notice("Acquired the leader lock", metadata: ["monitor.reason": "\(reason)"])
                switch local {
                case .standby:
                    try await promote(snapshot)
                case .down(standbySignal: false):
                    // The registered primary restarting, now that it holds the lock: proven once more
                    // right before it can become writable.
                    guard await lease.prove() else { throw AgentError("the lock could not be proven before starting the primary; not starting") }
                    try await launchPostgres()
                    await event("start", "started the primary while holding the leader lock")
                default:
                    break
                }
            case .takeOver(let from, let reason):
                guard let silent = snapshot?.leader, silent.holder == from else { return }
                guard try await lease.takeOver(from: silent) else {
                    logger.notice("The silent leader's heartbeat came through after all, or another node was quicker; no takeover", metadata: ["monitor.leader": "\(from)"])
                    return
                }
                logger.notice("Took the leader lock over", metadata: ["monitor.from": "\(from)", "monitor.reason": "\(reason)"])
                memory.releasedAt = nil
                await event("takeover", "took the leader lock from \(from): \(reason)")
                if case .standby = local { try await promote(snapshot) }
            case .promote:
                try await promote(snapshot)
            case .stepDown(let target):
                if let snapshot, let request { try await stepDown(for: target, snapshot: snapshot, request: request) }
            case .releaseLeader(let reason):
                await lease.setWritablePrimary(false)
                // Say "down" first, so the replicas that wake on the release fail over at once.
                await publishStatus(local: local, action: action)
                await lease.release()
                memory.releasedAt = .now
                await event("release", "released the leader lock: \(reason)")
            case .fence(let reason):
                // Killed first, then keepalived told at once whether anything is left: a leader whose
                // PostgreSQL is gone keeps the VIP (vacant) instead of dropping it and taking it back.
                let left = await database.fence()
                await lease.setLocal(writablePrimary: false, vacant: left.isEmpty)
                if left.isEmpty {
                    logger.critical("Fenced PostgreSQL", metadata: ["monitor.reason": "\(reason)"])
                } else {
                    logger.critical("Fencing incomplete: processes survive SIGKILL", metadata: ["monitor.reason": "\(reason)", "pids": "\(left)"])
                }
                await event("fence", "killed PostgreSQL: \(reason)")
                // Nothing of it is left now: look again at once (a leader releases the lock then).
                wake.yield(.look)
            case .follow(let leader, _):
                if let snapshot { try await follow(leader, snapshot: snapshot) }
            case .rejoin(let leader):
                if let snapshot { try await rejoin(leader, snapshot: snapshot) }
            case .startStandby:
                try await launchPostgres()
                await event("start", "started PostgreSQL as a standby")
            }
        } catch {
            logger.error("Action failed", metadata: ["monitor.action": "\(action)", "error": "\(error)"])
        }
    }

    /// Starts PostgreSQL — keepalived told first that this node is not vacant any more, so the VIP never
    /// stays on a node whose PostgreSQL runs without the lock.
    mutating func launchPostgres() async throws {
        await lease.leaveVacancy()
        try await database.launch()
        memory.launched(at: .now)
    }

    // MARK: Becoming the primary

    /// Promotes the local standby, which holds the lock, by the steps of ``Promotion``: the timeline
    /// claimed, the lock proven right before PostgreSQL becomes writable, then what the leader owes done
    /// at once (registration first: the pgbouncers route to it from then on).
    mutating func promote(_ snapshot: ClusterSnapshot?) async throws {
        let start = ContinuousClock.now
        var promotion = Promotion(keys: keys, node: me, synchronousMode: config.synchronousMode)
        var step = promotion.next(after: .start)
        while true {
            switch step {
            case .requireSynchronousCommits:
                var upstream: PostgresFiles.Upstream? = nil
                if let leader = snapshot?.registeredPrimary(otherThan: me) {
                    upstream = PostgresFiles.Upstream(host: leader.address, port: leader.port, slot: me.slotName, passfile: settings.passfile, applicationName: me)
                }
                try database.writeSettings(upstream: upstream, synchronousStandbyNames: "*")
                try await database.reload()
                memory.synchronous.waitingSince = nil
                step = promotion.next(after: .synchronousRequired)
            case .readClaim(let synchronous):
                let current = try await database.checkpointTimeline()
                let timelineKey = try await client.get(keys.timeline, .consistent).value
                let syncKey = synchronous ? try await client.get(keys.sync, .consistent).value : nil
                step = promotion.next(
                    after: .claimRead(
                        localNewest: max(current, database.historyTimelines().max() ?? 1), timelineKey: timelineKey, syncKey: syncKey,
                        session: await lease.currentSession))
            case .commitClaim(let claim, let operations):
                try await writePlaceholders(claim)
                guard case .committed = try await client.transaction(operations) else {
                    step = promotion.next(after: .claimCommitted(false))
                    continue
                }
                step = promotion.next(after: .claimCommitted(true))
            case .proveLock:
                step = promotion.next(after: .proven(await lease.prove()))
            case .promote:
                // A promotion may replay a backlog for long: the lease beats meanwhile on its own.
                try await database.promote(timeout: .seconds(3600))
                step = promotion.next(after: .promoted)
            case .done(.abandoned(let reason)):
                throw AgentError(reason)
            case .done(.promoted(let timeline)):
                metrics.promoted()
                logger.notice("Promoted", metadata: ["monitor.milliseconds": "\((ContinuousClock.now - start).millisecondCount)", "monitor.timeline": "\(timeline)"])
                await lease.setWritablePrimary(true)
                try await register(role: .primary, upstream: nil)
                await event("promote", "promoted to primary on timeline \(timeline)")
                archiveEarlierTimelines(promotedTo: timeline)
                if let snapshot { try await leaderDuties(snapshot) }
                return
            }
        }
    }

    /// What a leading primary owes, checked every loop so that nothing a slow or failed step skipped is
    /// skipped for good: its registration as primary, the other registrations (a former primary
    /// registered as standby), the replication slots the other nodes stream from (and none for a
    /// removed node), the timeline in the control file (a rejoining node's pg_rewind reads it there),
    /// the synchronous standby, the end of a switchover's pause, and requests that can never be acted on.
    mutating func leaderDuties(_ snapshot: ClusterSnapshot) async throws {
        if snapshot.registrations[me]?.role != .primary { try await register(role: .primary, upstream: nil) }
        for (name, registration) in snapshot.registrations where name != me && registration.role == .primary {
            var demoted = registration
            demoted.role = .standby
            demoted.upstream = me
            try await client.put(keys.node(name), demoted.json.serializedBytes())
        }
        try await reconcileSlots(snapshot)
        await refreshArchiveHealth()
        try await checkpointAfterPromotion()
        try await manageSynchronousReplication(snapshot)
        if let (index, standing) = memory.finishedRequest(snapshot, at: .now), let pending = snapshot.request,
            (try? await client.delete(keys.switchover, cas: index)) == true
        {
            await event("switchover", "removed the request for \(pending.request.to) (\(standing))")
        }
        if let pause = snapshot.bouncerPause, pause.to == me { finishBouncerPause(pause, index: snapshot.bouncerPauseIndex) }
        try await runScheduledSwitchover(snapshot)
        await checkRoutingAgreement(snapshot)
        try await moveLegacyEvents(snapshot)
    }

    /// The lock holder, the VIP holder and every live pgbouncer's target must agree once a failover is
    /// over (``RoutingAgreement``): what disagrees past the patience goes into this node's report (status
    /// warns), the metric, and an event when it starts.
    mutating func checkRoutingAgreement(_ snapshot: ClusterSnapshot) async {
        let now = ContinuousClock.now
        let live = Set(memory.bouncerReports.fresh(within: BouncerStatus.liveness, at: now))
        let monitors = Set(memory.reports.fresh(within: MemberStatus.freshness(loopWait: snapshot.config.loopWait), at: now)).union([me])
        let (lasting, new) = memory.routing.observe(RoutingAgreement.disagreements(snapshot, liveBouncers: live, liveMonitors: monitors), at: now)
        disagreements = lasting
        for what in new { await event("routing", "disagreement for over \(RoutingAgreement.patience.components.seconds) s: \(what)") }
    }

    /// A scheduled switchover (``ScheduledSwitchover``) that fell due is checked as `baton switchover`
    /// would check it now: if it stands, the ordinary request is written and the schedule removed in one
    /// transaction (every rule of a switchover then applies as usual); if not, or if it can never run,
    /// the schedule is removed and the event says why.
    func runScheduledSwitchover(_ snapshot: ClusterSnapshot) async throws {
        guard let (schedule, index) = snapshot.scheduled else { return }
        let at = schedule.atText
        func drop(_ reason: String) async throws {
            if try await client.delete(keys.scheduledSwitchover, cas: index) {
                await event("switchover", "dropped the switchover to \(schedule.to) scheduled at \(at): \(reason)")
            }
        }
        switch schedule.verdict(now: Int64(Date().timeIntervalSince1970), leader: snapshot.leader?.holder) {
        case .wait:
            return
        case .drop(let reason):
            try await drop(reason)
        case .due:
            // A request already pending runs first; the schedule waits for the next loop.
            guard snapshot.request == nil else { return }
            let view = TakeoverView(snapshot: snapshot, live: Set(snapshot.registrations.keys.filter { memory.isFresh($0, config: config, at: .now) }))
            if let refusal = view.switchoverRefusal(to: schedule.to) { return try await drop("refused now: \(refusal)") }
            let request = TakeoverRequest(to: schedule.to, from: me, time: rfc3339Now())
            let outcome = try await client.transaction([
                KVOperation(.cas, keys.switchover, value: request.json.serializedBytes(), index: 0),
                KVOperation(.deleteCAS, keys.scheduledSwitchover, index: index),
            ])
            if case .committed = outcome {
                await event("switchover", "the switchover to \(schedule.to) scheduled at \(at) by \(schedule.by) is due: asked for it")
            }
        }
    }

    /// Events an earlier Baton kept under the cluster's prefix move beside it (``ClusterKeys/eventsPrefix``),
    /// 50 a loop, so that the monitors' read of the prefix no longer carries them; each is deleted only
    /// if unchanged since it was copied.
    func moveLegacyEvents(_ snapshot: ClusterSnapshot) async throws {
        guard !snapshot.legacyEvents.isEmpty else { return }
        for pair in snapshot.legacyEvents.prefix(50) {
            try await client.put(keys.eventsPrefix + pair.key.dropFirst(keys.legacyEventsPrefix.count), pair.value ?? [])
            _ = try await client.delete(pair.key, cas: pair.modifyIndex)
        }
        if snapshot.legacyEvents.count <= 50 {
            logger.notice("Moved the event history out of the cluster's prefix", metadata: ["monitor.events_prefix": "\(keys.eventsPrefix)"])
        }
    }

    /// With pgBackRest, a promoted node pushes the segments it holds of the timelines before its own, up
    /// to where each ended (``PgBackRest/segmentsToPushAfterPromotion(walFiles:history:)``), in the
    /// background: the old primary may have died before archiving them, and the archive must have no
    /// hole for a restore across the failover. Segments the archive holds already stay as they are.
    func archiveEarlierTimelines(promotedTo timeline: Int) {
        guard let backup = settings.backup else { return }
        let walDirectory = settings.pgdata.value + "/pg_wal"
        // ignored: no segment to push from a directory that cannot be read; the warning below says none was pushed
        let files = (try? FileManager.default.contentsOfDirectory(atPath: walDirectory)) ?? []
        let segments = PgBackRest.segmentsToPushAfterPromotion(walFiles: files, history: database.readHistory(timeline))
        guard !segments.isEmpty else { return }
        let tool = PgBackRestTool(settings: backup, osUser: settings.pgOSUser)
        let logger = self.logger
        background.yield {
            do {
                let failed = try await tool.push(segments, walDirectory: walDirectory)
                if failed.isEmpty {
                    logger.info("Archived the earlier timelines' segments", metadata: ["monitor.segments": "\(segments.count)", "monitor.last": "\(segments.last ?? "")"])
                } else {
                    logger.warning(
                        "Some segments of the earlier timelines could not be archived: a restore across this failover may stop there",
                        metadata: ["monitor.failed": "\(failed.map(\.segment))", "error": "\(failed.first?.why ?? "")"])
                }
            } catch {
                logger.warning("Cannot archive the earlier timelines' segments", metadata: ["error": "\(error)"])
            }
        }
    }

    /// The leader's view of its WAL archive, every loop (one query and a listing of the `.ready`
    /// files); the newest backup's end from pgBackRest's `info`, in the background every 5 minutes.
    mutating func refreshArchiveHealth() async {
        guard let backup = settings.backup else { return }
        newestBackup.refresh(every: .seconds(300), tool: PgBackRestTool(settings: backup, osUser: settings.pgOSUser), logger: logger, background: background)
        let statistics: ArchiverStatistics
        do { statistics = try await database.archiverStatistics() } catch { return }  // PostgreSQL does not answer: the loop says so elsewhere
        let statusDirectory = settings.pgdata.value + "/pg_wal/archive_status"
        // ignored: a listing that fails shows nothing waiting; pg_stat_archiver's failures still show
        let names = (try? FileManager.default.contentsOfDirectory(atPath: statusDirectory)) ?? []
        let readySince = names.filter { $0.hasSuffix(".ready") }.compactMap { name -> Double? in
            // ignored: a file archived meanwhile is no longer waiting
            (try? FileManager.default.attributesOfItem(atPath: statusDirectory + "/" + name)[.modificationDate] as? Date)?.timeIntervalSince1970
        }
        let now = Date().timeIntervalSince1970
        archive = ArchiveHealth.observe(statistics, readySince: readySince, now: now, backups: newestBackup.value)
        // ignored: Backups(…) only checks that backups are configured, which they are here
        if ArchiveHealth.backupDue(every: config.backupEvery, backups: newestBackup.value, now: now), let backups = try? Backups(settings: settings, client: client) {
            scheduledBackup.start(backups, type: config.backupType, newest: newestBackup, logger: logger, background: background)
        }
    }

    /// The checkpoint that writes the new timeline into the control file, in the background: the loop
    /// and the lease never wait for it.
    func checkpointAfterPromotion() async throws {
        let behind = try await database.checkpointBehindTimeline()
        guard behind, let conninfo = database.conninfo, !checkpointing.isSet else { return }
        checkpointing.set()
        let running = checkpointing
        let logger = self.logger
        background.yield {
            defer { running.clear() }
            do {
                let connection = try await PostgresConnection.connect(conninfo)
                defer { connection.close() }
                try await connection.query("CHECKPOINT", timeout: .seconds(600))
            } catch {
                logger.warning("The checkpoint after promotion failed; it is tried again next loop", metadata: ["error": "\(error)"])
            }
        }
    }

    /// The history files of the timelines a claim skips (used elsewhere): PostgreSQL's promotion picks
    /// the first timeline without one, so it takes the claimed one (``TimelineClaim``).
    func writePlaceholders(_ claim: TimelineClaim) async throws {
        guard !claim.placeholders.isEmpty else { return }
        let current = try await database.checkpointTimeline()
        let parentHistory = database.readHistory(current)
        let replayed = try await database.replayPosition() ?? LSN(0)
        for placeholder in claim.placeholders {
            try database.writeHistory(
                placeholder, TimelineClaim.placeholderHistory(parentHistory: parentHistory, parent: current, switchpoint: replayed, timeline: placeholder))
        }
        logger.notice("Skipping timelines used elsewhere", metadata: ["monitor.timelines": "\(claim.placeholders)"])
    }

    // MARK: Following

    func upstream(_ registration: NodeRegistration) -> PostgresFiles.Upstream {
        PostgresFiles.Upstream(host: registration.address, port: registration.port, slot: me.slotName, passfile: settings.passfile, applicationName: me)
    }

    mutating func follow(_ leader: NodeName, snapshot: ClusterSnapshot) async throws {
        guard let target = snapshot.registrations[leader] else { return }
        try database.writeSettings(upstream: upstream(target), synchronousStandbyNames: "")
        try await database.reload()
        try await register(role: .standby, upstream: leader)
        await event("follow", "following \(leader)")
    }

    /// Turns this data directory into a standby of `leader`, which is alive and leads, by the steps of
    /// ``Rejoin``: pg_rewind, or when that cannot work, a fresh clone with the old directory moved aside
    /// (never deleted); nothing is touched unless the leader answers.
    mutating func rejoin(_ leader: NodeName, snapshot: ClusterSnapshot) async throws {
        guard let target = snapshot.registrations[leader] else { return }
        var rejoin = Rejoin(leader: leader)
        var step = rejoin.next(after: .start)
        while true {
            switch step {
            case .checkLeader:
                do {
                    let reachable = try await reachableLeader(leader, target)
                    // The new timeline must be in its control file before pg_rewind reads it.
                    _ = try? await reachable.query("CHECKPOINT", timeout: .seconds(60))  // ignored: pg_rewind reports a leader that cannot be rewound from
                    reachable.close()
                    step = rejoin.next(after: .leaderAnswered(failure: nil))
                } catch {
                    step = rejoin.next(after: .leaderAnswered(failure: "\(error)"))
                }
            case .stopLocal:
                let stopped = try await database.stop()
                memory.rejoined()
                step = rejoin.next(after: .stopped(how: stopped.rawValue, empty: database.isEmpty))
            case .rewind:
                do {
                    try await database.rewind(source: sourceConninfo(target))
                    step = rejoin.next(after: .rewound(failure: nil))
                } catch {
                    logger.warning("pg_rewind cannot do it; cloning afresh", metadata: ["error": "\(error)"])
                    step = rejoin.next(after: .rewound(failure: "\(error)"))
                }
            case .clone:
                let moved = try await database.clone(conninfo: cloneConninfo(target), slot: me.slotName, inPlace: false).moved
                parametersWritten = false
                step = rejoin.next(after: .cloned(movedTo: moved))
            case .follow:
                try database.writeSettings(upstream: upstream(target), synchronousStandbyNames: "")
                try database.markStandby()
                try await launchPostgres()
                try await register(role: .standby, upstream: leader)
                step = rejoin.next(after: .following)
            case .done(.refused(let reason)):
                throw AgentError(reason)
            case .done(.rejoined(let how)):
                await event("rejoin", how)
                return
            }
        }
    }

    /// The leader's PostgreSQL as pg_rewind reads it (the replication role, database postgres).
    func sourceConninfo(_ target: NodeRegistration) -> String {
        ConnInfo.make([
            ("host", target.address.value), ("port", String(target.port.value)), ("user", PostgresFiles.replicationUser),
            ("dbname", "postgres"), ("passfile", settings.passfile.value), ("connect_timeout", "5"),
        ])
    }

    /// The leader's PostgreSQL as pg_basebackup clones it.
    func cloneConninfo(_ target: NodeRegistration) -> String {
        ConnInfo.make([
            ("host", target.address.value), ("port", String(target.port.value)), ("user", PostgresFiles.replicationUser),
            ("passfile", settings.passfile.value), ("application_name", me.value), ("connect_timeout", "5"),
        ])
    }

    /// A connection to the leader, or why there is none: the data directory is never touched for a
    /// rewind or a clone unless the leader answers.
    func reachableLeader(_ leader: NodeName, _ target: NodeRegistration) async throws -> PostgresConnection {
        do { return try await PostgresConnection.connect(sourceConninfo(target)) } catch {
            throw AgentError("the leader \(leader) does not answer at \(target.address):\(target.port); not touching the data directory (\(error))")
        }
    }

    func register(role: NodeRole, upstream: NodeName?) async throws {
        let bytes = settings.registration(role: role, upstream: upstream).json.serializedBytes()
        if try await client.get(keys.node(me)).value?.value != bytes { try await client.put(keys.node(me), bytes) }
    }
}
