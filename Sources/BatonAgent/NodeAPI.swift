import BatonSettings
import BatonConsul
import BatonCore
import BatonFence
import BatonHTTP
import BatonSigning
import ConsulAPI
import Foundation
import Logging
import Synchronization

/// What the monitor publishes for its HTTP API each loop, and the failsafe promises the API makes for
/// the loop to keep. Shared by the loop (writer) and the API's handlers (readers).
public final class NodeState: Sendable {
    private let view: Mutex<NodeView>
    /// The last read of Consul, and whose monitors were reporting then (as this monitor judges it).
    private let lastSnapshot = Mutex<(snapshot: ClusterSnapshot, reporting: Set<NodeName>)?>(nil)
    let cluster: ClusterName
    /// Checks that a write (`POST /failsafe`) comes from a member of this cluster; nil: this node could
    /// not read its passfile, and refuses every write.
    let signer: NodeAPISigner?

    public init(node: NodeName, cluster: ClusterName, signer: NodeAPISigner? = nil) {
        view = Mutex(NodeView(node: node))
        self.cluster = cluster
        self.signer = signer
    }

    public var current: NodeView { view.withLock { $0 } }

    func update(_ body: (inout NodeView) -> Void) { view.withLock { body(&$0) } }

    func publish(_ snapshot: ClusterSnapshot, reporting: Set<NodeName>) { lastSnapshot.withLock { $0 = (snapshot, reporting) } }

    var snapshot: ClusterSnapshot? { lastSnapshot.withLock { $0?.snapshot } }

    /// What would happen if the primary died now, as this monitor sees the cluster.
    var explanation: FailoverExplanation? { lastSnapshot.withLock { last in last.map { FailoverExplanation(snapshot: $0.snapshot, live: $0.reporting) } } }

    /// A leader asks this node not to take over for a while (a member round); the answer, and the
    /// promise recorded when granted.
    func failsafe(from leader: NodeName, fenceAfter: GoDuration?, keyIndex: UInt64?) -> (granted: Bool, reason: String) {
        view.withLock { v in
            let now = MonotonicClock.nanoseconds()
            let answer = NodeHealth.failsafe(request: leader, fenceAfter: fenceAfter, keyIndex: keyIndex, view: v, now: now)
            if let grant = answer.grant { v.failsafeGrant = grant }
            return (answer.granted, answer.reason)
        }
    }
}

/// The monitor's HTTP API: health endpoints for load balancers (200 or 503), the cluster as `baton
/// status --json` shows it, Prometheus metrics, and the failsafe endpoint other members call. Served on
/// ``HTTPServer`` (SwiftNIO's codec, bounded connections and request size, optional TLS).
public enum NodeAPI {
    public static let maxBody = 64 << 10
    public static let maxConnections = 64

    /// Starts serving on the node's `api-listen`.
    /// - Parameters:
    ///   - events: reads the cluster's event history for `/cluster` (the monitor's snapshot does not
    ///     hold it; read only when asked).
    ///   - observe: looks at the local PostgreSQL now, for `/position` (a candidate about to take the
    ///     lock asks; the view may be a loop old).
    public static func serve(
        settings: BootstrapSettings, state: NodeState, metrics: @escaping @Sendable () -> String,
        events: @escaping @Sendable () async -> [KVPair], observe: @escaping @Sendable () async -> LocalPostgres,
        diagnostics: @escaping @Sendable () async -> JSONValue = { .object([]) }, logger: Logger
    ) async throws -> HTTPServer {
        let tls = settings.apiTLS.map { HTTPServer.TLSFiles(certificate: $0.certificate.value, key: $0.key.value, clientCA: $0.clientCA?.value) }
        let server = try await HTTPServer(
            host: settings.apiListen.host, port: settings.apiListen.port.value, limits: HTTPServer.Limits(maxBody: maxBody, maxConnections: maxConnections),
            tls: tls, logger: logger
        ) { request in
            if request.method == "GET", request.path == "/position" {
                return json(200, LivePosition.json(node: settings.node, local: await observe()))
            }
            if request.method == "GET", request.path == "/report" {
                // Logs and files of this node: for members only.
                if let refused = unsigned(request, state: state) { return refused }
                return json(200, await diagnostics())
            }
            return handle(request, state: state, metrics: metrics, events: ["/cluster", "/"].contains(request.path) ? await events() : [])
        }
        logger.info("Node API listening", metadata: ["api.address": "\(settings.apiListen.text)", "api.tls": "\(tls != nil)"])
        return server
    }

    static func json(_ status: Int, _ value: JSONValue) -> APIResponse {
        APIResponse(status: status, headers: [("Content-Type", "application/json")], body: value.serializedBytes() + [10])
    }

    /// A 401 unless a member of the cluster signed the request (``NodeAPISigner``); nil when it did.
    static func unsigned(_ request: APIRequest, state: NodeState) -> APIResponse? {
        guard let signer = state.signer else {
            return .text(401, "this node cannot check signatures (its passfile in the state directory is unreadable): it grants nothing\n")
        }
        if let refusal = signer.refusal(
            request.header("authorization"), method: request.method, path: request.path, body: request.body, now: Int64(Date().timeIntervalSince1970))
        {
            return .text(401, refusal + "\n")
        }
        return nil
    }

    /// One request; pure but for reading the state. `events`: the event history, read for `/cluster`.
    static func handle(_ request: APIRequest, state: NodeState, metrics: () -> String, events: [KVPair] = []) -> APIResponse {
        let path = request.path
        let view = state.current
        let method = request.method
        if NodeHealth.paths.contains(path) {
            guard method == "GET" || method == "HEAD" else { return .text(405, "use GET or HEAD\n", headers: [("Allow", "GET, HEAD")]) }
            let query = request.query.split(separator: "&").map { part -> (String, String) in
                let pieces = part.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
                return (String(pieces[0]), pieces.count > 1 ? String(pieces[1]) : "")
            }
            do {
                guard let answer = try NodeHealth.answer(path, query: query, view: view, now: MonotonicClock.nanoseconds()) else { return .text(404, "no such endpoint\n") }
                var response = json(
                    answer.status,
                    .object([("node", .string(view.node.value)), ("role", .string(MemberStatus(local: view.local, decision: "", time: 0).role)),
                        ("reason", .string(answer.reason))]))
                if method == "HEAD" { response.body = [] }
                return response
            } catch {
                return .text(400, "\(error.message)\n")
            }
        }
        switch (method, path) {
        case ("GET", "/cluster"):
            guard var snapshot = state.snapshot, let explanation = state.explanation else { return .text(503, "Consul has not been read yet\n") }
            snapshot.addEvents(events)
            // The status, and the verdict of `baton explain`: who would take over, each other node's reason.
            return json(200, .object(StatusView(snapshot: snapshot, cluster: state.cluster, events: 10).jsonMembers + [("explain", explanation.json)]))
        case ("GET", "/"):
            // The cluster at a glance, for a browser (``StatusPage``).
            guard var snapshot = state.snapshot, let explanation = state.explanation else {
                return APIResponse(
                    status: 503, headers: [("Content-Type", "text/html; charset=utf-8"), ("Refresh", "2")],
                    body: Array("<!DOCTYPE html><title>Baton</title><p>This node's monitor has not read Consul yet; this page refreshes itself.</p>\n".utf8))
            }
            snapshot.addEvents(events)
            let page = StatusPage.html(
                status: StatusView(snapshot: snapshot, cluster: state.cluster, events: 10), explanation: explanation, answeredBy: state.current.node,
                time: rfc3339Now())
            return APIResponse(status: 200, headers: [("Content-Type", "text/html; charset=utf-8"), ("Cache-Control", "no-store")], body: Array(page.utf8))
        case ("GET", "/metrics"):
            return APIResponse(status: 200, headers: [("Content-Type", "text/plain; version=0.0.4; charset=utf-8")], body: Array(metrics().utf8))
        case ("POST", "/failsafe"):
            // Only a member may ask for the promise: a forged request would hold a failover off.
            if let refused = unsigned(request, state: state) { return refused }
            // ignored: any malformed body or name gets the same 400, which says what is expected
            guard let body = try? JSONValue.parse(request.body), let text = body.member("leader")?.stringValue, let leader = try? NodeName(text) else {
                return .text(400, "expected {\"leader\": \"<node name>\", \"fence_after\": \"<Go duration>\", \"key_index\": <modify index>}\n")
            }
            // The leader's fence period, which the promise must outlast; a leader from before it was
            // sent gets this node's own.
            var fenceAfter: GoDuration? = nil
            if let field = body.member("fence_after"), !field.isNull {
                guard let text = field.stringValue, let period = try? GoDuration(parsing: text), period > .zero, period <= .seconds(86_400) else {
                    return .text(400, "fence_after must be a Go duration from 1ns to 24h, such as \"3s\"\n")
                }
                fenceAfter = period
            }
            // The index of the leader's last write of its key, which the promise covers; a leader from
            // before it was sent names none (its promise then never shortens a takeover).
            var keyIndex: UInt64? = nil
            if let field = body.member("key_index"), !field.isNull {
                guard let index = field.uint64Value, index > 0 else { return .text(400, "key_index must be a modify index (a positive integer)\n") }
                keyIndex = index
            }
            let (granted, reason) = state.failsafe(from: leader, fenceAfter: fenceAfter, keyIndex: keyIndex)
            return json(granted ? 200 : 409, .object([("granted", .bool(granted)), ("node", .string(view.node.value)), ("reason", .string(reason))]))
        case (_, "/cluster"), (_, "/metrics"), (_, "/position"):
            return .text(405, "use GET\n", headers: [("Allow", "GET")])
        case (_, "/failsafe"):
            return .text(405, "use POST\n", headers: [("Allow", "POST")])
        default:
            return .text(404, "no such endpoint; try /primary, /replica, /health, /cluster or /metrics\n")
        }
    }
}
