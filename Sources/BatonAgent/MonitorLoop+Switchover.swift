import BatonSettings
import BatonConsul
import BatonCore
import BatonPostgres
import ConsulAPI
import Foundation
import Logging

extension MonitorLoop {
    /// A planned switchover, by the steps of ``StepDown``: every pgbouncer holding its clients, a clean
    /// stop, the target checked to have received the shutdown checkpoint, the request marked handed
    /// over, then this node the target's standby and the lock released. The lease beats all along. If the
    /// stop was not clean or the target did not receive everything, the primary proves the lock again
    /// and starts again, and the switchover is called off: nothing acknowledged is left behind.
    mutating func stepDown(for target: NodeName, snapshot: ClusterSnapshot, request: TakeoverRequest) async throws {
        guard let registration = snapshot.registrations[target] else { throw AgentError("the switchover target \(target) is not registered") }
        var stepDown = StepDown(target: target, request: request, requestIndex: snapshot.request?.modifyIndex)
        var step = stepDown.next(after: .start)
        var started = ContinuousClock.now
        while true {
            switch step {
            case .checkpoint:
                // While clients still run: it makes the clean stop short.
                _ = try? await database.checkpoint(timeout: .seconds(5))  // ignored: a slow one only makes the stop longer
                step = stepDown.next(after: .checkpointed)
            case .pauseBouncers:
                started = ContinuousClock.now
                let pause = PauseRequest(
                    id: UUID().uuidString.lowercased(), from: me, to: target,
                    timeout: GoDuration(nanoseconds: config.pgbouncerTimeout.nanoseconds + 60_000_000_000))
                try await client.put(keys.pgbouncerPause, pause.json.serializedBytes())
                step = stepDown.next(after: .bouncersAnswered(await awaitBouncers(pause, phase: .paused)))
            case .stopCleanly:
                await lease.setWritablePrimary(false)
                let outcome = try await database.stop()
                let control = try await database.controlData()
                step = stepDown.next(
                    after: .stopped(
                        clean: outcome == .fast && control.isCleanPrimaryShutdown, checkpoint: control.checkpoint,
                        detail: "\(outcome.rawValue), control file: \(control.state)"))
            case .readTargetPosition(let final):
                step = stepDown.next(after: .targetReceived(await receivedPosition(of: registration, beyond: final)))
            case .markHandedOver(let handed, let index):
                // ignored: a write that fails calls the switchover off, as one that finds the request changed
                let marked = (try? await client.put(keys.switchover, handed.json.serializedBytes(), mode: .cas(index))) == true
                step = stepDown.next(after: .marked(marked))
            case .followTarget:
                // This node follows the target from now on: it cannot race the target for the free lock.
                try database.writeSettings(upstream: upstream(registration), synchronousStandbyNames: "")
                try database.markStandby()
                await publishStatus(local: .down(standbySignal: true), action: .stepDown(to: target))
                await lease.release()
                try await register(role: .standby, upstream: target)
                step = stepDown.next(after: .followed)
            case .proveLock:
                step = stepDown.next(after: .proven(await lease.prove()))
            case .startAgain:
                try await launchPostgres()
                if let index = stepDown.requestIndex { _ = try? await client.delete(keys.switchover, cas: index) }  // ignored: it expires anyway
                _ = try? await client.delete(keys.pgbouncerPause)  // ignored: agents void it after its timeout
                step = stepDown.next(after: .startedAgain)
            case .done(.handedOver(let received, let pausing)):
                await event("switchover", "stepped down for \(target) after \((ContinuousClock.now - started).millisecondCount) ms; it has WAL up to \(received); \(pausing)")
                return
            case .done(.calledOff(let reason)):
                await event("switchover", "called off: \(reason); this node stays primary")
                return
            case .done(.stoppedUnproven(let reason)):
                throw AgentError("switchover called off (\(reason)), and the leader lock could not be proven again: PostgreSQL stays stopped")
            }
        }
    }

    /// What the target reports having received (polled for up to 5 s, until it passes `final`).
    func receivedPosition(of target: NodeRegistration, beyond final: LSN) async -> LSN? {
        let conninfo = ConnInfo.make([
            ("host", target.address.value), ("port", String(target.port.value)), ("user", PostgresFiles.replicationUser),
            ("dbname", "postgres"), ("passfile", settings.passfile.value), ("connect_timeout", "2"),
        ])
        var received: LSN? = nil
        for _ in 0..<50 {
            if let connection = try? await PostgresConnection.connect(conninfo) {
                let text = try? await connection.query("SELECT pg_last_wal_receive_lsn()::text", timeout: .seconds(2)).first?.first ?? nil
                received = text.flatMap { try? LSN(parsing: $0) }
                connection.close()
            }
            if let received, received > final { return received }
            try? await Task.sleep(for: .milliseconds(100))
        }
        return received
    }

    /// Waits, at most `pgbouncer_timeout`, until every live pgbouncer agent acknowledged `phase` of the
    /// request; returns what happened, for the event.
    mutating func awaitBouncers(_ request: PauseRequest, phase: PauseAcknowledgement.Phase) async -> String {
        let started = ContinuousClock.now
        let deadline = started + config.pgbouncerTimeout.swiftDuration
        var index: UInt64 = 0
        var last: (acknowledged: [NodeName], awaited: [NodeName]) = ([], [])
        while ContinuousClock.now < deadline {
            let wait = max(Duration.milliseconds(10), min(deadline - ContinuousClock.now, .milliseconds(500)))
            guard let result = try? await client.list(keys.pgbouncerAgentsPrefix, QueryOptions(index: index, wait: wait)) else {
                try? await Task.sleep(for: .milliseconds(50))
                continue
            }
            index = result.index
            var agents: [NodeName: BouncerStatus] = [:]
            let now = ContinuousClock.now
            for pair in result.value {
                guard let name = try? NodeName(String(pair.key.dropFirst(keys.pgbouncerAgentsPrefix.count))), let status = BouncerStatus(bytes: pair.value)
                else { continue }
                agents[name] = status
                memory.bouncerReports.observe(name, index: pair.modifyIndex, at: now)
            }
            let reports = memory.bouncerReports
            last = request.acknowledgements(agents, phase: phase, live: { reports.isFresh($0, within: BouncerStatus.liveness, at: now) })
            if last.awaited.isEmpty { break }
        }
        let took = (ContinuousClock.now - started).millisecondCount
        if last.awaited.isEmpty { return "\(last.acknowledged.count) pgbouncer(s) \(phase.rawValue) in \(took) ms" }
        logger.warning("A pgbouncer did not acknowledge", metadata: ["switchover.phase": "\(phase.rawValue)", "switchover.awaited": "\(last.awaited)"])
        return "pgbouncer on \(last.awaited.map(\.value).joined(separator: ", ")) did not acknowledge \(phase.rawValue) within \(config.pgbouncerTimeout) (\(last.acknowledged.count) did)"
    }

    /// After a promotion by switchover: ends the pgbouncers' pause once they resumed on this node
    /// (bounded), in the background, and records the outcome.
    mutating func finishBouncerPause(_ request: PauseRequest, index: UInt64) {
        guard finishingPause != request.id else { return }
        finishingPause = request.id
        let now = ContinuousClock.now
        let live = Set(memory.bouncerReports.fresh(within: BouncerStatus.liveness, at: now))
        let client = self.client
        let keys = self.keys
        let timeout = config.pgbouncerTimeout.swiftDuration
        let recordOutcome = eventRecorder()
        background.yield {
            let deadline = ContinuousClock.now + timeout
            var outcome = "no pgbouncer agent reports"
            while ContinuousClock.now < deadline {
                guard let pairs = try? await client.list(keys.pgbouncerAgentsPrefix).value else { break }
                var agents: [NodeName: BouncerStatus] = [:]
                for pair in pairs {
                    if let name = try? NodeName(String(pair.key.dropFirst(keys.pgbouncerAgentsPrefix.count))), let status = BouncerStatus(bytes: pair.value) {
                        agents[name] = status
                    }
                }
                let (acknowledged, awaited) = request.acknowledgements(agents, phase: .resumed, live: { live.contains($0) })
                outcome = awaited.isEmpty
                    ? "\(acknowledged.count) pgbouncer(s) resumed"
                    : "pgbouncer on \(awaited.map(\.value).joined(separator: ", ")) did not resume within \(timeout)"
                if awaited.isEmpty { break }
                try? await Task.sleep(for: .milliseconds(100))
            }
            _ = try? await client.delete(keys.pgbouncerPause, cas: index)  // ignored: agents void it after its timeout
            await recordOutcome("switchover", "clients resumed: \(outcome)")
        }
    }

    /// Records events — logged, handed to the event command, written to Consul's history — also from
    /// background work, which cannot call the loop's own ``event(_:_:)``.
    func eventRecorder() -> @Sendable (String, String) async -> Void {
        let client = self.client
        let keys = self.keys
        let me = self.me
        let events = self.events
        let logger = self.logger
        return { kind, detail in
            let event = ClusterEvent(time: rfc3339Now(), node: me, kind: kind, detail: detail)
            logger.notice("Cluster event", metadata: ["event": "\(kind)", "reason": "\(detail)"])
            events?.submit(event)
            do { try await recordEvent(event, keys: keys, client: client) } catch {
                logger.warning("Cannot record an event", metadata: ["event.kind": "\(kind)", "error": "\(error)"])
            }
        }
    }

    // MARK: Synchronous replication

    /// The primary keeps one synchronous standby in synchronous mode, one step per loop (see
    /// ``SynchronousReplication``).
    mutating func manageSynchronousReplication(_ snapshot: ClusterSnapshot) async throws {
        let standbyNames = try await database.synchronousStandbyNames()
        if config.synchronousMode == .off && standbyNames.isEmpty && snapshot.sync == nil { return }
        let peers = try await database.replicationPeers()
        let candidates = SynchronousReplication.candidates(peers, snapshot: snapshot, me: me)
        let action = memory.synchronous.next(
            mode: config.synchronousMode, grace: config.synchronousStandbyGrace.swiftDuration, recorded: snapshot.sync, standbyNames: standbyNames,
            peers: peers, candidates: candidates, me: me, at: .now)
        switch action {
        case .none:
            return
        case .clear:
            if try await client.put(keys.sync, SyncRecord.cleared(by: me).serializedBytes(), mode: .cas(snapshot.syncIndex)) {
                await event("sync", "no synchronous standby recorded (\(snapshot.sync?.standby.value ?? "none") no longer relied on): automatic failover needs one")
            }
        case .setStandbyNames(let names):
            try database.writeSettings(upstream: nil, synchronousStandbyNames: names)
            try await database.reload()
            // The position is taken at the next loop, once every walsender applied the new setting.
            memory.synchronous.waitingSince = nil
            logger.info("synchronous_standby_names set", metadata: ["sync.names": "\(names)"])
        case .rememberPosition:
            memory.synchronous.waitingSince = try await database.currentPosition()
        case .record(let standby, let position):
            let record = SyncRecord(standby: standby, leader: me, position: position)
            if try await client.put(keys.sync, record.json.serializedBytes(), mode: .cas(snapshot.syncIndex)) {
                await event("sync", "\(standby) is the synchronous standby (it flushed past \(position))")
            }
        }
    }
}
