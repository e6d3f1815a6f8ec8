import ConsulAPI

extension Operations {
    /// Consul's transactions allow at most this many operations.
    package static let maximumTransactionOperations = 128

    /// Plans a KV transaction (`PUT /v1/txn`): each operation sees what the earlier ones did, and either
    /// every operation applies at `index` or none does (the errors say which failed and why, in Consul's
    /// words). A transaction that only reads or checks plans no change.
    package static func transaction(
        _ s: borrowing State, index: UInt64, now: ContinuousClock.Instant, operations: [KVOperation]
    ) throws(APIError) -> Plan<TransactionOutcome> {
        // The keys this transaction touched so far: their entry now (nil: deleted).
        var touched: [String: KVPair?] = [:]
        var changes: [Change] = []
        var results: [KVPair] = []
        var errors: [TransactionError] = []
        func current(_ key: String) -> KVPair? {
            if let entry = touched[key] { return entry }
            return s.kv[key]
        }
        func tree(_ prefix: String) -> [KVPair] {
            var byKey: [String: KVPair] = [:]
            for pair in s.kvPairs(prefix: prefix) { byKey[pair.key] = pair }
            for (key, entry) in touched where key.hasPrefix(prefix) { byKey[key] = entry }
            return byKey.values.sorted { $0.key < $1.key }
        }
        func writtenResult(_ entry: KVPair) -> KVPair {
            var shown = entry
            shown.value = nil
            return shown
        }
        for (i, op) in operations.enumerated() {
            let key = op.key
            if op.verb != .getTree && op.verb != .deleteTree, let problem = KeyPath.problem(with: key, allowEmpty: false) {
                errors.append(TransactionError(operation: i, what: problem))
                continue
            }
            let existing = current(key)
            func fail(_ what: String) { errors.append(TransactionError(operation: i, what: what)) }
            func write(_ mode: PutMode, refusal: String) throws(APIError) {
                let sessionKnown = op.session.map { s.sessions[$0] != nil } ?? false
                guard
                    let entry = try written(
                        existing: existing, lockDelayUntil: s.lockDelays[key], sessionKnown: sessionKnown, index: index, now: now, key: key,
                        value: op.value, flags: op.flags, mode: mode)
                else { return fail(refusal) }
                touched[key] = entry
                changes.append(.kvPut(entry))
                results.append(writtenResult(entry))
            }
            switch op.verb {
            case .set:
                try write(.plain, refusal: "")
            case .cas:
                try write(.cas(op.index), refusal: "failed to set key \"\(key)\", index is stale")
            case .lock:
                guard let session = op.session else { fail("missing session"); continue }
                do throws(APIError) {
                    try write(.acquire(session), refusal: "failed to lock key \"\(key)\", lock is already held")
                } catch {
                    fail(error.message)
                }
            case .unlock:
                guard let session = op.session else { fail("missing session"); continue }
                try write(.release(session), refusal: "failed to unlock key \"\(key)\", lock isn't held, or is held by another session")
            case .get:
                guard let existing else { fail("key \"\(key)\" doesn't exist"); continue }
                results.append(existing)
            case .getOrEmpty:
                if let existing { results.append(existing) }
            case .getTree:
                results.append(contentsOf: tree(key))
            case .checkIndex:
                guard let existing else { fail("key \"\(key)\" doesn't exist"); continue }
                if existing.modifyIndex != op.index { fail("current modify index \(existing.modifyIndex) != \(op.index)") }
            case .checkSession:
                let holder = existing?.session ?? ""
                if holder != (op.session ?? "") || existing == nil {
                    fail("failed session check for key \"\(key)\", current session \"\(holder)\" != \"\(op.session ?? "")\"")
                }
            case .checkNotExists:
                if existing != nil { fail("key \"\(key)\" exists") }
            case .delete:
                if existing != nil {
                    touched[key] = .some(nil)
                    changes.append(.kvDelete(key: key))
                }
            case .deleteCAS:
                // Consul: a missing key counts as deleted; index 0 never matches an existing key.
                guard let existing else { continue }
                guard existing.modifyIndex == op.index else { fail("failed to delete key \"\(key)\", index is stale"); continue }
                touched[key] = .some(nil)
                changes.append(.kvDelete(key: key))
            case .deleteTree:
                for pair in tree(key) {
                    touched[pair.key] = .some(nil)
                    changes.append(.kvDelete(key: pair.key))
                }
            }
        }
        guard errors.isEmpty else { return Plan(.rolledBack(errors)) }
        return Plan(changes, .committed(results))
    }
}
