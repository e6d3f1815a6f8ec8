import ConsulAPI

/// `baton explain`: what would happen if the primary died now — who would take over, the ranking with
/// each node's position, lag, timeline and priority, and for every node that would not, the precise
/// reason. Computed by the same functions the monitors decide with (``FailoverCandidates``), from the
/// same reports, so the two cannot disagree; a candidate about to take the lock also asks the others'
/// node APIs for their live position, which may reorder candidates whose reports were a loop apart.
public struct FailoverExplanation: Sendable {
    public struct Candidate: Sendable, Equatable {
        public var name: NodeName
        public var position: LSN
        /// Bytes behind the primary's last reported position (nil when it is not known).
        public var lag: UInt64?
        public var timeline: Int
        public var priority: Int
        /// How long it waits after the lock is lost before it may take it (its rank × `failover_grace`).
        public var waits: GoDuration
    }

    public var leader: NodeName?
    public var primaryPosition: LSN?
    public var synchronousMode: SynchronousMode
    public var synchronousStandby: NodeName?
    public var paused: Bool
    /// Eligible, best first.
    public var ranked: [Candidate]
    /// Every other node with why it would not take over, in name order.
    public var ineligible: [(node: NodeName, reason: String)]

    /// The node that would take over at once; nil when nobody would (paused, or none eligible).
    public var winner: NodeName? { paused ? nil : ranked.first?.name }

    /// - Parameter live: the nodes whose monitor runs (a Consul session under its name).
    public init(snapshot: ClusterSnapshot, live: Set<NodeName>) {
        let config = snapshot.config
        leader = snapshot.leader?.holder
        primaryPosition = snapshot.lastPrimaryPosition
        synchronousMode = config.synchronousMode
        synchronousStandby = snapshot.sync?.standby
        paused = snapshot.pause != nil
        let candidates = FailoverCandidates.candidates(snapshot, fresh: { live.contains($0) })
        let choice = FailoverCandidates.choose(
            candidates, synchronousMode: config.synchronousMode, synchronous: snapshot.sync, lastPrimaryPosition: primaryPosition,
            maximumLag: config.maximumLagOnFailover)
        let byName = Dictionary(uniqueKeysWithValues: candidates.map { ($0.name, $0) })
        let primaryPosition = self.primaryPosition
        ranked = choice.ranked.compactMap { name in
            guard let c = byName[name] else { return nil }
            return Candidate(
                name: name, position: c.walPosition, lag: primaryPosition.map { $0 > c.walPosition ? $0.value - c.walPosition.value : 0 },
                timeline: c.timeline, priority: c.failoverPriority, waits: choice.waitBeforeAcquiring(name, grace: config.failoverGrace) ?? .zero)
        }
        var reasons: [(NodeName, String)] = []
        for name in snapshot.registrations.keys.sorted() where !choice.ranked.contains(name) {
            if name == leader {
                reasons.append((name, "holds the leader lock (the primary)"))
                continue
            }
            guard let why = choice.ineligible[name] else { continue }
            if why == .unhealthy {
                let report = snapshot.reports[name]?.status
                if !live.contains(name) {
                    reasons.append((name, "its monitor is not running (no Consul session)"))
                } else if let role = report?.role, role != "standby" {
                    reasons.append((name, "its PostgreSQL is \(role), not a standby"))
                } else {
                    reasons.append((name, "no report of it as a standby"))
                }
            } else {
                reasons.append((name, why.description))
            }
        }
        ineligible = reasons
    }

    /// For people.
    public var text: String {
        var out = "If \(leader.map { "the primary \($0)" } ?? "the primary") failed now: "
        if paused {
            out += "nobody would take over — automatic failover is paused (`baton resume` ends it).\n"
        } else if let winner {
            out += "\(winner) would take over.\n"
        } else {
            out += "nobody would take over — no node is eligible; the old primary would restart in place when it can.\n"
        }
        out += "synchronous_mode: \(synchronousMode.rawValue)"
        if synchronousMode != .off { out += ", synchronous standby: \(synchronousStandby.map(\.value) ?? "none recorded")" }
        out += primaryPosition.map { ", the primary's last known position: \($0)" } ?? ", the primary's position is not known"
        out += "\n"
        if !ranked.isEmpty {
            out += "Eligible, in order:\n"
            for (i, c) in ranked.enumerated() {
                out += "  \(i + 1). \(c.name)  WAL \(c.position)" + (c.lag.map { " (\($0) B behind)" } ?? "")
                out += "  timeline \(c.timeline)  priority \(c.priority)"
                out += i == 0 ? "  takes the lock at once\n" : "  takes it if those above have not after \(c.waits)\n"
            }
        }
        if !ineligible.isEmpty {
            out += "Not eligible:\n"
            for (node, reason) in ineligible { out += "  \(node): \(reason)\n" }
        }
        return out
    }

    public var json: JSONValue {
        .object([
            ("leader", leader.map { .string($0.value) } ?? .null), ("winner", winner.map { .string($0.value) } ?? .null),
            ("paused", .bool(paused)), ("synchronous_mode", .string(synchronousMode.rawValue)),
            ("synchronous_standby", synchronousStandby.map { .string($0.value) } ?? .null),
            ("primary_position", primaryPosition.map { .string($0.description) } ?? .null),
            (
                "ranking",
                .array(
                    ranked.map { c in
                        .object([
                            ("node", .string(c.name.value)), ("position", .string(c.position.description)),
                            ("lag_bytes", c.lag.map { .number(String($0)) } ?? .null), ("timeline", .int(c.timeline)), ("priority", .int(c.priority)),
                            ("waits", .string(c.waits.description)),
                        ])
                    })
            ),
            ("ineligible", .array(ineligible.map { .object([("node", .string($0.node.value)), ("reason", .string($0.reason))]) })),
        ])
    }
}
