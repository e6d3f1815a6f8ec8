import BatonConsul
import BatonCore
import BatonPostgres
import ConsulAPI
import Foundation

/// Day-2 work the monitor does for the operator: the cluster-wide PostgreSQL parameters, the
/// replication slots a primary keeps, and the commands (`baton restart`, `reload`, `reinit`) its node
/// is asked to carry out.
extension MonitorLoop {
    // MARK: Cluster-wide parameters

    /// Writes the cluster's PostgreSQL parameters to this node's parameters file when they changed,
    /// and reloads a running server; what waits for a restart is then reported in `pending_restart`.
    mutating func applyParameters(_ snapshot: ClusterSnapshot, local: LocalPostgres) async {
        guard snapshot.parameters != appliedParameters || !parametersWritten else { return }
        do {
            let changed = try database.writeParameters(snapshot.parameters.fileText)
            parametersWritten = true
            let previous = appliedParameters
            appliedParameters = snapshot.parameters
            guard changed else { return }
            if local.isUp { try await database.reload() }
            // The server reads the file on SIGHUP: what needs a restart shows from the next loops on.
            pendingRestartCheckedAt = nil
            pendingRestartWatchedUntil = .now + .seconds(10)
            let changes = snapshot.parameters.changes(from: previous)
            logger.notice("Applied the cluster's PostgreSQL parameters", metadata: ["parameters.changed": "\(changes)"])
            if !changes.isEmpty { await event("parameters", "applied \(changes)" + (local.isUp ? " and reloaded" : " (PostgreSQL is not running)")) }
        } catch {
            parametersWritten = false
            consulWarnings.warning(logger, "Cannot write the PostgreSQL parameters file", metadata: ["error": "\(error)"])
        }
    }

    /// Refreshes `pending_restart` (the settings PostgreSQL read but can apply only at a restart) every
    /// loop for 10 s after a change, and every 30 s.
    mutating func refreshPendingRestart(local: LocalPostgres) async {
        guard local.isUp else { return }
        let now = ContinuousClock.now
        let watched = pendingRestartWatchedUntil.map { now < $0 } ?? false
        if let checked = pendingRestartCheckedAt, now - checked < .seconds(30), !watched { return }
        pendingRestartCheckedAt = .now
        do {
            pendingRestart = try await database.pendingRestart()
        } catch {
            pendingRestartCheckedAt = nil
        }
    }

    // MARK: Replication slots

    /// The leader's slots: one for every other registered node (created), none for a node that was
    /// removed (dropped, once inactive — a node gone for good must not hold WAL back forever), and how
    /// much WAL each holds back (reported, and warned about by `baton status`). A slot without a
    /// registration that this leader never saw registered — a node joining, between its clone and its
    /// registration — is dropped only after ``orphanSlotGrace``.
    mutating func reconcileSlots(_ snapshot: ClusterSnapshot) async throws {
        var reports = try await database.slots()
        let wanted = Set(snapshot.registrations.keys.filter { $0 != me }.map(\.slotName))
        for name in wanted where !reports.contains(where: { $0.name == name }) {
            try await database.createSlot(name)
            reports.append(SlotReport(name: name, active: false, retainedBytes: 0))
        }
        slotsRegisteredBefore.formUnion(wanted)
        // A registration that does not parse is not a removal.
        let registrationsTrusted = !snapshot.problems.contains { $0.contains(keys.nodesPrefix) }
        let now = ContinuousClock.now
        for slot in reports where slot.name.hasPrefix("baton_") && !wanted.contains(slot.name) {
            if orphanSlotsSince[slot.name] == nil { orphanSlotsSince[slot.name] = now }
            guard registrationsTrusted, !slot.active,
                slotsRegisteredBefore.contains(slot.name) || now - orphanSlotsSince[slot.name]! >= Self.orphanSlotGrace
            else { continue }
            try await database.dropSlot(slot.name)
            reports.removeAll { $0.name == slot.name }
            orphanSlotsSince[slot.name] = nil
            slotsRegisteredBefore.remove(slot.name)
            await event("slot", "dropped replication slot \(slot.name): no registered node streams from it (it held \(slot.retainedBytes) bytes of WAL)")
        }
        orphanSlotsSince = orphanSlotsSince.filter { name, _ in reports.contains { $0.name == name } }
        slots = reports.sorted { $0.name < $1.name }
    }

    /// How long a slot no registered node uses may stay when this leader never saw its node registered.
    static let orphanSlotGrace: Duration = .seconds(120)

    // MARK: Commands

    /// Carries out this node's pending command, if there is one and the node is steady — keeping its
    /// lock as a leader, or following one as a standby — else it waits for a later loop.
    /// - Returns: whether a command was carried out (the local PostgreSQL may have changed).
    mutating func runCommand(_ snapshot: ClusterSnapshot, local: LocalPostgres, action: MonitorAction) async -> Bool {
        guard let (command, index) = snapshot.commands[me], command.state == .requested else {
            commandSeen = nil
            return false
        }
        // A command waits at most pickupTimeout for a steady node, on this monitor's clock; one already
        // there when the monitor started was asked of a monitor that was not running, and is not run.
        if commandSeen?.id != command.id { commandSeen = (command.id, .now, startedUp) }
        if let seen = commandSeen, !seen.whileRunning || ContinuousClock.now - seen.since > NodeCommand.pickupTimeout {
            await report(command.with(.failed, seen.whileRunning ? "expired: the node was not steady for \(NodeCommand.pickupTimeout)" : "expired: it was asked while this node's monitor was not running"))
            return false
        }
        let leading = await lease.isLeading
        guard NodeCommand.mayRun(command.kind, during: action, leading: leading) else { return false }
        if let refusal = NodeCommand.refusal(command.kind, holdsLock: leading, local: local) {
            await report(command.with(.failed, refusal))
            return false
        }
        // Claimed with check-and-set: a command withdrawn meanwhile is not carried out.
        do {
            guard try await client.put(keys.command(me), command.with(.running, "\(command.kind.rawValue) under way").json.serializedBytes(), mode: .cas(index))
            else { return false }
        } catch {
            return false
        }
        logger.notice("Carrying out an operator's command", metadata: ["command.kind": "\(command.kind.rawValue)", "command.by": "\(command.by)"])
        var outcome: NodeCommand
        do {
            switch command.kind {
            case .restart:
                outcome = try await restart(command, leading: leading)
            case .reload:
                try await database.reload()
                try await Task.sleep(for: .milliseconds(300))
                pendingRestartCheckedAt = nil
                await refreshPendingRestart(local: local)
                outcome = command.with(.done, "reloaded" + (pendingRestart.isEmpty ? "" : "; waiting for a restart: \(pendingRestart.joined(separator: ", "))"))
            case .reinit:
                outcome = command.with(.done, try await reinit(snapshot))
            }
        } catch {
            outcome = command.with(.failed, "\(error)")
        }
        await event(command.kind.rawValue, "\(outcome.state.rawValue): \(outcome.detail) (asked by \(command.by))")
        await report(outcome)
        wake.yield(.look)
        return true
    }

    /// Writes the command's outcome (or progress) for the waiting operator.
    func report(_ command: NodeCommand) async {
        do { try await client.put(keys.command(me), command.json.serializedBytes()) } catch {
            logger.warning("Cannot record a command's outcome", metadata: ["command.kind": "\(command.kind.rawValue)", "error": "\(error)"])
        }
    }

    /// Restarts PostgreSQL in place. A leader keeps its lock throughout (the lease beats on its own) and
    /// proves it again before PostgreSQL starts; every pgbouncer holds its clients meanwhile, so they
    /// wait instead of failing. Replicas see a leader that beats and do not take over.
    mutating func restart(_ command: NodeCommand, leading: Bool) async throws -> NodeCommand {
        if command.onlyPending {
            pendingRestartCheckedAt = nil
            await refreshPendingRestart(local: await database.observe())
            if pendingRestart.isEmpty { return command.with(.skipped, "no setting waits for a restart") }
        }
        let pending = pendingRestart
        guard leading else { return command.with(.done, try await restartInPlace(leading: false, pending: pending)) }
        let pause = PauseRequest(
            id: UUID().uuidString.lowercased(), from: me, to: me, timeout: GoDuration(nanoseconds: config.pgbouncerTimeout.nanoseconds + 60_000_000_000))
        try await client.put(keys.pgbouncerPause, pause.json.serializedBytes())
        let pausing = await awaitBouncers(pause, phase: .paused)
        let detail: String
        do { detail = try await restartInPlace(leading: true, pending: pending) } catch {
            _ = try? await client.delete(keys.pgbouncerPause)  // ignored: agents void a pause after its timeout
            throw error
        }
        _ = try? await client.delete(keys.pgbouncerPause)  // ignored: as above
        return command.with(.done, detail + "; the leader lock was kept; \(pausing), then resumed")
    }

    /// Stops PostgreSQL (bounded) and starts it again, waiting until it answers; a leader proves its
    /// lock before the start.
    mutating func restartInPlace(leading: Bool, pending: [String]) async throws -> String {
        await lease.setWritablePrimary(false)
        await publishStatus(local: .down(standbySignal: !leading), action: .wait(reason: "restarting PostgreSQL (baton restart)"))
        let started = ContinuousClock.now
        let stopped = try await database.stop()
        if leading, !(await lease.prove()) {
            throw AgentError("the leader lock could not be proven after the stop: PostgreSQL stays stopped and the monitor decides what follows")
        }
        try await launchPostgres()
        let deadline = ContinuousClock.now + max(config.primaryStartTimeout.swiftDuration, .seconds(10))
        var local = await database.observe()
        while !local.isUp, ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(20))
            local = await database.observe()
        }
        guard local.isUp else { throw AgentError("PostgreSQL did not answer within primary_start_timeout after the restart; see its log") }
        if leading, case .primary = local { await lease.setWritablePrimary(true) }
        let took = (ContinuousClock.now - started).millisecondCount
        pendingRestartCheckedAt = nil
        await refreshPendingRestart(local: local)
        var detail = "PostgreSQL restarted in \(took) ms (stopped: \(stopped.rawValue))"
        if !pending.isEmpty { detail += "; applied \(pending.joined(separator: ", "))" }
        return detail
    }

    /// Re-clones this node — from the pgBackRest repository over its data directory with `--delta` when
    /// `--clone-from` picks the repository, else from the leader with pg_basebackup, the old data
    /// directory moved aside (never deleted) — and starts it as the leader's standby.
    mutating func reinit(_ snapshot: ClusterSnapshot) async throws -> String {
        guard let leader = snapshot.leader?.holder, leader != me, let target = snapshot.registrations[leader] else {
            throw AgentError("no other node leads: re-cloning needs a live primary to copy")
        }
        let source = try await reachableLeader(leader, target)
        source.close()
        let stopped = try await database.stop()
        let clone = try await database.clone(conninfo: cloneConninfo(target), slot: me.slotName, inPlace: true)
        try database.writeSettings(upstream: upstream(target), synchronousStandbyNames: "")
        try database.markStandby()
        parametersWritten = false
        try await launchPostgres()
        memory.rejoined()
        try await register(role: .standby, upstream: leader)
        let old = clone.inPlace ? "restored over in place" : "the old data directory is \(clone.moved ?? "nothing (it was empty)")"
        return "re-cloned from \(leader) — \(clone.how) (PostgreSQL was stopped: \(stopped.rawValue)); \(old)"
    }
}
