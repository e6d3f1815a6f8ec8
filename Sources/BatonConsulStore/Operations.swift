import ConsulAPI
import Foundation

/// The server's writes as pure functions: given the current state and the index the write will get,
/// each returns the changes to make and the answer, with Consul's semantics (consul-api.md §2–§5).
package enum Operations {
    /// Consul's `MaxLockDelay`.
    package static let maximumLockDelay = GoDuration.seconds(60)

    // MARK: KV

    package enum PutMode: Sendable, Equatable {
        case plain, cas(UInt64), acquire(String), release(String)
    }

    package static func put(
        _ s: borrowing State, index: UInt64, now: ContinuousClock.Instant, key: String, value: [UInt8]?, flags: UInt64,
        mode: PutMode
    ) throws(APIError) -> Plan<Bool> {
        var sessionKnown = false
        if case .acquire(let session) = mode { sessionKnown = s.sessions[session] != nil }
        let entry = try written(
            existing: s.kv[key], lockDelayUntil: s.lockDelays[key], sessionKnown: sessionKnown, index: index, now: now, key: key, value: value,
            flags: flags, mode: mode)
        guard let entry else { return Plan(false) }
        if let existing = s.kv[key], existing.value == entry.value, existing.flags == entry.flags, existing.session == entry.session,
            existing.lockIndex == entry.lockIndex
        {
            return Plan(true)  // a no-op write moves no index and wakes no one
        }
        return Plan([.kvPut(entry)], true)
    }

    /// The entry a PUT in `mode` leaves, given the one there (`existing`): nil when the mode refuses
    /// the write (a lost check-and-set, a lock held by another or under lock-delay, a release by a
    /// session that does not hold it). `sessionKnown`: whether the session an acquire names exists.
    package static func written(
        existing: KVPair?, lockDelayUntil: ContinuousClock.Instant?, sessionKnown: Bool, index: UInt64, now: ContinuousClock.Instant, key: String,
        value: [UInt8]?, flags: UInt64, mode: PutMode
    ) throws(APIError) -> KVPair? {
        var entry = KVPair(
            key: key, value: value, flags: flags, session: existing?.session, lockIndex: existing?.lockIndex ?? 0,
            createIndex: existing?.createIndex ?? index, modifyIndex: index)
        switch mode {
        case .plain:
            break
        case .cas(let expected):
            if expected == 0 {
                if existing != nil { return nil }
            } else if existing?.modifyIndex != expected {
                return nil
            }
        case .acquire(let session):
            if let until = lockDelayUntil, until > now { return nil }
            if session.isEmpty { throw APIError(500, "missing session") }
            guard sessionKnown else { throw APIError(500, "invalid session \"\(session)\"") }
            if let holder = existing?.session {
                if holder != session { return nil }
            } else {
                entry.session = session
                entry.lockIndex = (existing?.lockIndex ?? 0) + 1
            }
        case .release(let session):
            guard let existing, existing.session == session else { return nil }
            entry.session = nil
        }
        return entry
    }

    package static func delete(_ s: borrowing State, key: String, cas: UInt64?) -> Plan<Bool> {
        guard let existing = s.kv[key] else { return Plan(true) }
        if let cas, existing.modifyIndex != cas { return Plan(false) }
        return Plan([.kvDelete(key: key)], true)
    }

    package static func deleteTree(_ s: borrowing State, prefix: String) -> Plan<Bool> {
        Plan(s.kvPairs(prefix: prefix).map { .kvDelete(key: $0.key) }, true)
    }

    // MARK: Sessions

    /// What invalidating a session does: the session goes, its keys are released or deleted at the
    /// same index, and lock-delay is armed on each.
    package static func invalidateSession(_ s: borrowing State, id: String, index: UInt64) -> [Change] {
        guard let session = s.sessions[id] else { return [] }
        var changes: [Change] = [.sessionDelete(id: id)]
        let delay = min(session.lockDelay, maximumLockDelay)
        for var pair in s.keysHeld(by: id) {
            if session.behavior == .delete {
                changes.append(.kvDelete(key: pair.key))
            } else {
                pair.session = nil
                pair.modifyIndex = index
                changes.append(.kvPut(pair))
            }
            if delay > .zero { changes.append(.lockDelay(key: pair.key, delay)) }
        }
        return changes
    }

    /// The sessions that a check's going critical (or away) invalidates.
    package static func sessionsBound(to checkIDs: Set<String>, in s: borrowing State) -> [String] {
        s.sessions.values.filter { !Set($0.allChecks).isDisjoint(with: checkIDs) }.map(\.id).sorted()
    }

    package static func createSession(
        _ s: borrowing State, index: UInt64, request: SessionEntry, id: String = UUID().uuidString.lowercased()
    ) throws(APIError) -> Plan<String> {
        for check in request.allChecks {
            guard let record = s.checks[check] else { throw APIError(500, "Missing check '\(check)' registration") }
            if record.status == "critical" { throw APIError(500, "Check '\(check)' is in critical state") }
        }
        var session = request
        session.id = id
        session.createIndex = index
        session.modifyIndex = index
        return Plan([.sessionPut(session)], session.id)
    }

    // MARK: Agent services and checks

    package static func registerService(
        _ s: borrowing State, index: UInt64, service: ServiceRecord, checks: [CheckRecord], replaceExistingChecks: Bool
    ) -> Plan<Void> {
        var changes: [Change] = []
        var record = service
        if let old = s.services[service.id] {
            record.createIndex = old.createIndex
        }
        changes.append(.servicePut(record))
        let newIDs = Set(checks.map(\.id))
        for var check in checks {
            if let old = s.checks[check.id] {
                check.status = old.status
                check.output = old.output
                check.createIndex = old.createIndex
            }
            changes.append(.checkPut(check))
        }
        var removed: Set<String> = []
        if replaceExistingChecks {
            for old in s.checks.values where old.serviceID == service.id && !newIDs.contains(old.id) {
                changes.append(.checkDelete(id: old.id))
                removed.insert(old.id)
            }
        }
        for id in sessionsBound(to: removed, in: s) { changes += invalidateSession(s, id: id, index: index) }
        return Plan(changes, ())
    }

    package static func deregisterService(_ s: borrowing State, index: UInt64, id: String) throws(APIError) -> Plan<Void> {
        guard s.services[id] != nil else {
            throw APIError(404, "Unknown service ID \"\(id)\". Ensure that the service ID is passed, not the service name.")
        }
        var changes: [Change] = [.serviceDelete(id: id)]
        let checkIDs = Set(s.checks.values.filter { $0.serviceID == id }.map(\.id))
        changes += checkIDs.sorted().map { .checkDelete(id: $0) }
        for session in sessionsBound(to: checkIDs, in: s) { changes += invalidateSession(s, id: session, index: index) }
        return Plan(changes, ())
    }

    package static func registerCheck(_ s: borrowing State, index: UInt64, check: CheckRecord) throws(APIError) -> Plan<Void> {
        var check = check
        if !check.serviceID.isEmpty {
            guard let service = s.services[check.serviceID] else {
                throw APIError(404, "ServiceID \"\(check.serviceID)\" does not exist")
            }
            check.serviceName = service.name
        }
        if let old = s.checks[check.id] { check.createIndex = old.createIndex }
        var changes: [Change] = [.checkPut(check)]
        if check.status == "critical" {
            for id in sessionsBound(to: [check.id], in: s) { changes += invalidateSession(s, id: id, index: index) }
        }
        return Plan(changes, ())
    }

    package static func unknownCheck(_ id: String) -> APIError {
        APIError(404, "Unknown check ID \"\(id)\". Ensure that the check ID is passed, not the check name.")
    }

    package static func deregisterCheck(_ s: borrowing State, index: UInt64, id: String) throws(APIError) -> Plan<Void> {
        guard let check = s.checks[id], check.kind != .serf else { throw unknownCheck(id) }
        var changes: [Change] = [.checkDelete(id: id)]
        for session in sessionsBound(to: [id], in: s) { changes += invalidateSession(s, id: session, index: index) }
        return Plan(changes, ())
    }

    /// Sets a check's status and output; critical invalidates the sessions bound to it. `requireTTL`
    /// is for the agent's pass/warn/fail/update endpoints, which only TTL checks accept.
    package static func updateCheck(
        _ s: borrowing State, index: UInt64, id: String, status: String, output: String, requireTTL: Bool
    ) throws(APIError) -> Plan<Void> {
        guard var check = s.checks[id], check.kind != .serf else { throw unknownCheck(id) }
        if requireTTL, case .ttl = check.kind {} else if requireTTL {
            throw APIError(500, "CheckID \"\(id)\" does not have associated TTL")
        }
        if check.status == status && check.output == output { return Plan([], ()) }
        check.status = status
        check.output = output
        check.modifyIndex = index
        var changes: [Change] = [.checkPut(check)]
        if status == "critical" {
            for session in sessionsBound(to: [id], in: s) { changes += invalidateSession(s, id: session, index: index) }
        }
        return Plan(changes, ())
    }
}
