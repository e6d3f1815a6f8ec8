import ConsulAPI
import CoreMetrics
import Foundation
import Synchronization

/// How a read is served: Consul's consistency modes.
public enum Consistency: Sendable, Equatable {
    case `default`
    /// The leader confirms its leadership first: never stale.
    case consistent
    /// Any server answers from its copy.
    case stale
}

/// Options of a read: a blocking query when `index` is set.
public struct QueryOptions: Sendable, Equatable {
    /// Block until the result's index exceeds this one (0 = answer at once).
    public var index: UInt64
    /// How long a blocking query may wait (Consul caps it at 10 minutes and adds up to wait/16 jitter).
    public var wait: Duration
    public var consistency: Consistency

    public init(index: UInt64 = 0, wait: Duration = .seconds(60), consistency: Consistency = .default) {
        self.index = index
        self.wait = wait
        self.consistency = consistency
    }

    public static let immediate = QueryOptions()
    public static let consistent = QueryOptions(consistency: .consistent)
}

/// A read's value with the index to block on next.
public struct QueryResult<Value: Sendable>: Sendable {
    public var value: Value
    /// `X-Consul-Index`: pass it back as ``QueryOptions/index`` to wait for a change.
    public var index: UInt64
    public var knownLeader: Bool

    public init(value: Value, index: UInt64, knownLeader: Bool = true) {
        self.value = value
        self.index = index
        self.knownLeader = knownLeader
    }
}

/// The Consul HTTP API v1 client that every part of Baton shares.
///
/// Calls are async; a call that gets no answer from one address tries the next one given
/// (CONSUL_HTTP_ADDR may list several). Errors are ``ConsulError``s and never contain the token.
public final class ConsulClient: Sendable {
    public let configuration: ConsulConfiguration
    private let transport: any ConsulTransport
    /// The address that answered last; tried first next time.
    private let preferred = Mutex<Int>(0)

    /// A client that reaches Consul over the network (libcurl), at the configuration's addresses.
    public init(_ configuration: ConsulConfiguration) {
        self.configuration = configuration
        self.transport = CurlTransport(tls: configuration.tls)
    }

    /// A client whose requests `transport` carries (the embedded server in this process, for tests);
    /// the configuration still gives the timeouts, the token and the addresses named in requests.
    public init(_ configuration: ConsulConfiguration, transport: any ConsulTransport) {
        self.configuration = configuration
        self.transport = transport
    }

    /// Sends one call to Consul and returns its answer whatever the status; the caller interprets it.
    /// A `500` — what Consul answers while it elects a leader, or when a server cannot reach the
    /// leader — is asked again after 50, 100, 200… ms (at most 400) as long as the call's time allows
    /// (at least 100 ms left), as Consul's own clients do; the last answer is returned. A 500 that
    /// names a session that does not exist is returned at once: it would be the same answer again.
    /// - Throws: ``ConsulError`` `.unreachable` when no address answered.
    public func send(
        _ method: String, _ path: String, query: [(String, String?)] = [], body: [UInt8]? = nil,
        timeout: Duration? = nil
    ) async throws -> HTTPResponse {
        let budget = timeout ?? configuration.requestTimeout
        let deadline = ContinuousClock.now + budget
        var backoff = Duration.milliseconds(50)
        while true {
            let left = deadline - ContinuousClock.now
            let response = try await sendOnce(method, path, query: query, body: body, timeout: max(left, .milliseconds(100)))
            guard response.status == 500, !Self.namesMissingSession(response.text), deadline - ContinuousClock.now >= backoff + .milliseconds(100)
            else { return response }
            Self.retries.increment()
            try await Task.sleep(for: backoff)
            backoff = min(backoff * 2, .milliseconds(400))
        }
    }

    private func sendOnce(
        _ method: String, _ path: String, query: [(String, String?)], body: [UInt8]?, timeout: Duration
    ) async throws -> HTTPResponse {
        var queryText = ""
        for (i, (name, value)) in query.enumerated() {
            queryText += (i == 0 ? "?" : "&") + name
            if let value { queryText += "=" + KeyPath.escape(value, keepSlash: false) }
        }
        var headers: [(String, String)] = []
        if let token = configuration.token { headers.append(("X-Consul-Token", token.value)) }
        if body != nil { headers.append(("Content-Type", "application/json")) }
        let count = configuration.addresses.count
        let first = preferred.withLock { $0 }
        var failures: [String] = []
        let started = ContinuousClock.now
        defer { Self.duration.recordNanoseconds((ContinuousClock.now - started).nanosecondsCount) }
        for attempt in 0..<count {
            let which = (first + attempt) % count
            let address = configuration.addresses[which]
            let request = HTTPRequest(
                method: method, url: address.description + path + queryText, headers: headers, body: body, timeout: timeout)
            do {
                let response = try await transport.send(request)
                if attempt > 0 { preferred.withLock { $0 = which } }
                return response
            } catch let error as TransportError {
                failures.append("\(address): \(error.message)")
            }
        }
        Self.errors.increment()
        throw ConsulError(
            .unreachable,
            "Consul is unreachable (\(failures.joined(separator: "; "))); check that the agent runs and that CONSUL_HTTP_ADDR or --consul names it")
    }

    /// How long calls to Consul take, and how many found no Consul (swift-metrics; exported where a
    /// daemon bootstraps a backend).
    static let duration = CoreMetrics.Timer(label: "baton_consul_request_duration_seconds")
    static let errors = Counter(label: "baton_consul_request_errors_total")
    /// Calls asked again after Consul answered 500.
    static let retries = Counter(label: "baton_consul_request_retries_total")

    /// Whether an error answer says the session does not exist: a 500 that asking again cannot mend.
    static func namesMissingSession(_ text: String) -> Bool {
        text.contains("invalid session") || text.contains("Session id") && text.contains("not found")
    }

    /// Turns a non-success answer into a typed error.
    func failure(_ response: HTTPResponse, _ what: String) -> ConsulError {
        let text = response.text.trimmingCharacters(in: .whitespacesAndNewlines)
        let detail = text.isEmpty ? "" : ": \(text)"
        switch response.status {
        case 403:
            return ConsulError(.permissionDenied, status: 403, "Consul denied \(what) (permission denied\(detail)); check the ACL token's policy")
        case 400, 413:
            return ConsulError(.badRequest, status: response.status, "Consul rejected \(what) as a bad request\(detail)")
        case 404:
            return ConsulError(.notFound, status: 404, "Consul found nothing for \(what)\(detail)")
        default:
            if Self.namesMissingSession(text) {
                return ConsulError(.sessionNotFound, status: response.status, "\(what) failed: the session does not exist\(detail)")
            }
            return ConsulError(.server, status: response.status, "Consul failed \(what) (HTTP \(response.status)\(detail))")
        }
    }

    /// Sends a read, adding the blocking and consistency parameters, with a timeout that outlasts the
    /// server's wait plus its jitter.
    func read(_ path: String, _ options: QueryOptions, extra: [(String, String?)] = [], timeout limit: Duration? = nil) async throws -> HTTPResponse {
        var query = extra
        switch options.consistency {
        case .default: break
        case .consistent: query.append(("consistent", nil))
        case .stale: query.append(("stale", nil))
        }
        var timeout = limit ?? configuration.requestTimeout
        if options.index > 0 {
            let waitMS = options.wait.millisecondCount
            query.append(("index", String(options.index)))
            query.append(("wait", "\(max(waitMS, 1))ms"))
            timeout = options.wait + options.wait / 16 + .seconds(2)
        }
        return try await send("GET", path, query: query, timeout: timeout)
    }

    func index(of response: HTTPResponse) -> UInt64 {
        response.header("X-Consul-Index").flatMap(UInt64.init) ?? 0
    }

    func json(_ response: HTTPResponse, _ what: String) throws -> JSONValue {
        do {
            return try JSONValue.parse(response.body)
        } catch {
            throw ConsulError(.decoding, status: response.status, "Consul's answer to \(what) is not JSON (\(error))")
        }
    }

    func result<T>(_ response: HTTPResponse, _ value: T) -> QueryResult<T> {
        QueryResult(value: value, index: index(of: response), knownLeader: response.header("X-Consul-KnownLeader") != "false")
    }
}

// MARK: - Status

extension ConsulClient {
    /// The Raft leader's address (`""` when the cluster has no leader): a readiness probe.
    public func leader() async throws -> String {
        let response = try await send("GET", "/v1/status/leader")
        guard response.status == 200 else { throw failure(response, "reading the cluster leader") }
        return try json(response, "status/leader").stringValue ?? ""
    }

    /// The agent's own description (`/v1/agent/self`).
    public func agentSelf() async throws -> JSONValue {
        let response = try await send("GET", "/v1/agent/self")
        guard response.status == 200 else { throw failure(response, "reading agent/self") }
        return try json(response, "agent/self")
    }
}

extension Duration {
    var nanosecondsCount: Int64 { components.seconds * 1_000_000_000 + components.attoseconds / 1_000_000_000 }
}
