import BatonHTTP
import BatonConsulStore
import ConsulAPI
import Foundation

extension APIResponse {
    static func json(_ value: JSONValue, headers: [(String, String)] = []) -> APIResponse {
        APIResponse(status: 200, headers: headers + [("Content-Type", "application/json")], body: value.serializedBytes())
    }
}

/// A request's query string, decoded the way Go's `url.ParseQuery` does.
struct QueryParameters: Sendable {
    let raw: String
    let pairs: [(String, String)]

    init(_ raw: String) {
        self.raw = raw
        pairs = raw.split(separator: "&", omittingEmptySubsequences: true).map { part in
            let pieces = part.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            let name = KeyPath.unescape(String(pieces[0]), plusAsSpace: true) ?? String(pieces[0])
            let value = pieces.count > 1 ? KeyPath.unescape(String(pieces[1]), plusAsSpace: true) ?? String(pieces[1]) : ""
            return (name, value)
        }
    }

    /// Presence-only flags (`?recurse`, `?keys`, `?raw`…): any value turns them on.
    func has(_ name: String) -> Bool { pairs.contains { $0.0 == name } }
    func value(_ name: String) -> String? { pairs.first { $0.0 == name }?.1 }
    func values(_ name: String) -> [String] { pairs.filter { $0.0 == name }.map(\.1) }
}

/// The server's settings that the API reports or enforces.
public struct ServerSettings: Sendable {
    public var nodeName: String
    public var datacenter: String
    /// The shortest session TTL accepted (Consul's `session_ttl_min`).
    public var sessionTTLMin: GoDuration
    /// When set, every request must carry this token.
    public var aclToken: String?
    /// The address reported as the Raft leader and peer.
    public var advertiseAddress: String
    /// The largest KV value accepted (Consul's `kv_max_value_size`).
    public var maxValueSize: Int

    public init(
        nodeName: String = "node1", datacenter: String = "dc1", sessionTTLMin: GoDuration = .seconds(10), aclToken: String? = nil,
        advertiseAddress: String = "127.0.0.1", maxValueSize: Int = 524_288
    ) {
        self.nodeName = nodeName
        self.datacenter = datacenter
        self.sessionTTLMin = sessionTTLMin
        self.aclToken = aclToken
        self.advertiseAddress = advertiseAddress
        self.maxValueSize = maxValueSize
    }
}

/// Consul's HTTP API v1 over the ``Store``: routing, parameters, error texts and JSON shapes.
final class HTTPAPI: Sendable {
    let store: Store
    let settings: ServerSettings
    let nodeID: String
    let checkRunner: CheckRunner
    /// Faults played on request (``FaultControl``); nil unless the server was started with them.
    let faults: FaultControl?

    init(store: Store, settings: ServerSettings, nodeID: String, checkRunner: CheckRunner, faults: FaultControl?) {
        self.store = store
        self.settings = settings
        self.nodeID = nodeID
        self.checkRunner = checkRunner
        self.faults = faults
    }

    /// Context for one request.
    struct Call: Sendable {
        var request: APIRequest
        /// The decoded resource part of the path after the endpoint prefix.
        var rest: String
        var query: QueryParameters
    }

    func handle(_ request: APIRequest) async -> APIResponse {
        let target = request.uri
        let pathPart: Substring
        let queryPart: Substring
        if let mark = target.firstIndex(of: "?") {
            pathPart = target[..<mark]
            queryPart = target[target.index(after: mark)...]
        } else {
            pathPart = target[...]
            queryPart = ""
        }
        guard let path = KeyPath.unescape(String(pathPart)) else {
            return .text(400, "Invalid URL path: bad percent-encoding")
        }
        if path.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7F }) {
            return .text(400, "Invalid URL path: contains non-printable characters")
        }
        guard path.hasPrefix("/v1/") else { return .text(404, "404 page not found\n") }
        // Compared as bytes: Foundation's `contains` goes through NSString on every request.
        let bytes = path.utf8
        if bytes.contains("//".utf8) || bytes.contains("/./".utf8) || bytes.contains("/../".utf8) || path.hasSuffix("/..") || path.hasSuffix("/.") {
            return .text(400, "Invalid URL path: the path is not clean (contains '//', '.' or '..' segments)")
        }
        let query = QueryParameters(String(queryPart))
        if let required = settings.aclToken {
            guard let token = Self.token(of: request, query), !token.isEmpty else { return .text(403, "ACL not found") }
            guard constantTimeEqual(token, required) else { return .text(403, "ACL not found") }
        }
        if let dc = query.value("dc"), !dc.isEmpty, dc != settings.datacenter {
            return .text(500, "No path to datacenter")
        }
        if query.has("stale") && query.has("consistent") {
            return .text(400, "Cannot specify ?stale with ?consistent, conflicting semantics.")
        }
        guard let route = routes.first(where: { path == $0.prefix || ($0.isPrefix && path.hasPrefix($0.prefix)) }) else {
            return .text(404, "Invalid URL path: not a recognized HTTP API endpoint\n")
        }
        let allow = "OPTIONS," + route.methods.joined(separator: ",")
        if request.method == "OPTIONS" { return APIResponse(status: 200, headers: [("Allow", allow)], body: []) }
        guard route.methods.contains(request.method) else {
            return .text(405, "method \(request.method) not allowed", headers: [("Allow", allow)])
        }
        let call = Call(request: request, rest: String(path.dropFirst(route.prefix.count)), query: query)
        if let faults, let answer = await faults.gate(request, stale: request.method == "GET" && query.has("stale")) { return answer }
        do {
            return try await route.handler(self, call)
        } catch let error as APIError {
            return .text(error.status, error.message)
        } catch {
            return .text(500, "\(error)")
        }
    }

    static func token(of request: APIRequest, _ query: QueryParameters) -> String? {
        if let t = query.value("token") { return t }
        if let t = request.header("x-consul-token") { return t }
        if let auth = request.header("authorization") {
            let words = auth.split(separator: " ", omittingEmptySubsequences: true)
            if words.count >= 2, words[0].lowercased() == "bearer" { return String(words[1]) }
        }
        return nil
    }

    private func constantTimeEqual(_ a: String, _ b: String) -> Bool {
        let x = Array(a.utf8), y = Array(b.utf8)
        guard x.count == y.count else { return false }
        return zip(x, y).reduce(0) { $0 | ($1.0 ^ $1.1) } == 0
    }

    struct Route: Sendable {
        var prefix: String
        var isPrefix: Bool
        var methods: [String]
        var handler: @Sendable (HTTPAPI, Call) async throws -> APIResponse
    }

    let routes: [Route] = [
        Route(prefix: "/v1/kv/", isPrefix: true, methods: ["GET", "PUT", "DELETE"]) { api, call in
            try await api.kv(call)
        },
        Route(prefix: "/v1/txn", isPrefix: false, methods: ["PUT"]) { try await $0.transaction($1) },
        Route(prefix: "/v1/snapshot", isPrefix: false, methods: ["GET", "PUT"]) { api, call in
            call.request.method == "GET" ? try api.saveSnapshot(call) : try await api.restoreSnapshot(call)
        },
        Route(prefix: "/v1/session/create", isPrefix: false, methods: ["PUT"]) { try await $0.createSession($1) },
        Route(prefix: "/v1/session/destroy/", isPrefix: true, methods: ["PUT"]) { try await $0.destroySession($1) },
        Route(prefix: "/v1/session/renew/", isPrefix: true, methods: ["PUT"]) { try await $0.renewSession($1) },
        Route(prefix: "/v1/session/info/", isPrefix: true, methods: ["GET"]) { try await $0.sessionInfo($1) },
        Route(prefix: "/v1/session/list", isPrefix: false, methods: ["GET"]) { try await $0.sessionList($1) },
        Route(prefix: "/v1/session/node/", isPrefix: true, methods: ["GET"]) { try await $0.sessionNode($1) },
        Route(prefix: "/v1/agent/self", isPrefix: false, methods: ["GET"]) { api, _ in api.agentSelf() },
        Route(prefix: "/v1/agent/services", isPrefix: false, methods: ["GET"]) { api, _ in try api.agentServices() },
        Route(prefix: "/v1/agent/service/register", isPrefix: false, methods: ["PUT"]) { try await $0.registerService($1) },
        Route(prefix: "/v1/agent/service/deregister/", isPrefix: true, methods: ["PUT"]) { try await $0.deregisterService($1) },
        Route(prefix: "/v1/agent/service/", isPrefix: true, methods: ["GET"]) { api, call in try api.agentService(call) },
        Route(prefix: "/v1/agent/checks", isPrefix: false, methods: ["GET"]) { api, _ in try api.agentChecks() },
        Route(prefix: "/v1/agent/check/register", isPrefix: false, methods: ["PUT"]) { try await $0.registerCheck($1) },
        Route(prefix: "/v1/agent/check/deregister/", isPrefix: true, methods: ["PUT"]) { try await $0.deregisterCheck($1) },
        Route(prefix: "/v1/agent/check/pass/", isPrefix: true, methods: ["PUT"]) { try await $0.updateTTL($1, "passing") },
        Route(prefix: "/v1/agent/check/warn/", isPrefix: true, methods: ["PUT"]) { try await $0.updateTTL($1, "warning") },
        Route(prefix: "/v1/agent/check/fail/", isPrefix: true, methods: ["PUT"]) { try await $0.updateTTL($1, "critical") },
        Route(prefix: "/v1/agent/check/update/", isPrefix: true, methods: ["PUT"]) { try await $0.updateTTL($1, nil) },
        Route(prefix: "/v1/agent/members", isPrefix: false, methods: ["GET"]) { api, _ in .json(.array([api.member()])) },
        Route(prefix: "/v1/agent/join/", isPrefix: true, methods: ["PUT"]) { api, call in try api.join(call) },
        Route(prefix: "/v1/health/service/", isPrefix: true, methods: ["GET"]) { try await $0.healthService($1) },
        Route(prefix: "/v1/health/checks/", isPrefix: true, methods: ["GET"]) { try await $0.healthChecks($1) },
        Route(prefix: "/v1/health/state/", isPrefix: true, methods: ["GET"]) { try await $0.healthState($1) },
        Route(prefix: "/v1/health/node/", isPrefix: true, methods: ["GET"]) { try await $0.healthNode($1) },
        Route(prefix: "/v1/catalog/services", isPrefix: false, methods: ["GET"]) { try await $0.catalogServices($1) },
        Route(prefix: "/v1/catalog/service/", isPrefix: true, methods: ["GET"]) { try await $0.catalogService($1) },
        Route(prefix: "/v1/catalog/nodes", isPrefix: false, methods: ["GET"]) { try await $0.catalogNodes($1) },
        Route(prefix: "/v1/catalog/node/", isPrefix: true, methods: ["GET"]) { try await $0.catalogNode($1) },
        Route(prefix: "/v1/catalog/datacenters", isPrefix: false, methods: ["GET"]) { api, _ in
            .json(.array([.string(api.settings.datacenter)]))
        },
        Route(prefix: "/v1/status/leader", isPrefix: false, methods: ["GET"]) { api, _ in .json(.string(api.raftAddress)) },
        Route(prefix: "/v1/status/peers", isPrefix: false, methods: ["GET"]) { api, _ in .json(.array([.string(api.raftAddress)])) },
    ]

    var raftAddress: String { settings.advertiseAddress + ":8300" }

    // MARK: Shared helpers

    /// The headers every state-store read carries, 404s included.
    func indexHeaders(_ index: UInt64) -> [(String, String)] {
        [("X-Consul-Index", String(max(index, 1)))] + leaderHeaders
            + [("X-Consul-Default-Acl-Policy", settings.aclToken == nil ? "allow" : "deny")]
    }

    /// Whether a leader answers (not during a played election), on every read.
    var leaderHeaders: [(String, String)] {
        [("X-Consul-Knownleader", faults?.leaderless == true ? "false" : "true"), ("X-Consul-Lastcontact", "0")]
    }

    /// Reads `index` and `wait` as Consul does: 400 for malformed values, `wait` clamped to 10 minutes
    /// and defaulting to 5 minutes when absent or not positive.
    func blockingParameters(_ query: QueryParameters) throws(APIError) -> (index: UInt64, wait: Duration?) {
        var index: UInt64 = 0
        if let text = query.value("index") {
            guard let parsed = UInt64(text) else { throw APIError(400, "Invalid index") }
            index = parsed
        }
        var wait: GoDuration? = nil
        if let text = query.value("wait") {
            do { wait = try GoDuration(parsing: text) } catch { throw APIError(400, "Invalid wait time") }
        }
        guard index > 0 else { return (0, nil) }
        var effective = wait ?? .zero
        if effective <= .zero { effective = .seconds(300) }
        if effective > .seconds(600) { effective = .seconds(600) }
        return (index, effective.swiftDuration)
    }

    /// Runs a blocking read and renders its answer with the index headers.
    func blockingRead(
        _ call: Call, evaluate: @escaping (borrowing State) throws(APIError) -> (index: UInt64, missing: Bool, value: APIResponse)
    ) async throws(APIError) -> APIResponse {
        let (index, wait) = try blockingParameters(call.query)
        let (resultIndex, response) = try await store.blockingQuery(index: index, wait: wait, evaluate: evaluate)
        var out = response
        out.headers = indexHeaders(resultIndex) + out.headers
        return out
    }

    /// Parses a JSON body, with Consul's error text for one that is not JSON.
    func parseBody(_ request: APIRequest) throws(APIError) -> JSONValue? {
        guard !request.body.isEmpty else { return nil }
        do {
            return try JSONValue.parse(request.body)
        } catch {
            throw APIError(400, "Request decode failed: \(error.message)")
        }
    }

    func decodeFailure(_ field: String, expected: String, got: JSONValue) -> APIError {
        let kind: String
        switch got {
        case .number: kind = "number"
        case .string: kind = "string"
        case .bool: kind = "bool"
        case .array: kind = "array"
        case .object: kind = "object"
        case .null: kind = "null"
        }
        return APIError(400, "Request decode failed: json: cannot unmarshal \(kind) into Go struct field .\(field) of type \(expected)")
    }

    func requireString(_ json: JSONValue, _ names: [String]) throws(APIError) -> String? {
        guard let value = json.member(anyOf: names), !value.isNull else { return nil }
        guard let s = value.stringValue else { throw decodeFailure(names[0], expected: "string", got: value) }
        return s
    }

    func requireStrings(_ json: JSONValue, _ names: [String]) throws(APIError) -> [String]? {
        guard let value = json.member(anyOf: names), !value.isNull else { return nil }
        guard let items = value.arrayValue else { throw decodeFailure(names[0], expected: "[]string", got: value) }
        var out: [String] = []
        for item in items {
            guard let s = item.stringValue else { throw decodeFailure(names[0], expected: "string", got: item) }
            out.append(s)
        }
        return out
    }

    /// A duration field of a service or check definition: a duration string or nanoseconds.
    func requireDuration(_ json: JSONValue, _ names: [String]) throws(APIError) -> GoDuration? {
        guard let value = json.member(anyOf: names), !value.isNull else { return nil }
        if let ns = value.int64Value { return GoDuration(nanoseconds: ns) }
        guard let text = value.stringValue else { throw decodeFailure(names[0], expected: "time.Duration", got: value) }
        if text.isEmpty { return nil }
        do { return try GoDuration(parsing: text) } catch { throw APIError(400, "Request decode failed: \(error.message)") }
    }
}
