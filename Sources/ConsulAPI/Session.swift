/// What happens to the keys a session holds when the session is invalidated.
public enum SessionBehavior: String, Sendable, Equatable {
    /// The keys stay, unlocked (Consul's default).
    case release
    /// The keys are deleted (ephemeral keys).
    case delete
}

/// A Consul session as `/v1/session/info` reports it.
public struct SessionEntry: Sendable, Equatable {
    public var id: String
    public var name: String
    public var node: String
    /// Lock-delay armed on the session's keys when it is invalidated.
    public var lockDelay: GoDuration
    public var behavior: SessionBehavior
    /// The TTL exactly as the creator wrote it (`"15.0s"` stays `"15.0s"`); empty for no TTL.
    public var ttl: String
    public var nodeChecks: [String]
    public var serviceChecks: [String]?
    public var createIndex: UInt64
    public var modifyIndex: UInt64

    public init(
        id: String, name: String, node: String, lockDelay: GoDuration, behavior: SessionBehavior, ttl: String,
        nodeChecks: [String], serviceChecks: [String]?, createIndex: UInt64, modifyIndex: UInt64
    ) {
        self.id = id
        self.name = name
        self.node = node
        self.lockDelay = lockDelay
        self.behavior = behavior
        self.ttl = ttl
        self.nodeChecks = nodeChecks
        self.serviceChecks = serviceChecks
        self.createIndex = createIndex
        self.modifyIndex = modifyIndex
    }

    /// Every check whose going critical invalidates the session.
    public var allChecks: [String] { nodeChecks + (serviceChecks ?? []) }

    /// Consul's JSON shape; `LockDelay` is in nanoseconds.
    public var json: JSONValue {
        .object([
            ("ID", .string(id)),
            ("Name", .string(name)),
            ("Node", .string(node)),
            ("LockDelay", .int(lockDelay.nanoseconds)),
            ("Behavior", .string(behavior.rawValue)),
            ("TTL", .string(ttl)),
            ("NodeChecks", .array(nodeChecks.map { .string($0) })),
            (
                "ServiceChecks",
                serviceChecks.map { .array($0.map { .object([("ID", .string($0)), ("Namespace", .string(""))]) }) } ?? .null
            ),
            ("CreateIndex", .int(createIndex)),
            ("ModifyIndex", .int(modifyIndex)),
        ])
    }

    public init(json: JSONValue) throws(ConsulDecodingError) {
        guard let id = json.member("ID")?.stringValue else { throw ConsulDecodingError("session without an ID") }
        let behaviorText = json.member("Behavior")?.stringValue ?? "release"
        guard let behavior = SessionBehavior(rawValue: behaviorText) else {
            throw ConsulDecodingError("session \(id) has an unknown Behavior \(behaviorText)")
        }
        self.init(
            id: id, name: json.member("Name")?.stringValue ?? "", node: json.member("Node")?.stringValue ?? "",
            lockDelay: GoDuration(nanoseconds: json.member("LockDelay")?.int64Value ?? 0), behavior: behavior,
            ttl: json.member("TTL")?.stringValue ?? "",
            nodeChecks: json.member("NodeChecks")?.arrayValue?.compactMap(\.stringValue) ?? [],
            serviceChecks: json.member("ServiceChecks")?.arrayValue?.compactMap { $0.member("ID")?.stringValue },
            createIndex: json.member("CreateIndex")?.uint64Value ?? 0,
            modifyIndex: json.member("ModifyIndex")?.uint64Value ?? 0)
    }
}
