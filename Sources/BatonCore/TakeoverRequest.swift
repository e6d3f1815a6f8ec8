import ConsulAPI

/// A pending `baton switchover` (planned, from the current leader) or `baton failover` (manual, with
/// no leader), in the Consul key `switchover`.
public struct TakeoverRequest: Sendable, Equatable {
    public var to: NodeName
    /// The leader that steps down; `nil` for a manual failover.
    public var from: NodeName?
    /// When it was asked, by the asking machine's clock: shown, never compared.
    public var time: String
    /// How long the request stands, counted by each monitor from when it first saw it (its own clock).
    public var timeout: GoDuration
    /// A manual failover to a node that may lack acknowledged commits, as the operator allowed.
    public var allowDataLoss: Bool
    /// Written by the leader that steps down, right before it releases the lock: it stopped cleanly and
    /// saw the target receive every record. Only then may a switchover's target take a lock that went
    /// free without being one of the nodes failover may promote.
    public var handedOver: Bool
    /// Where the stepping-down primary's history ended when it handed over (its shutdown checkpoint):
    /// the handover vouches for that history only. Once a primary reported past it (the old primary led
    /// again when the target did not come), the request is judged as a failover. Nil from an earlier Baton.
    public var handedOverAt: LSN?

    public static let defaultTimeout: GoDuration = .seconds(60)

    public init(
        to: NodeName, from: NodeName?, time: String, timeout: GoDuration = Self.defaultTimeout, allowDataLoss: Bool = false, handedOver: Bool = false
    ) {
        self.to = to
        self.from = from
        self.time = time
        self.timeout = timeout
        self.allowDataLoss = allowDataLoss
        self.handedOver = handedOver
        self.handedOverAt = nil
    }

    public var json: JSONValue {
        .object([
            ("to", .string(to.value)), ("from", from.map { .string($0.value) } ?? .null), ("time", .string(time)),
            ("timeout", .string(timeout.description)), ("allow_data_loss", .bool(allowDataLoss)), ("handed_over", .bool(handedOver)),
            ("handed_over_at", handedOverAt.map { .string($0.description) } ?? .null),
        ])
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
        if let text = json.member("timeout")?.stringValue {
            do { timeout = try GoDuration(parsing: text) } catch { throw ValidationProblem("Consul key \(key): timeout \(Quote.show(text)) is not a duration") }
            guard timeout > .zero, timeout <= .seconds(3600) else { throw ValidationProblem("Consul key \(key): timeout must be from 1ns to 1h") }
        } else {
            timeout = Self.defaultTimeout
        }
        allowDataLoss = json.member("allow_data_loss")?.boolValue ?? false
        handedOver = json.member("handed_over")?.boolValue ?? false
        if let at = json.member("handed_over_at"), !at.isNull {
            guard let text = at.stringValue else { throw ValidationProblem("Consul key \(key): handed_over_at is not a WAL position") }
            do { handedOverAt = try LSN(parsing: text) } catch { throw ValidationProblem("Consul key \(key): handed_over_at: \(error.message)") }
        } else {
            handedOverAt = nil
        }
    }

    /// Whether monitors act on this request now. It stands until `timeout` after this monitor first saw
    /// it; a switchover only while its `from` still leads (or the lock is free for its target); and only
    /// while the target is a candidate that may take over — a request naming a dead or lagging node is
    /// ignored, so it never blocks a failover. A request never makes a node lead that failover could
    /// not promote (finding 8): a manual failover's target must be eligible unless data loss was
    /// allowed; in synchronous mode a switchover's too (only the synchronous standby holds every
    /// acknowledged commit); and a switchover whose leader was lost before it handed over (dead,
    /// silent, or a lock gone free without ``handedOver``) is a failover.
    /// - Parameters:
    ///   - age: how long this monitor has seen the request (its own clock).
    ///   - leader: who holds the lock now.
    ///   - leaderLost: nobody holds the lock, or its holder is silent past its fence.
    ///   - synchronous: the cluster runs in synchronous mode.
    ///   - targetHealthy: the target is a live standby whose reports keep coming.
    ///   - targetEligible: it may be promoted without losing acknowledged commits (ranking rules).
    ///   - lastPrimaryPosition: the furthest position a primary reported (``ClusterSnapshot/lastPrimaryPosition``):
    ///     past ``handedOverAt``, the handover no longer vouches for the target.
    public func standing(
        age: Duration, leader: NodeName?, leaderLost: Bool = false, synchronous: Bool = false, targetHealthy: Bool, targetEligible: Bool,
        lastPrimaryPosition: LSN? = nil
    ) -> RequestStanding {
        if age >= timeout.swiftDuration { return .expired }
        if leader == to { return .fulfilled }
        if let from, let leader, leader != from { return .superseded(by: leader) }
        if from == nil, leader != nil { return .superseded(by: leader!) }
        guard targetHealthy else { return .targetUnfit("\(to) is not a healthy standby") }
        let outlived = handedOverAt.map { at in lastPrimaryPosition.map { $0 > at } ?? false } ?? false
        let failover = from == nil || (leaderLost && !(handedOver && !outlived))
        if !allowDataLoss, !targetEligible, failover || synchronous {
            return .targetUnfit(
                synchronous && !failover
                    ? "\(to) is not the synchronous standby (in synchronous mode only it holds every acknowledged commit)"
                    : "\(to) may lack acknowledged commits and the request does not allow data loss")
        }
        return .standing
    }
}

/// What a monitor makes of a takeover request.
public enum RequestStanding: Sendable, Equatable {
    /// Act on it.
    case standing
    /// Its time is up.
    case expired
    /// Its target leads: done.
    case fulfilled
    /// Another node leads than the one it was made for.
    case superseded(by: NodeName)
    /// The target cannot take over now (dead, lagging): ignored, and failover proceeds as usual.
    case targetUnfit(String)

    /// Whether the leader should delete the request (it can never be acted on again).
    public var isDone: Bool {
        switch self {
        case .expired, .fulfilled, .superseded: return true
        case .standing, .targetUnfit: return false
        }
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

    /// A planned switchover from `leader` (at `leaderPosition`) to `target`. `choice` is the failover
    /// ranking of the standbys: a node failover never promotes (priority 0 or `nofailover`; in
    /// synchronous mode any but the synchronous standby) is no switchover target either.
    public static func switchover(
        leader: NodeName?, leaderPosition: LSN?, target: Target, maximumLag: UInt64, synchronousMode: SynchronousMode = .off,
        choice: FailoverChoice = FailoverChoice(ranked: [], ineligible: [:])
    ) -> String? {
        guard let leader else { return "no node holds the leader lock; use `baton failover --to \(target.name)`" }
        if leader == target.name { return "\(target.name) is already the leader" }
        guard let registration = target.registered else { return "\(target.name) is not registered in this cluster" }
        guard registration.role == .standby else { return "\(target.name) is not a standby" }
        guard target.healthy, let position = target.position else { return "\(target.name) is not healthy: its monitor does not report it streaming" }
        if let leaderPosition, leaderPosition > position, leaderPosition.value - position.value > maximumLag {
            return "\(target.name) is \(leaderPosition.value - position.value) bytes behind \(leader) (more than \(maximumLag)); wait until it catches up"
        }
        switch choice.ineligible[target.name] {
        case .noFailover?:
            return "\(target.name) is marked no-failover (priority 0): it never leads; `baton node set \(target.name) nofailover=false` (or priority above 0) first"
        case let reason? where synchronousMode != .off:
            let recorded = choice.ranked.first.map { "switch over to \($0), the synchronous standby" } ?? "wait until the primary records a synchronous standby"
            return "in synchronous mode only the synchronous standby holds every acknowledged commit, and \(target.name) is \(reason); \(recorded)"
        default:
            return nil
        }
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
