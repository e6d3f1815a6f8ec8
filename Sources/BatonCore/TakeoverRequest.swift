import ConsulAPI

/// A pending `baton switchover` (planned, from the current leader) or `baton failover` (manual, with
/// no leader), in the Consul key `switchover`.
public struct TakeoverRequest: Sendable, Equatable {
    public var to: NodeName
    /// The leader that steps down; `nil` for a manual failover.
    public var from: NodeName?
    public var time: String

    public init(to: NodeName, from: NodeName?, time: String) {
        self.to = to
        self.from = from
        self.time = time
    }

    public var json: JSONValue {
        .object([("to", .string(to.value)), ("from", from.map { .string($0.value) } ?? .null), ("time", .string(time))])
    }

    public init(bytes: [UInt8]?, key: String) throws(ValidationProblem) {
        let json = try Record.object(bytes, key: key)
        to = try NodeName(try Record.string(json, "to", key: key), field: "\(key) to")
        if let f = json.member("from"), !f.isNull {
            from = try NodeName(f.stringValue ?? "", field: "\(key) from")
        } else {
            from = nil
        }
        time = json.member("time")?.stringValue ?? ""
    }
}

/// Checks a switchover or manual failover before it is requested, and says why it is refused.
public enum TakeoverCheck {
    public struct Target: Sendable {
        public var name: NodeName
        public var registered: NodeRegistration?
        public var healthy: Bool
        public var position: LSN?
        public init(name: NodeName, registered: NodeRegistration?, healthy: Bool, position: LSN?) {
            self.name = name
            self.registered = registered
            self.healthy = healthy
            self.position = position
        }
    }

    /// A planned switchover from `leader` (at `leaderPosition`) to `target`.
    public static func switchover(leader: NodeName?, leaderPosition: LSN?, target: Target, maximumLag: UInt64) -> String? {
        guard let leader else { return "no node holds the leader lock; use `baton failover --to \(target.name)`" }
        if leader == target.name { return "\(target.name) is already the leader" }
        guard let registration = target.registered else { return "\(target.name) is not registered in this cluster" }
        guard registration.role == .standby else { return "\(target.name) is not a standby" }
        guard target.healthy, let position = target.position else { return "\(target.name) is not healthy: its monitor does not report it streaming" }
        if let leaderPosition, leaderPosition > position, leaderPosition.value - position.value > maximumLag {
            return "\(target.name) is \(leaderPosition.value - position.value) bytes behind \(leader) (more than \(maximumLag)); wait until it catches up"
        }
        return nil
    }

    /// A manual failover to `target` when no node leads. Promoting a replica that may lack commits
    /// (not the best candidate, or over the lag limit, or not the synchronous standby) needs
    /// `allowDataLoss`.
    public static func failover(leader: NodeName?, target: Target, choice: FailoverChoice, allowDataLoss: Bool) -> String? {
        if let leader { return "\(leader) holds the leader lock; use `baton switchover --to \(target.name)` for a planned change" }
        guard let registration = target.registered, registration.role == .standby else { return "\(target.name) is not a registered standby" }
        guard target.healthy else { return "\(target.name) is not healthy: its monitor does not report it running" }
        if !allowDataLoss {
            if let reason = choice.ineligible[target.name] { return "\(target.name) may lack acknowledged commits (\(reason)); add --allow-data-loss to promote it anyway" }
            if let best = choice.best, best != target.name {
                return "\(best) has more WAL than \(target.name); promoting \(target.name) may lose commits: add --allow-data-loss, or choose \(best)"
            }
        }
        return nil
    }
}
