import BatonConsulStore
import BatonCore
import ConsulAPI

/// The monitor's loop on a simulated node: the same reads, the same ``MonitorState`` and
/// ``MonitorDecision``, and the actions carried out on the simulated PostgreSQL and Consul store in the
/// order the live monitor carries them out (`MonitorLoop.iterate`, `MonitorLoop+Actions`).
extension Simulation {
    /// One iteration of node `i`'s monitor; returns when the next one comes.
    func iterate(_ i: Int) -> Duration {
        if nodes[i].session == nil { ensureSession(i) }
        let observed = observeLocal(i)
        nodes[i].memory.noteLocal(observed, at: instant)
        let local = nodes[i].memory.judged(observed, at: instant)
        if case .down = local { setWritablePrimary(i, false) }
        let snapshot = readSnapshot(i)
        if let snapshot {
            if let leader = snapshot.leader, leader.holder == nodes[i].name, leader.session == nodes[i].session, !nodes[i].lease.leading {
                _ = prove(i)
            }
        }
        var observation = nodes[i].memory.observation(
            node: nodes[i].name, config: nodes[i].config, local: local, snapshot: snapshot, session: nodes[i].session,
            sinceLastHeartbeat: sinceLastBeat(i), guarded: true, grant: grantSeen(i), at: instant)
        mutate(&observation, i)
        var action = MonitorDecision.next(observation)
        if case .standby = local, action.takesLock, options.mutant != .rankOnReports {
            // `MonitorLoop.iterate`: the node APIs of the other candidates, and of every node whose monitor
            // reports, asked before taking the lock; before taking a free one, every other node's
            // PostgreSQL itself; before taking over a silent leader, that leader's PostgreSQL (the live
            // monitor asks it a quarter-second before the deadline, past the leader's fence; here at
            // the deadline, which sees the same: nothing starts a fenced primary meanwhile).
            let config = nodes[i].config
            let live = livePositions(
                asking: observation.candidates.filter { $0.name != nodes[i].name && ($0.healthy || nodes[i].memory.isFresh($0.name, config: config, at: instant)) }
                    .map(\.name))
            var writable = action.acquiresFreeLock ? writablePostgres(besides: i) : []
            if options.askSilentLeader, options.mutant != .takeOverUnasked, case .takeOver(let holder, _) = action, holder != nodes[i].name {
                writable = writablePostgres(besides: i).filter { $0 == holder }
            }
            if !live.isEmpty || !writable.isEmpty {
                observation.candidates = FailoverCandidates.confirmed(observation.candidates, live: live)
                observation.peerRunsPrimary = LivePosition.primary(among: live, writablePostgres: writable)
                action = MonitorDecision.next(observation)
            }
        }
        if action.description != nodes[i].lastAction {
            note("\(nodes[i].name) \(action)")
            nodes[i].lastAction = action.description
        }
        carryOut(i, action, snapshot: snapshot, local: local)
        let after = nodes[i].memory.judged(observeLocal(i), at: instant)
        if case .primary = after { setWritablePrimary(i, nodes[i].lease.leading) } else { setWritablePrimary(i, false) }
        publishStatus(i, local: after, action: action)
        publishView(i, snapshot: snapshot)
        return nodes[i].memory.nextInterval(config: nodes[i].config, grant: grantSeen(i), at: instant)
    }

    /// What the named nodes' APIs answer to `GET /position` (their PostgreSQL as it is now); a node whose
    /// monitor does not run answers nothing.
    func livePositions(asking names: [NodeName]) -> [NodeName: LivePosition] {
        var answers: [NodeName: LivePosition] = [:]
        for name in names {
            guard let m = index(of: name), nodes[m].alive, nodes[m].monitorFrozenUntil(now) == nil else { continue }
            _ = tick()
            answers[name] = LivePosition(local: observeLocal(m))
        }
        return answers
    }

    /// The other nodes whose PostgreSQL, asked directly (`PeerPositions.writablePostgres`), answers
    /// that it is a writable primary: running, answering, not a standby, on a machine that runs.
    func writablePostgres(besides i: Int) -> Set<NodeName> {
        Set(nodes.indices.filter { m in
            guard m != i, nodes[m].alive, !nodes[m].frozen(now), case .primary = observeLocal(m) else { return false }
            return true
        }.map { nodes[$0].name })
    }

    /// What the monitor sees of its PostgreSQL (`LocalDatabase.observe`).
    func observeLocal(_ i: Int) -> LocalPostgres {
        let db = nodes[i].db
        guard db.running else { return .down(standbySignal: db.standbySignal) }
        guard db.answers(at: now) else { return .unresponsive(standbySignal: db.standbySignal, postmaster: true) }
        if !db.standbySignal { return .primary(position: db.position, timeline: db.timeline) }
        return .standby(
            position: db.position, timeline: db.timeline, upstream: db.upstream.flatMap(index(of:)).map(endpoint), streaming: streams(i))
    }

    /// One consistent read of the cluster's prefix, and what the trackers learn from it; nil when
    /// Consul does not answer.
    func readSnapshot(_ i: Int) -> ClusterSnapshot? {
        guard reachesConsul(i) else { return nil }
        let snapshot = clusterSnapshot()
        nodes[i].memory.recall(snapshot, node: nodes[i].name)
        guard let usable = nodes[i].memory.configuration(from: snapshot, current: nodes[i].config) else { return nil }
        nodes[i].config = usable
        // `Lease.update`: whom the member rounds ask.
        nodes[i].lease.setMembers(Set(snapshot.registrations.keys))
        nodes[i].memory.absorb(
            snapshot, node: nodes[i].name, session: nodes[i].session, leading: nodes[i].lease.leading, firstSeen: { _ in nil }, at: instant)
        return snapshot
    }

    /// One read of the cluster's prefix, parsed (again only when it changed); `ticking`: the read takes
    /// its millisecond.
    func clusterSnapshot(ticking: Bool = true) -> ClusterSnapshot {
        let listing = (ticking ? consulRead() : consul).list(keys.prefix)
        if let parsed, parsed.index == listing.index { return parsed.snapshot }
        let snapshot = ClusterSnapshot(pairs: listing.pairs, keys: keys, cache: &parseCache)
        parsed = (listing.index, snapshot)
        return snapshot
    }

    private func mutate(_ observation: inout MonitorObservation, _ i: Int) {
        switch options.mutant {
        case .promiseBeforeTheWrite?:
            if case .held(let holder, mine: false) = observation.leader, let grant = grantSeen(i), grant.leader == holder {
                observation.leaderSilentFor = GoDuration(grant.age)
                observation.leaderTakeoverAfter = GoDuration(grant.period)
            }
        case .ignoreSyncRecord?:
            observation.synchronous = nil
            observation.config.synchronousMode = .off
        case .ignorePause?:
            observation.paused = false
        case .takeOverBeforeDeadline?:
            if observation.leaderSilentFor >= ClusterConfig.fenceMargin {
                observation.leaderSilentFor = GoDuration(nanoseconds: observation.leaderSilentFor.nanoseconds + observation.config.fenceAfter.nanoseconds)
            }
        default:
            break
        }
    }

    // MARK: Carrying out

    func carryOut(_ i: Int, _ action: MonitorAction, snapshot: ClusterSnapshot?, local: LocalPostgres) {
        switch action {
        case .keepLeading:
            if let snapshot { leaderDuties(i, snapshot) }
        case .wait:
            break
        case .stepDown(let target):
            beginStepDown(i, to: target, snapshot: snapshot)
        case .acquireLeader:
            guard acquire(i) else { return }
            nodes[i].memory.releasedAt = nil
            switch local {
            case .standby:
                promote(i, snapshot)
            case .down(standbySignal: false):
                guard prove(i) else { return }
                launch(i)
                note("\(nodes[i].name) started the primary while holding the lock")
            default:
                break
            }
        case .takeOver(let from, _):
            guard let silent = snapshot?.leader, silent.holder == from, takeOver(i, from: silent) else { return }
            nodes[i].memory.releasedAt = nil
            note("\(nodes[i].name) took the lock over from \(from)")
            if case .standby = local { promote(i, snapshot) }
        case .promote:
            promote(i, snapshot)
        case .releaseLeader:
            // Say "down" first, so the replicas that wake on the release fail over at once.
            publishStatus(i, local: local, action: action, force: true)
            release(i)
            nodes[i].memory.releasedAt = instant
        case .fence:
            nodes[i].db.stop()
            note("\(nodes[i].name) fenced its PostgreSQL")
        case .follow(let leader, _):
            guard let snapshot, snapshot.registrations[leader] != nil else { return }
            nodes[i].db.upstream = leader
            register(i, role: .standby, upstream: leader)
        case .rejoin(let leader):
            guard snapshot?.registrations[leader] != nil else { return }
            rejoin(i, leader: leader)
        case .startStandby:
            launch(i)
        }
    }

    func launch(_ i: Int) {
        nodes[i].db.launch(at: now)
        nodes[i].memory.launched(at: instant)
    }

    /// Promotes node `i`'s standby by the steps of ``Promotion``, as `MonitorLoop.promote` does; a step
    /// that needs Consul and cannot reach it ends the promotion (the live monitor's call throws).
    func promote(_ i: Int, _ snapshot: ClusterSnapshot?) {
        var promotion = Promotion(keys: keys, node: nodes[i].name, synchronousMode: nodes[i].config.synchronousMode)
        var step = promotion.next(after: .start)
        var timeline = nodes[i].db.timeline
        while true {
            switch step {
            case .requireSynchronousCommits:
                nodes[i].db.synchronousStandbyNames = "*"
                nodes[i].memory.synchronous.waitingSince = nil
                step = promotion.next(after: .synchronousRequired)
            case .readClaim(let synchronous):
                guard reachesConsul(i) else { return }
                let timelineKey = consulRead().get(keys.timeline)
                let syncKey = synchronous ? consulRead().get(keys.sync) : nil
                step = promotion.next(after: .claimRead(localNewest: nodes[i].db.timeline, timelineKey: timelineKey, syncKey: syncKey, session: nodes[i].session))
            case .commitClaim(let claim, let operations):
                guard reachesConsul(i) else { return }
                timeline = claim.timeline
                let committed: Bool
                if case .committed? = try? consul.transaction(operations, now: tick()) { committed = true } else { committed = false }  // an error: not committed
                step = promotion.next(after: .claimCommitted(committed))
            case .proveLock:
                step = promotion.next(after: .proven(prove(i)))
            case .promote:
                promoteDatabase(i, timeline: timeline)
                step = promotion.next(after: .promoted)
            case .done(.abandoned(let reason)):
                note("\(nodes[i].name) did not promote: \(reason)")
                return
            case .done(.promoted):
                setWritablePrimary(i, true)
                register(i, role: .primary, upstream: nil)
                if let snapshot { leaderDuties(i, snapshot) }
                return
            }
        }
    }

    /// The promotion itself: out of recovery, on the claimed timeline (the placeholder history files
    /// make PostgreSQL choose it).
    private func promoteDatabase(_ i: Int, timeline: Int) {
        let ahead = nodes.indices.filter { m in
            m != i && nodes[m].alive && nodes[m].db.answers(at: now) && nodes[m].db.standbySignal && nodes[m].db.timeline == nodes[i].db.timeline
                && nodes[m].db.position > nodes[i].db.position
        }
        if !ahead.isEmpty {
            counts.lessAdvancedPromotions += 1
            note("\(nodes[i].name) promotes at \(nodes[i].db.position) although \(ahead.map { "\(nodes[$0].name) is at \(nodes[$0].db.position)" }.joined(separator: ", "))")
        }
        nodes[i].db.receivedBeforePromotion = nodes[i].db.position
        nodes[i].db.standbySignal = false
        nodes[i].db.timeline = timeline
        nodes[i].db.upstream = nil
        promotedSince[i] = lastPrimaryReport
        counts.promotions += 1
        note("\(nodes[i].name) promoted on timeline \(timeline) at \(nodes[i].db.position)")
    }

    /// `MonitorLoop.leaderDuties`, the parts the simulator models: the registrations, the synchronous
    /// standby and requests that can never be acted on.
    func leaderDuties(_ i: Int, _ snapshot: ClusterSnapshot) {
        guard reachesConsul(i) else { return }
        let me = nodes[i].name
        if snapshot.registrations[me]?.role != .primary { register(i, role: .primary, upstream: nil) }
        for (name, registration) in snapshot.registrations where name != me && registration.role == .primary {
            var demoted = registration
            demoted.role = .standby
            demoted.upstream = me
            _ = try? consul.put(keys.node(name), demoted.json.serializedBytes(), now: tick())  // a plain write is never refused
        }
        manageSynchronousReplication(i, snapshot)
        finishBouncerPause(i, snapshot)
        if let (index, standing) = nodes[i].memory.finishedRequest(snapshot, at: instant), consul.delete(keys.switchover, cas: index, now: tick()) {
            note("\(me) removed the request (\(standing))")
        }
    }

    /// `MonitorLoop.manageSynchronousReplication`, with `pg_stat_replication` read off the simulated standbys.
    func manageSynchronousReplication(_ i: Int, _ snapshot: ClusterSnapshot) {
        let me = nodes[i].name
        let config = nodes[i].config
        let standbyNames = nodes[i].db.synchronousStandbyNames
        if config.synchronousMode == .off && standbyNames.isEmpty && snapshot.sync == nil { return }
        let peers = nodes.indices.filter { $0 != i && nodes[$0].db.upstream == me && streams($0) }.map {
            ReplicationPeer(name: nodes[$0].name, streaming: true, flushPosition: nodes[$0].db.position)
        }
        let candidates = SynchronousReplication.candidates(peers, snapshot: snapshot, me: me)
        let grace = options.mutant == .dropFlappingStandby ? .zero : config.synchronousStandbyGrace.swiftDuration
        let action = nodes[i].memory.synchronous.next(
            mode: config.synchronousMode, grace: grace, recorded: snapshot.sync, standbyNames: standbyNames, peers: peers, candidates: candidates,
            me: me, at: instant)
        switch action {
        case .none:
            return
        case .clear:
            if (try? consul.put(keys.sync, SyncRecord.cleared(by: me).serializedBytes(), mode: .cas(snapshot.syncIndex), now: tick())) == true {
                note("\(me) cleared the synchronous standby record")
            }
        case .setStandbyNames(let names):
            nodes[i].db.synchronousStandbyNames = names
            nodes[i].memory.synchronous.waitingSince = nil
        case .rememberPosition:
            nodes[i].memory.synchronous.waitingSince = nodes[i].db.position
        case .record(let standby, let position):
            let record = SyncRecord(standby: standby, leader: me, position: position)
            if (try? consul.put(keys.sync, record.json.serializedBytes(), mode: .cas(snapshot.syncIndex), now: tick())) == true {
                note("\(me) recorded \(standby) as the synchronous standby")
            }
        }
    }

    /// Rejoins node `i` to `leader` by the steps of ``Rejoin``, as `MonitorLoop.rejoin` does: pg_rewind
    /// onto the leader's history (the WAL past the point where they parted is thrown away), then a
    /// standby of the leader. Never without a leader that answers.
    func rejoin(_ i: Int, leader: NodeName) {
        guard let l = index(of: leader) else { return }
        var rejoin = Rejoin(leader: leader)
        var step = rejoin.next(after: .start)
        var how = ""
        while true {
            switch step {
            case .checkLeader:
                let answers = nodes[l].db.answers(at: now) && !nodes[l].frozen(now)
                step = rejoin.next(after: .leaderAnswered(failure: answers ? nil : "it does not answer"))
            case .stopLocal:
                nodes[i].db.stop()
                nodes[i].memory.rejoined()
                step = rejoin.next(after: .stopped(how: "stopped", empty: nodes[i].db.wal.isEmpty))
            case .rewind:
                let common = nodes[i].db.commonPrefix(with: nodes[l].db)
                nodes[i].db.wal.removeSubrange(common...)
                how = "rewound to commit \(common)"
                step = rejoin.next(after: .rewound(failure: nil))
            case .clone:
                nodes[i].db.wal = nodes[l].db.wal
                how = "cloned"
                step = rejoin.next(after: .cloned(movedTo: nil))
            case .follow:
                nodes[i].db.timeline = nodes[l].db.timeline
                nodes[i].db.upstream = leader
                nodes[i].db.standbySignal = true
                nodes[i].db.synchronousStandbyNames = ""
                launch(i)
                register(i, role: .standby, upstream: leader)
                step = rejoin.next(after: .following)
            case .done(.refused):
                return
            case .done(.rejoined):
                return note("\(nodes[i].name) rejoined as a standby of \(leader) (\(how))")
            }
        }
    }

    func register(_ i: Int, role: NodeRole, upstream: NodeName?) {
        guard reachesConsul(i) else { return }
        let bytes = registrationRecord(i, role: role, upstream: upstream).json.serializedBytes()
        if consulRead().get(keys.node(nodes[i].name))?.value != bytes {
            _ = try? consul.put(keys.node(nodes[i].name), bytes, now: tick())  // a plain write is never refused
            wakeAgents()
        }
    }

    /// `MonitorLoop.publishStatus`: the report, when it says something new or is due.
    func publishStatus(_ i: Int, local: LocalPostgres, action: MonitorAction, force: Bool = false) {
        guard reachesConsul(i) else { return }
        let status = nodes[i].memory.report(local, decision: action.description, time: Double(now.milliseconds) / 1000)
        let written = nodes[i].statusWritten
        guard force || status.due(after: written?.status, writtenAgo: written.map { now - $0.at }, loopWait: nodes[i].config.loopWait) else { return }
        _ = try? consul.put(keys.status(nodes[i].name), status.json.serializedBytes(), now: tick())  // a plain write is never refused
        nodes[i].statusWritten = (status, now)
        if status.role == "primary", let position = status.position { lastPrimaryReport = position }
    }
}
