import ConsulAPI

/// One keepalived notification, as its notify script receives it: `TYPE NAME STATE PRIORITY`.
public struct VRRPNotification: Sendable, Equatable {
    public static let states: Set<String> = ["MASTER", "BACKUP", "FAULT", "STOP", "DELETED"]

    public var type: String
    public var instance: String
    public var state: String
    public var priority: Int
    /// The order keepalived raised notifications in. keepalived forks notify scripts in event order but
    /// they run concurrently, so a later process may reach Consul first; the fork order survives in the
    /// process's start time (clock ticks since boot) and, within one tick, in its PID.
    public var sequence: UInt64

    /// Validates keepalived's four arguments; anything else is an error and nothing is written.
    public init(arguments: [String], sequence: UInt64) throws(ValidationProblem) {
        guard arguments.count == 4 else {
            throw ValidationProblem("expected TYPE NAME STATE PRIORITY (keepalived's notify arguments), got \(arguments.count) argument(s)")
        }
        guard ["INSTANCE", "GROUP"].contains(arguments[0]) else {
            throw ValidationProblem("TYPE \(Quote.show(arguments[0])) must be INSTANCE or GROUP")
        }
        guard !arguments[1].isEmpty, arguments[1].count <= 64,
            arguments[1].unicodeScalars.allSatisfy({ $0.properties.isAlphabetic && $0.isASCII || ("0"..."9").contains($0) || "_-.".unicodeScalars.contains($0) })
        else { throw ValidationProblem("NAME \(Quote.show(arguments[1])) is not a VRRP instance name") }
        guard Self.states.contains(arguments[2]) else {
            throw ValidationProblem("STATE \(Quote.show(arguments[2])) must be one of \(Self.states.sorted().joined(separator: ", "))")
        }
        guard let priority = Int(arguments[3]), (0...255).contains(priority) else {
            throw ValidationProblem("PRIORITY \(Quote.show(arguments[3])) must be a number from 0 to 255")
        }
        type = arguments[0]
        instance = arguments[1]
        state = arguments[2]
        self.priority = priority
        self.sequence = sequence
    }

    /// The notification as `baton notify` keeps it for the monitor: `TYPE NAME STATE PRIORITY SEQUENCE`.
    public var spoolText: String { "\(type) \(instance) \(state) \(priority) \(sequence)\n" }

    /// Reads what ``spoolText`` wrote.
    public init(spool text: String) throws(ValidationProblem) {
        let fields = text.split(separator: " ").map { $0.trimmingCharacters(in: .whitespacesAndNewlines) }
        guard fields.count == 5, let sequence = UInt64(fields[4]) else { throw ValidationProblem("not a kept VRRP notification: \(Quote.show(text))") }
        try self.init(arguments: Array(fields.prefix(4)), sequence: sequence)
    }

    /// A notification's order from its process's start time and PID (PIDs fit in 22 bits on Linux).
    public static func sequence(startTicks: UInt64, pid: Int32) -> UInt64 { startTicks << 22 | UInt64(UInt32(pid) & 0x3F_FFFF) }

    /// `keepalived/nodes` with this notification applied to `node`, or `nil` when the stored state is
    /// newer (a late notification) or already this one.
    /// - Throws: when `node` has no entry (it was never bootstrapped).
    public func applied(to nodes: KeepalivedNodes, node: NodeName, time: String) throws(ValidationProblem) -> KeepalivedNodes? {
        guard let index = nodes.nodes.firstIndex(where: { $0.name == node }) else {
            throw ValidationProblem("node \(node) has no entry in keepalived/nodes; run `baton bootstrap` on it first")
        }
        let current = nodes.nodes[index]
        if let stored = current.stateSequence, stored >= sequence { return nil }
        var updated = nodes
        updated.nodes[index].state = state == "DELETED" ? "STOP" : state
        updated.nodes[index].stateTime = time
        updated.nodes[index].stateSequence = sequence
        return updated
    }
}

/// One entry of the cluster's bounded event history (``ClusterKeys/eventsPrefix``).
public struct ClusterEvent: Sendable, Equatable {
    public var time: String
    public var node: NodeName
    public var kind: String
    public var detail: String

    public init(time: String, node: NodeName, kind: String, detail: String) {
        self.time = time
        self.node = node
        self.kind = kind
        self.detail = detail
    }

    public var json: JSONValue {
        .object([("time", .string(time)), ("node", .string(node.value)), ("kind", .string(kind)), ("detail", .string(detail))])
    }

    /// Parses an event's key (its value; the key names its time).
    public init(pair: KVPair) throws(ValidationProblem) {
        guard let json = try? JSONValue.parse(pair.value ?? []), let node = try? NodeName(json.member("node")?.stringValue ?? "") else {
            throw ValidationProblem("Consul key \(pair.key) is not an event")
        }
        self.init(
            time: json.member("time")?.stringValue ?? "", node: node, kind: json.member("kind")?.stringValue ?? "",
            detail: json.member("detail")?.stringValue ?? "")
    }

    /// Keys sort by time: nanoseconds since the epoch, zero-padded, then the node.
    public static func key(prefix: String, nanoseconds: UInt64, node: NodeName) -> String {
        let digits = String(nanoseconds)
        return prefix + String(repeating: "0", count: max(0, 20 - digits.count)) + digits + "-" + node.value
    }

    /// The oldest keys to delete so that at most `keep` remain.
    public static func keysToPrune(_ keys: [String], keep: Int) -> [String] {
        let sorted = keys.sorted()
        return Array(sorted.prefix(max(0, sorted.count - keep)))
    }
}
