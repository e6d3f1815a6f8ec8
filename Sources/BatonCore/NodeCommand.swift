import ConsulAPI

/// An operator's request that one node's monitor act on its own PostgreSQL (`baton restart`, `reload`,
/// `reinit`), under `commands/<node>`. The command-line tool writes it with check-and-set, the node's
/// monitor claims it (check-and-set to ``State/running``), carries it out and writes the outcome in
/// the same key; the tool waits for that and removes it.
public struct NodeCommand: Sendable, Equatable {
    public enum Kind: String, Sendable, Equatable, CaseIterable {
        /// Restart PostgreSQL without a failover (the primary keeps the lock).
        case restart
        /// Reload PostgreSQL's configuration.
        case reload
        /// Re-clone the data directory from the primary, the old one moved aside.
        case reinit
    }

    public enum State: String, Sendable, Equatable {
        case requested, running, done, failed, skipped

        public var isFinished: Bool { self == .done || self == .failed || self == .skipped }
    }

    public var id: String
    public var kind: Kind
    /// `restart --pending`: only when a setting waits for a restart (pg_settings.pending_restart).
    public var onlyPending: Bool
    /// Who asked (a node name, or "operator"), and when by the asking machine's clock: shown, never compared.
    public var by: String
    public var time: String
    public var state: State
    /// Progress, or the outcome with its reason.
    public var detail: String

    public init(id: String, kind: Kind, onlyPending: Bool = false, by: String, time: String, state: State = .requested, detail: String = "") {
        self.id = id
        self.kind = kind
        self.onlyPending = onlyPending
        self.by = by
        self.time = time
        self.state = state
        self.detail = detail
    }

    public var json: JSONValue {
        .object([
            ("id", .string(id)), ("kind", .string(kind.rawValue)), ("only_pending", .bool(onlyPending)), ("by", .string(by)),
            ("time", .string(time)), ("state", .string(state.rawValue)), ("detail", .string(detail)),
        ])
    }

    /// Reads a command, validating every field: a value someone else wrote is never trusted.
    public init(bytes: [UInt8]?, key: String) throws(ValidationProblem) {
        let json = try Record.object(bytes, key: key)
        let id = try Record.string(json, "id", key: key)
        guard !id.isEmpty, id.count <= 64, id.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "-" }) else {
            throw ValidationProblem("Consul key \(key): id must be 1 to 64 letters, digits and '-'")
        }
        let kindText = try Record.string(json, "kind", key: key)
        guard let kind = Kind(rawValue: kindText) else {
            throw ValidationProblem("Consul key \(key): kind \(Quote.show(kindText)) is not one of restart, reload, reinit")
        }
        let stateText = try Record.string(json, "state", key: key)
        guard let state = State(rawValue: stateText) else {
            throw ValidationProblem("Consul key \(key): state \(Quote.show(stateText)) is not one of requested, running, done, failed, skipped")
        }
        self.init(
            id: id, kind: kind, onlyPending: json.member("only_pending")?.boolValue ?? false, by: json.member("by")?.stringValue ?? "",
            time: json.member("time")?.stringValue ?? "", state: state, detail: json.member("detail")?.stringValue ?? "")
    }

    /// The same command in a new state.
    public func with(_ state: State, _ detail: String) -> NodeCommand {
        var next = self
        next.state = state
        next.detail = detail
        return next
    }

    /// How long a command may wait for its node to be steady before it expires, counted by the node's
    /// monitor from when it first saw it (its own clock).
    public static let pickupTimeout: Duration = .seconds(300)

    /// Why the node's monitor must not carry `kind` out, or `nil` when it may. A restart is for a
    /// running server — a leader's primary, another node's standby: a stopped one is started by the
    /// monitor itself when it should be, and a primary's data directory never starts without the lock.
    /// A reload needs a running server; a re-clone is never done on the lock holder (it would throw
    /// the primary's data away).
    public static func refusal(_ kind: Kind, holdsLock: Bool, local: LocalPostgres) -> String? {
        switch kind {
        case .reinit:
            return holdsLock ? "this node holds the leader lock: a primary is never re-cloned (switch over first)" : nil
        case .reload:
            return local.isUp ? nil : "PostgreSQL does not run here; nothing to reload"
        case .restart:
            switch (holdsLock, local) {
            case (true, .primary), (false, .standby): return nil
            case (false, .primary): return "PostgreSQL runs as a primary here without the leader lock; the monitor deals with it, not a restart"
            case (true, _): return "PostgreSQL is not running here as the leader's primary; the monitor restarts or fences it by itself"
            case (false, _): return "PostgreSQL is not running here as a standby; the monitor starts or repairs it by itself"
            }
        }
    }

    /// Whether a command may be taken up while the monitor decided `action` (this loop): a restart or a
    /// reload only in a steady state (leading, or following); a re-clone also while the node is being
    /// repaired (started, rewound), but never while it is about to lead.
    public static func mayRun(_ kind: Kind, during action: MonitorAction, leading: Bool) -> Bool {
        switch action {
        case .keepLeading: return true
        case .wait: return !leading
        case .startStandby, .rejoin, .follow, .fence: return kind == .reinit && !leading
        case .acquireLeader, .takeOver, .promote, .stepDown, .releaseLeader: return false
        }
    }
}

/// Runtime tags of a node, set by `baton node set` under `tags/<node>`, over what its bootstrap
/// settings say: its failover priority, whether it may be promoted or chosen as synchronous standby.
public struct NodeTags: Sendable, Equatable {
    /// Replaces the registration's priority when set.
    public var priority: Int?
    /// Never promoted automatically (as priority 0).
    public var noFailover = false
    /// Never chosen as the synchronous standby.
    public var noSync = false

    public init(priority: Int? = nil, noFailover: Bool = false, noSync: Bool = false) {
        self.priority = priority
        self.noFailover = noFailover
        self.noSync = noSync
    }

    public var isEmpty: Bool { self == NodeTags() }

    public var json: JSONValue {
        .object([("priority", priority.map { .int($0) } ?? .null), ("nofailover", .bool(noFailover)), ("nosync", .bool(noSync))])
    }

    public init(bytes: [UInt8]?, key: String) throws(ValidationProblem) {
        let json = try Record.object(bytes, key: key)
        self.init()
        for (name, _) in json.objectValue ?? [] where !["priority", "nofailover", "nosync"].contains(name) {
            throw ValidationProblem("Consul key \(key): unknown tag \(Quote.show(name)); the tags are priority, nofailover, nosync")
        }
        if let p = json.member("priority"), !p.isNull {
            guard let n = p.int64Value, let value = Int(exactly: n), (0...1000).contains(value) else {
                throw ValidationProblem("Consul key \(key): priority must be an integer from 0 to 1000")
            }
            priority = value
        }
        for (name, keyPath) in [("nofailover", \NodeTags.noFailover), ("nosync", \NodeTags.noSync)] {
            guard let value = json.member(name), !value.isNull else { continue }
            guard let flag = value.boolValue else { throw ValidationProblem("Consul key \(key): \(name) must be true or false") }
            self[keyPath: keyPath] = flag
        }
    }

    /// Applies `NAME=VALUE` assignments (`priority=N`, `nofailover=true|false`, `nosync=true|false`);
    /// any invalid one is an error and nothing changes.
    public func setting(_ assignments: [String]) throws(ValidationProblem) -> NodeTags {
        var next = self
        guard !assignments.isEmpty else { throw ValidationProblem("nothing to set: give priority=N, nofailover=true|false or nosync=true|false") }
        for assignment in assignments {
            guard let equals = assignment.firstIndex(of: "=") else { throw ValidationProblem("\(Quote.show(assignment)) is not NAME=VALUE") }
            let name = String(assignment[..<equals])
            let value = String(assignment[assignment.index(after: equals)...])
            switch name {
            case "priority":
                guard let n = Int(value), (0...1000).contains(n) else {
                    throw ValidationProblem("priority \(Quote.show(value)) must be an integer from 0 (never promoted) to 1000")
                }
                next.priority = n
            case "nofailover", "nosync":
                guard value == "true" || value == "false" else { throw ValidationProblem("\(name) must be true or false, not \(Quote.show(value))") }
                if name == "nofailover" { next.noFailover = value == "true" } else { next.noSync = value == "true" }
            default:
                throw ValidationProblem("unknown tag \(Quote.show(name)); the tags are priority, nofailover, nosync")
            }
        }
        return next
    }

    /// The priority failover ranks a node with: 0 (never promoted) when tagged nofailover.
    public func failoverPriority(registered: Int) -> Int { noFailover ? 0 : priority ?? registered }

    /// The tags as `baton status` shows them.
    public var summary: String {
        var parts: [String] = []
        if noFailover { parts.append("nofailover") }
        if noSync { parts.append("nosync") }
        if let priority { parts.append("priority=\(priority)") }
        return parts.joined(separator: ",")
    }
}
