import BatonConsulStore
import BatonCore
import ConsulAPI

/// The lease on a simulated node — session, acquire, takeover, heartbeat, release — and its watchdog:
/// the steps of ``LeaseState`` (the live `Lease` actor's rules, the same code) carried out against the
/// in-memory store and a simulated watchdog, in the order the live lease carries them out.
extension Simulation {
    func sinceLastBeat(_ i: Int) -> GoDuration { nodes[i].lease.sinceLastBeat(now: nanoseconds(now)) }

    /// `Lease.ensureSession`: ``LeaseState``'s session upkeep carried out — renew the session; when it
    /// vanished under a leader, take the lock again with a new one; adopt the saved one after a restart
    /// while Consul knows it; else make one.
    @discardableResult
    func ensureSession(_ i: Int) -> String? {
        guard reachesConsul(i) else { return nodes[i].session }
        var upkeep = LeaseState.SessionUpkeep()
        var step = nodes[i].lease.next(&upkeep, after: .start(session: nodes[i].session, ttl: nodes[i].sessionTTL))
        while true {
            switch step {
            case .destroy(let session):
                consul.destroySession(session, now: tick())
                nodes[i].session = nil
                step = nodes[i].lease.next(&upkeep, after: .destroyed)
            case .renew(let session):
                if consul.renewSession(session, now: tick()) {
                    nodes[i].sessionConfirmed = now
                    step = nodes[i].lease.next(&upkeep, after: .renewed)
                } else {
                    note("\(nodes[i].name) lost its session")
                    nodes[i].session = nil
                    step = nodes[i].lease.next(&upkeep, after: .notFound)
                }
            case .reacquire:
                let taken = reacquire(i)
                if taken { note("\(nodes[i].name) took the lock again with a new session") }
                step = nodes[i].lease.next(&upkeep, after: .reacquired(taken ? nodes[i].session : nil))
            case .lose(let why):
                lost(i, why)
                step = nodes[i].lease.next(&upkeep, after: .lossHandled)
            case .adoptSaved:
                let saved = nodes[i].sessionFile.flatMap { consulRead().sessionExists($0) ? $0 : nil }
                if let saved {
                    nodes[i].session = saved
                    nodes[i].sessionConfirmed = now
                }
                step = nodes[i].lease.next(&upkeep, after: .adopted(saved))
            case .create:
                let config = nodes[i].config
                let created = try? consul.createSession(
                    name: "baton-sim-\(nodes[i].name)", node: nodes[i].name.value, ttl: config.ttl, lockDelay: config.lockDelay, now: tick())  // sessions without checks are never refused
                if let created {
                    nodes[i].session = created
                    nodes[i].sessionFile = created
                    nodes[i].sessionTTL = config.ttl
                    nodes[i].sessionConfirmed = now
                }
                step = nodes[i].lease.next(&upkeep, after: .created(created))
            case .done(let session):
                return session
            }
        }
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
        let sent = nanoseconds(now)
        let (deadline, flags) = nodes[i].lease.acquisition(now: sent)
        arm(i, deadline: deadline)
        let acquired = (try? consul.put(keys.leader, Array(nodes[i].name.value.utf8), flags: flags, mode: .acquire(session: session), now: tick())) ?? false
        guard acquired else {
            if !nodes[i].lease.leading { standDown(i) }
            return false
        }
        startLeading(i, sent: sent, deadline: deadline)
        wakeAgents()
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
        wakeAgents()
    }

    /// `Lease.run`, one round: renew when due, beat while leading; returns when the next round comes.
    func heartbeat(_ i: Int) -> Duration {
        let started = now
        let sinceConfirmed = nodes[i].session == nil ? nil : nodes[i].sessionConfirmed.map { now - $0 }
        if nodes[i].config.sessionRenewalDue(sinceConfirmed: sinceConfirmed) { ensureSession(i) }
        if nodes[i].lease.leading { _ = beat(i, mayAskMembers: true) }
        return nodes[i].lease.pauseBeforeNextBeat(elapsed: now - started, now: nanoseconds(now))
    }

    /// `Lease.beat`: ``LeaseState``'s heartbeat carried out — read the key, arm, write it back with
    /// check-and-set while it is still this node's, fence when it is not; with `mayAskMembers`, a
    /// failsafe round after a beat that did not get through.
    func beat(_ i: Int, mayAskMembers: Bool = false) -> LeaseState.Beat {
        let session = nodes[i].session
        var heartbeat = nodes[i].lease.heartbeat(session: session, mayAskMembers: mayAskMembers)
        var event = LeaseState.Event.start(known: nil)
        while true {
            let wasLeading = nodes[i].lease.leading
            let step = nodes[i].lease.next(&heartbeat, after: event, now: nanoseconds(now))
            if !wasLeading, nodes[i].lease.leading { note("\(nodes[i].name) leads") }
            switch step {
            case .done(let outcome):
                for notice in heartbeat.notices { self.notice(i, notice) }
                if outcome != .beat, options.mutant == .renewAfterLostCAS, nodes[i].lease.leading {
                    // The mutant: the lease moves its deadline on although its write did not get through.
                    arm(i, deadline: nodes[i].lease.fenceDeadline(sentAt: nanoseconds(now)))
                }
                return outcome
            case .readKey:
                guard reachesConsul(i) else {
                    event = .readFailed
                    continue
                }
                var pair = consulRead().get(keys.leader)
                if options.mutant == .renewAfterLostCAS, nodes[i].lease.leading, let read = pair, read.session != session || read.stringValue != nodes[i].name.value {
                    // The mutant does not fence: it takes the key for its own, at an index no write matches.
                    pair = KVPair(key: read.key, value: Array(nodes[i].name.value.utf8), flags: read.flags, session: session, modifyIndex: .max)
                }
                event = .keyRead(pair)
            case .arm(let deadline):
                arm(i, deadline: deadline)
                event = .armed(true)
            case .writeKey(let index, var flags):
                if options.mutant == .noFencingPromise { flags = LeaderFlags(beats: LeaderFlags(raw: flags).beats, promise: nil).raw }
                guard reachesConsul(i) else {
                    event = .writeFailed
                    continue
                }
                let written = (try? consul.put(keys.leader, Array(nodes[i].name.value.utf8), flags: flags, mode: .cas(index), now: tick())) ?? false
                // The transaction's answer names the key's new index.
                event = .written(committed: written, index: written ? consul.get(keys.leader)?.modifyIndex : nil)
            case .renewSession:
                ensureSession(i)
                event = .renewed(session: nodes[i].session)
            case .askMembers(_, let promise, let names, let keyIndex, _):
                event = .members(confirmed: askMembers(i, names, promise: promise, keyIndex: keyIndex))
            case .fence(let why):
                note("\(nodes[i].name) lost the lock (\(why)); fencing")
                fence(i)
                event = .fenced
            case .fenceUnguarded:
                fence(i)
                release(i)
                event = .fenced
            }
        }
    }

    private func notice(_ i: Int, _ notice: LeaseState.Notice) {
        switch notice {
        case .failsafeOver: note("\(nodes[i].name) Consul answers again: failsafe over")
        case .failsafeEntered: note("\(nodes[i].name) failsafe: every member confirmed; leading on")
        case .leadingAgain, .failsafeNotWritable: break
        }
    }

    /// `Lease.askMembers`: a member round — every member named is asked over its API
    /// (``NodeHealth/failsafe(request:fenceAfter:view:now:)``) to promise not to take over for the
    /// round's promise. A member whose monitor does not run cannot answer.
    func askMembers(_ i: Int, _ names: Set<NodeName>, promise: GoDuration, keyIndex: UInt64?) -> Bool {
        var confirmed = true
        for name in names.sorted(by: { $0.value < $1.value }) {
            _ = tick()
            guard let m = index(of: name), nodes[m].alive, nodes[m].monitorFrozenUntil(now) == nil else {
                confirmed = false
                continue
            }
            let answer = NodeHealth.failsafe(
                request: nodes[i].name, fenceAfter: options.mutant == .failsafeOwnPeriod ? nil : promise, keyIndex: keyIndex, view: nodes[m].view,
                now: nanoseconds(now))
            if let grant = answer.grant {
                nodes[m].view.failsafeGrant = grant
            } else {
                confirmed = false
            }
        }
        return confirmed
    }

    /// What the loop tells the lease of node `i`'s PostgreSQL (`Lease.setLocal`).
    func setWritablePrimary(_ i: Int, _ writable: Bool) {
        // The mutant: a leader whose PostgreSQL is down still counts as a writable primary, and asks
        // for failsafe grants (the rule before finding 5).
        let writable = writable || (options.mutant == .failsafeForADeadPrimary && nodes[i].lease.leading)
        nodes[i].lease.setLocal(writablePrimary: writable, vacant: nodes[i].lease.vacant)
    }

    /// Virtual time as the monotonic nanoseconds the node API's rules count in.
    func nanoseconds(_ time: Duration) -> UInt64 {
        UInt64(time.components.seconds) * 1_000_000_000 + UInt64(time.components.attoseconds / 1_000_000_000)
    }

    /// `MonitorLoop.publishView`: what node `i`'s API answers from after its loop.
    func publishView(_ i: Int, snapshot: ClusterSnapshot?) {
        let at = nanoseconds(now)
        nodes[i].view.local = observeLocal(i)
        nodes[i].view.leading = nodes[i].lease.leading
        nodes[i].view.loopRanAt = at
        nodes[i].view.fenceAfter = nodes[i].config.fenceAfter
        nodes[i].view.failsafeMode = nodes[i].config.failsafeMode
        nodes[i].view.consulReachable = snapshot != nil
        if let snapshot { nodes[i].view.leader = snapshot.leader?.holder }
    }

    /// The latest promise node `i` made a leader (member rounds), as of now.
    func grantSeen(_ i: Int) -> LeaseGrant.Seen? {
        nodes[i].view.failsafeGrant?.seen(now: nanoseconds(now))
    }

    func startLeading(_ i: Int, sent: UInt64, deadline: UInt64) {
        if !nodes[i].lease.leading { note("\(nodes[i].name) leads") }
        nodes[i].lease.startLeading(sent: sent, deadline: deadline)
    }

    func stopLeading(_ i: Int) { nodes[i].lease.stopLeading() }

    /// The key is not this node's any more while it led: PostgreSQL killed now.
    func lost(_ i: Int, _ why: String) {
        note("\(nodes[i].name) lost the lock (\(why)); fencing")
        stopLeading(i)
        fence(i)
    }

    /// PostgreSQL killed now, the watchdog stood down (`FenceGuard.fenceNow`).
    func fence(_ i: Int) {
        standDown(i)
        nodes[i].db.stop()
    }

    // MARK: The watchdog

    func arm(_ i: Int, deadline: UInt64) {
        let deadline = Duration.nanoseconds(Int64(deadline))
        nodes[i].watchdogDeadline = deadline
        nodes[i].watchdogGeneration += 1
        nodes[i].guardiansKilled = false
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
