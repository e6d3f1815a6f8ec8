import ConsulAPI

/// The embedded server's own state and write rules (``State``, ``Operations``) in memory, on a clock the
/// caller gives: what the simulator runs Baton against. No HTTP, no log, no threads, no randomness —
/// session IDs count up — so that one seed replays exactly. A value with one owner.
package struct InMemoryConsul: Sendable {
    /// How a write treats the key (Consul's `?cas=`, `?acquire=`, `?release=`).
    package enum PutMode: Sendable, Equatable {
        case plain
        case cas(UInt64)
        case acquire(session: String)
        case release(session: String)
    }

    /// A write Consul refuses with an error status (an unknown session, say).
    package struct Refusal: Error, Sendable, CustomStringConvertible {
        package var status: Int
        package var message: String
        package var description: String { "\(status) \(message)" }
    }

    /// The whole store at one moment, as Consul's snapshot API saves it (``restore(_:now:)`` brings it back).
    package struct Snapshot: Sendable {
        fileprivate var state: State
        /// The Raft index the snapshot was taken at.
        package var index: UInt64 { state.index }
    }

    private var state = State()
    private var sessionsCreated = 0

    package init() {}

    /// The highest index of any write (Consul's Raft index).
    package var index: UInt64 { state.index }

    // MARK: KV

    package func get(_ key: String) -> KVPair? { state.kv[key] }

    /// Every pair under `prefix`, in key order, with the listing's index.
    package func list(_ prefix: String) -> (pairs: [KVPair], index: UInt64) {
        (state.kvPairs(prefix: prefix), state.kvListIndex(prefix: prefix))
    }

    @discardableResult
    package mutating func put(
        _ key: String, _ value: [UInt8]?, flags: UInt64 = 0, mode: PutMode = .plain, now: ContinuousClock.Instant
    ) throws(Refusal) -> Bool {
        let operation: Operations.PutMode
        switch mode {
        case .plain: operation = .plain
        case .cas(let index): operation = .cas(index)
        case .acquire(let session): operation = .acquire(session)
        case .release(let session): operation = .release(session)
        }
        return try write(now: now) { s, index, now throws(APIError) in
            try Operations.put(s, index: index, now: now, key: key, value: value, flags: flags, mode: operation)
        }
    }

    @discardableResult
    package mutating func delete(_ key: String, cas: UInt64? = nil, now: ContinuousClock.Instant) -> Bool {
        // Deletes refuse nothing with an error.
        (try? write(now: now) { s, _, _ in Operations.delete(s, key: key, cas: cas) }) ?? false
    }

    /// A KV transaction, as `PUT /v1/txn` plans it (``Operations/transaction(_:index:now:operations:)``).
    package mutating func transaction(_ operations: [KVOperation], now: ContinuousClock.Instant) throws(Refusal) -> TransactionOutcome {
        try write(now: now) { s, index, now throws(APIError) in try Operations.transaction(s, index: index, now: now, operations: operations) }
    }

    // MARK: Sessions

    package mutating func createSession(
        name: String, node: String, ttl: GoDuration, lockDelay: GoDuration, behavior: SessionBehavior = .release, now: ContinuousClock.Instant
    ) throws(Refusal) -> String {
        sessionsCreated += 1
        let id = "session-\(sessionsCreated)"
        let request = SessionEntry(
            id: "", name: name, node: node, lockDelay: lockDelay, behavior: behavior, ttl: ttl.description, nodeChecks: [], serviceChecks: nil,
            createIndex: 0, modifyIndex: 0)
        return try write(now: now) { s, index, _ throws(APIError) in try Operations.createSession(s, index: index, request: request, id: id) }
    }

    /// Renews a session; false when Consul does not know it (any more).
    package mutating func renewSession(_ id: String, now: ContinuousClock.Instant) -> Bool {
        state.renewSession(id, now: now) != nil
    }

    package func sessionExists(_ id: String) -> Bool { state.sessions[id] != nil }

    /// Destroys a session as `PUT /v1/session/destroy` does (its locks released, lock-delay armed).
    package mutating func destroySession(_ id: String, now: ContinuousClock.Instant) {
        // Invalidating plans no refusal.
        _ = try? write(now: now) { s, index, _ in Plan(Operations.invalidateSession(s, id: id, index: index), ()) }
    }

    /// Invalidates every session whose TTL ran out by `now` (the server's timer does it live).
    package mutating func expireSessions(now: ContinuousClock.Instant) {
        for id in state.expiredSessions(at: now) { destroySession(id, now: now) }
    }

    /// The sessions of `node` (what an agent restart drops).
    package func sessions(ofNode node: String) -> [String] {
        state.sessions.values.filter { $0.node == node }.map(\.id).sorted()
    }

    // MARK: Snapshots

    package var snapshot: Snapshot { Snapshot(state: state) }

    /// Brings back a snapshot, as `PUT /v1/snapshot` does: keys, sessions and the indexes readers see roll
    /// back to it (``State/restored(over:)``).
    /// Sessions that survive count their TTL from `now` (as after a server's restart).
    package mutating func restore(_ snapshot: Snapshot, now: ContinuousClock.Instant) {
        state = snapshot.state.restored(over: state.index)
        for id in state.sessions.keys { _ = state.renewSession(id, now: now) }
        state.lockDelays = [:]
    }

    private mutating func write<R: Sendable>(
        now: ContinuousClock.Instant, _ planner: (borrowing State, UInt64, ContinuousClock.Instant) throws(APIError) -> Plan<R>
    ) throws(Refusal) -> R {
        let index = state.index + 1
        let plan: Plan<R>
        do throws(APIError) { plan = try planner(state, index, now) } catch { throw Refusal(status: error.status, message: error.message) }
        if !plan.changes.isEmpty { state.apply(plan.changes, index: index, now: now) }
        return plan.result
    }
}
