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

/// The `sync` key: the synchronous standby the primary relies on — the only node automatic failover may
/// promote in synchronous mode — and the position it had flushed past when it was recorded.
public struct SyncRecord: Sendable, Equatable {
    public var standby: NodeName
    /// The primary that recorded it.
    public var leader: NodeName
    /// The primary's WAL position when it began waiting for `standby` alone; `standby` had flushed past
    /// it when recorded, and a candidate must report at least this much.
    public var position: LSN

    public init(standby: NodeName, leader: NodeName, position: LSN) {
        self.standby = standby
        self.leader = leader
        self.position = position
    }

    public var json: JSONValue {
        .object([("standby", .string(standby.value)), ("leader", .string(leader.value)), ("position", .string(position.description))])
    }

    /// The key's value when nobody is recorded.
    public static func cleared(by leader: NodeName) -> JSONValue {
        .object([("standby", .null), ("leader", .string(leader.value))])
    }

    /// Reads the key: `nil` when it records nobody.
    /// - Throws: when it holds something else than a record (a value someone else wrote).
    public static func parse(_ bytes: [UInt8]?, key: String) throws(ValidationProblem) -> SyncRecord? {
        guard let bytes, !bytes.isEmpty else { return nil }
        let json = try Record.object(bytes, key: key)
        guard let standby = json.member("standby"), !standby.isNull else { return nil }
        guard let name = standby.stringValue else { throw ValidationProblem("Consul key \(key): standby must be a node name or null") }
        let positionText = try Record.string(json, "position", key: key)
        return SyncRecord(
            standby: try NodeName(name, field: "\(key) standby"), leader: try NodeName(try Record.string(json, "leader", key: key), field: "\(key) leader"),
            position: try LSN(parsing: positionText))
    }
}

/// What the leader does next to keep one synchronous standby. One step per loop; the order of the steps
/// is what keeps the promise that the `sync` key only ever names a node holding every acknowledged commit:
/// - the key is cleared (check-and-set) *before* `synchronous_standby_names` stops naming the recorded
///   standby alone: from then on commits may be acknowledged without it;
/// - a standby is recorded only once PostgreSQL waits for it alone and it has flushed past the primary's
///   position at that moment (WAL is sequential: it then has every commit acknowledged before, by
///   whichever standby acknowledged it); the key stores that position;
/// - between the two, the key names nobody: no automatic failover, rather than to a node that may lack
///   commits.
public enum SyncAction: Sendable, Equatable {
    case none
    /// Clear the `sync` key (check-and-set): nobody may be promoted automatically for now.
    case clear
    /// Set `synchronous_standby_names` (and reload); remember the primary's position then.
    case setStandbyNames(String)
    /// PostgreSQL already waits for the chosen standby, but the position it must flush past is not known
    /// (the monitor restarted): remember the primary's position now.
    case rememberPosition
    /// Record this standby, which flushed past `position`.
    case record(NodeName, position: LSN)
}

/// What the primary remembers from one step of ``SynchronousReplication`` to the next.
public struct SynchronousMemory: Sendable, Equatable {
    /// The primary's position when `synchronous_standby_names` last changed, if known.
    public var waitingSince: LSN?
    /// The recorded standby, while it is seen not streaming, and since when.
    public var absence: Absence?

    public struct Absence: Sendable, Equatable {
        public var standby: NodeName
        public var since: ContinuousClock.Instant
    }

    public init() {}

    /// The next step (``SynchronousReplication/next(mode:recorded:standbyNames:peers:candidates:waitingSince:recordedAbsentFor:grace:me:)``),
    /// timing the recorded standby's absence on this monitor's clock.
    public mutating func next(
        mode: SynchronousMode, grace: Duration, recorded: SyncRecord?, standbyNames: String, peers: [ReplicationPeer], candidates: [NodeName],
        me: NodeName, at now: ContinuousClock.Instant
    ) -> SyncAction {
        if let standby = recorded?.standby, !peers.contains(where: { $0.name == standby && $0.streaming }) {
            if absence?.standby != standby { absence = Absence(standby: standby, since: now) }
        } else {
            absence = nil
        }
        return SynchronousReplication.next(
            mode: mode, recorded: recorded, standbyNames: standbyNames, peers: peers, candidates: candidates, waitingSince: waitingSince,
            recordedAbsentFor: absence.map { now - $0.since }, grace: grace, me: me)
    }
}

public enum SynchronousReplication {
    /// The `synchronous_standby_names` value for one node.
    public static func names(_ node: NodeName) -> String { "\"\(node.value)\"" }

    /// The standbys that may be the synchronous one, best first: streaming from `me` (`peers`, from
    /// `pg_stat_replication`), registered, never a node failover may not promote (priority 0,
    /// `nofailover`) nor one tagged `nosync`; the furthest flushed first, then by name.
    public static func candidates(_ peers: [ReplicationPeer], snapshot: ClusterSnapshot, me: NodeName) -> [NodeName] {
        let eligible = Set(
            snapshot.registrations.keys.filter { $0 != me && snapshot.failoverPriority(of: $0) > 0 && !(snapshot.tags[$0]?.noSync ?? false) })
        return peers.filter { eligible.contains($0.name) }.sorted {
            $0.flushPosition != $1.flushPosition ? $0.flushPosition > $1.flushPosition : $0.name < $1.name
        }.map(\.name)
    }

    /// - Parameters:
    ///   - mode: the cluster's synchronous mode.
    ///   - recorded: what the `sync` key records.
    ///   - standbyNames: the primary's current `synchronous_standby_names`.
    ///   - peers: `pg_stat_replication`.
    ///   - candidates: standbys eligible to be the synchronous one (registered, may fail over), best first.
    ///   - waitingSince: the primary's position when `synchronous_standby_names` last changed, if known.
    ///   - recordedAbsentFor: how long the recorded standby has been seen not streaming (nil: it streams).
    ///   - grace: how long an absent recorded standby is waited for (`synchronous_standby_grace`) before
    ///     it is replaced or, `on`, commits go asynchronous: a receiver that flaps must not leave the
    ///     cluster without a node failover may promote.
    ///   - me: the primary itself (a record naming it is left over from before its promotion).
    public static func next(
        mode: SynchronousMode, recorded: SyncRecord?, standbyNames: String, peers: [ReplicationPeer], candidates: [NodeName],
        waitingSince: LSN?, recordedAbsentFor: Duration? = nil, grace: Duration = .zero, me: NodeName
    ) -> SyncAction {
        if mode == .off {
            if recorded != nil { return .clear }
            return standbyNames.isEmpty ? .none : .setStandbyNames("")
        }
        let streaming = Set(peers.filter(\.streaming).map(\.name))
        let healthy = candidates.filter { streaming.contains($0) }
        if let current = recorded {
            // Only a record of what PostgreSQL waits for, alone, is trusted (a record naming this node is
            // left over from before its promotion).
            if current.standby == me || standbyNames != names(current.standby) { return .clear }
            if streaming.contains(current.standby) { return .none }
            // It stopped streaming; commits wait for it meanwhile, so it still has every acknowledged
            // one. A receiver that reconnects (a killed WAL receiver, a network blip) is waited for
            // during the grace: it stays the node failover may promote. Past it, replacing it (or, `on`,
            // going asynchronous) starts by clearing the key; strict mode with nobody to replace it
            // keeps waiting — and keeps it the one node failover may promote.
            if (recordedAbsentFor ?? .zero) < grace { return .none }
            if mode == .strict && !healthy.contains(where: { $0 != current.standby }) { return .none }
            return .clear
        }
        // Keep the standby PostgreSQL waits for while it is healthy; otherwise the best.
        guard let chosen = healthy.first(where: { names($0) == standbyNames }) ?? healthy.first else {
            // Nobody to wait for. Strict: writes wait for one to come. Otherwise: asynchronous.
            if mode == .strict { return standbyNames.isEmpty ? .setStandbyNames("*") : .none }
            return standbyNames.isEmpty ? .none : .setStandbyNames("")
        }
        if standbyNames != names(chosen) { return .setStandbyNames(names(chosen)) }
        guard let waitingSince else { return .rememberPosition }
        guard let peer = peers.first(where: { $0.name == chosen }), peer.flushPosition >= waitingSince else { return .none }
        return .record(chosen, position: waitingSince)
    }
}
