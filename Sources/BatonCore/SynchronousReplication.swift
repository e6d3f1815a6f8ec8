import ConsulAPI

/// One standby as the primary's `pg_stat_replication` shows it.
public struct ReplicationPeer: Sendable, Equatable {
    public var name: NodeName
    public var streaming: Bool
    public var flushPosition: LSN

    public init(name: NodeName, streaming: Bool, flushPosition: LSN) {
        self.name = name
        self.streaming = streaming
        self.flushPosition = flushPosition
    }
}

/// What the leader does next to keep one synchronous standby, recorded in Consul's `sync` key before
/// it is relied on for failover.
///
/// The `sync` key names the only node automatic failover may promote, so it must only ever name a node
/// that has every acknowledged commit:
/// - a standby is named in the key only after `synchronous_standby_names` waits for it alone and it has
///   flushed past the primary's position at that moment (WAL is sequential, so it then has every commit
///   acknowledged before, by whichever standby acknowledged it);
/// - while a replacement catches up the key still names the old standby, which is down, so nobody is
///   promoted automatically in that window rather than a node that may lack commits;
/// - giving up synchronous replication (no healthy standby, non-strict mode) clears the key first.
public enum SyncAction: Sendable, Equatable {
    /// Set `synchronous_standby_names` to this value (and reload), and remember the primary's position:
    /// the standby must flush past it before it is named.
    case setStandbyNames(String)
    /// Write the `sync` key (nil: no synchronous standby, no automatic failover).
    case record(NodeName?)
    case none
}

public enum SynchronousReplication {
    /// The standby the `sync` key names, if it names a valid node.
    public static func recordedStandby(_ bytes: [UInt8]?) -> NodeName? {
        (try? JSONValue.parse(bytes ?? []))?.member("standby")?.stringValue.flatMap { try? NodeName($0) }
    }

    /// The `synchronous_standby_names` value for one node.
    public static func names(_ node: NodeName) -> String { "\"\(node.value)\"" }

    /// - Parameters:
    ///   - mode: the cluster's synchronous mode.
    ///   - recorded: who the `sync` key names.
    ///   - standbyNames: the primary's current `synchronous_standby_names`.
    ///   - peers: `pg_stat_replication`.
    ///   - candidates: standbys eligible to become the synchronous one (healthy, priority > 0), best first.
    ///   - startPosition: the position recorded when `synchronous_standby_names` last changed.
    public static func next(
        mode: SynchronousMode, recorded: NodeName?, standbyNames: String, peers: [ReplicationPeer], candidates: [NodeName],
        startPosition: LSN?
    ) -> SyncAction {
        if mode == .off {
            if recorded != nil { return .record(nil) }
            return standbyNames.isEmpty ? .none : .setStandbyNames("")
        }
        let streaming = Set(peers.filter(\.streaming).map(\.name))
        func caughtUp(_ n: NodeName) -> Bool {
            guard let p = peers.first(where: { $0.name == n }), p.streaming else { return false }
            return startPosition.map { p.flushPosition >= $0 } ?? false
        }
        // The recorded standby is healthy: keep it, and make sure PostgreSQL waits for it alone.
        if let current = recorded, streaming.contains(current) {
            return standbyNames == names(current) ? .none : .setStandbyNames(names(current))
        }
        let healthy = candidates.filter { streaming.contains($0) }
        guard let next = healthy.first else {
            // Nobody to wait for. Strict: keep waiting (writes block) for the recorded one. Otherwise
            // stop relying on anybody first, then stop waiting.
            if mode == .strict {
                if recorded == nil && standbyNames.isEmpty { return .setStandbyNames("*") }
                return .none
            }
            if recorded != nil { return .record(nil) }
            return standbyNames.isEmpty ? .none : .setStandbyNames("")
        }
        // Wait for the new one alone, and name it once it has caught up.
        if standbyNames != names(next) { return .setStandbyNames(names(next)) }
        return caughtUp(next) ? .record(next) : .none
    }
}
