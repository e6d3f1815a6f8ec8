import BatonHTTP
import BatonConsulStore
import ConsulAPI

extension HTTPAPI {
    /// Reads a session-create body with Consul's defaults, fix-ups and error texts (consul-api.md §4.1).
    func parseSessionRequest(_ body: JSONValue?) throws(APIError) -> SessionEntry {
        var session = SessionEntry(
            id: "", name: "", node: settings.nodeName, lockDelay: .seconds(15), behavior: .release, ttl: "",
            nodeChecks: ["serfHealth"], serviceChecks: nil, createIndex: 0, modifyIndex: 0)
        guard let body else { return session }
        guard body.objectValue != nil else { throw decodeFailure("Session", expected: "structs.Session", got: body) }
        if let name = try requireString(body, ["Name"]) { session.name = name }
        if let node = try requireString(body, ["Node"]), !node.isEmpty { session.node = node }
        if let delay = body.member("LockDelay"), !delay.isNull {
            var parsed: GoDuration
            if let ns = delay.int64Value {
                parsed = GoDuration(nanoseconds: ns)
            } else if let text = delay.stringValue {
                do { parsed = try GoDuration(parsing: text) } catch { throw APIError(400, "Request decode failed: \(error.message)") }
            } else {
                throw decodeFailure("LockDelay", expected: "time.Duration", got: delay)
            }
            // Consul reads a value under 1 µs as seconds: 15 ⇒ 15 s.
            if parsed.nanoseconds < 1000 { parsed = .seconds(parsed.nanoseconds) }
            session.lockDelay = parsed
        }
        if let behavior = try requireString(body, ["Behavior"]), !behavior.isEmpty {
            guard let b = SessionBehavior(rawValue: behavior) else { throw APIError(500, "Invalid Behavior setting '\(behavior)'") }
            session.behavior = b
        }
        if let ttl = try requireString(body, ["TTL"]), !ttl.isEmpty {
            let parsed: GoDuration
            do { parsed = try GoDuration(parsing: ttl) } catch { throw APIError(500, "Session TTL '\(ttl)' invalid: \(error.message)") }
            if parsed != .zero && (parsed < settings.sessionTTLMin || parsed > .seconds(86_400)) {
                throw APIError(
                    500, "Invalid Session TTL '\(parsed.nanoseconds)', must be between [\(settings.sessionTTLMin)=24h0m0s]")
            }
            session.ttl = ttl
        }
        let nodeChecks = try requireStrings(body, ["NodeChecks"])
        let legacyChecks = try requireStrings(body, ["Checks"])
        if let nodeChecks, body.member("NodeChecks")?.isNull == false {
            session.nodeChecks = nodeChecks
        } else if body.member("Checks") != nil {
            // Consul's fixupEmptySessionChecks: `Checks: []` means no checks at all; other checks come
            // on top of serfHealth.
            let checks = legacyChecks ?? []
            session.nodeChecks = checks.isEmpty ? [] : ["serfHealth"] + checks.filter { $0 != "serfHealth" }
        }
        if let service = body.member("ServiceChecks"), !service.isNull {
            guard let items = service.arrayValue else { throw decodeFailure("ServiceChecks", expected: "[]structs.ServiceCheck", got: service) }
            var ids: [String] = []
            for item in items {
                guard let id = try requireString(item, ["ID"]) else { continue }
                ids.append(id)
            }
            session.serviceChecks = ids
        }
        if session.node != settings.nodeName { throw APIError(500, "Missing node registration") }
        return session
    }

    func createSession(_ call: Call) async throws(APIError) -> APIResponse {
        let request = try parseSessionRequest(try parseBody(call.request))
        let id = try await store.write { s, index, _ throws(APIError) in try Operations.createSession(s, index: index, request: request) }
        return .json(.object([("ID", .string(id))]))
    }

    func destroySession(_ call: Call) async throws(APIError) -> APIResponse {
        let id = call.rest
        guard !id.isEmpty else { throw APIError(400, "Missing session") }
        _ = try await store.write { s, index, _ in Plan(Operations.invalidateSession(s, id: id, index: index), ()) }
        return .json(.bool(true))
    }

    func renewSession(_ call: Call) async throws(APIError) -> APIResponse {
        let id = call.rest
        guard !id.isEmpty else { throw APIError(400, "Missing session") }
        let renewed: SessionEntry? = store.mutateRuntime { s in s.renewSession(id, now: .now) }
        guard let renewed else { throw APIError(404, "Session id '\(id)' not found") }
        return .json(.array([renewed.json]))
    }

    func sessionInfo(_ call: Call) async throws(APIError) -> APIResponse {
        let id = call.rest
        guard !id.isEmpty else { throw APIError(400, "Missing session") }
        return try await blockingRead(call) { s in
            let found = s.sessions[id]
            return (s.sessionsIndex, found == nil, .json(.array(found.map { [$0.json] } ?? [])))
        }
    }

    func sessionList(_ call: Call) async throws(APIError) -> APIResponse {
        try await blockingRead(call) { s in
            (s.sessionsIndex, false, .json(.array(s.sessions.keys.sorted().map { s.sessions[$0]!.json })))
        }
    }

    func sessionNode(_ call: Call) async throws(APIError) -> APIResponse {
        let node = call.rest
        guard !node.isEmpty else { throw APIError(400, "Missing node name") }
        return try await blockingRead(call) { s in
            let sessions = s.sessions.keys.sorted().compactMap { s.sessions[$0] }.filter { $0.node == node }
            return (s.sessionsIndex, false, .json(.array(sessions.map(\.json))))
        }
    }
}
