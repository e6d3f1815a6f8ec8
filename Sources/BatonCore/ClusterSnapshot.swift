import ConsulAPI

/// The cluster as one read of its Consul prefix shows it, parsed once and validated: what the monitor,
/// the takeover of a silent leader, `baton switchover`, `baton failover` and `baton status` all decide
/// and report from. A value someone else wrote that does not parse is listed in ``problems`` and never
/// trusted.
public struct ClusterSnapshot: Sendable {
    /// The holder of the leader lock: a session holds the key and it names a valid node.
    public struct Leader: Sendable, Equatable {
        public var holder: NodeName
        public var session: String
        public var modifyIndex: UInt64
        /// The heartbeat count (each beat is a check-and-set write that bumps it).
        public var flags: UInt64

        public init(holder: NodeName, session: String, modifyIndex: UInt64, flags: UInt64) {
            self.holder = holder
            self.session = session
            self.modifyIndex = modifyIndex
            self.flags = flags
        }
    }

    /// A monitor's report with the modify index that tells whether it keeps coming.
    public struct Report: Sendable, Equatable {
        public var status: MemberStatus
        public var modifyIndex: UInt64
    }

    /// The pending takeover request with its modify index (for a check-and-set delete).
    public struct Request: Sendable, Equatable {
        public var request: TakeoverRequest
        public var modifyIndex: UInt64
    }

    public var leader: Leader?
    /// The leader key's modify index (0 when there is none), held or not.
    public var leaderKeyIndex: UInt64 = 0
    public var claim: ClusterClaim?
    public var config = ClusterConfig()
    public var registrations: [NodeName: NodeRegistration] = [:]
    public var reports: [NodeName: Report] = [:]
    public var sync: SyncRecord?
    /// The `sync` key's modify index (0 when there is none).
    public var syncIndex: UInt64 = 0
    public var request: Request?
    /// Why and since when automatic failover is paused, when it is.
    public var pause: String?
    public var keepalived = KeepalivedNodes()
    public var bouncers: [NodeName: BouncerStatus] = [:]
    /// Each pgbouncer agent's report index (whether it keeps reporting).
    public var bouncerIndexes: [NodeName: UInt64] = [:]
    public var bouncerPause: PauseRequest?
    public var bouncerPauseIndex: UInt64 = 0
    /// Cluster-wide PostgreSQL parameters.
    public var parameters = PostgresParameters()
    /// Operators' pending or finished requests to each node's monitor, with their modify index.
    public var commands: [NodeName: (command: NodeCommand, modifyIndex: UInt64)] = [:]
    /// Runtime tags by node.
    public var tags: [NodeName: NodeTags] = [:]
    /// The event history, oldest first: what ``addEvents(_:)`` added from the events prefix (which the
    /// cluster's prefix does not hold), and any events an earlier Baton left under the prefix.
    public var events: [ClusterEvent] = []
    /// The events an earlier Baton wrote under the cluster's prefix, which the leader moves out.
    public var legacyEvents: [KVPair] = []
    public var problems: [String] = []

    public init() {}

    /// Parses every key of the cluster's prefix.
    public init(pairs: [KVPair], keys: ClusterKeys) {
        for pair in pairs {
            do throws(ValidationProblem) {
                try take(pair, keys: keys)
            } catch {
                problems.append(error.message)
            }
        }
        events.sort { $0.time < $1.time }
    }

    /// Adds the events read from ``ClusterKeys/eventsPrefix`` (a malformed one is a problem, skipped).
    public mutating func addEvents(_ pairs: [KVPair]) {
        for pair in pairs {
            do throws(ValidationProblem) { events.append(try ClusterEvent(pair: pair)) } catch { problems.append(error.message) }
        }
        events.sort { $0.time < $1.time }
    }

    private mutating func take(_ pair: KVPair, keys: ClusterKeys) throws(ValidationProblem) {
        let key = pair.key
        switch key {
        case keys.leader:
            leaderKeyIndex = pair.modifyIndex
            guard let session = pair.session else { return }
            leader = Leader(
                holder: try NodeName(pair.stringValue, field: "the leader key"), session: session, modifyIndex: pair.modifyIndex, flags: pair.flags)
        case keys.initialize:
            claim = try ClusterClaim(bytes: pair.value, key: key)
        case keys.config:
            config = try ClusterConfig(bytes: pair.value, key: key)
        case keys.sync:
            syncIndex = pair.modifyIndex
            sync = try SyncRecord.parse(pair.value, key: key)
        case keys.switchover:
            request = Request(request: try TakeoverRequest(bytes: pair.value, key: key), modifyIndex: pair.modifyIndex)
        case keys.pause:
            let json = try? JSONValue.parse(pair.value ?? [])
            pause = "since \(json?.member("time")?.stringValue ?? "?"): \(json?.member("reason")?.stringValue ?? "no reason given")"
        case keys.postgresql:
            parameters = try PostgresParameters(bytes: pair.value, key: key)
        case _ where key.hasPrefix(keys.commandsPrefix):
            let name = try NodeName(String(key.dropFirst(keys.commandsPrefix.count)), field: key)
            commands[name] = (try NodeCommand(bytes: pair.value, key: key), pair.modifyIndex)
        case _ where key.hasPrefix(keys.tagsPrefix):
            let name = try NodeName(String(key.dropFirst(keys.tagsPrefix.count)), field: key)
            tags[name] = try NodeTags(bytes: pair.value, key: key)
        case keys.keepalivedNodes:
            keepalived = try KeepalivedNodes(bytes: pair.value, key: key)
        case keys.pgbouncerPause:
            bouncerPauseIndex = pair.modifyIndex
            bouncerPause = try PauseRequest(bytes: pair.value, key: key)
        case _ where key.hasPrefix(keys.nodesPrefix):
            let registration = try NodeRegistration(bytes: pair.value, key: key)
            registrations[registration.name] = registration
        case _ where key.hasPrefix(keys.statusPrefix):
            let name = try NodeName(String(key.dropFirst(keys.statusPrefix.count)), field: key)
            guard let status = MemberStatus(bytes: pair.value) else { throw ValidationProblem("Consul key \(key) is not a monitor's report") }
            reports[name] = Report(status: status, modifyIndex: pair.modifyIndex)
        case _ where key.hasPrefix(keys.pgbouncerAgentsPrefix):
            let name = try NodeName(String(key.dropFirst(keys.pgbouncerAgentsPrefix.count)), field: key)
            guard let status = BouncerStatus(bytes: pair.value) else { throw ValidationProblem("Consul key \(key) is not a pgbouncer agent's report") }
            bouncers[name] = status
            bouncerIndexes[name] = pair.modifyIndex
        case _ where key.hasPrefix(keys.legacyEventsPrefix):
            legacyEvents.append(pair)
            events.append(try ClusterEvent(pair: pair))
        default:
            return
        }
    }

    /// The node registered as primary other than `node`, if any.
    public func registeredPrimary(otherThan node: NodeName?) -> NodeRegistration? {
        registrations.values.sorted { $0.name < $1.name }.first { $0.role == .primary && $0.name != node }
    }

    /// The furthest WAL position a primary reported: how far a replica may lag behind.
    public var lastPrimaryPosition: LSN? {
        reports.values.filter { $0.status.role == "primary" }.compactMap(\.status.position).max()
    }

    /// The priority failover ranks `node` with: its registration's, unless its tags say otherwise.
    public func failoverPriority(of node: NodeName) -> Int {
        (tags[node] ?? NodeTags()).failoverPriority(registered: registrations[node]?.priority ?? 0)
    }

    /// `host:port` of a node's PostgreSQL, from its registration.
    public func endpoint(of node: NodeName) -> String? {
        registrations[node].map { "\($0.address.value):\($0.port.value)" }
    }
}
