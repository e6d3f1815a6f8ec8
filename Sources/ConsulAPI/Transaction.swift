/// One KV operation of a Consul transaction (`PUT /v1/txn`): every operation of a transaction succeeds
/// together at one index, or none does (consul-api.md §3).
public struct KVOperation: Sendable, Equatable {
    public enum Verb: String, Sendable, CaseIterable {
        case set, cas, lock, unlock, get
        case getOrEmpty = "get-or-empty"
        case getTree = "get-tree"
        case checkIndex = "check-index"
        case checkSession = "check-session"
        case checkNotExists = "check-not-exists"
        case delete
        case deleteTree = "delete-tree"
        case deleteCAS = "delete-cas"

        /// Verbs that only read or check: a transaction of these alone writes nothing.
        public var readOnly: Bool {
            switch self {
            case .get, .getOrEmpty, .getTree, .checkIndex, .checkSession, .checkNotExists: return true
            default: return false
            }
        }
    }

    public var verb: Verb
    public var key: String
    public var value: [UInt8]?
    public var flags: UInt64
    /// The ModifyIndex `cas`, `check-index` and `delete-cas` compare with.
    public var index: UInt64
    /// The session `lock`, `unlock` and `check-session` name.
    public var session: String?

    public init(_ verb: Verb, _ key: String, value: [UInt8]? = nil, flags: UInt64 = 0, index: UInt64 = 0, session: String? = nil) {
        self.verb = verb
        self.key = key
        self.value = value
        self.flags = flags
        self.index = index
        self.session = session
    }

    /// `{"KV": {"Verb": …, "Key": …, "Value": base64, "Flags": …, "Index": …, "Session": …}}`.
    public var json: JSONValue {
        var members: [(String, JSONValue)] = [("Verb", .string(verb.rawValue)), ("Key", .string(key))]
        if let value { members.append(("Value", .string(Base64.encode(value)))) }
        if flags != 0 { members.append(("Flags", .int(flags))) }
        if index != 0 { members.append(("Index", .int(index))) }
        if let session { members.append(("Session", .string(session))) }
        return .object([("KV", .object(members))])
    }

    /// Reads one element of a transaction's body, as Consul decodes it (field names in any case).
    public init(json: JSONValue) throws(ConsulDecodingError) {
        guard case .object(let outer) = json else { throw ConsulDecodingError("each operation must be an object such as {\"KV\": {…}}") }
        guard let kv = outer.first(where: { $0.0.lowercased() == "kv" })?.1 else {
            let kinds = outer.map(\.0).joined(separator: ", ")
            throw ConsulDecodingError("only KV operations are served here (got \(kinds.isEmpty ? "an empty object" : kinds))")
        }
        guard case .object(let fields) = kv else { throw ConsulDecodingError("KV must be an object") }
        func field(_ name: String) -> JSONValue? { fields.first { $0.0.lowercased() == name.lowercased() }?.1 }
        guard let verbText = field("Verb")?.stringValue else { throw ConsulDecodingError("KV operation without a Verb") }
        guard let verb = Verb(rawValue: verbText) else { throw ConsulDecodingError("unknown KV verb \"\(verbText)\"") }
        let key = field("Key")?.stringValue ?? ""
        var value: [UInt8]? = nil
        if let encoded = field("Value"), !encoded.isNull {
            guard let text = encoded.stringValue, let bytes = Base64.decode(text) else { throw ConsulDecodingError("the Value of \(key) is not base64") }
            value = bytes
        }
        func unsigned(_ name: String) throws(ConsulDecodingError) -> UInt64 {
            guard let member = field(name), !member.isNull else { return 0 }
            guard let number = member.uint64Value else { throw ConsulDecodingError("\(name) must be an unsigned integer") }
            return number
        }
        self.init(
            verb, key, value: value, flags: try unsigned("Flags"), index: try unsigned("Index"),
            session: field("Session")?.stringValue.flatMap { $0.isEmpty ? nil : $0 })
    }
}

/// What a transaction did: every operation applied (with the entries its get/set verbs return), or
/// none, with why.
public enum TransactionOutcome: Sendable, Equatable {
    /// The entries in operation order (delete verbs return none); write verbs' entries carry no value.
    case committed([KVPair])
    /// The operations that failed (by their place in the transaction) and why.
    case rolledBack([TransactionError])
}

public struct TransactionError: Sendable, Equatable {
    public var operation: Int
    public var what: String
    public init(operation: Int, what: String) {
        self.operation = operation
        self.what = what
    }
}
