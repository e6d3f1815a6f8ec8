import BatonSettings
import BatonConsul
import BatonCore
import BatonFence
import BatonSigning
import ConsulAPI
import Foundation
import Logging

/// The leader lock held as a lease: this node's Consul session, the leader's heartbeat and the
/// watchdog's deadline, owned by one actor and beaten by a task of its own, so that no action of the
/// monitor — a promotion replaying a backlog, a checkpoint, crash recovery, the clean stop of a
/// switchover — can hold a heartbeat up (invariant 10).
///
/// A heartbeat renews the session and writes the leader key with check-and-set at the index it just
/// read (the flags count the beats), so that a replica taking over a silent leader (which writes the
/// key at the silent index) and a late heartbeat cannot both win. Every beat that got through moves
/// the watchdog's deadline to `fence_timeout` after it was *sent*. A beat that finds the key no longer
/// this node's kills PostgreSQL at once.
///
/// The lease also writes the files keepalived reads: the state `baton check` judges (with the lease
/// deadline, so the check fails the moment the lease runs out) and the tracked file.
public actor Lease {
    let client: ConsulClient
    let guardian: any FenceGuard
    /// Signs failsafe requests to the other members (nil: this node could not read its passfile; the
    /// members refuse what it asks).
    let signer: NodeAPISigner?
    /// The leader key as the monitor's watch sees it.
    let sightings: LeaderSightings
    let logger: Logger
    let node: NodeName
    let cluster: ClusterName
    let keys: ClusterKeys
    let stateDirectory: String
    /// Tells the monitor loop to look again (the lock was lost, or the lease ran out).
    let wake: @Sendable () -> Void
    /// Told whether this node leads and its watchdog's deadline each time they change — the node API
    /// answers `/primary` from them, current even while the monitor's loop waits on a slow Consul.
    let published: @Sendable (_ leading: Bool, _ deadline: UInt64) -> Void

    /// The rules and what they remember: leading, its term, the last beat, the watchdog's deadline,
    /// failsafe, what the loop saw of PostgreSQL.
    private var state: LeaseState
    private var config: ClusterConfig { state.config }
    /// The other members' APIs, for member rounds (as the loop read them, kept for a member that left
    /// the set: a round asks it until a write of the key got through); nil for a member that has not
    /// published one, which can never confirm.
    private var members: [NodeName: NodeAPIAddress?] = [:]
    /// Warnings that repeat every beat while Consul is out of reach, logged once per 30 s.
    private var consulWarnings = RepeatedWarnings()
    private let transport: CurlTransport
    /// Writes the state and tracked files off the heartbeat's path.
    private let files: BackgroundFileWriter
    private var session: String?
    /// The monitor stops (``close()``): no session is made or adopted any more.
    private var closed = false
    /// The leader key as this node's last heartbeat wrote it (its new index from the transaction's answer).
    private var ownBeat: KVPair?
    private var sessionTTL: GoDuration?
    /// When the session was last renewed, created or adopted (this process's clock).
    private var sessionConfirmed: ContinuousClock.Instant?
    private var trackWritten: VRRPStanding?
    /// The standing last written into the file an earlier keepalived.conf tracks (always `vip_policy: primary`'s).
    private var legacyWritten: VRRPStanding?
    /// The state file as last written: rewritten when what `baton check` judges changes, else once
    /// per half loop (it proves the monitor alive; `baton check` counts it stale after three loops).
    private var stateWritten: (leading: Bool, deadline: UInt64, at: UInt64)?
    /// This boot of the machine, written into the state file.
    private static let boot = MonotonicClock.bootID()

    public init(
        client: ConsulClient, guardian: any FenceGuard, node: NodeName, cluster: ClusterName, stateDirectory: String, logger: Logger,
        apiTLS: TLSFiles = TLSFiles(), signer: NodeAPISigner? = nil, sightings: LeaderSightings = LeaderSightings(),
        wake: @escaping @Sendable () -> Void, published: @escaping @Sendable (_ leading: Bool, _ deadline: UInt64) -> Void = { _, _ in }
    ) {
        self.published = published
        self.signer = signer
        self.client = client
        self.sightings = sightings
        self.transport = CurlTransport(tls: apiTLS)
        self.files = BackgroundFileWriter(logger: logger)
        self.guardian = guardian
        self.node = node
        self.state = LeaseState(node: node)
        self.cluster = cluster
        self.keys = ClusterKeys(cluster: cluster)
        self.stateDirectory = stateDirectory
        self.logger = logger
        self.wake = wake
    }

    var sessionFile: String { stateDirectory + "/session" }
    var sessionName: String { "baton-\(cluster)-\(node)" }

    // MARK: What the monitor loop asks

    /// The cluster settings and the other members' APIs, as the loop last read them.
    public func update(_ config: ClusterConfig, members: [NodeName: NodeAPIAddress?]) {
        let policyChanged = config.vipPolicy != state.config.vipPolicy
        state.config = config
        self.members.merge(members.filter { $0.key != node }) { $1 }
        state.setMembers(Set(members.keys))
        if policyChanged { publishState() }
    }

    public var isLeading: Bool { state.leading }
    /// The watchdog's deadline (CLOCK_MONOTONIC nanoseconds; 0 when not leading).
    public var leaseDeadline: UInt64 { state.leaseDeadline }
    public var failsafeActive: Bool { state.failsafeActive }
    private var leading: Bool { state.leading }

    /// Whether a watchdog answers (one is started if none does): a node without one never leads.
    public func guardianAnswers() async -> Bool { await guardian.ensure() }
    /// The postmaster the watchdog would fence (``FenceGuard/postmasterSeen()``).
    public func guardianPostmaster() async -> Int32? { await guardian.postmasterSeen() }
    public var currentSession: String? { session }

    /// Time since the last heartbeat that got through was sent (forever when there was none).
    public var sinceLastBeat: GoDuration { state.sinceLastBeat(now: MonotonicClock.nanoseconds()) }

    /// The loop saw (or stopped seeing) a writable primary here, the vacancy as it was: what `baton
    /// check` and keepalived learn.
    public func setWritablePrimary(_ writable: Bool) {
        setLocal(writablePrimary: writable, vacant: state.vacant)
    }

    /// What the loop saw of this node's PostgreSQL, both at once: whether it is a writable primary, and
    /// whether no process of it runs (``VRRPStanding/vacant``: keepalived may keep the VIP here at the
    /// lowest priority). Set together, so that a leader whose PostgreSQL is gone goes from leading to
    /// vacant without a moment barred — keepalived keeps the address instead of dropping and taking it
    /// back.
    public func setLocal(writablePrimary writable: Bool, vacant: Bool) {
        if state.setLocal(writablePrimary: writable, vacant: vacant) { publishState() }
    }

    /// Before anything starts PostgreSQL here: the node is not vacant any more, and keepalived has been
    /// told so when this returns (unless the file cannot be written — logged; the state file then cannot
    /// be either, and `baton check` takes the node to FAULT within three loops).
    public func leaveVacancy() {
        if state.setLocal(writablePrimary: state.writablePrimary, vacant: false) { publishState() }
        files.flush()
    }

    /// Makes sure this node has a session: the one it had before a restart when Consul still knows it
    /// (a restarted monitor keeps its lock instead of fencing its own primary), else a new one.
    @discardableResult
    public func ensureSession() async -> String? {
        guard !closed else { return nil }
        var upkeep = LeaseState.SessionUpkeep()
        var step = state.next(&upkeep, after: .start(session: session, ttl: sessionTTL))
        while true {
            switch step {
            case .destroy(let current):
                do { try await client.destroySession(current) } catch { logger.warning("Cannot destroy the old session", metadata: ["error": "\(error)"]) }
                if session == current { session = nil }
                step = state.next(&upkeep, after: .destroyed)
            case .renew(let current):
                do {
                    _ = try await client.renewSession(current)
                    consulWarnings.clear()
                    sessionConfirmed = .now
                    step = state.next(&upkeep, after: .renewed)
                } catch let error as ConsulError where error.code == .sessionNotFound {
                    // Another call may have replaced the session meanwhile (the actor is reentrant at awaits).
                    guard session == current else { return session }
                    logger.warning("Session lost", metadata: ["monitor.session": "\(current)"])
                    session = nil
                    step = state.next(&upkeep, after: .notFound)
                } catch {
                    consulWarnings.warning(logger, "Cannot renew the session", metadata: ["error": "\(error)"])
                    step = state.next(&upkeep, after: .renewalFailed)
                }
            case .reacquire:
                let taken = await reacquire()
                if taken { logger.notice("Took the leader lock again with a new session (the old one vanished: a restarted Consul agent?)") }
                step = state.next(&upkeep, after: .reacquired(taken ? session : nil))
            case .lose(let why):
                await lost(why)
                step = state.next(&upkeep, after: .lossHandled)
            case .adoptSaved:
                var adopted: String? = nil
                if let saved = (try? String(contentsOfFile: sessionFile, encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines), !saved.isEmpty,
                    let entry = try? await client.sessionInfo(saved).value, entry.name == sessionName, !closed
                {
                    // The loop and the heartbeat task may both ask at once: the first answer stands.
                    if let current = session { return current }
                    session = saved
                    sessionTTL = try? GoDuration(parsing: entry.ttl)
                    sessionConfirmed = .now
                    logger.notice("Adopted this node's saved session", metadata: ["monitor.session": "\(saved)"])
                    adopted = saved
                }
                step = state.next(&upkeep, after: .adopted(adopted))
            case .create:
                do {
                    let created = try await client.createSession(
                        SessionRequest(name: sessionName, ttl: config.ttl, lockDelay: config.lockDelay, behavior: .release, nodeChecks: []))
                    if session != nil || closed {
                        // Another call made or adopted one meanwhile (the actor is reentrant at awaits): two
                        // sessions would let the lock be taken under one and beaten under the other. Or the
                        // monitor stopped meanwhile: the new session must not outlive it.
                        do { try await client.destroySession(created) } catch {
                            logger.warning("Cannot destroy a spare session (it lapses with its TTL)", metadata: ["error": "\(error)"])
                        }
                        return session
                    }
                    session = created
                    sessionTTL = config.ttl
                    sessionConfirmed = .now
                    do { try AtomicFile.write(created + "\n", to: sessionFile, mode: 0o600) } catch {
                        logger.warning("Cannot save the session ID (a restarted monitor will not find it)", metadata: ["error": "\(error)"])
                    }
                    step = state.next(&upkeep, after: .created(created))
                } catch {
                    logger.warning("Cannot create a session", metadata: ["error": "\(error)"])
                    step = state.next(&upkeep, after: .created(nil))
                }
            case .done(let current):
                return current
            }
        }
    }

    /// Takes the free lock. The watchdog is armed first: from the moment this node may lead, it is
    /// guarded. A node without a watchdog never leads.
    public func acquire() async -> Bool {
        guard let session = await ensureSession() else { return false }
        let sent = MonotonicClock.nanoseconds()
        let (deadline, flags) = state.acquisition(now: sent)
        do { try await guardian.arm(deadline: deadline) } catch {
            logger.error("No watchdog can guard this node; not taking the lock", metadata: ["error": "\(error)"])
            return false
        }
        let acquired: Bool
        do {
            acquired = try await client.put(keys.leader, node.value, flags: flags, mode: .acquire(session: session))
        } catch {
            logger.warning("Cannot take the leader lock", metadata: ["error": "\(error)"])
            acquired = false
        }
        guard acquired else {
            if !leading { await guardian.standDown() }
            return false
        }
        startLeading(sent: sent, deadline: deadline)
        return true
    }

    /// Takes the lock from a leader silent past its fencing deadline: the key renamed with
    /// check-and-set at the silent index (a heartbeat that got through after all wins instead), the old
    /// session destroyed, the lock acquired.
    public func takeOver(from silent: ClusterSnapshot.Leader) async throws -> Bool {
        if silent.holder != node {
            guard try await client.put(keys.leader, node.value, flags: silent.flags, mode: .cas(silent.modifyIndex)) else { return false }
        }
        do { try await client.destroySession(silent.session) } catch let error as ConsulError where error.code == .sessionNotFound || error.code == .notFound {}
        return await acquire()
    }

    /// The session vanished under this leader (a restarted Consul agent drops its node's sessions, or
    /// the session lapsed while Consul was busy): the lock went free, but no other node takes it before
    /// this node's fencing promise ran out (``MonitorDecision``'s rule for a lock freed without a report
    /// of the PostgreSQL gone). So while the key is still free and names this node, it takes the lock
    /// again with a new session instead of fencing a healthy primary.
    private func reacquire() async -> Bool {
        let pair: KVPair?
        do { pair = try await client.get(keys.leader, .consistent).value } catch { return false }
        guard let pair, pair.session == nil, pair.stringValue == node.value else { return false }
        return await acquire()
    }

    /// A heartbeat now that must get through: the lock proven this node's right before PostgreSQL
    /// becomes writable (promotion, the start of a registered primary, the restart of a called-off
    /// switchover). It also adopts a lock this node's session holds from before a monitor restart.
    public func prove() async -> Bool {
        await beat() == .beat
    }

    /// Gives the lock up: the watchdog stands down first, then the key is released.
    public func release() async {
        let session = self.session
        stopLeading()
        await guardian.standDown()
        guard let session else { return }
        do { _ = try await client.put(keys.leader, node.value, mode: .release(session: session)) } catch {
            logger.warning("Cannot release the leader lock (it lapses with the session)", metadata: ["error": "\(error)"])
        }
    }

    /// Stops leading without touching Consul (PostgreSQL was fenced; the lock is released separately).
    public func standDown() async {
        stopLeading()
        await guardian.standDown()
    }

    /// The monitor stops: the session is destroyed (when this node does not lead) and the watchdog told
    /// it may exit.
    public func close() async {
        // From here nothing makes or adopts a session again: a renewal that found the session gone while
        // it was being destroyed would otherwise make a new one, and the stopped monitor would count as
        // running until it lapsed (issue 23, finding 13).
        closed = true
        if !leading, let session {
            do { try await client.destroySession(session) } catch { logger.warning("Cannot destroy the session", metadata: ["error": "\(error)"]) }
            try? FileManager.default.removeItem(atPath: sessionFile)  // ignored: a stale file is checked against Consul
            self.session = nil
        }
        state.setLocal(writablePrimary: false, vacant: false)  // nobody watches this node's PostgreSQL any more
        publishState()
        files.flush()
        if !leading { await guardian.quit() }
    }

    // MARK: The heartbeat

    /// Beats every loop while leading and keeps the state files current, and — in a loop of its own, so
    /// that a renewal Consul holds up never delays a beat — keeps the session alive; runs until
    /// cancelled.
    public func run() async {
        await withDiscardingTaskGroup { group in
            group.addTask { await self.keepSessionAlive() }
            group.addTask { await self.beatEveryLoop() }
        }
    }

    /// Renews the session when due (``ClusterConfig/sessionRenewalDue(sinceConfirmed:)``), makes one
    /// when there is none.
    private func keepSessionAlive() async {
        while !Task.isCancelled, !closed {
            let sinceConfirmed = session == nil ? nil : sessionConfirmed.map { ContinuousClock.now - $0 }
            if config.sessionRenewalDue(sinceConfirmed: sinceConfirmed) { await ensureSession() }
            do { try await Task.sleep(for: config.loopWait.swiftDuration) } catch { return }
        }
    }

    private func beatEveryLoop() async {
        var wakeAt: ContinuousClock.Instant? = nil
        while !Task.isCancelled {
            let started = ContinuousClock.now
            if let wakeAt, started - wakeAt > .milliseconds(200), leading {
                let left = GoDuration(nanoseconds: Int64(state.leaseDeadline) - Int64(MonotonicClock.nanoseconds()))
                logger.notice("Heartbeat task woke late", metadata: ["lease.late": "\(GoDuration(started - wakeAt))", "lease.left": "\(left)"])
            }
            if leading {
                _ = await beat(mayAskMembers: true)
                // The watchdog fences now; the loop must know at once.
                if state.deadlinePassed(now: MonotonicClock.nanoseconds()) { wake() }
            }
            publishState()
            let pause = state.pauseBeforeNextBeat(elapsed: ContinuousClock.now - started, now: MonotonicClock.nanoseconds())
            wakeAt = ContinuousClock.now + pause
            do { try await Task.sleep(for: pause) } catch { return }
        }
    }

    /// How long one call of a heartbeat may wait for Consul (``LeaseState/callBudget(configured:now:)``).
    func callBudget() -> Duration {
        state.callBudget(configured: client.configuration.requestTimeout, now: MonotonicClock.nanoseconds())
    }

    /// One heartbeat (``LeaseState``'s steps, carried out against Consul and the watchdog): read the
    /// key, and write it back with check-and-set if it is still this node's. The key as this node's
    /// last beat wrote it (the transaction answers with its new index), or as the leader watch last saw
    /// it when that is newer, stands in for the first read — so a beat is one call to Consul, even when
    /// the watch lags (a slow Consul). Only a read decides that the lock is lost. A round of the
    /// heartbeat task goes on to a failsafe round when the beat failed and failsafe is on.
    func beat(mayAskMembers: Bool = false) async -> LeaseState.Beat {
        let session = self.session
        var heartbeat = state.heartbeat(session: session, mayAskMembers: mayAskMembers)
        let known = [ownBeat, sightings.latest].compactMap { $0 }.max { $0.modifyIndex < $1.modifyIndex }
        var event = LeaseState.Event.start(known: known)
        let beatStarted = ContinuousClock.now
        var stepStarted = beatStarted
        var timings: [String] = []
        while true {
            let before = (leading, state.leaseDeadline)
            let now = ContinuousClock.now
            if now - stepStarted > .milliseconds(50) { timings.append("\(Self.label(event)) after \(GoDuration(now - stepStarted))") }
            stepStarted = now
            let step = state.next(&heartbeat, after: event, now: MonotonicClock.nanoseconds())
            if before != (leading, state.leaseDeadline) {
                published(leading, state.leaseDeadline)
                publishState()
            }
            switch step {
            case .done(let outcome):
                for notice in heartbeat.notices { log(notice) }
                let took = ContinuousClock.now - beatStarted
                if took > .milliseconds(400) {
                    let left = GoDuration(nanoseconds: Int64(state.leaseDeadline) - Int64(MonotonicClock.nanoseconds()))
                    logger.notice(
                        "Slow heartbeat", metadata: ["lease.took": "\(GoDuration(took))", "lease.steps": "\(timings)", "lease.left": "\(left)", "lease.outcome": "\(outcome)"])
                }
                return outcome
            case .readKey:
                do { event = .keyRead(try await client.get(keys.leader, .consistent, timeout: callBudget()).value) } catch {
                    consulWarnings.warning(logger, "Heartbeat: cannot read the leader key", metadata: ["error": "\(error)"])
                    event = .readFailed
                }
            case .arm(let deadline):
                do {
                    try await guardian.arm(deadline: deadline)
                    event = .armed(true)
                } catch {
                    logger.critical("No watchdog guards this leader; fencing and releasing the lock", metadata: ["error": "\(error)"])
                    event = .armed(false)
                }
            case .writeKey(let index, let flags):
                do {
                    let outcome = try await client.transaction(
                        [KVOperation(.cas, keys.leader, value: Array(node.value.utf8), flags: flags, index: index)], timeout: callBudget())
                    if case .committed(let entries) = outcome, var beaten = entries.first {
                        beaten.value = Array(node.value.utf8)
                        beaten.session = session
                        ownBeat = beaten
                        event = .written(committed: true, index: beaten.modifyIndex)
                    } else {
                        // Another write of ours (the loop's proof and this task's beat) may have come in between.
                        event = .written(committed: false)
                    }
                } catch {
                    consulWarnings.warning(logger, "Heartbeat: cannot write the leader key", metadata: ["error": "\(error)"])
                    event = .writeFailed
                }
            case .renewSession:
                await ensureSession()
                event = .renewed(session: self.session)
            case .askMembers(_, let promise, let names, let keyIndex, let wait):
                event = .members(confirmed: await askMembers(names, promise: promise, keyIndex: keyIndex, wait: wait))
            case .fence(let why):
                logger.critical("Lost the leader lock; fencing PostgreSQL", metadata: ["monitor.reason": "\(why)"])
                await guardian.fenceNow()
                wake()
                event = .fenced
            case .fenceUnguarded:
                await guardian.fenceNow()
                await release()
                wake()
                event = .fenced
            }
        }
    }

    /// What a heartbeat's step answered, named for a log line.
    private static func label(_ event: LeaseState.Event) -> String {
        switch event {
        case .start: "start"
        case .keyRead: "read"
        case .readFailed: "read failed"
        case .armed(let ok): ok ? "armed" : "arm failed"
        case .written(let committed, _): committed ? "written" : "write refused"
        case .writeFailed: "write failed"
        case .renewed: "session renewed"
        case .members(let confirmed): confirmed ? "round confirmed" : "round refused"
        case .fenced: "fenced"
        }
    }

    private func log(_ notice: LeaseState.Notice) {
        switch notice {
        case .leadingAgain: logger.notice("Leading again under this node's session")
        case .failsafeOver: logger.notice("Consul answers again: failsafe over")
        case .failsafeEntered:
            logger.warning(
                "Cannot write the leader key; every member promised not to take over: leading on by member rounds (failsafe)",
                metadata: ["failsafe.members": "\(state.members.count)"])
        case .failsafeNotWritable:
            consulWarnings.warning(logger, "Failsafe: PostgreSQL is not a writable primary here; asking nobody, fencing at the deadline")
        }
    }

    /// A member round: the lease is renewed only if every member named confirms over its API, at once,
    /// that it will not take over for `promise` plus the margin — it sees this node holding the lock,
    /// or cannot reach Consul, or sees nobody holding it — noting `keyIndex`, the index of this node's
    /// last write of the key. Any member that does not confirm within `timeout`, and the key is written
    /// instead (``LeaseState``).
    private func askMembers(_ names: Set<NodeName>, promise: GoDuration, keyIndex: UInt64?, wait timeout: Duration) async -> Bool {
        var fields: [(String, JSONValue)] = [("leader", .string(node.value)), ("fence_after", .string(promise.description))]
        if let keyIndex { fields.append(("key_index", .number(String(keyIndex)))) }
        let body = JSONValue.object(fields).serializedBytes()
        // Members grant only what a member signed (issue 23, finding 7).
        let signature = signer.map { $0.authorization(method: "POST", path: "/failsafe", body: body, time: Int64(Date().timeIntervalSince1970)) }
        let headers = [("Content-Type", "application/json")] + (signature.map { [("Authorization", $0)] } ?? [])
        let transport = self.transport
        let addresses = names.map { ($0, members[$0] ?? nil) }
        let confirmations = await withTaskGroup(of: (NodeName, Bool, Duration).self) { group in
            for (name, api) in addresses {
                group.addTask {
                    guard let api else { return (name, false, .zero) }
                    let request = HTTPRequest(
                        method: "POST", url: api.url + "/failsafe", headers: headers, body: body, timeout: timeout)
                    let sent = ContinuousClock.now
                    let confirmed = (try? await transport.send(request))?.status == 200  // a member that cannot be asked has not confirmed
                    return (name, confirmed, ContinuousClock.now - sent)
                }
            }
            var answers: [(NodeName, Bool, Duration)] = []
            for await answer in group { answers.append(answer) }
            return answers
        }
        let slow = confirmations.filter { $0.2 > .milliseconds(250) }
        if !slow.isEmpty {
            logger.notice("Member round: slow answers", metadata: ["failsafe.slow": "\(slow.map { "\($0.0): \(GoDuration($0.2)) \($0.1 ? "confirmed" : "not confirmed")" })"])
        }
        let missing = confirmations.filter { !$0.1 }.map(\.0.value).sorted()
        if !missing.isEmpty {
            consulWarnings.warning(
                logger, "Member round: not every member promised; writing the leader key every loop instead (fence_timeout)",
                metadata: ["failsafe.missing": "\(missing)"])
        }
        return missing.isEmpty
    }

    private func startLeading(sent: UInt64, deadline: UInt64) {
        state.startLeading(sent: sent, deadline: deadline)
        published(true, deadline)
        publishState()
    }

    private func stopLeading() {
        state.stopLeading()
        published(false, 0)
        publishState()
    }

    /// The key is not this node's anymore while it led: kill PostgreSQL now, and let the loop look.
    private func lost(_ why: String) async {
        logger.critical("Lost the leader lock; fencing PostgreSQL", metadata: ["monitor.reason": "\(why)"])
        stopLeading()
        await guardian.fenceNow()
        wake()
    }

    /// Writes the state file (every loop: it also proves the monitor alive) and, on change, the file
    /// keepalived tracks.
    private func publishState() {
        let now = MonotonicClock.nanoseconds()
        let (leadingWritable, following, standing) = state.standings(now: now)
        let deadline = state.deadline
        let check = CheckState(
            leading: leadingWritable, deadline: deadline, written: now, loopWait: UInt64(config.loopWait.nanoseconds), boot: Self.boot)
        let unchanged = stateWritten.map { $0.leading == check.leading && $0.deadline == check.deadline && now - $0.at < check.loopWait / 2 } ?? false
        if !unchanged {
            // Not fsync'd: a heartbeat for the local `baton check`; after a crash of the machine its
            // content is stale (or empty) whatever was last synced.
            files.write(check.text, to: CheckState.path(stateDirectory: stateDirectory), mode: 0o644, durable: false, what: "the state file")
            stateWritten = (check.leading, check.deadline, now)
        }
        let trackFile = KeepalivedSettings.trackFilePath(stateDirectory: stateDirectory)
        let legacyFile = KeepalivedSettings.legacyTrackFilePath(stateDirectory: stateDirectory)
        // A text whose lease ran out before it could be written was dropped: written again now.
        let skipped = files.takeSkipped()
        if skipped.contains(trackFile) { trackWritten = nil }
        if skipped.contains(legacyFile) { legacyWritten = nil }
        // The watchdog writes FAULT into the file when it fences, behind this actor's back: where the
        // policy lets a node without a primary hold the address, the file is checked, not remembered.
        // (A read that fails counts as different: the file is written again.)
        let overwritten = standing == .routing && (try? String(contentsOfFile: trackFile, encoding: .utf8)) != standing.trackFileText
        guard standing != trackWritten || following != legacyWritten || overwritten else { return }
        // The file a keepalived.conf from an earlier Baton tracks, then the one it tracks now.
        files.write(
            following.legacyTrackFileText, to: legacyFile, mode: 0o644,
            validUntil: leadingWritable ? deadline : nil, what: "keepalived's tracked file")
        legacyWritten = following
        files.write(
            standing.trackFileText, to: trackFile, mode: 0o644, validUntil: leadingWritable ? deadline : nil, what: "keepalived's tracked file")
        trackWritten = standing
    }
}
