import ConsulAPI

/// What to create a session with.
public struct SessionRequest: Sendable, Equatable {
    public var name: String
    /// Consul invalidates the session between `ttl` and 2×`ttl` after its last renewal; `nil` for none.
    public var ttl: GoDuration?
    /// After invalidation no one may acquire the session's keys for this long (Consul's default is 15 s).
    public var lockDelay: GoDuration
    public var behavior: SessionBehavior
    /// Node checks that invalidate the session when critical; `[]` for a TTL-only session.
    public var nodeChecks: [String]
    /// Service checks (by check ID) that invalidate the session when critical.
    public var serviceChecks: [String]
    public var node: String?

    public init(
        name: String, ttl: GoDuration? = nil, lockDelay: GoDuration = .seconds(15),
        behavior: SessionBehavior = .release, nodeChecks: [String] = ["serfHealth"], serviceChecks: [String] = [],
        node: String? = nil
    ) {
        self.name = name
        self.ttl = ttl
        self.lockDelay = lockDelay
        self.behavior = behavior
        self.nodeChecks = nodeChecks
        self.serviceChecks = serviceChecks
        self.node = node
    }

    var json: JSONValue {
        var members: [(String, JSONValue)] = [
            ("Name", .string(name)),
            ("LockDelay", .string(lockDelay.description)),
            ("Behavior", .string(behavior.rawValue)),
            ("NodeChecks", .array(nodeChecks.map { .string($0) })),
        ]
        if let ttl { members.append(("TTL", .string(ttl.description))) }
        if !serviceChecks.isEmpty {
            members.append(("ServiceChecks", .array(serviceChecks.map { .object([("ID", .string($0))]) })))
        }
        if let node { members.append(("Node", .string(node))) }
        return .object(members)
    }
}

extension ConsulClient {
    private func sessionPath(_ verb: String, _ id: String) throws -> String {
        guard !id.isEmpty, id.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "-" }) else {
            throw ConsulError(.invalidArgument, "\"\(id)\" is not a session ID")
        }
        return "/v1/session/\(verb)/\(id)"
    }

    /// Creates a session and returns its ID.
    public func createSession(_ request: SessionRequest) async throws -> String {
        let response = try await send("PUT", "/v1/session/create", body: request.json.serializedBytes())
        guard response.status == 200 else { throw failure(response, "creating session \(request.name)") }
        guard let id = try json(response, "session create").member("ID")?.stringValue else {
            throw ConsulError(.decoding, "Consul created a session but returned no ID")
        }
        return id
    }

    /// Renews a session's TTL.
    /// - Throws: ``ConsulError`` `.sessionNotFound` when Consul no longer knows the session: whoever
    ///   held locks with it has lost them.
    @discardableResult
    public func renewSession(_ id: String) async throws -> SessionEntry {
        let response = try await send("PUT", try sessionPath("renew", id))
        if response.status == 404 {
            throw ConsulError(.sessionNotFound, status: 404, "session \(id) no longer exists; its locks are gone")
        }
        guard response.status == 200 else { throw failure(response, "renewing session \(id)") }
        guard let first = try json(response, "session renew").arrayValue?.first else {
            throw ConsulError(.decoding, "Consul renewed session \(id) but returned no session")
        }
        return try SessionEntry(json: first)
    }

    /// Destroys a session, releasing or deleting its keys (an unknown session is not an error).
    public func destroySession(_ id: String) async throws {
        let response = try await send("PUT", try sessionPath("destroy", id))
        guard response.status == 200 else { throw failure(response, "destroying session \(id)") }
    }

    /// The session, or `nil` when it does not exist.
    public func sessionInfo(_ id: String, _ options: QueryOptions = .immediate) async throws -> QueryResult<SessionEntry?> {
        let response = try await read(try sessionPath("info", id), options)
        guard response.status == 200 else { throw failure(response, "reading session \(id)") }
        let first = try json(response, "session info").arrayValue?.first
        return result(response, try first.map { (item) throws -> SessionEntry in try SessionEntry(json: item) })
    }

    /// Every session in the datacenter.
    public func listSessions(_ options: QueryOptions = .immediate) async throws -> QueryResult<[SessionEntry]> {
        let response = try await read("/v1/session/list", options)
        guard response.status == 200 else { throw failure(response, "listing sessions") }
        var sessions: [SessionEntry] = []
        for item in try json(response, "session list").arrayValue ?? [] { sessions.append(try SessionEntry(json: item)) }
        return result(response, sessions)
    }
}
