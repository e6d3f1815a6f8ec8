/// Where a cluster's facts live in Consul: one key for each, under `baton/<cluster>/`.
public struct ClusterKeys: Sendable, Equatable {
    public let cluster: ClusterName
    public init(cluster: ClusterName) { self.cluster = cluster }

    public var prefix: String { "baton/\(cluster.value)/" }
    /// Written once with cas=0 by the node that created the cluster.
    public var initialize: String { prefix + "initialize" }
    /// Held with a session by the primary: the only source of truth for who may take writes.
    public var leader: String { prefix + "leader" }
    /// Every node's keepalived priority and last VRRP state, in one check-and-set key.
    public var keepalivedNodes: String { prefix + "keepalived/nodes" }
    /// Cluster-wide settings every node reads.
    public var config: String { prefix + "config" }
    public var nodesPrefix: String { prefix + "nodes/" }
    public func node(_ name: NodeName) -> String { nodesPrefix + name.value }
    /// Each monitor's report (``MemberStatus``).
    public var statusPrefix: String { prefix + "status/" }
    public func status(_ name: NodeName) -> String { statusPrefix + name.value }
    /// The event history, beside the cluster's prefix rather than under it: the monitors read the whole
    /// prefix every loop and need none of the (up to 200) events, which only `baton status`, `baton
    /// events` and the node API's `/cluster` show. A cluster name has no '.', so no cluster's prefix is this.
    public var eventsPrefix: String { "baton/\(cluster.value).events/" }
    /// Where an earlier Baton kept the event history; the leader moves what it finds there to
    /// ``eventsPrefix``.
    public var legacyEventsPrefix: String { prefix + "events/" }
    /// The synchronous standby, recorded by the primary before it relies on it: the only node automatic
    /// failover may promote in synchronous mode.
    public var sync: String { prefix + "sync" }
    /// A pending `baton switchover` / `baton failover`: the node that takes over.
    public var switchover: String { prefix + "switchover" }
    /// A switchover scheduled for later (``ScheduledSwitchover``).
    public var scheduledSwitchover: String { prefix + "scheduled-switchover" }
    /// The highest timeline a promotion has claimed (``TimelineClaim``).
    public var timeline: String { prefix + "timeline" }
    /// A switchover's request that every pgbouncer pause (``PauseRequest``).
    public var pgbouncerPause: String { prefix + "pgbouncer/pause" }
    /// Each pgbouncer agent's report (``BouncerStatus``).
    public var pgbouncerAgentsPrefix: String { prefix + "pgbouncer/agents/" }
    public func pgbouncerAgent(_ name: NodeName) -> String { pgbouncerAgentsPrefix + name.value }
    /// Cluster-wide PostgreSQL parameters (``PostgresParameters``).
    public var postgresql: String { prefix + "postgresql" }
    /// Operators' requests to one node's monitor (``NodeCommand``).
    public var commandsPrefix: String { prefix + "commands/" }
    public func command(_ name: NodeName) -> String { commandsPrefix + name.value }
    /// Runtime tags of a node (``NodeTags``).
    public var tagsPrefix: String { prefix + "tags/" }
    public func tags(_ name: NodeName) -> String { tagsPrefix + name.value }
    /// Present while automatic failover is paused (maintenance).
    public var pause: String { prefix + "pause" }
}
