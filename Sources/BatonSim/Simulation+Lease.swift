import BatonConsulStore
import BatonCore
import ConsulAPI

/// The lease on a simulated node — session, acquire, takeover, heartbeat, release — and its watchdog,
/// following the live `Lease` actor's rules: the watchdog is armed before the lock is taken, every beat
/// that got through moves its deadline to `fence_after` after the beat was sent (by the node's own
/// configuration), a beat that finds the key not this node's fences at once.
extension Simulation {
    func sinceLastBeat(_ i: Int) -> GoDuration {
        guard nodes[i].leading, let beat = nodes[i].lastBeat else { return .seconds(86_400 * 365) }
        return GoDuration(now - beat)
    }

    /// `Lease.ensureSession`: renew the session; adopt the saved one after a restart while Consul knows
    /// it; else make one.
    @discardableResult
    func ensureSession(_ i: Int) -> String? {
        guard reachesConsul(i) else { return nodes[i].session }
        if let session = nodes[i].session {
            if consul.renewSession(session, now: tick()) {
                nodes[i].sessionConfirmed = now
                return session
            }
            note("\(nodes[i].name) lost its session")
            nodes[i].session = nil
            if nodes[i].leading {
                if reacquire(i) {
                    note("\(nodes[i].name) took the lock again with a new session")
                    return nodes[i].session
                }
                lost(i, "the session expired in Consul")
            }
        }
        if let saved = nodes[i].sessionFile, consulRead().sessionExists(saved) {
            nodes[i].session = saved
            nodes[i].sessionConfirmed = now
            return saved
        }
        let config = nodes[i].config
        guard let created = try? consul.createSession(name: "baton-sim-\(nodes[i].name)", node: nodes[i].name.value, ttl: config.ttl, lockDelay: config.lockDelay, now: tick())
        else { return nil }  // sessions without checks are never refused
        nodes[i].session = created
        nodes[i].sessionFile = created
        nodes[i].sessionConfirmed = now
        return created
    }

    /// `Lease.reacquire`: the session vanished under this leader; the key is still free and names it.
    func reacquire(_ i: Int) -> Bool {
        guard let pair = consulRead().get(keys.leader), pair.session == nil,
            pair.stringValue == nodes[i].name.value
        else { return false }
        return acquire(i)
    }

    /// `Lease.acquire`: the watchdog armed first, then the lock taken.
    func acquire(_ i: Int) -> Bool {
        guard reachesConsul(i), let session = ensureSession(i) else { return false }
        let deadline = now + nodes[i].config.fenceAfter.swiftDuration
        arm(i, deadline: deadline)
        let flags = LeaderFlags(beats: 0, promise: nodes[i].config.fenceAfter).raw
        let acquired = (try? consul.put(keys.leader, Array(nodes[i].name.value.utf8), flags: flags, mode: .acquire(session: session), now: tick())) ?? false
        guard acquired else {
            if !nodes[i].leading { standDown(i) }
            return false
        }
        startLeading(i, sent: now)
        return true
    }

    /// `Lease.takeOver`: the key renamed with check-and-set at the silent index, the old session
    /// destroyed, the lock acquired.
    func takeOver(_ i: Int, from silent: ClusterSnapshot.Leader) -> Bool {
        guard reachesConsul(i) else { return false }
        if silent.holder != nodes[i].name {
            let renamed = (try? consul.put(keys.leader, Array(nodes[i].name.value.utf8), flags: silent.flags, mode: .cas(silent.modifyIndex), now: tick())) ?? false
            guard renamed else { return false }
        }
        consul.destroySession(silent.session, now: tick())
        return acquire(i)
    }

    func prove(_ i: Int) -> Bool { beat(i) == .beat }

    /// `Lease.release`: the watchdog stands down first, then the key is released.
    func release(_ i: Int) {
        let session = nodes[i].session
        stopLeading(i)
        standDown(i)
        guard let session, reachesConsul(i) else { return }
        _ = try? consul.put(keys.leader, Array(nodes[i].name.value.utf8), mode: .release(session: session), now: tick())  // it lapses with the session
    }

    /// `Lease.run`, one round: renew when due, beat while leading; returns when the next round comes.
    func heartbeat(_ i: Int) -> Duration {
        let config = nodes[i].config
        let sinceConfirmed = nodes[i].session == nil ? nil : nodes[i].sessionConfirmed.map { now - $0 }
        if config.sessionRenewalDue(sinceConfirmed: sinceConfirmed) { ensureSession(i) }
        if nodes[i].leading, beat(i) == .failed, nodes[i].leading, config.failsafeMode { failsafe(i) }
        var pause = max(.milliseconds(20), config.loopWait.swiftDuration)
        if nodes[i].leading, let deadline = nodes[i].watchdogDeadline, deadline > now { pause = min(pause, deadline - now + .milliseconds(1)) }
        return pause
    }


    enum Beat { case beat, lost, failed }

    /// `Lease.beat`: read the key; write it back with check-and-set while it is still this node's.
    func beat(_ i: Int) -> Beat {
        let outcome = tryBeat(i)
        if outcome != .beat, options.mutant == .renewAfterLostCAS, nodes[i].leading {
            // The mutant: the lease moves its deadline on although its write did not get through.
            arm(i, deadline: now + nodes[i].config.fenceAfter.swiftDuration)
        }
        return outcome
    }

    private func tryBeat(_ i: Int) -> Beat {
        guard let session = nodes[i].session, reachesConsul(i) else { return .failed }
        let pair = consulRead().get(keys.leader)
        guard let pair, pair.session == session, pair.stringValue == nodes[i].name.value else {
            if pair?.session == nil, pair?.stringValue == nodes[i].name.value {
                // Its session vanished: renewed at once, and the lock taken again (`Lease.beat`).
                guard nodes[i].leading else { return .failed }
                ensureSession(i)
                return nodes[i].leading && nodes[i].session != session ? .beat : .failed
            }
            if nodes[i].leading {
                if options.mutant == .renewAfterLostCAS { return .failed }
                lost(i, "the leader key is \(pair.map { "held by \($0.stringValue)" } ?? "gone")")
                return .lost
            }
            return .failed
        }
        let sent = now
        let fenceAfter = nodes[i].config.fenceAfter
        // A shorter fence is armed before the key promises it (`Lease.beat`).
        if nodes[i].leading, let armed = nodes[i].watchdogDeadline, sent + fenceAfter.swiftDuration < armed {
            arm(i, deadline: sent + fenceAfter.swiftDuration)
        }
        let flags = options.mutant == .noFencingPromise ? pair.flags &+ 1 : LeaderFlags.nextBeat(after: pair.flags, promise: fenceAfter)
        let written = (try? consul.put(keys.leader, Array(nodes[i].name.value.utf8), flags: flags, mode: .cas(pair.modifyIndex), now: tick())) ?? false
        guard written else { return .failed }
        arm(i, deadline: sent + fenceAfter.swiftDuration)
        if nodes[i].inFailsafe { note("\(nodes[i].name) Consul answers again: failsafe over") }
        nodes[i].inFailsafe = false
        startLeading(i, sent: now)
        return .beat
    }

    /// `Lease.failsafe`: Consul out of reach, the lease is renewed for one more fence period only if
    /// every other member confirms over its API (``NodeHealth/failsafe(request:view:now:)``) that it
    /// will not take over. A member whose monitor does not run cannot answer.
    func failsafe(_ i: Int) {
        // Only for a PostgreSQL that runs as the writable primary: a leader whose database died must
        // not hold the others off (issue 23, finding 5).
        guard nodes[i].writablePrimary || options.mutant == .failsafeForADeadPrimary else { return }
        let sent = now
        let deadline = now + nodes[i].config.fenceAfter.swiftDuration
        var confirmed = true
        for m in nodes.indices where m != i {
            _ = tick()
            guard nodes[m].alive, nodes[m].monitorFrozenUntil(now) == nil else {
                confirmed = false
                continue
            }
            let answer = NodeHealth.failsafe(
                request: nodes[i].name, fenceAfter: options.mutant == .failsafeOwnPeriod ? nil : nodes[i].config.fenceAfter, view: nodes[m].view,
                now: nanoseconds(now))
            if answer.granted {
                nodes[m].view.failsafeGrant = (nodes[i].name, max(answer.until, nodes[m].view.failsafeGrant?.until ?? 0))
            } else {
                confirmed = false
            }
        }
        guard confirmed, nodes[i].leading else { return }
        if !nodes[i].inFailsafe { note("\(nodes[i].name) failsafe: every member confirmed; leading on") }
        nodes[i].inFailsafe = true
        arm(i, deadline: deadline)
        startLeading(i, sent: sent)
    }

    /// Virtual time as the monotonic nanoseconds the node API's rules count in.
    func nanoseconds(_ time: Duration) -> UInt64 {
        UInt64(time.components.seconds) * 1_000_000_000 + UInt64(time.components.attoseconds / 1_000_000_000)
    }

    /// `MonitorLoop.publishView`: what node `i`'s API answers from after its loop.
    func publishView(_ i: Int, snapshot: ClusterSnapshot?) {
        let at = nanoseconds(now)
        nodes[i].view.local = observeLocal(i)
        nodes[i].view.leading = nodes[i].leading
        nodes[i].view.loopRanAt = at
        nodes[i].view.fenceAfter = nodes[i].config.fenceAfter
        nodes[i].view.failsafeMode = nodes[i].config.failsafeMode
        nodes[i].view.consulReachable = snapshot != nil
        if let snapshot { nodes[i].view.leader = snapshot.leader?.holder }
        if let grant = nodes[i].view.failsafeGrant, grant.until <= at { nodes[i].view.failsafeGrant = nil }
    }

    /// The leader node `i` promised, in failsafe mode, not to take over from (while the promise holds).
    func grantedTo(_ i: Int) -> NodeName? {
        nodes[i].view.failsafeGrant.flatMap { $0.until > nanoseconds(now) ? $0.leader : nil }
    }

    func startLeading(_ i: Int, sent: Duration) {
        if !nodes[i].leading { note("\(nodes[i].name) leads") }
        nodes[i].leading = true
        nodes[i].lastBeat = sent
    }

    func stopLeading(_ i: Int) {
        nodes[i].leading = false
        nodes[i].inFailsafe = false
        nodes[i].lastBeat = nil
    }

    /// The key is not this node's any more while it led: PostgreSQL killed now.
    func lost(_ i: Int, _ why: String) {
        note("\(nodes[i].name) lost the lock (\(why)); fencing")
        stopLeading(i)
        standDown(i)
        nodes[i].db.stop()
    }

    // MARK: The watchdog

    func arm(_ i: Int, deadline: Duration) {
        nodes[i].watchdogDeadline = deadline
        nodes[i].watchdogGeneration += 1
        schedule(at: firesAt(deadline), .watchdog(i, generation: nodes[i].watchdogGeneration))
    }

    /// When the watchdog really fences for `deadline` (late only for the mutant).
    func firesAt(_ deadline: Duration) -> Duration {
        options.mutant == .lateWatchdog ? deadline + .seconds(2) : deadline
    }

    func standDown(_ i: Int) {
        nodes[i].watchdogDeadline = nil
        nodes[i].watchdogGeneration += 1
    }

    /// The deadline passed without a beat to move it: every process of PostgreSQL is killed.
    func watchdogFires(_ i: Int) {
        guard nodes[i].watchdogDeadline != nil else { return }
        nodes[i].watchdogDeadline = nil
        if nodes[i].db.running {
            nodes[i].db.stop()
            note("\(nodes[i].name) watchdog: deadline passed, PostgreSQL killed")
        }
    }
}
