import ConsulAPI

/// One node's entry in `keepalived/nodes`.
public struct KeepalivedNode: Sendable, Equatable {
    public var name: NodeName
    public var priority: Int
    /// The last VRRP state keepalived reported (MASTER, BACKUP, FAULT, STOP), if any.
    public var state: String?
    /// When that state was reported (RFC 3339).
    public var stateTime: String?
    /// The order keepalived raised the notifications in (see ``VRRPNotification/sequence``): a late,
    /// older notification never overwrites a newer state.
    public var stateSequence: UInt64?

    public init(name: NodeName, priority: Int, state: String? = nil, stateTime: String? = nil, stateSequence: UInt64? = nil) {
        self.name = name
        self.priority = priority
        self.state = state
        self.stateTime = stateTime
        self.stateSequence = stateSequence
    }
}

/// The Consul key `keepalived/nodes`: every node's keepalived priority, in one check-and-set key so
/// that concurrent joins never take the same priority.
public struct KeepalivedNodes: Sendable, Equatable {
    public var nodes: [KeepalivedNode]

    public init(nodes: [KeepalivedNode] = []) { self.nodes = nodes }

    /// Priorities Baton hands out: the first node takes `top`; each later node takes `step` below the
    /// lowest existing priority, down to `floor`. keepalived accepts 1–254 (255 is reserved for the
    /// address owner), so 200, 190, … 10 leave room for 20 nodes and for an operator's manual tweaks.
    public static let top = 200
    public static let step = 10
    public static let floor = 10

    public func node(_ name: NodeName) -> KeepalivedNode? { nodes.first { $0.name == name } }

    public var json: JSONValue {
        .object([
            (
                "nodes",
                .array(
                    nodes.map { n in
                        var members: [(String, JSONValue)] = [("name", .string(n.name.value)), ("priority", .int(n.priority))]
                        if let s = n.state { members.append(("state", .string(s))) }
                        if let t = n.stateTime { members.append(("state_time", .string(t))) }
                        if let q = n.stateSequence { members.append(("state_seq", .int(q))) }
                        return .object(members)
                    })
            )
        ])
    }

    /// Reads the key; a missing or empty key is an empty list. Every entry is validated.
    public init(bytes: [UInt8]?, key: String) throws(ValidationProblem) {
        guard let bytes, !bytes.isEmpty else {
            self.init()
            return
        }
        let json = try Record.object(bytes, key: key)
        guard let items = json.member("nodes")?.arrayValue else {
            throw ValidationProblem("Consul key \(key): expected {\"nodes\": [...]}")
        }
        var nodes: [KeepalivedNode] = []
        for item in items {
            let name = try NodeName(try Record.string(item, "name", key: key), field: "\(key) node name")
            let priority = try Record.int(item, "priority", key: key)
            guard (1...254).contains(priority) else {
                throw ValidationProblem("Consul key \(key): node \(name) has priority \(priority); keepalived accepts 1 to 254")
            }
            let state = item.member("state")?.stringValue
            if let state, !VRRPNotification.states.contains(state) {
                throw ValidationProblem("Consul key \(key): node \(name) has an unknown VRRP state \(Quote.show(state))")
            }
            guard !nodes.contains(where: { $0.name == name }) else { throw ValidationProblem("Consul key \(key) lists node \(name) twice") }
            guard !nodes.contains(where: { $0.priority == priority }) else {
                throw ValidationProblem("Consul key \(key) gives priority \(priority) to two nodes")
            }
            let sequence = item.member("state_seq")
            if let sequence, sequence.uint64Value == nil { throw ValidationProblem("Consul key \(key): node \(name) has a state_seq that is not a number") }
            nodes.append(
                KeepalivedNode(
                    name: name, priority: priority, state: state, stateTime: item.member("state_time")?.stringValue,
                    stateSequence: sequence?.uint64Value))
        }
        self.init(nodes: nodes)
    }

    /// The priority `name` gets: its existing one (a rerun changes nothing), `top` for the first node,
    /// or `step` below every other node's.
    /// - Returns: the priority and the new value of the key, or `nil` for the value when nothing changes.
    /// - Throws: when no priority is left above `floor`.
    public func allocating(_ name: NodeName) throws(ValidationProblem) -> (priority: Int, updated: KeepalivedNodes?) {
        if let existing = node(name) { return (existing.priority, nil) }
        let priority = nodes.map(\.priority).min().map { $0 - Self.step } ?? Self.top
        guard priority >= Self.floor else {
            throw ValidationProblem(
                "no keepalived priority is left for \(name): the lowest taken is \(nodes.map(\.priority).min() ?? 0) and Baton allocates down to \(Self.floor) in steps of \(Self.step); remove departed nodes from keepalived/nodes")
        }
        var updated = self
        updated.nodes.append(KeepalivedNode(name: name, priority: priority))
        return (priority, updated)
    }
}
