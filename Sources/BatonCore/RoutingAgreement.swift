/// One truth about who serves (issue 26): the node holding the lock, the node holding the virtual IP
/// (keepalived's notify reports; with `vip_policy: priority` any one node may hold it) and every
/// pgbouncer's target must agree once a failover is over. The
/// leader checks every loop; a disagreement that lasts longer than ``patience`` is an event, a warning in
/// `baton status` (through the leader's report) and the metric `baton_routing_disagreement`.
public enum RoutingAgreement {
    /// Longer than a failover or switchover takes to converge everywhere.
    public static let patience: Duration = .seconds(5)

    /// What disagrees now with `leader` leading a registered primary, each in one sentence. Nothing while
    /// nobody leads, the leader is not registered primary yet, or a switchover pauses the pgbouncers (the
    /// lock and routing are in transit then). A pgbouncer agent whose report stopped is not counted.
    /// - Parameters:
    ///   - liveBouncers: the nodes whose pgbouncer agent keeps reporting.
    ///   - liveMonitors: the nodes whose monitor keeps reporting, nil to count every node. The VRRP state
    ///     of a node whose monitor went silent is not counted: a node that died said nothing of the
    ///     address it lost with it (its last notification may still say MASTER).
    public static func disagreements(_ snapshot: ClusterSnapshot, liveBouncers: Set<NodeName>, liveMonitors: Set<NodeName>? = nil) -> [String] {
        guard let leader = snapshot.leader?.holder, let primary = snapshot.registrations[leader], primary.role == .primary,
            snapshot.bouncerPause == nil
        else { return [] }
        var found: [String] = []
        let counted = snapshot.keepalived.nodes.filter { liveMonitors?.contains($0.name) ?? true }
        let masters = counted.filter { $0.state == "MASTER" }.map(\.name).sorted()
        if counted.contains(where: { $0.state != nil }) {
            if masters.isEmpty {
                found.append("no keepalived holds the virtual IP while \(leader) leads")
            } else {
                switch snapshot.config.vipPolicy {
                case .primary where masters != [leader]:
                    found.append("the virtual IP is on \(masters.map(\.value).joined(separator: " and ")) while \(leader) leads")
                case .priority where masters.count > 1:
                    found.append("the virtual IP is on \(masters.map(\.value).joined(separator: " and ")) at once (vip_policy priority)")
                case .primary, .priority: break
                }
            }
        }
        let target = Endpoint(host: primary.address.value, port: primary.port.value).description
        for (node, bouncer) in snapshot.bouncers.sorted(by: { $0.key < $1.key }) where liveBouncers.contains(node) {
            if bouncer.paused {
                found.append("\(node)'s pgbouncer holds its clients (paused) while \(leader) leads")
            } else if bouncer.target != target {
                found.append("\(node)'s pgbouncer routes to \(bouncer.target ?? "nothing") while \(leader) leads at \(target)")
            }
        }
        return found
    }
}

/// Since when each current disagreement lasts, on the leader's clock.
public struct DisagreementMemory: Sendable, Equatable {
    var since: [String: ContinuousClock.Instant] = [:]
    var reported: Set<String> = []

    public init() {}

    /// Takes this loop's disagreements; returns those lasting past the patience (the report's list) and
    /// those that just became so (an event each).
    public mutating func observe(_ current: [String], at now: ContinuousClock.Instant) -> (lasting: [String], new: [String]) {
        since = Dictionary(uniqueKeysWithValues: current.map { ($0, since[$0] ?? now) })
        let lasting = current.filter { now - since[$0]! >= RoutingAgreement.patience }
        let new = lasting.filter { !reported.contains($0) }
        reported = Set(lasting)
        return (lasting, new)
    }
}
