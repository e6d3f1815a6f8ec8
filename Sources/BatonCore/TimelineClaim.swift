import ConsulAPI

/// Every promotion gets a timeline no node has used before.
///
/// PostgreSQL picks a promoted standby's new timeline as one more than the newest timeline history it
/// can see in its own `pg_wal`. A standby that never received the history of a promotion elsewhere —
/// the previous new primary died moments after promoting — would pick that same number again, and two
/// different histories would share one timeline ID: pg_rewind then sees nothing to rewind and the old
/// node's WAL silently disagrees with the new primary's. So the promoting node first claims its
/// timeline in Consul (the `timeline` key, check-and-set, written only by the lock holder) above every
/// timeline claimed before, and when PostgreSQL's own choice would be lower, places history files for
/// the skipped numbers so that PostgreSQL's choice is the claimed one.
public struct TimelineClaim: Sendable, Equatable {
    /// The timeline the promotion will create.
    public var timeline: Int
    /// Timelines to mark as used in the local `pg_wal` (placeholder history files) first.
    public var placeholders: [Int]

    public init(timeline: Int, placeholders: [Int]) {
        self.timeline = timeline
        self.placeholders = placeholders
    }

    /// - Parameters:
    ///   - localNewest: the newest timeline the local data directory knows (its own, or the highest
    ///     history file in `pg_wal`).
    ///   - claimed: the highest timeline recorded in Consul, if any.
    public init(localNewest: Int, claimed: Int?) {
        let postgresChoice = localNewest + 1
        timeline = max(postgresChoice, (claimed ?? 0) + 1)
        placeholders = Array(postgresChoice..<timeline)
    }

    /// A timeline history file's name in `pg_wal`.
    public static func historyFileName(_ timeline: Int) -> String {
        let hex = String(timeline, radix: 16, uppercase: true)
        return String(repeating: "0", count: max(0, 8 - hex.count)) + hex + ".history"
    }

    /// The content of a placeholder history file for `timeline`: the parent's history, then a line
    /// saying the parent timeline ended at `switchpoint`, in PostgreSQL's format, so that anything that
    /// reads it parses a valid history.
    public static func placeholderHistory(parentHistory: String, parent: Int, switchpoint: LSN, timeline: Int) -> String {
        var text = parentHistory
        if !text.isEmpty && !text.hasSuffix("\n") { text += "\n" }
        return text + "\(parent)\t\(switchpoint)\ttimeline \(timeline) was used by another node; skipped by baton\n"
    }

    /// The `timeline` key's value.
    public static func record(_ timeline: Int, node: NodeName) -> JSONValue {
        .object([("timeline", .number(String(timeline))), ("node", .string(node.value))])
    }

    /// Reads the `timeline` key's value: the claimed timeline, or a problem naming the key.
    public static func claimed(_ bytes: [UInt8]?, key: String) throws(ValidationProblem) -> Int? {
        guard let bytes, !bytes.isEmpty else { return nil }
        let json = try Record.object(bytes, key: key)
        guard case .number(let text)? = json.member("timeline"), let value = Int(text), value >= 1 else {
            throw ValidationProblem("Consul key \(key): timeline must be a positive whole number")
        }
        return value
    }
}

/// What a node writes to Consul right before it promotes, as one transaction — all of it or none:
/// - that it holds the lock (check-session on `leader`);
/// - the timeline it claims (``TimelineClaim``; check-and-set at the index read);
/// - in synchronous mode, the `sync` key rewritten by this node as the primary that relies on it
///   (check-and-set at the index read; Patroni writes the same before it promotes): from the promotion
///   on no record of its predecessor's stands. See ``synchronousRecord(promoting:recorded:)``.
/// A transaction refused (the lock, the claim or the record changed meanwhile) means: not now.
public enum PromotionClaim {
    public static func operations(
        keys: ClusterKeys, node: NodeName, session: String, timeline: Int, timelineIndex: UInt64,
        synchronous: (index: UInt64, recorded: SyncRecord?)?
    ) -> [KVOperation] {
        var operations = [
            KVOperation(.checkSession, keys.leader, session: session),
            KVOperation(.cas, keys.timeline, value: TimelineClaim.record(timeline, node: node).serializedBytes(), index: timelineIndex),
        ]
        if let synchronous {
            let record = synchronousRecord(promoting: node, recorded: synchronous.recorded)
            operations.append(KVOperation(.cas, keys.sync, value: record.serializedBytes(), index: synchronous.index))
        }
        return operations
    }

    /// The `sync` key as the promoting node writes it: naming itself when it was the recorded standby
    /// (it holds every acknowledged commit: should the promotion not finish, it is still the one node
    /// failover may promote — no other node becomes eligible by it), else nobody. Either way the
    /// record's leader is this node, and once it leads it records a standby of its own.
    public static func synchronousRecord(promoting node: NodeName, recorded: SyncRecord?) -> JSONValue {
        if let recorded, recorded.standby == node { return SyncRecord(standby: node, leader: node, position: recorded.position).json }
        return SyncRecord.cleared(by: node)
    }
}
