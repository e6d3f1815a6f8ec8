import BatonConsulStore
import BatonHTTP
import ConsulAPI
import Foundation
import Synchronization

/// The ways a real Consul misbehaves in everyday operation, played by the embedded server on request
/// (`baton consul serve --fault-control ADDR`, off by default): for tests, the lab and operators'
/// drills. Served on a listener of its own that only a loopback address may carry, never on the
/// Consul API port.
///
/// - election: every call answers 500 "No cluster leader" (reads with `?stale` are still served, as a
///   follower serves them, with `X-Consul-KnownLeader: false`); session timers stop meanwhile and
///   start afresh when it ends, as under a new Consul leader.
/// - hang: calls are held until the hang ends, then served.
/// - slow: every answer comes a given delay late (an overloaded server, an election holding RPCs).
/// - agent-restart: the sessions of a Consul node are invalidated, as a restarted agent does: their
///   locks are released.
public final class FaultControl: Sendable {
    struct Active: Sendable {
        var electionUntil: ContinuousClock.Instant?
        var hangUntil: ContinuousClock.Instant?
        var slow: (delay: Duration, until: ContinuousClock.Instant)?
    }

    private let active = Mutex(Active())
    /// Requests served on the Consul API since the start: what a cluster at rest costs Consul.
    private let served = Atomic<UInt64>(0)
    let store: Store

    /// Requests served on the Consul API so far.
    public var requestsServed: UInt64 { served.load(ordering: .relaxed) }

    init(store: Store) { self.store = store }

    /// What the fault in force does to one request: an answer instead of serving it, or nothing after
    /// holding it as long as the fault says.
    func gate(_ request: APIRequest, stale: Bool) async -> APIResponse? {
        served.add(1, ordering: .relaxed)
        let now = ContinuousClock.now
        let current = active.withLock { $0 }
        if let until = current.hangUntil, until > now {
            try? await Task.sleep(until: until, clock: .continuous)  // cancelled: the connection closed; nothing to answer
        }
        if let slow = current.slow, slow.until > now {
            try? await Task.sleep(for: slow.delay)  // cancelled: as above
        }
        if let until = current.electionUntil, until > .now, !stale {
            return .text(500, "No cluster leader")
        }
        return nil
    }

    /// Whether reads are answered without a known leader (the header `X-Consul-KnownLeader: false`).
    var leaderless: Bool {
        active.withLock { state in state.electionUntil.map { $0 > .now } ?? false }
    }

    /// A Consul leader election lasting `length`: session timers stop until it ends, then count afresh.
    public func election(for length: Duration) {
        let until = ContinuousClock.now + length
        active.withLock { $0.electionUntil = until }
        store.mutateRuntime { state in
            for id in state.sessions.keys { _ = state.renewSession(id, now: until) }
        }
    }

    public func hang(for length: Duration) {
        let until = ContinuousClock.now + length
        active.withLock { $0.hangUntil = until }
    }

    public func slow(by delay: Duration, for length: Duration) {
        let until = ContinuousClock.now + length
        active.withLock { $0.slow = (delay, until) }
    }

    /// Invalidates the sessions of Consul node `node` (all of them when `name` is nil, else only those
    /// whose name starts with it); returns their IDs.
    package func agentRestart(node: String, name: String?) async throws(APIError) -> [String] {
        let ids = try store.read { state in
            state.sessions.values.filter { $0.node == node && (name.map($0.name.hasPrefix) ?? true) }.map(\.id).sorted()
        }
        for id in ids {
            _ = try await store.write { s, index, _ in Plan(Operations.invalidateSession(s, id: id, index: index), ()) }
        }
        return ids
    }

    public func clear() { active.withLock { $0 = Active() } }

    /// The faults in force, as `GET /fault` shows them.
    var description: JSONValue {
        let now = ContinuousClock.now
        let state = active.withLock { $0 }
        func left(_ until: ContinuousClock.Instant?) -> JSONValue {
            guard let until, until > now else { return .null }
            return .string(GoDuration(until - now).description)
        }
        return .object([
            ("election", left(state.electionUntil)), ("hang", left(state.hangUntil)),
            ("slow", state.slow.map { $0.until > now ? JSONValue.string(GoDuration($0.delay).description) : .null } ?? .null),
            ("slow_for", left(state.slow?.until)), ("requests", .int(served.load(ordering: .relaxed))),
        ])
    }

    // MARK: The control API

    /// `PUT /fault/election?for=5s`, `/fault/hang?for=5s`, `/fault/slow?delay=2s&for=10s`,
    /// `/fault/agent-restart?node=N[&name=PREFIX]`, `/fault/clear`; `GET /fault`.
    func handle(_ request: APIRequest) async -> APIResponse {
        let query = QueryParameters(request.query)
        func duration(_ name: String, max: Duration = .seconds(600)) throws(APIError) -> Duration {
            guard let text = query.value(name) else { throw APIError(400, "missing ?\(name)= (a Go duration such as 5s)") }
            let parsed: GoDuration
            do { parsed = try GoDuration(parsing: text) } catch { throw APIError(400, "?\(name)=\(text): \(error.message)") }
            guard parsed > .zero, parsed.swiftDuration <= max else { throw APIError(400, "?\(name)=\(text) must be more than 0 and at most \(GoDuration(max))") }
            return parsed.swiftDuration
        }
        do throws(APIError) {
            switch (request.method, request.path) {
            case ("GET", "/fault"):
                return .json(description)
            case ("PUT", "/fault/election"):
                election(for: try duration("for"))
            case ("PUT", "/fault/hang"):
                hang(for: try duration("for"))
            case ("PUT", "/fault/slow"):
                let delay = try duration("delay", max: .seconds(60))
                slow(by: delay, for: try duration("for"))
            case ("PUT", "/fault/agent-restart"):
                guard let node = query.value("node"), !node.isEmpty else { throw APIError(400, "missing ?node= (the Consul node whose agent restarts)") }
                let ids = try await agentRestart(node: node, name: query.value("name"))
                return .json(.object([("invalidated", .array(ids.map(JSONValue.string)))]))
            case ("PUT", "/fault/clear"):
                clear()
            case (_, let path) where path.hasPrefix("/fault"):
                return .text(405, "use GET /fault or PUT /fault/{election,hang,slow,agent-restart,clear}")
            default:
                return .text(404, "not a fault-control endpoint: GET /fault, PUT /fault/{election,hang,slow,agent-restart,clear}")
            }
        } catch {
            return .text(error.status, error.message)
        }
        return .json(description)
    }
}
