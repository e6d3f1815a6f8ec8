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
        /// The heartbeat count and the leader's fencing promise (``LeaderFlags``).
        public var flags: UInt64

        /// The `fence_after` the leader's watchdog was armed with at its last beat, when it says.
        public var promise: GoDuration? { LeaderFlags(raw: flags).promise }

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
    /// The newest timeline a promotion claimed (``TimelineClaim``), when one did.
    public var claimedTimeline: Int?
    /// The highest modify index of any key read: how far Consul's history reached at this read.
    public var newestIndex: UInt64 = 0
    public var config = ClusterConfig()
    /// Why the `config` key could not be read, when it could not (``config`` then holds the defaults,
    /// which a monitor never falls back to: it keeps the configuration it last read).
    public var configProblem: String?
    public var registrations: [NodeName: NodeRegistration] = [:]
    public var reports: [NodeName: Report] = [:]
    public var sync: SyncRecord?
    /// The `sync` key's modify index (0 when there is none).
    public var syncIndex: UInt64 = 0
    public var request: Request?
    /// A switchover scheduled for later, with its modify index (for a check-and-set delete).
    public var scheduled: (switchover: ScheduledSwitchover, modifyIndex: UInt64)?
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

    /// What earlier reads parsed, by key and the exact bytes: a value that did not change since is not
    /// parsed again (a monitor reads the whole prefix every loop, and at rest almost nothing in it
    /// changes). Bytes, not the modify index, say "unchanged": a Consul restored from a snapshot reuses
    /// indexes. Only values that parsed are kept; a malformed one is parsed, and reported, each time.
    public struct ParseCache: Sendable {
        fileprivate var registrations: [String: (bytes: [UInt8]?, value: NodeRegistration)] = [:]
        fileprivate var reports: [String: (bytes: [UInt8]?, value: MemberStatus)] = [:]
        fileprivate var config: (bytes: [UInt8]?, value: ClusterConfig)?

        public init() {}
    }

    /// Parses every key of the cluster's prefix.
    public init(pairs: [KVPair], keys: ClusterKeys) {
        var cache = ParseCache()
        self.init(pairs: pairs, keys: keys, cache: &cache)
    }

    /// Parses every key of the cluster's prefix, reusing what `cache` holds of the same key with the same
    /// bytes, and leaves in `cache` what this read parsed.
    public init(pairs: [KVPair], keys: ClusterKeys, cache: inout ParseCache) {
        var next = ParseCache()
        let layout = KeyLayout(keys)
        for pair in pairs {
            newestIndex = max(newestIndex, pair.modifyIndex)
            do throws(ValidationProblem) {
                try take(pair, keys: layout, cache: cache, next: &next)
            } catch {
                problems.append(error.message)
            }
        }
        events.sort { $0.time < $1.time }
        cache = next
    }

    /// Adds the events read from ``ClusterKeys/eventsPrefix`` (a malformed one is a problem, skipped).
    public mutating func addEvents(_ pairs: [KVPair]) {
        for pair in pairs {
            do throws(ValidationProblem) { events.append(try ClusterEvent(pair: pair)) } catch { problems.append(error.message) }
        }
        events.sort { $0.time < $1.time }
    }

    /// The keys ``take(_:keys:cache:next:)`` tells apart, spelled once per read rather than once per key.
    private struct KeyLayout {
        let commandsPrefix: String
        let config: String
        let initialize: String
        let timeline: String
        let keepalivedNodes: String
        let leader: String
        let legacyEventsPrefix: String
        let nodesPrefix: String
        let pause: String
        let pgbouncerAgentsPrefix: String
        let pgbouncerPause: String
        let postgresql: String
        let statusPrefix: String
        let switchover: String
        let scheduledSwitchover: String
        let sync: String
        let tagsPrefix: String

        init(_ keys: ClusterKeys) {
            commandsPrefix = keys.commandsPrefix
            config = keys.config
            initialize = keys.initialize
            timeline = keys.timeline
            keepalivedNodes = keys.keepalivedNodes
            leader = keys.leader
            legacyEventsPrefix = keys.legacyEventsPrefix
            nodesPrefix = keys.nodesPrefix
            pause = keys.pause
            pgbouncerAgentsPrefix = keys.pgbouncerAgentsPrefix
            pgbouncerPause = keys.pgbouncerPause
            postgresql = keys.postgresql
            statusPrefix = keys.statusPrefix
            switchover = keys.switchover
            scheduledSwitchover = keys.scheduledSwitchover
            sync = keys.sync
            tagsPrefix = keys.tagsPrefix
        }
    }

    private mutating func take(_ pair: KVPair, keys: KeyLayout, cache: ParseCache, next: inout ParseCache) throws(ValidationProblem) {
        let key = pair.key
        switch key {
        case keys.leader:
            leaderKeyIndex = pair.modifyIndex
            guard let session = pair.session else { return }
            leader = Leader(
                holder: try NodeName(pair.stringValue, field: "the leader key"), session: session, modifyIndex: pair.modifyIndex, flags: pair.flags)
        case keys.initialize:
            claim = try ClusterClaim(bytes: pair.value, key: key)
        case keys.timeline:
            claimedTimeline = try TimelineClaim.claimed(pair.value, key: key)
        case keys.config:
            if let cached = cache.config, cached.bytes == pair.value {
                config = cached.value
            } else {
                do throws(ValidationProblem) { config = try ClusterConfig(bytes: pair.value, key: key) } catch {
                    configProblem = error.message
                    throw error
                }
            }
            next.config = (pair.value, config)
            if !config.unknownSettings.isEmpty {
                let names = config.unknownSettings.map(\.name).joined(separator: ", ")
                problems.append("Consul key \(key): ignoring settings this Baton does not know (\(names)); a newer Baton wrote them?")
            }
        case keys.sync:
            syncIndex = pair.modifyIndex
            sync = try SyncRecord.parse(pair.value, key: key)
        case keys.switchover:
            request = Request(request: try TakeoverRequest(bytes: pair.value, key: key), modifyIndex: pair.modifyIndex)
        case keys.scheduledSwitchover:
            scheduled = (try ScheduledSwitchover(bytes: pair.value, key: key), pair.modifyIndex)
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
            let registration: NodeRegistration
            if let cached = cache.registrations[key], cached.bytes == pair.value {
                registration = cached.value
            } else {
                registration = try NodeRegistration(bytes: pair.value, key: key)
            }
            next.registrations[key] = (pair.value, registration)
            registrations[registration.name] = registration
        case _ where key.hasPrefix(keys.statusPrefix):
            let name = try NodeName(String(key.dropFirst(keys.statusPrefix.count)), field: key)
            let status: MemberStatus
            if let cached = cache.reports[key], cached.bytes == pair.value {
                status = cached.value
            } else {
                guard let parsed = MemberStatus(bytes: pair.value) else { throw ValidationProblem("Consul key \(key) is not a monitor's report") }
                status = parsed
            }
            next.reports[key] = (pair.value, status)
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

    /// The furthest WAL position the latest primary reported — running, or as it last ran before its
    /// PostgreSQL went down (``MemberStatus/lastPrimary``): how far a replica may lag behind. The newest
    /// timeline wins, so that an old primary's report from before a failover does not count.
    public var lastPrimaryPosition: LSN? {
        var latest: PrimaryPosition? = nil
        for report in reports.values {
            let status = report.status
            if status.role == "primary", let position = status.position {
                latest = PrimaryPosition.later(latest, PrimaryPosition(position: position, timeline: status.timeline))
            } else if let last = status.lastPrimary {
                latest = PrimaryPosition.later(latest, last)
            }
        }
        return latest?.position
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
