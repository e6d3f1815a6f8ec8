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
    /// A switchover scheduled for later (`baton switchover --at`).
    public var scheduledSwitchover: ScheduledSwitchover?
    /// Each monitor's last decision, by node.
    public var decisions: [NodeName: String]
    /// The synchronous standby recorded in `sync`, if any.
    public var synchronousStandby: NodeName?
    /// Runtime tags by node (`baton node set`).
    public var tags: [NodeName: NodeTags] = [:]
    /// The leader's replication slots.
    public var slots: [SlotReport] = []
    /// Whose monitor runs (its Consul session exists), when known.
    public var liveMonitors: Set<NodeName>?
    /// The last promotion: when and which node.
    public var lastFailover: ClusterEvent?
    /// Operators' commands to nodes that are not finished (`baton restart`, `reload`, `reinit`).
    public var commands: [NodeName: NodeCommand] = [:]
    /// A slot holding more WAL than this is warned about.
    public static let slotWarningBytes: UInt64 = 1 << 30

    /// WAL held back for `node` by its slot on the leader.
    public func slot(of node: NodeName) -> SlotReport? { slots.first { $0.name == node.slotName } }

    /// What an operator should look at: a synchronous mode with nobody to promote, slots that hold much
    /// WAL or belong to nodes gone silent.
    public var warnings: [String] {
        var out: [String] = []
        if config.synchronousMode != .off, let leader, synchronousStandby == nil {
            out.append(
                "synchronous_mode is \(config.synchronousMode.rawValue) but no synchronous standby is recorded: if \(leader) failed now, no node could be promoted automatically (none is known to hold every acknowledged commit). \(leader) records one once a standby streams and has caught up; if \(leader) is lost before that, `baton failover --to NODE --allow-data-loss` promotes a standby by hand, losing the commits it lacks")
        }
        if let leader, let report = nodes.first(where: { $0.registration.name == leader })?.report {
            for what in report.disagreements {
                out.append("who serves is not agreed (for over \(RoutingAgreement.patience.components.seconds) s, as \(leader) sees it): \(what)")
            }
            for problem in report.archive?.problems(now: report.time) ?? [] { out.append("backups (as \(leader) sees them): \(problem)") }
        }
        let registered = Set(nodes.map(\.registration.name.slotName))
        for slot in slots {
            let owner = nodes.first { $0.registration.name.slotName == slot.name }?.registration.name
            if slot.lost, let owner {
                out.append(
                    "replication slot \(slot.name) lost WAL \(owner) had not received (wal_status lost, past max_slot_wal_keep_size): \(owner) cannot catch up by streaming and is never promoted in asynchronous mode; `baton reinit \(owner)`")
            } else if !registered.contains(slot.name) {
                out.append("replication slot \(slot.name) belongs to no registered node and holds \(Self.bytes(slot.retainedBytes)) of WAL")
            } else if let owner, !slot.active, let live = liveMonitors, !live.contains(owner) {
                out.append(
                    "replication slot \(slot.name) is inactive and \(owner)'s monitor is not running; it holds \(Self.bytes(slot.retainedBytes)) of WAL (up to max_slot_wal_keep_size): if \(owner) is gone for good, `baton remove \(owner)`")
            } else if slot.retainedBytes > Self.slotWarningBytes {
                out.append("replication slot \(slot.name) holds \(Self.bytes(slot.retainedBytes)) of WAL on the primary")
            }
        }
        return out
    }

    /// Bytes for people: 512 B, 16 kB, 3.5 MB, 2.0 GB.
    public static func bytes(_ n: UInt64) -> String {
        let units = ["B", "kB", "MB", "GB", "TB"]
        var value = Double(n)
        var unit = 0
        while value >= 1024, unit < units.count - 1 {
            value /= 1024
            unit += 1
        }
        if unit == 0 { return "\(n) B" }
        return (value >= 10 ? String(Int(value.rounded())) : String(format: "%.1f", value)) + " " + units[unit]
    }

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
        tags = s.tags
        slots = s.leader.flatMap { s.reports[$0.holder]?.status.slots } ?? []
        lastFailover = s.events.last { $0.kind == "promote" }
        commands = s.commands.compactMapValues { $0.command.state.isFinished ? nil : $0.command }
        scheduledSwitchover = s.scheduled?.switchover
    }

    /// The columns of ``table()`` and of the status page, one ``row(_:)`` cell each.
    static let columns = [
        "Node", "Address", "Role", "State", "TL", "Lag", "Upstream", "Lock", "Priority", "Tags", "Pending restart", "Slot WAL", "VRRP", "VRRP prio",
        "Location", "pgbouncer",
    ]

    /// A table in the manner of `patronictl list`.
    public func table() -> String {
        var out = "Cluster: \(cluster)"
        if let id = claim?.systemIdentifier { out += " (system identifier \(id))" } else if claim == nil { out += " (not created)" }
        out += "\n"
        out += "Leader lock: " + (leader.map { "held by \($0)" } ?? "not held") + "   synchronous_mode: \(config.synchronousMode.rawValue)"
        out += (synchronousStandby.map { "   synchronous standby: \($0)" } ?? "") + "\n"
        if let paused { out += "Automatic failover: PAUSED (\(paused))\n" }
        if let s = scheduledSwitchover {
            out += "Scheduled switchover: \(s.from) → \(s.to) at \(s.atText) (asked by \(s.by) at \(s.asked); `baton switchover --cancel` removes it)\n"
        }
        if let lastFailover { out += "Last failover: \(lastFailover.time) (\(lastFailover.node) \(lastFailover.detail))\n" }
        let header = Self.columns
        var rows: [[String]] = []
        var problems = self.problems
        for n in nodes {
            let r = n.registration
            rows.append(row(n))
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
        for name in commands.keys.sorted() {
            let c = commands[name]!
            out += "\(name): baton \(c.kind.rawValue)\(c.onlyPending ? " --pending" : "") \(c.state.rawValue), asked by \(c.by) at \(c.time)\n"
        }
        for p in problems { out += "problem: \(p)\n" }
        for w in warnings { out += "warning: \(w)\n" }
        if !events.isEmpty {
            out += "Last events:\n"
            for e in events { out += "  \(e.time)  \(e.node)  \(e.kind)  \(e.detail)\n" }
        }
        return out
    }

    public var json: JSONValue { .object(jsonMembers) }

    /// The members of ``json``, for answers that add their own (the node API's `/cluster`).
    public var jsonMembers: [(String, JSONValue)] {
        let nodeObjects: [JSONValue] = nodes.map(nodeJSON)
        var members: [(String, JSONValue)] = [("cluster", .string(cluster.value))]
        members.append(("system_identifier", claim?.systemIdentifier.map { .string($0) } ?? .null))
        members.append(("leader", leader.map { .string($0.value) } ?? .null))
        members.append(("config", config.json))
        members.append(("paused", paused.map { .string($0) } ?? .null))
        members.append(("scheduled_switchover", scheduledSwitchover.map { .object(($0.json.objectValue ?? []) + [("at_text", .string($0.atText))]) } ?? .null))
        members.append(("synchronous_standby", synchronousStandby.map { .string($0.value) } ?? .null))
        members.append(("decisions", .object(decisions.keys.sorted().map { ($0.value, .string(decisions[$0]!)) })))
        members.append(("nodes", .array(nodeObjects)))
        members.append(("problems", .array(problems.map { .string($0) })))
        members.append(("warnings", .array(warnings.map { .string($0) })))
        members.append(("last_failover", lastFailover?.json ?? .null))
        members.append(("commands", .object(commands.keys.sorted().map { ($0.value, commands[$0]!.json) })))
        members.append(("events", .array(events.map(\.json))))
        return members
    }

    func row(_ n: Node) -> [String] {
        let r = n.registration
        let state = n.report.map { $0.role == "standby" ? ($0.streaming == true ? "streaming" : "not streaming") : $0.role } ?? "-"
        let timeline = n.report.map { $0.role == "down" ? "-" : String($0.timeline) } ?? "-"
        let priority = String((tags[r.name] ?? NodeTags()).failoverPriority(registered: r.priority))
        let pending = n.report.map { $0.pendingRestart.isEmpty ? "" : "* " + $0.pendingRestart.joined(separator: ",") } ?? ""
        let slotText = slot(of: r.name).map { Self.bytes($0.retainedBytes) + ($0.active ? "" : " (inactive)") } ?? "-"
        let bouncer = n.pgbouncer.map { b in (b.target ?? "?") + (b.paused ? " (paused)" : "") + (b.problem != nil ? " (problem)" : "") } ?? "-"
        var cells = [r.name.value, "\(r.address):\(r.port)", r.role.rawValue, state, timeline, lag(of: n).map { "\($0) B" } ?? "-"]
        cells += [r.upstream?.value ?? "-", n.holdsLeaderLock ? "*" : "", priority, tags[r.name]?.summary ?? "", pending, slotText]
        cells += [n.keepalived?.state ?? "-", n.keepalived.map { String($0.priority) } ?? "-", r.location, bouncer]
        return cells
    }

    func nodeJSON(_ n: Node) -> JSONValue {
        let name = n.registration.name
        var members = n.registration.json.objectValue ?? []
        members.append(("holds_leader_lock", .bool(n.holdsLeaderLock)))
        members.append(("keepalived_priority", n.keepalived.map { .int($0.priority) } ?? .null))
        members.append(("vrrp_state", n.keepalived?.state.map { .string($0) } ?? .null))
        members.append(("vrrp_state_time", n.keepalived?.stateTime.map { .string($0) } ?? .null))
        members.append(("pgbouncer", n.pgbouncer?.json ?? .null))
        members.append(("report", n.report?.json ?? .null))
        members.append(("lag_bytes", lag(of: n).map { .number(String($0)) } ?? .null))
        members.append(("tags", tags[name]?.json ?? .null))
        members.append(("failover_priority", .int((tags[name] ?? NodeTags()).failoverPriority(registered: n.registration.priority))))
        let pending: [JSONValue] = (n.report?.pendingRestart ?? []).map { .string($0) }
        members.append(("pending_restart", .array(pending)))
        members.append(("slot", slot(of: name)?.json ?? .null))
        let running: JSONValue = liveMonitors.map { .bool($0.contains(name)) } ?? .null
        members.append(("monitor_running", running))
        return .object(members)
    }
}
