import ConsulAPI

/// A health check definition, for a service or on its own.
public struct CheckDefinition: Sendable, Equatable {
    public enum Kind: Sendable, Equatable {
        /// The owner must report pass/warn/fail within every `ttl`, or the check goes critical.
        case ttl(GoDuration)
        /// The agent GETs the URL every `interval`: 2xx passing, 429 warning, else critical.
        case http(url: String, interval: GoDuration, timeout: GoDuration?)
        /// The agent connects to `host:port` every `interval`.
        case tcp(address: String, interval: GoDuration, timeout: GoDuration?)
    }

    public var id: String?
    public var name: String
    public var kind: Kind
    public var serviceID: String?
    /// The initial status; Consul starts checks critical unless told otherwise.
    public var status: String?
    public var deregisterCriticalServiceAfter: GoDuration?

    public init(
        id: String? = nil, name: String, kind: Kind, serviceID: String? = nil, status: String? = nil,
        deregisterCriticalServiceAfter: GoDuration? = nil
    ) {
        self.id = id
        self.name = name
        self.kind = kind
        self.serviceID = serviceID
        self.status = status
        self.deregisterCriticalServiceAfter = deregisterCriticalServiceAfter
    }

    var json: JSONValue {
        var members: [(String, JSONValue)] = [("Name", .string(name))]
        if let id { members.append(("CheckID", .string(id))) }
        switch kind {
        case .ttl(let ttl):
            members.append(("TTL", .string(ttl.description)))
        case .http(let url, let interval, let timeout):
            members.append(("HTTP", .string(url)))
            members.append(("Interval", .string(interval.description)))
            if let timeout { members.append(("Timeout", .string(timeout.description))) }
        case .tcp(let address, let interval, let timeout):
            members.append(("TCP", .string(address)))
            members.append(("Interval", .string(interval.description)))
            if let timeout { members.append(("Timeout", .string(timeout.description))) }
        }
        if let serviceID { members.append(("ServiceID", .string(serviceID))) }
        if let status { members.append(("Status", .string(status))) }
        if let after = deregisterCriticalServiceAfter {
            members.append(("DeregisterCriticalServiceAfter", .string(after.description)))
        }
        return .object(members)
    }
}

/// A service to register with the local agent.
public struct ServiceRegistration: Sendable, Equatable {
    public var id: String?
    public var name: String
    public var tags: [String]
    public var address: String?
    public var port: Int?
    public var meta: [String: String]
    public var checks: [CheckDefinition]

    public init(
        id: String? = nil, name: String, tags: [String] = [], address: String? = nil, port: Int? = nil,
        meta: [String: String] = [:], checks: [CheckDefinition] = []
    ) {
        self.id = id
        self.name = name
        self.tags = tags
        self.address = address
        self.port = port
        self.meta = meta
        self.checks = checks
    }

    var json: JSONValue {
        var members: [(String, JSONValue)] = [("Name", .string(name)), ("Tags", .array(tags.map { .string($0) }))]
        if let id { members.append(("ID", .string(id))) }
        if let address { members.append(("Address", .string(address))) }
        if let port { members.append(("Port", .int(port))) }
        if !meta.isEmpty { members.append(("Meta", .object(meta.sorted { $0.key < $1.key }.map { ($0.key, .string($0.value)) }))) }
        if !checks.isEmpty { members.append(("Checks", .array(checks.map(\.json)))) }
        return .object(members)
    }
}

/// A TTL check's status as its owner reports it.
public enum CheckStatus: String, Sendable, Equatable {
    case passing, warning, critical
}

/// One instance of a service with the checks that bear on it, from `/v1/health/service`.
public struct ServiceHealth: Sendable, Equatable {
    public var node: String
    public var nodeAddress: String
    public var serviceID: String
    public var serviceName: String
    public var serviceAddress: String
    public var servicePort: Int
    public var tags: [String]
    /// Check ID → status, node checks (serfHealth) included.
    public var checks: [String: String]

    init(json: JSONValue) {
        node = json.member("Node")?.member("Node")?.stringValue ?? ""
        nodeAddress = json.member("Node")?.member("Address")?.stringValue ?? ""
        let service = json.member("Service")
        serviceID = service?.member("ID")?.stringValue ?? ""
        serviceName = service?.member("Service")?.stringValue ?? ""
        serviceAddress = service?.member("Address")?.stringValue ?? ""
        servicePort = Int(service?.member("Port")?.int64Value ?? 0)
        tags = service?.member("Tags")?.arrayValue?.compactMap(\.stringValue) ?? []
        var checks: [String: String] = [:]
        for check in json.member("Checks")?.arrayValue ?? [] {
            if let id = check.member("CheckID")?.stringValue { checks[id] = check.member("Status")?.stringValue ?? "" }
        }
        self.checks = checks
    }
}

extension ConsulClient {
    private func agentPut(_ path: String, body: JSONValue? = nil, query: [(String, String?)] = [], _ what: String) async throws {
        let response = try await send("PUT", path, query: query, body: body?.serializedBytes())
        guard response.status == 200 else { throw failure(response, what) }
    }

    /// Registers (or replaces) a service and its checks with the local agent.
    public func registerService(_ service: ServiceRegistration) async throws {
        try await agentPut("/v1/agent/service/register", body: service.json, "registering service \(service.name)")
    }

    /// Removes a service and its checks from the local agent.
    public func deregisterService(_ id: String) async throws {
        try await agentPut("/v1/agent/service/deregister/" + KeyPath.escape(id, keepSlash: false), "deregistering service \(id)")
    }

    /// Registers a check with the local agent.
    public func registerCheck(_ check: CheckDefinition) async throws {
        try await agentPut("/v1/agent/check/register", body: check.json, "registering check \(check.name)")
    }

    public func deregisterCheck(_ id: String) async throws {
        try await agentPut("/v1/agent/check/deregister/" + KeyPath.escape(id, keepSlash: false), "deregistering check \(id)")
    }

    /// Reports a TTL check's status, resetting its timer.
    public func updateTTL(_ checkID: String, _ status: CheckStatus, note: String = "") async throws {
        let verb = status == .passing ? "pass" : status == .warning ? "warn" : "fail"
        try await agentPut(
            "/v1/agent/check/\(verb)/" + KeyPath.escape(checkID, keepSlash: false), query: note.isEmpty ? [] : [("note", note)],
            "reporting check \(checkID) \(status.rawValue)")
    }

    /// The instances of `service`, optionally only those whose every check passes and that carry `tag`.
    public func healthService(_ service: String, passing: Bool = false, tag: String? = nil, _ options: QueryOptions = .immediate)
        async throws -> QueryResult<[ServiceHealth]>
    {
        var extra: [(String, String?)] = []
        if passing { extra.append(("passing", "1")) }
        if let tag { extra.append(("tag", tag)) }
        let response = try await read("/v1/health/service/" + KeyPath.escape(service, keepSlash: false), options, extra: extra)
        guard response.status == 200 else { throw failure(response, "reading the health of service \(service)") }
        return result(response, try json(response, "health/service").arrayValue?.map(ServiceHealth.init(json:)) ?? [])
    }

    /// Every service in the catalog with the union of its tags.
    public func catalogServices(_ options: QueryOptions = .immediate) async throws -> QueryResult<[String: [String]]> {
        let response = try await read("/v1/catalog/services", options)
        guard response.status == 200 else { throw failure(response, "listing catalog services") }
        var services: [String: [String]] = [:]
        for (name, tags) in try json(response, "catalog/services").objectValue ?? [] {
            services[name] = tags.arrayValue?.compactMap(\.stringValue) ?? []
        }
        return result(response, services)
    }
}
