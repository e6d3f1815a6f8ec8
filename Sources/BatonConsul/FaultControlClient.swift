import ConsulAPI

/// The fault-control API of an embedded server started with `--fault-control HOST:PORT`
/// (`baton consul fault`, the live tests): the server answers 500 "No cluster leader", holds requests,
/// answers late or invalidates a node's sessions on request.
public struct FaultControlClient: Sendable {
    /// The server's `--fault-control` address, HOST:PORT.
    public let address: String
    private let transport = CurlTransport()

    public init(address: String) { self.address = address }

    /// Every call answers 500 "No cluster leader" (stale reads still served) for `length`.
    public func election(for length: Duration) async throws(FaultControlError) {
        _ = try await send("election", ["for": GoDuration(length).description])
    }

    /// Calls are held for `length`, then served.
    public func hang(for length: Duration) async throws(FaultControlError) {
        _ = try await send("hang", ["for": GoDuration(length).description])
    }

    /// Every answer comes `delay` late, for `length`.
    public func slow(by delay: Duration, for length: Duration) async throws(FaultControlError) {
        _ = try await send("slow", ["delay": GoDuration(delay).description, "for": GoDuration(length).description])
    }

    /// Invalidates the sessions of Consul node `node` (only those whose name starts with `name`, if
    /// given), as a restarted agent does; returns their IDs.
    public func agentRestart(node: String, name: String? = nil) async throws(FaultControlError) -> [String] {
        var query = ["node": node]
        if let name { query["name"] = name }
        let answer = try await send("agent-restart", query)
        guard let ids = (try? JSONValue.parse(answer))?.member("invalidated")?.arrayValue else {  // nil: a malformed answer, said below
            throw FaultControlError("the fault control at \(address) answered agent-restart without the invalidated sessions: \(answer)")
        }
        return ids.compactMap(\.stringValue)
    }

    /// Every fault ends now.
    public func clear() async throws(FaultControlError) { _ = try await send("clear", [:]) }

    /// Requests served on the Consul API since the server started.
    public func requestsServed() async throws(FaultControlError) -> UInt64 {
        let answer = try await send(nil, [:])
        guard let count = (try? JSONValue.parse(answer))?.member("requests")?.uint64Value else {  // nil: a malformed answer, said below
            throw FaultControlError("the fault control at \(address) did not say how many requests it served: \(answer)")
        }
        return count
    }

    /// `PUT /fault/<kind>?<query>`, or `GET /fault` (the faults in force) when `kind` is nil; the
    /// server's JSON answer.
    public func send(_ kind: String?, _ query: [String: String]) async throws(FaultControlError) -> String {
        let parameters = query.sorted { $0.key < $1.key }.map { "\($0.key)=" + KeyPath.escape($0.value, keepSlash: false) }
        let url = "http://\(address)/fault" + (kind.map { "/" + $0 } ?? "") + (parameters.isEmpty ? "" : "?" + parameters.joined(separator: "&"))
        let response: HTTPResponse
        do {
            response = try await transport.send(HTTPRequest(method: kind == nil ? "GET" : "PUT", url: url, timeout: .seconds(10)))
        } catch {
            throw FaultControlError("no fault control answers at \(address) (\(error)); start the server with --fault-control \(address)")
        }
        guard response.status == 200 else { throw FaultControlError(response.text) }
        return response.text
    }
}

public struct FaultControlError: Error, CustomStringConvertible {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}
