import ConsulAPI

/// What `baton status` shows: the cluster as Consul records it.
public struct StatusView: Sendable {
    public struct Node: Sendable {
        public var registration: NodeRegistration
        public var keepalived: KeepalivedNode?
        public var holdsLeaderLock: Bool
        /// The node's pgbouncer agent's last report.
        public var pgbouncer: BouncerStatus?
        /// The node's monitor's last report (role, timeline, WAL position).
        public var report: MemberStatus?

        public init(
            registration: NodeRegistration, keepalived: KeepalivedNode?, holdsLeaderLock: Bool, pgbouncer: BouncerStatus? = nil,
            report: MemberStatus? = nil
        ) {
            self.report = report
            self.pgbouncer = pgbouncer
            self.registration = registration
            self.keepalived = keepalived
            self.holdsLeaderLock = holdsLeaderLock
        }
    }

    public var cluster: ClusterName
    public var claim: ClusterClaim?
    /// The node named in the `leader` key while a session holds it.
    public var leader: NodeName?
    public var config: ClusterConfig
    public var nodes: [Node]
    /// Registrations or keys that failed validation, shown instead of being trusted.
    public var problems: [String]
    public var events: [ClusterEvent]
    /// Why and since when automatic failover is paused, if it is.
    public var paused: String?
    /// Each monitor's last decision, by node.
    public var decisions: [NodeName: String]
    /// The synchronous standby recorded in `sync`, if any.
    public var synchronousStandby: NodeName?

    /// How far a node's WAL is behind the leader's, in bytes, from their last reports.
    public func lag(of node: Node) -> UInt64? {
        guard let leader, let leaderPosition = nodes.first(where: { $0.registration.name == leader })?.report?.position,
            let position = node.report?.position, node.registration.name != leader
        else { return nil }
        return leaderPosition.value > position.value ? leaderPosition.value - position.value : 0
    }

    public init(
        cluster: ClusterName, claim: ClusterClaim?, leader: NodeName?, config: ClusterConfig, nodes: [Node], problems: [String],
        events: [ClusterEvent], paused: String? = nil, decisions: [NodeName: String] = [:]
    ) {
        self.paused = paused
        self.decisions = decisions
        self.cluster = cluster
        self.claim = claim
        self.leader = leader
        self.config = config
        self.nodes = nodes.sorted { $0.registration.name < $1.registration.name }
        self.problems = problems
        self.events = events
    }

    /// The cluster as one snapshot shows it, with the last `events` events.
    public init(snapshot s: ClusterSnapshot, cluster: ClusterName, events: Int) {
        let nodes = s.registrations.values.map { registration in
            Node(
                registration: registration, keepalived: s.keepalived.node(registration.name), holdsLeaderLock: s.leader?.holder == registration.name,
                pgbouncer: s.bouncers[registration.name], report: s.reports[registration.name]?.status)
        }
        var decisions: [NodeName: String] = [:]
        for (name, report) in s.reports { if let decision = report.status.decision { decisions[name] = Quote.show(decision) } }
        self.init(
            cluster: cluster, claim: s.claim, leader: s.leader?.holder, config: s.config, nodes: nodes, problems: s.problems,
            events: Array(s.events.suffix(events)), paused: s.pause.map { Quote.show($0) }, decisions: decisions)
        synchronousStandby = s.sync?.standby
    }

    /// A table in the manner of `patronictl list`.
    public func table() -> String {
        var out = "Cluster: \(cluster)"
        if let id = claim?.systemIdentifier { out += " (system identifier \(id))" } else if claim == nil { out += " (not created)" }
        out += "\n"
        out += "Leader lock: " + (leader.map { "held by \($0)" } ?? "not held") + "   synchronous_mode: \(config.synchronousMode.rawValue)"
        out += (synchronousStandby.map { "   synchronous standby: \($0)" } ?? "") + "\n"
        if let paused { out += "Automatic failover: PAUSED (\(paused))\n" }
        let header = ["Node", "Address", "Role", "State", "TL", "Lag", "Upstream", "Lock", "Priority", "VRRP", "VRRP prio", "Location", "pgbouncer"]
        var rows: [[String]] = []
        var problems = self.problems
        for n in nodes {
            let r = n.registration
            rows.append([
                r.name.value, "\(r.address):\(r.port)", r.role.rawValue,
                n.report.map { $0.role == "standby" ? ($0.streaming == true ? "streaming" : "not streaming") : $0.role } ?? "-",
                n.report.map { $0.role == "down" ? "-" : String($0.timeline) } ?? "-", lag(of: n).map { "\($0) B" } ?? "-",
                r.upstream?.value ?? "-", n.holdsLeaderLock ? "*" : "",
                String(r.priority), n.keepalived?.state ?? "-", n.keepalived.map { String($0.priority) } ?? "-", r.location,
                n.pgbouncer.map { b in (b.target ?? "?") + (b.paused ? " (paused)" : "") + (b.problem != nil ? " (problem)" : "") } ?? "-",
            ])
            if let problem = n.pgbouncer?.problem { problems.append("\(r.name)'s pgbouncer agent: \(problem)") }
        }
        let widths = header.indices.map { i in ([header[i]] + rows.map { $0[i] }).map(\.count).max() ?? 0 }
        func line(_ cells: [String]) -> String {
            "| " + cells.enumerated().map { $0.element.padding(toLength: widths[$0.offset], withPad: " ", startingAt: 0) }.joined(separator: " | ") + " |"
        }
        let rule = "+" + widths.map { String(repeating: "-", count: $0 + 2) }.joined(separator: "+") + "+"
        out += rule + "\n" + line(header) + "\n" + rule + "\n"
        for row in rows { out += line(row) + "\n" }
        out += rule + "\n"
        for name in decisions.keys.sorted() { out += "\(name): \(decisions[name]!)\n" }
        for p in problems { out += "problem: \(p)\n" }
        if !events.isEmpty {
            out += "Last events:\n"
            for e in events { out += "  \(e.time)  \(e.node)  \(e.kind)  \(e.detail)\n" }
        }
        return out
    }

    public var json: JSONValue {
        .object([
            ("cluster", .string(cluster.value)),
            ("system_identifier", claim?.systemIdentifier.map { .string($0) } ?? .null),
            ("leader", leader.map { .string($0.value) } ?? .null),
            ("config", config.json),
            ("paused", paused.map { .string($0) } ?? .null),
            ("synchronous_standby", synchronousStandby.map { .string($0.value) } ?? .null),
            ("decisions", .object(decisions.keys.sorted().map { ($0.value, .string(decisions[$0]!)) })),
            (
                "nodes",
                .array(
                    nodes.map { n in
                        var members = n.registration.json.objectValue ?? []
                        members.append(("holds_leader_lock", .bool(n.holdsLeaderLock)))
                        members.append(("keepalived_priority", n.keepalived.map { .int($0.priority) } ?? .null))
                        members.append(("vrrp_state", n.keepalived?.state.map { .string($0) } ?? .null))
                        members.append(("vrrp_state_time", n.keepalived?.stateTime.map { .string($0) } ?? .null))
                        members.append(("pgbouncer", n.pgbouncer?.json ?? .null))
                        members.append(("report", n.report?.json ?? .null))
                        members.append(("lag_bytes", lag(of: n).map { .number(String($0)) } ?? .null))
                        return .object(members)
                    })
            ),
            ("problems", .array(problems.map { .string($0) })),
            ("events", .array(events.map(\.json))),
        ])
    }
}
